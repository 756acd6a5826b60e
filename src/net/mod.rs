//! The network layer: listeners and the connection gate (`listener`, `admission`), TLS
//! (`tls`), a small HTTP server (`http`, for metrics, health and the web client), the WebSocket
//! handshake (`websocket`), and `Connection`, which turns a stream's bytes, or a WebSocket's
//! messages, into lines and back. It knows no chat
//! and no protocol's words: a front end is handed a stream and gives the texts it needs.

pub mod admission;
pub mod connection;
pub mod http;
pub mod listener;
pub mod tls;
pub mod websocket;
