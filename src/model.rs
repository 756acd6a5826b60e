//! The core's data: a chat message, the events pushed to a connection, and time stamps. Nothing
//! here knows the wire format; front ends render these values.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::names::{RoomName, UserName};
use crate::outbox::ConnId;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339, UTC, millisecond precision: `2026-11-29T04:48:06.123Z`.
pub fn format_time(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A stored chat message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: u64,
    pub room: RoomName,
    pub time: Millis,
    pub sender: UserName,
    pub text: String,
}

/// A message as it fans out to many connections: the value plus its rendered event line, made once
/// by whichever connection writes it first and shared by the rest.
#[derive(Debug)]
pub struct Posted {
    pub msg: Message,
    /// The connection that posted it (it is not echoed back there), or `None` once it came from
    /// the store.
    pub from: Option<ConnId>,
    wire: OnceLock<Bytes>,
}

impl Posted {
    pub fn new(msg: Message, from: Option<ConnId>) -> Arc<Posted> {
        Arc::new(Posted { msg, from, wire: OnceLock::new() })
    }

    /// Roughly the bytes it takes on the wire (see `Event::weight`).
    pub fn weight(&self) -> usize {
        message_weight(&self.msg)
    }

    pub fn rendered(&self, render: impl FnOnce(&Message) -> Bytes) -> &Bytes {
        self.wire.get_or_init(|| render(&self.msg))
    }
}

/// A bot command line (`/stock=aapl.us`) relayed live; never stored.
#[derive(Debug)]
pub struct BotLine {
    pub room: RoomName,
    pub time: Millis,
    pub sender: UserName,
    pub text: String,
}

/// Who joined or left which room.
#[derive(Debug)]
pub struct Membership {
    pub room: RoomName,
    pub user: UserName,
}

/// Messages a room accepted back to back, fanned out as one event: one queue slot and one wake-up
/// per member for the lot, and one write.
#[derive(Debug)]
pub struct Batch {
    pub posts: Vec<Arc<Posted>>,
    weight: usize,
}

impl Batch {
    pub fn new(posts: Vec<Arc<Posted>>) -> Arc<Batch> {
        let weight = posts.iter().map(|p| p.weight()).sum();
        Arc::new(Batch { posts, weight })
    }
}

fn message_weight(m: &Message) -> usize {
    m.text.len() + 96
}

/// What a room (or the server) pushes to a connection. Every variant is one pointer: a
/// connection's queue is made of these, and idle connections are many.
#[derive(Debug, Clone)]
pub enum Event {
    Message(Arc<Posted>),
    /// Several messages; each is skipped for the connection that posted it.
    Messages(Arc<Batch>),
    Command(Arc<BotLine>),
    Joined(Arc<Membership>),
    Parted(Arc<Membership>),
    Notice(Arc<String>),
}

impl Event {
    /// Roughly the bytes this event takes on the wire, for the per-connection queue bound.
    pub fn weight(&self) -> usize {
        match self {
            Event::Message(p) => p.weight(),
            Event::Messages(b) => b.weight,
            Event::Command(c) => c.text.len() + 96,
            Event::Joined(_) | Event::Parted(_) => 64,
            Event::Notice(t) => t.len() + 16,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_event_is_two_words() {
        assert!(std::mem::size_of::<super::Event>() <= 16);
    }

    #[test]
    fn time_format() {
        assert_eq!(super::format_time(1_764_391_686_123), "2025-11-29T04:48:06.123Z");
    }
}
