//! The native wire rendering of replies and events (PROTOCOL.md §3–4): the one place where an
//! error becomes a reply code and text, and where core events become lines.

use bytes::Bytes;
use chatd_proto::line::{write_event, write_reply};
use chatd_proto::names::Label;
use chatd_proto::parse::ParseError;

use crate::chat::error::ChatError;
use crate::chat::error::GuestRefusal;
use crate::chat::model::{format_time, ConnId, Event, Message, RenderSlot, RoleKind, Topic};
use crate::chat::names::{RoomName, UserName};
use std::borrow::Cow;

/// A sender or member as the native protocol shows it: a guest's nick with `~` in front (no user
/// name starts with `~`, so `~bob` is never the account `bob`), a member's name as it is.
pub fn shown_name(name: &UserName, guest: bool) -> Cow<'_, str> {
    match guest {
        true => Cow::Owned(format!("~{name}")),
        false => Cow::Borrowed(name.as_str()),
    }
}

/// The native front end's rendering of a message, cached in the message as it fans out.
pub const NATIVE_RENDERING: RenderSlot = RenderSlot(0);

/// Replies to one command: every line carries the command's label, if it had one.
pub struct Replies<'a> {
    pub out: &'a mut Vec<u8>,
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

    /// A `130` line for a stored message (`shown_as`: the conversation as the command named it).
    pub fn message(&mut self, shown_as: &str, m: &Message) {
        let (id, time) = (m.id.to_string(), format_time(m.time));
        self.line(130, &[shown_as, &id, &time, &shown_name(&m.sender, m.guest)], Some(&m.text));
    }

    /// A room's topic: `<room> <setter> <time> :<text>`, or `<room> :no topic is set`.
    pub fn topic(&mut self, room: &RoomName, topic: Option<&Topic>) {
        match topic {
            Some(t) => self.ok(&[room.as_str(), t.set_by.as_str(), &format_time(t.time)], Some(&t.text)),
            None => self.ok(&[room.as_str()], Some("no topic is set")),
        }
    }

    /// The reply to a line that did not parse.
    pub fn rejected(&mut self, e: &ParseError) {
        self.line(e.code(), &[], Some(&e.to_string()));
    }

    /// The reply to a command the core refused.
    pub fn error(&mut self, e: &ChatError) {
        let secs;
        let fields: Vec<&str> = match e {
            ChatError::NoSuchRoom(room)
            | ChatError::LimitReached(room, _)
            | ChatError::NotOperator(room)
            | ChatError::Banned(room) => vec![room.as_str()],
            ChatError::NotInRoom(room, user) => vec![room.as_str(), user.as_str()],
            ChatError::NoSuchMessage(room, id) => {
                secs = id.to_string();
                vec![room.as_str(), &secs]
            }
            ChatError::NoSuchUser(user) | ChatError::NickIsAccount(user) | ChatError::NickInUse(user) => {
                vec![user.as_str()]
            }
            ChatError::GuestRefused(
                GuestRefusal::Room(room) | GuestRefusal::BotCommand(room) | GuestRefusal::Topic(room),
            ) => {
                vec![room.as_str()]
            }
            ChatError::GuestRefused(GuestRefusal::DirectMessage(user)) => vec![user.as_str()],
            ChatError::NoBot(room, word) => vec![room.as_str(), word.as_str()],
            ChatError::Throttled(s) => {
                secs = s.to_string();
                vec![&secs]
            }
            _ => vec![],
        };
        self.line(code(e), &fields, Some(&text(e)));
    }
}

/// The reply code of a refusal (PROTOCOL.md §3).
pub fn code(e: &ChatError) -> u16 {
    use ChatError::*;
    match e {
        NotLoggedIn => 402,
        NotMember(_) | NotABot => 403,
        NoSuchRoom(_) => 404,
        NoSuchUser(_) => 423,
        TopicTooLong(_) => 422,
        BadReference => 421,
        AlreadyLoggedIn => 408,
        BadCredentials => 409,
        NameTaken => 410,
        RegistrationClosed => 411,
        Throttled(_) => 412,
        LimitReached(..) => 418,
        NoBot(..) => 419,
        GuestsDisabled => 424,
        NickIsAccount(_) => 425,
        NickInUse(_) => 426,
        GuestRefused(_) => 427,
        NotOperator(_) => 428,
        NotAdmin => 429,
        Banned(_) => 430,
        AccountDisabled(_) => 431,
        NoSuchMessage(..) => 432,
        NotInRoom(..) => 433,
        ReloadRefused(_) => 434,
        Unavailable(_) => 500,
    }
}

/// The text of a refusal, with the native commands that help where there are some.
fn text(e: &ChatError) -> String {
    match e {
        ChatError::NotLoggedIn => "log in first (LOGIN <user> <password> or REGISTER <user> <password>)".into(),
        ChatError::AlreadyLoggedIn => "already logged in (LOGOUT first)".into(),
        ChatError::GuestsDisabled => {
            "guest access is off on this server: LOGIN <user> <password> or REGISTER <user> <password>".into()
        }
        ChatError::NickIsAccount(nick) => {
            format!("{nick} is a registered account: LOGIN {nick} <password>, or choose another nick")
        }
        ChatError::NickInUse(nick) => format!("{nick} is in use by another guest, choose another nick"),
        ChatError::GuestRefused(what) => format!("guests may not {what}; REGISTER or LOGIN to become a member"),
        ChatError::NotOperator(room) => {
            format!("you are not an operator of {room} (only its operators and admins may)")
        }
        ChatError::AccountDisabled(why) => format!("account disabled: {why} (ask an admin)"),
        ChatError::Unavailable(what) => format!("server error ({what}); the command had no effect, try again"),
        other => other.to_string(),
    }
}

/// `* MSG <room> <id> <time> <sender> :<text>`, rendered once per message and shared.
pub fn message_event(m: &Message) -> Bytes {
    let mut out = Vec::with_capacity(m.text.len() + 80);
    let (id, time) = (m.id.to_string(), format_time(m.time));
    write_event(&mut out, "MSG", &[m.room.as_str(), &id, &time, &shown_name(&m.sender, m.guest)], Some(&m.text));
    Bytes::from(out)
}

/// `* DM <id> <time> <from> <to> :<text>`, the same for both users, rendered once.
pub fn direct_event(m: &Message) -> Bytes {
    let mut out = Vec::with_capacity(m.text.len() + 80);
    let (id, time) = (m.id.to_string(), format_time(m.time));
    let to = m.room.other_peer(&m.sender).unwrap_or_else(|| m.sender.clone());
    write_event(&mut out, "DM", &[&id, &time, &shown_name(&m.sender, m.guest), to.as_str()], Some(&m.text));
    Bytes::from(out)
}

/// Appends the wire form of an event pushed to connection `to`.
pub fn event(out: &mut Vec<u8>, ev: &Event, to: ConnId) {
    match ev {
        Event::Message(p) => out.extend_from_slice(p.rendered(NATIVE_RENDERING, message_event)),
        Event::Messages(batch) => {
            for p in batch.for_member(to) {
                out.extend_from_slice(p.rendered(NATIVE_RENDERING, message_event));
            }
        }
        Event::Command(c) => {
            let time = format_time(c.time);
            write_event(out, "CMD", &[c.room.as_str(), &time, &shown_name(&c.sender, c.guest)], Some(&c.text));
        }
        Event::Joined(m) => write_event(out, "JOIN", &[m.room.as_str(), &shown_name(&m.user, m.guest)], None),
        Event::Parted(m) => write_event(out, "PART", &[m.room.as_str(), &shown_name(&m.user, m.guest)], None),
        Event::Topic(c) => {
            let (room, t) = (&c.room, &c.topic);
            write_event(out, "TOPIC", &[room.as_str(), t.set_by.as_str(), &format_time(t.time)], Some(&t.text));
        }
        Event::Direct(p) => out.extend_from_slice(p.rendered(NATIVE_RENDERING, direct_event)),
        Event::Kicked(k) => {
            write_event(out, "KICK", &[k.room.as_str(), k.user.as_str(), k.by.as_str()], Some(&k.reason))
        }
        Event::Deleted(d) => write_event(out, "DELETE", &[d.room.as_str(), &d.id.to_string(), d.by.as_str()], None),
        Event::RoomDeleted(d) => write_event(out, "DELROOM", &[d.room.as_str(), d.by.as_str()], Some(&d.reason)),
        Event::Roles(c) => {
            let name = match c.kind {
                RoleKind::Op => "OP",
                RoleKind::Deop => "DEOP",
                RoleKind::Ban => "BAN",
                RoleKind::Unban => "UNBAN",
            };
            write_event(out, name, &[c.room.as_str(), c.user.as_str(), c.by.as_str()], None);
        }
        Event::Notice(n) => write_event(out, "NOTICE", &[n.from.as_str()], Some(&n.text)),
        Event::Close(n) => write_event(out, "BYE", &[], Some(&n.text)),
    }
}

/// Appends a server event that is not a room's: HELLO, PING, NOTICE, BYE.
pub fn server_event(out: &mut Vec<u8>, name: &str, fields: &[&str], text: Option<&str>) {
    write_event(out, name, fields, text);
}
