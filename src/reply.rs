//! The native wire rendering of replies and events (PROTOCOL.md §3–4). This is the one place where
//! an error becomes a protocol line and where core events become text.

use bytes::Bytes;
use chatd_proto::line::{write_event, write_reply};

use crate::error::ChatError;
use crate::model::{format_time, Event, Message};
use crate::names::Label;
use crate::outbox::ConnId;

/// Replies to one command: every line carries the command's label, if it had one.
pub struct Replies<'a> {
    pub out: &'a mut String,
    pub label: Option<&'a Label>,
    pub verb: &'a str,
}

impl Replies<'_> {
    pub fn line(&mut self, code: u16, fields: &[&str], text: Option<&str>) {
        write_reply(self.out, self.label.map(Label::as_str), code, self.verb, fields, text);
    }

    pub fn ok(&mut self, fields: &[&str], text: Option<&str>) {
        self.line(200, fields, text);
    }

    /// A `130` line for a stored message.
    pub fn message(&mut self, m: &Message) {
        let (id, time) = (m.id.to_string(), format_time(m.time));
        self.line(130, &[m.room.as_str(), &id, &time, m.sender.as_str()], Some(&m.text));
    }

    pub fn error(&mut self, e: &ChatError) {
        let text = e.to_string();
        let secs;
        let fields: Vec<&str> = match e {
            ChatError::NoSuchRoom(room) | ChatError::LimitReached(room, _) => vec![room.as_str()],
            ChatError::NoBot(room, word) => vec![room.as_str(), word.as_str()],
            ChatError::Throttled(s) => {
                secs = s.to_string();
                vec![&secs]
            }
            _ => vec![],
        };
        self.line(e.code(), &fields, Some(&text));
    }
}

/// `* MSG <room> <id> <time> <sender> :<text>`, rendered once per message and shared.
pub fn message_event(m: &Message) -> Bytes {
    let mut s = String::with_capacity(m.text.len() + 80);
    let (id, time) = (m.id.to_string(), format_time(m.time));
    write_event(&mut s, "MSG", &[m.room.as_str(), &id, &time, m.sender.as_str()], Some(&m.text));
    Bytes::from(s)
}

/// Appends the wire form of an event pushed to connection `to`.
pub fn event(out: &mut Vec<u8>, ev: &Event, to: ConnId) {
    let mut s = String::new();
    match ev {
        Event::Message(p) => {
            out.extend_from_slice(p.rendered(message_event));
            return;
        }
        Event::Messages(batch) => {
            for p in batch.posts.iter().filter(|p| p.from != Some(to)) {
                out.extend_from_slice(p.rendered(message_event));
            }
            return;
        }
        Event::Command(c) => {
            let time = format_time(c.time);
            write_event(&mut s, "CMD", &[c.room.as_str(), &time, c.sender.as_str()], Some(&c.text));
        }
        Event::Joined(m) => write_event(&mut s, "JOIN", &[m.room.as_str(), m.user.as_str()], None),
        Event::Parted(m) => write_event(&mut s, "PART", &[m.room.as_str(), m.user.as_str()], None),
        Event::Notice(text) => write_event(&mut s, "NOTICE", &[], Some(text)),
    }
    out.extend_from_slice(s.as_bytes());
}

/// Appends a server event that is not a room's: HELLO, PING, NOTICE, BYE.
pub fn server_event(out: &mut Vec<u8>, name: &str, fields: &[&str], text: Option<&str>) {
    let mut s = String::new();
    write_event(&mut s, name, fields, text);
    out.extend_from_slice(s.as_bytes());
}
