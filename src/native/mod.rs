//! The native front end (PROTOCOL.md): lines are parsed by `chatd_proto::parse` into typed
//! commands, applied to the connection's `Client` (`apply`), and answered in the native reply and
//! event lines (`reply`). Everything else about a connection (timers, flood control, writing) is
//! `session`'s.

pub mod apply;
pub mod reply;

use bytes::Bytes;
use chatd_proto::names::Label;
use chatd_proto::parse::{parse_line, ParseError};

use crate::chat::client::{Client, Settled};
use crate::chat::model::{format_time, ConnId, Event};
use crate::session::{Disconnect, Flow, Protocol};
use reply::Replies;

/// What a client that sends plaintext to the TLS port is told before the connection closes.
pub const PLAINTEXT_HINT: &[u8] = b"* BYE :this port speaks TLS; use: openssl s_client -quiet -connect HOST:PORT\r\n";

/// The native protocol for one connection.
pub struct Native {
    /// Longest MSG text accepted.
    max_message_bytes: usize,
}

impl Native {
    pub fn new(max_message_bytes: usize) -> Native {
        Native { max_message_bytes }
    }

    /// `200 MSG <room> <id> <time>` (`200 DM <user> <id> <time>` for a direct message) once it
    /// is committed, or `500` for one the store could not keep.
    fn render_settled(settled: Settled<Option<Label>>, out: &mut Vec<u8>) {
        let m = &settled.message.msg;
        let peer = m.room.other_peer(&m.sender);
        let (verb, shown_as) = match &peer {
            Some(peer) => ("DM", peer.as_str()),
            None => ("MSG", m.room.as_str()),
        };
        let mut r = Replies { out, label: settled.tag.as_ref(), verb };
        match &settled.result {
            Ok(()) => r.ok(&[shown_as, &m.id.to_string(), &format_time(m.time)], None),
            Err(e) => r.error(e),
        }
    }
}

impl Protocol for Native {
    /// A post's acknowledgement carries the label of its MSG line.
    type Tag = Option<Label>;

    fn greet(&mut self, out: &mut Vec<u8>) {
        let welcome = "Welcome to chatd. Type HELP for the commands.";
        reply::server_event(out, "HELLO", &["chatd", env!("CARGO_PKG_VERSION")], Some(welcome));
    }

    async fn line(&mut self, client: &mut Client<Self::Tag>, line: Bytes, out: &mut Vec<u8>) -> Flow {
        match parse_line(&line, self.max_message_bytes) {
            Ok(request) => apply::apply(client, request, out).await,
            Err(rejected) => {
                Replies { out, label: rejected.label.as_ref(), verb: &rejected.verb }.rejected(&rejected.error);
                Flow::Continue
            }
        }
    }

    fn line_too_long(&mut self, max: usize, out: &mut Vec<u8>) {
        Replies { out, label: None, verb: "*" }.rejected(&ParseError::LineTooLong(max));
    }

    fn event(&mut self, event: &Event, to: ConnId, out: &mut Vec<u8>) {
        reply::event(out, event, to);
    }

    fn settled(&mut self, settled: Settled<Self::Tag>, out: &mut Vec<u8>) {
        Native::render_settled(settled, out);
    }

    fn ping(&mut self, token: &str, out: &mut Vec<u8>) {
        reply::server_event(out, "PING", &[token], None);
    }

    fn flood_notice(&mut self, out: &mut Vec<u8>) {
        let text = "slow down: you are sending too fast, your lines are being delayed";
        reply::server_event(out, "NOTICE", &[], Some(text));
    }

    fn bye(&mut self, why: Disconnect, out: &mut Vec<u8>) {
        reply::server_event(out, "BYE", &[], Some(why.reason()));
    }
}
