//! The core's data: a chat message, the events pushed to a connection, and time stamps. Nothing
//! here knows a wire format; front ends render these values (and may cache one rendering each in a
//! fanned-out message, so a message sent to a hundred members is rendered once per front end).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::names::{RoomName, UserName};
pub use crate::store::Millis;

/// Identifies one connection for the lifetime of the process.
pub type ConnId = u64;

pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339, UTC, millisecond precision: `2026-11-29T04:48:06.123Z`.
pub fn format_time(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A stored chat message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: u64,
    pub room: RoomName,
    pub time: Millis,
    pub sender: UserName,
    pub text: String,
    /// Sent by a guest (a nick, not an account: see `Identity::Guest`).
    pub guest: bool,
}

/// How many front ends may cache a rendering of a message (see `Posted::rendered`).
pub const RENDERINGS: usize = 2;

/// Which of a message's cached renderings a front end uses: each front end takes its own slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderSlot(pub usize);

impl Message {
    /// A message of `room` as the store gave it back.
    pub fn stored(room: &RoomName, m: crate::store::StoredMessage) -> Message {
        Message { id: m.id, room: room.clone(), time: m.time, sender: m.sender, text: m.text, guest: m.guest }
    }
}

/// A message as it fans out to many connections: the value plus, per front end, its rendering,
/// made once by whichever connection writes it first and shared by the rest.
#[derive(Debug)]
pub struct Posted {
    pub msg: Message,
    /// The connection that posted it (it is not echoed back there), or `None` once it came from
    /// the store.
    pub from: Option<ConnId>,
    renderings: [OnceLock<Bytes>; RENDERINGS],
}

impl Posted {
    pub fn new(msg: Message, from: Option<ConnId>) -> Arc<Posted> {
        Arc::new(Posted { msg, from, renderings: Default::default() })
    }

    /// Roughly the bytes it takes to send (see `Event::weight`).
    pub fn weight(&self) -> usize {
        message_weight(&self.msg)
    }

    /// The front end's rendering of the message, made by `render` on first use.
    pub fn rendered(&self, slot: RenderSlot, render: impl FnOnce(&Message) -> Bytes) -> &Bytes {
        self.renderings[slot.0].get_or_init(|| render(&self.msg))
    }
}

impl crate::store::MessageRecord for Posted {
    fn id(&self) -> u64 {
        self.msg.id
    }
    fn time(&self) -> Millis {
        self.msg.time
    }
    fn sender(&self) -> &str {
        self.msg.sender.as_str()
    }
    fn text(&self) -> &str {
        &self.msg.text
    }
    fn guest(&self) -> bool {
        self.msg.guest
    }
    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
        self
    }
}

/// A bot command line (`/stock=aapl.us`) relayed live; never stored.
#[derive(Debug)]
pub struct BotLine {
    pub room: RoomName,
    pub time: Millis,
    pub sender: UserName,
    pub text: String,
    /// Posted by a guest.
    pub guest: bool,
}

/// A room's topic: its text, who set it and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Topic {
    pub text: String,
    pub set_by: UserName,
    pub time: Millis,
}

/// A room's new topic.
#[derive(Debug)]
pub struct TopicChange {
    pub room: RoomName,
    pub topic: Topic,
}

/// Who joined or left which room.
#[derive(Debug)]
pub struct Membership {
    pub room: RoomName,
    pub user: UserName,
    /// The user is a guest.
    pub guest: bool,
}

/// A user removed from a room by one of its operators or an admin (a kick, or a ban).
#[derive(Debug)]
pub struct Kick {
    pub room: RoomName,
    pub user: UserName,
    pub by: UserName,
    pub reason: String,
}

/// A message deleted from a room's history, so clients can hide it.
#[derive(Debug)]
pub struct Deletion {
    pub room: RoomName,
    pub id: u64,
    pub by: UserName,
}

/// A room deleted by an admin: its members are removed, its history is gone.
#[derive(Debug)]
pub struct RoomDeleted {
    pub room: RoomName,
    pub by: UserName,
    pub reason: String,
}

/// What changed in a room's roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    Op,
    Deop,
    Ban,
    Unban,
}

/// A user made or unmade an operator of a room, or banned or unbanned from it.
#[derive(Debug)]
pub struct RoleChange {
    pub room: RoomName,
    pub user: UserName,
    pub by: UserName,
    pub kind: RoleKind,
}

/// A server-wide notice from an admin; also why a connection is being closed by one.
#[derive(Debug)]
pub struct Notice {
    pub from: UserName,
    pub text: String,
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

    /// The posts a member is sent: all but its own, in id order.
    pub fn for_member(&self, to: ConnId) -> impl Iterator<Item = &Arc<Posted>> {
        self.posts.iter().filter(move |p| p.from != Some(to))
    }
}

/// A message's size for the queue bounds: its text plus room for its metadata (room, id, time,
/// sender) in any rendering. An estimate, the same for every front end.
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
    Topic(Arc<TopicChange>),
    /// A message between two users (its `room` is `RoomName::direct`), to a connection of either.
    Direct(Arc<Posted>),
    /// A user was kicked (or banned) from a room; sent to the members, the user's connections
    /// included, before they are removed.
    Kicked(Arc<Kick>),
    Deleted(Arc<Deletion>),
    RoomDeleted(Arc<RoomDeleted>),
    Roles(Arc<RoleChange>),
    /// A server-wide notice.
    Notice(Arc<Notice>),
    /// The connection is closed by an admin (account disabled, KILL): the front end says why,
    /// then the session ends.
    Close(Arc<Notice>),
}

impl Event {
    /// Roughly the bytes this event takes to send, for the per-connection queue bound.
    pub fn weight(&self) -> usize {
        match self {
            Event::Message(p) | Event::Direct(p) => p.weight(),
            Event::Topic(t) => t.topic.text.len() + 96,
            Event::Messages(b) => b.weight,
            Event::Command(c) => c.text.len() + 96,
            Event::Joined(_) | Event::Parted(_) | Event::Deleted(_) | Event::Roles(_) => 64,
            Event::Kicked(k) => k.reason.len() + 96,
            Event::RoomDeleted(d) => d.reason.len() + 96,
            Event::Notice(n) | Event::Close(n) => n.text.len() + 96,
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
