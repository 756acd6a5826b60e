//! A small IRC test client over TLS, shared by the IRC and guest tests: sends lines, reads
//! parsed messages, waits for a command, and brackets an exchange with a PING sentinel. Each test
//! file adds its own ways of registering.
#![allow(dead_code)]

use chatd::irc::wire::Message;
use chatd_proto::client::LineConn;
use chatd_proto::tls::{client_config, Trust};
use testkit::{Daemon, PATIENCE};

pub struct Irc {
    pub conn: LineConn,
}

impl Irc {
    pub async fn connect(d: &Daemon) -> Irc {
        let config = client_config(&Trust::CaFile(d.ca_file.clone())).unwrap();
        let conn = tokio::time::timeout(PATIENCE, LineConn::connect_tls(&d.irc_addr, "localhost", config))
            .await
            .expect("connect timed out")
            .expect("connect");
        Irc { conn }
    }

    pub async fn send(&mut self, line: &str) {
        self.conn.send(line).await.unwrap();
    }

    /// The next message, or `None` when the server closed the connection.
    pub async fn next_or_close(&mut self) -> Option<Message> {
        let line = tokio::time::timeout(PATIENCE, self.conn.read_line())
            .await
            .expect("timed out waiting for a line")
            .ok()??;
        Some(Message::parse(&line).unwrap_or_else(|e| panic!("unparsable line {line:?}: {e}")))
    }

    pub async fn next(&mut self) -> Message {
        self.next_or_close().await.expect("connection closed")
    }

    /// Reads until a message with `command` arrives; returns it and everything read before it.
    pub async fn until(&mut self, command: &str) -> (Message, Vec<Message>) {
        let mut before = Vec::new();
        loop {
            let m = self.next().await;
            if m.command == command {
                return (m, before);
            }
            before.push(m);
        }
    }

    pub async fn expect(&mut self, command: &str) -> Message {
        self.until(command).await.0
    }

    /// Sends a line and reads up to its `PONG` sentinel: every message the line caused.
    pub async fn exchange(&mut self, line: &str) -> Vec<Message> {
        self.send(line).await;
        self.send("PING sentinel").await;
        let (_, got) = self.until("PONG").await;
        got
    }
}
