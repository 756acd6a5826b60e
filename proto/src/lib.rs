//! The native protocol shared by chatd and its clients (the bot, the `chat` CLI, the load generator
//! and the tests): checked names (`names`), the client commands as typed values (`command`) and
//! their parser (`parse`), how a server line is laid out and read back (`line`), and how a client
//! opens a TLS connection that trusts the daemon by CA file, pinned fingerprint or the system roots.
//! It also holds the IRC front end's wire format (`irc`): IRC lines with IRCv3 tags, parsed and written.
//!
//! PROTOCOL.md is the contract; this crate is its executable half for server lines.

pub mod client;
pub mod command;
pub mod irc;
pub mod line;
pub mod names;
pub mod parse;
pub mod tls;
#[cfg(feature = "websocket")]
pub mod ws;

pub use client::LineConn;
pub use line::{ChatMessage, Event, Reply, ServerLine};
pub use tls::{fingerprint_hex, parse_fingerprint, Trust};
