//! chatd's stock bot. It connects to chatd over TLS like any client, logs in with its own account
//! (`stockbot`), announces `SERVE stock`, and answers every `/stock=<code>` line, in every room,
//! with `AAPL.US quote is $93.42 per share`, or with a clear sentence when it cannot.
//!
//! Modules, each owning one thing:
//! - `config`: flags, environment and TOML file;
//! - `command`: the `/stock=<code>` syntax and which codes are valid;
//! - `quote`: a quote, its price format and the stooq CSV answer;
//! - `json`: the Finnhub and Alpha Vantage JSON answers;
//! - `error`: what can go wrong, and the reply text for each failure;
//! - `stooq`: stooq's endpoints with the API key, its refusal pages and the operator's warnings;
//! - `source`: the HTTP sources, timeout, fallback, and the record of each request;
//! - `check`: `chatd-bot --check`, one quote with every request shown;
//! - `cache`: short answer cache and de-duplication of calls in flight;
//! - `limit`: per-sender rate limit and the pacing of the bot's own lines;
//! - `bot`: handling one command line (rate limit, spawn, semaphore);
//! - `chat`: the daemon connection, session loop and reconnection.

pub mod bot;
pub mod cache;
pub mod chat;
pub mod check;
pub mod command;
pub mod config;
pub mod error;
pub mod json;
pub mod limit;
pub mod quote;
pub mod source;
pub mod stooq;
