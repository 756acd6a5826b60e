//! IRC rendering: replies to one command (labeled, batched when several lines answer a labeled
//! command, `ACK` when none do), the one place where a core error becomes an IRC numeric, `FAIL`
//! or notice (`Reply::error`), and core events as IRC messages with the tags each connection
//! negotiated.

use bytes::Bytes;

use super::caps::{self, Caps};
use super::wire::Message;
use super::{Settings, State};
use crate::chat::error::{ChatError, GuestRefusal, Limit};
use crate::chat::model::{format_time, ConnId, Event, Message as ChatMessage, Millis, RenderSlot, RoleKind};

/// The IRC front end's rendering of a message (its tagless line), cached in the message as it fans
/// out; each connection adds its own tags in front.
pub const IRC_RENDERING: RenderSlot = RenderSlot(1);

/// The host part of every user's source (`alice!alice@chatd`): chatd shows no addresses.
pub const USER_HOST: &str = "chatd";

/// The source of the NickServ service's notices.
pub const NICKSERV: &str = "NickServ!NickServ@services.chatd";

/// `nick!nick@chatd`.
pub fn user_source(nick: &str) -> String {
    format!("{nick}!{nick}@{USER_HOST}")
}

/// The lines answering one command, written by `finish`.
pub struct Reply {
    server: String,
    /// The client's nick for the first parameter of numerics (`*` before it has one).
    pub nick: String,
    label: Option<String>,
    lines: Vec<Message>,
}

impl Reply {
    pub fn new(server: String, nick: String, label: Option<String>) -> Reply {
        Reply { server, nick, label, lines: Vec::new() }
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Takes the label away (a post's echo carries it later).
    pub fn take_label(&mut self) -> Option<String> {
        self.label.take()
    }

    pub fn set_label(&mut self, label: Option<String>) {
        self.label = label;
    }

    pub fn push(&mut self, m: Message) {
        self.lines.push(m);
    }

    /// A message from `source` (`None`: no source, as `AUTHENTICATE +`).
    pub fn raw(&mut self, source: Option<&str>, command: &str, params: &[&str]) {
        self.push(Message {
            tags: Vec::new(),
            source: source.map(str::to_string),
            command: command.to_string(),
            params: params.iter().map(|p| p.to_string()).collect(),
        });
    }

    /// A message from the server.
    pub fn server(&mut self, command: &str, params: &[&str]) {
        let server = self.server.clone();
        self.raw(Some(&server), command, params);
    }

    /// `:server <code> <nick> <params...>`.
    pub fn numeric(&mut self, code: &str, params: &[&str]) {
        let nick = self.nick.clone();
        let mut all = Vec::with_capacity(params.len() + 1);
        all.push(nick.as_str());
        all.extend_from_slice(params);
        self.server(code, &all);
    }

    /// A NOTICE from the server to the client.
    pub fn notice(&mut self, text: &str) {
        let nick = self.nick.clone();
        self.server("NOTICE", &[&nick, text]);
    }

    /// A NOTICE from NickServ.
    pub fn nickserv(&mut self, text: &str) {
        let nick = self.nick.clone();
        self.raw(Some(NICKSERV), "NOTICE", &[&nick, text]);
    }

    /// `FAIL <command> <code> [<context>...] :<description>` (IRCv3 standard replies).
    pub fn fail(&mut self, command: &str, code: &str, context: &[&str], text: &str) {
        let mut params = vec![command, code];
        params.extend_from_slice(context);
        params.push(text);
        self.server("FAIL", &params);
    }

    /// The reply to a command (`command`, about `target`, a channel or nick or `*`) that the core
    /// refused: the one place where a `ChatError` becomes IRC.
    pub fn error(&mut self, e: &ChatError, command: &str, target: &str) {
        let posting = command == "PRIVMSG" || command == "NOTICE";
        match e {
            ChatError::NotLoggedIn => self.numeric("451", &[&not_logged_in_text()]),
            ChatError::NotMember(_) if posting => {
                self.numeric("404", &[target, "Cannot send to channel (join it first)"])
            }
            ChatError::NotMember(_) => self.numeric("442", &[target, "You're not on that channel"]),
            ChatError::NoSuchRoom(_) => self.numeric("403", &[target, "No such channel"]),
            ChatError::AlreadyLoggedIn => self.numeric("462", &["You may not reregister (already logged in)"]),
            ChatError::BadCredentials => self.numeric("464", &["Password incorrect"]),
            ChatError::NameTaken => self.numeric("433", &[target, "Nickname is already in use (a registered account)"]),
            ChatError::LimitReached(_, Limit::RoomsPerConnection) => {
                self.numeric("405", &[target, "You have joined too many channels"])
            }
            ChatError::LimitReached(_, Limit::MembersPerRoom) => {
                self.numeric("471", &[target, "Cannot join channel (the channel is full)"])
            }
            ChatError::LimitReached(_, Limit::Rooms) => {
                self.numeric("403", &[target, "No such channel (the server has too many channels)"])
            }
            ChatError::NoBot(..) => self.notice(&e.to_string()),
            ChatError::Throttled(secs) => self.fail(
                command,
                "RATE_LIMITED",
                &[],
                &format!("too many attempts, wait {secs} seconds and try again"),
            ),
            ChatError::Unavailable(what) => self.fail(
                command,
                "TEMPORARILY_UNAVAILABLE",
                &[target],
                &format!("server error ({what}); the command had no effect, try again"),
            ),
            ChatError::RegistrationClosed => {
                self.fail(command, "TEMPORARILY_UNAVAILABLE", &[target], "registration is closed on this server")
            }
            ChatError::NotABot => self.notice(&e.to_string()),
            ChatError::NoSuchUser(_) => self.numeric("401", &[target, "No such nick/channel"]),
            ChatError::TopicTooLong(max) => {
                self.fail(command, "INVALID_PARAMS", &[target], &format!("Topic too long (at most {max} bytes)"))
            }
            ChatError::GuestsDisabled => self.numeric("451", &[&not_logged_in_text()]),
            ChatError::NickIsAccount(nick) => {
                let why = format!("Nickname is a registered account ({})", log_in_hint());
                self.numeric("433", &[nick.as_str(), &why]);
                self.nickserv(&format!("{nick} is registered: /msg NickServ IDENTIFY {nick} <password> to log in"));
            }
            ChatError::NickInUse(nick) => {
                self.numeric("433", &[nick.as_str(), "Nickname is already in use (by a guest)"])
            }
            ChatError::GuestRefused(GuestRefusal::Room(_)) => self.numeric(
                "477",
                &[target, &format!("Cannot join channel: it is not open to guests ({})", log_in_hint())],
            ),
            ChatError::GuestRefused(GuestRefusal::BotCommand(_)) => self.numeric(
                "404",
                &[target, &format!("Cannot send to channel: guests may not use bot commands ({})", log_in_hint())],
            ),
            ChatError::GuestRefused(GuestRefusal::Topic(_)) => {
                self.numeric("482", &[target, &format!("Guests may not set topics ({})", log_in_hint())])
            }
            ChatError::GuestRefused(GuestRefusal::DirectMessage(_)) => self.numeric(
                "486",
                &[target, &format!("Guests may not send private messages to members ({})", log_in_hint())],
            ),
            ChatError::BadReference => {
                self.fail(command, "INVALID_PARAMS", &[target], "TARGETS takes timestamps, not msgids")
            }
            ChatError::NotOperator(_) => self.numeric("482", &[target, "You're not channel operator"]),
            ChatError::NotAdmin => {
                self.numeric("481", &["Permission Denied- You're not an IRC operator (only server admins may)"])
            }
            ChatError::Banned(_) => self.numeric("474", &[target, "Cannot join channel (+b)"]),
            ChatError::AccountDisabled(why) => {
                self.fail(command, "ACCOUNT_DISABLED", &[target], &format!("account disabled: {why}"))
            }
            ChatError::NoSuchMessage(_, id) => {
                self.fail(command, "UNKNOWN_MSGID", &[target, &id.to_string()], "This message does not exist")
            }
            ChatError::NotInRoom(_, user) => {
                self.numeric("441", &[user.as_str(), target, "They aren't on that channel"])
            }
            ChatError::ReloadRefused(why) => self.fail(command, "CONFIG_REFUSED", &[], why),
            ChatError::GuestRefused(GuestRefusal::Password) => {
                self.fail(command, "ACCOUNT_REQUIRED", &[], &format!("Guests have no password ({})", log_in_hint()))
            }
        }
    }

    /// Writes the lines: labeled (one line: the tag on it; several: a `labeled-response` batch;
    /// none: `ACK`), and every line after the CRLF of the one before.
    pub fn finish(self, state: &mut State, out: &mut Vec<u8>) {
        let Reply { server, mut lines, label, .. } = self;
        let label = label.filter(|_| state.caps.has(caps::LABELED_RESPONSE));
        match label {
            None => {}
            Some(label) if lines.is_empty() => {
                lines.push(Message {
                    tags: vec![("label".into(), Some(label))],
                    source: Some(server),
                    command: "ACK".into(),
                    params: Vec::new(),
                });
            }
            Some(label) if lines.len() == 1 => lines[0].tags.insert(0, ("label".into(), Some(label))),
            Some(label) => {
                let id = state.batch_id();
                for m in &mut lines {
                    if !m.tags.iter().any(|(k, _)| k == "batch") {
                        m.tags.insert(0, ("batch".into(), Some(id.clone())));
                    }
                }
                let start = Message {
                    tags: vec![("label".into(), Some(label))],
                    source: Some(server.clone()),
                    command: "BATCH".into(),
                    params: vec![format!("+{id}"), "labeled-response".into()],
                };
                let end = Message {
                    tags: Vec::new(),
                    source: Some(server),
                    command: "BATCH".into(),
                    params: vec![format!("-{id}")],
                };
                lines.insert(0, start);
                lines.push(end);
            }
        }
        for m in &lines {
            m.write(out);
        }
    }
}

/// What a client that is not logged in is told it can do.
pub fn not_logged_in_text() -> String {
    "You have not logged in: use SASL PLAIN, /msg NickServ IDENTIFY <password>, \
     or create an account with /msg NickServ REGISTER <password>"
        .into()
}

/// How a guest becomes a member, in IRC terms.
pub fn log_in_hint() -> &'static str {
    "log in with SASL or /msg NickServ IDENTIFY <account> <password>, or /msg NickServ REGISTER <password>"
}

/// Where a message's tags come from: a stored message has an id, a relayed bot line only a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    Stored,
    Relayed,
}

/// The tags a connection with `caps` gets on a message from `sender` at `time` (with `id` when
/// stored). A guest has no account, so no `account` tag.
pub fn message_tags(
    caps: Caps,
    settings: &Settings,
    time: Millis,
    id: Option<u64>,
    sender: &str,
    guest: bool,
) -> Vec<(String, Option<String>)> {
    let mut tags = Vec::new();
    if caps.has(caps::SERVER_TIME) {
        tags.push(("time".into(), Some(format_time(time))));
    }
    if caps.has(caps::MESSAGE_TAGS) {
        if let Some(id) = id {
            tags.push(("msgid".into(), Some(id.to_string())));
        }
    }
    if caps.has(caps::ACCOUNT_TAG) && !guest {
        tags.push(("account".into(), Some(sender.to_string())));
    }
    if caps.has(caps::MESSAGE_TAGS) && settings.is_bot(sender) {
        tags.push(("bot".into(), None));
    }
    tags
}

/// A chat message as one IRC message (`command` PRIVMSG or NOTICE, to `target`), with the tags the
/// connection negotiated.
pub fn message_line(
    state: &State,
    settings: &Settings,
    m: &ChatMessage,
    command: &str,
    target: &str,
    stamp: Stamp,
) -> Message {
    let id = (stamp == Stamp::Stored).then_some(m.id);
    Message {
        tags: message_tags(state.caps, settings, m.time, id, m.sender.as_str(), m.guest),
        source: Some(user_source(m.sender.as_str())),
        command: command.into(),
        params: vec![target.into(), m.text.clone()],
    }
}

/// Where a message goes in IRC: `#room`, or for a direct message the nick it was sent to.
pub fn target_of(m: &ChatMessage) -> String {
    match m.room.other_peer(&m.sender) {
        Some(to) if m.room.is_direct() => to.as_str().to_string(),
        _ => format!("#{}", m.room),
    }
}

/// The tagless line of a stored message, rendered once per message and shared.
fn message_body(m: &ChatMessage) -> Bytes {
    let mut out = Vec::with_capacity(m.text.len() + 64);
    Message {
        tags: Vec::new(),
        source: Some(user_source(m.sender.as_str())),
        command: "PRIVMSG".into(),
        params: vec![target_of(m), m.text.clone()],
    }
    .write(&mut out);
    Bytes::from(out)
}

/// Appends `tags` as a message's tag prefix (`@a=b;c `), nothing when empty.
fn write_tags(tags: &[(String, Option<String>)], out: &mut Vec<u8>) {
    if tags.is_empty() {
        return;
    }
    // The tags alone, written by the serializer (escaping included), then spliced before a line.
    let mut m = Vec::new();
    Message { tags: tags.to_vec(), source: None, command: "X".into(), params: Vec::new() }.write(&mut m);
    let end = m.len() - "X\r\n".len();
    out.extend_from_slice(&m[..end]);
}

fn write_posted(state: &State, settings: &Settings, p: &crate::chat::model::Posted, out: &mut Vec<u8>) {
    let m = &p.msg;
    write_tags(&message_tags(state.caps, settings, m.time, Some(m.id), m.sender.as_str(), m.guest), out);
    out.extend_from_slice(p.rendered(IRC_RENDERING, message_body));
}

/// Appends the IRC form of an event pushed to connection `to`.
pub fn event(state: &State, settings: &Settings, ev: &Event, to: ConnId, out: &mut Vec<u8>) {
    match ev {
        Event::Message(p) | Event::Direct(p) => write_posted(state, settings, p, out),
        Event::Topic(t) => {
            let setter = t.topic.set_by.as_str();
            Message {
                tags: message_tags(state.caps, settings, t.topic.time, None, setter, false),
                source: Some(user_source(setter)),
                command: "TOPIC".into(),
                params: vec![format!("#{}", t.room), t.topic.text.clone()],
            }
            .write(out);
        }
        Event::Messages(batch) => {
            for p in batch.for_member(to) {
                write_posted(state, settings, p, out);
            }
        }
        Event::Command(c) => {
            let mut tags = message_tags(state.caps, settings, c.time, None, c.sender.as_str(), c.guest);
            tags.retain(|(k, _)| k != "msgid");
            Message {
                tags,
                source: Some(user_source(c.sender.as_str())),
                command: "PRIVMSG".into(),
                params: vec![format!("#{}", c.room), c.text.clone()],
            }
            .write(out);
        }
        Event::Joined(m) => {
            let user = m.user.as_str();
            let mut params = vec![format!("#{}", m.room)];
            if state.caps.has(caps::EXTENDED_JOIN) {
                params.push(if m.guest { "*".to_string() } else { user.to_string() });
                params.push(user.to_string());
            }
            let tags = join_tags(state.caps, user, m.guest);
            Message { tags, source: Some(user_source(user)), command: "JOIN".into(), params }.write(out);
        }
        Event::Parted(m) => {
            let user = m.user.as_str();
            Message {
                tags: join_tags(state.caps, user, m.guest),
                source: Some(user_source(user)),
                command: "PART".into(),
                params: vec![format!("#{}", m.room)],
            }
            .write(out);
        }
        Event::Kicked(k) => {
            let params = vec![format!("#{}", k.room), k.user.to_string(), k.reason.clone()];
            Message::new("KICK", params).with_source(user_source(k.by.as_str())).write(out);
        }
        Event::RoomDeleted(d) => {
            // IRC has no word for a channel that is gone: each member is kicked from it.
            let why = match d.reason.is_empty() {
                true => "channel deleted by a server admin".to_string(),
                false => format!("channel deleted by a server admin: {}", d.reason),
            };
            let params = vec![format!("#{}", d.room), state.client().to_string(), why];
            Message::new("KICK", params).with_source(user_source(d.by.as_str())).write(out);
        }
        Event::Deleted(d) => {
            // Only to clients that said they understand REDACT (draft/message-redaction).
            if state.caps.has(caps::MESSAGE_REDACTION) {
                let params = vec![format!("#{}", d.room), d.id.to_string()];
                Message::new("REDACT", params).with_source(user_source(d.by.as_str())).write(out);
            }
        }
        Event::Roles(c) => {
            let (mode, arg) = match c.kind {
                RoleKind::Op => ("+o", c.user.to_string()),
                RoleKind::Deop => ("-o", c.user.to_string()),
                RoleKind::Ban => ("+b", ban_mask(c.user.as_str())),
                RoleKind::Unban => ("-b", ban_mask(c.user.as_str())),
            };
            let params = vec![format!("#{}", c.room), mode.to_string(), arg];
            Message::new("MODE", params).with_source(user_source(c.by.as_str())).write(out);
        }
        Event::Notice(n) => {
            let text = format!("*** Notice from {}: {}", n.from, n.text);
            let params = vec![state.client().to_string(), text];
            Message::new("NOTICE", params).with_source(settings.server_name.clone()).write(out);
        }
        Event::Close(n) => {
            Message::new("ERROR", [format!("Closing link: {}", n.text)]).write(out);
        }
    }
}

/// How a ban on an account shows in IRC: `nick!*@*`.
pub fn ban_mask(user: &str) -> String {
    format!("{user}!*@*")
}

/// The tags on a JOIN or PART: the account (account-tag); none for a guest.
pub fn join_tags(caps: Caps, user: &str, guest: bool) -> Vec<(String, Option<String>)> {
    match caps.has(caps::ACCOUNT_TAG) && !guest {
        true => vec![("account".into(), Some(user.to_string()))],
        false => Vec::new(),
    }
}
