//! The IRC front end (IRC.md): lines are parsed as IRC messages (`wire`), applied to the
//! connection's `Client` (`apply`, one function per command; `register` for connection
//! registration, CAP, SASL and the account commands), and answered in IRC numerics, `FAIL`s and
//! messages (`reply`, the one place where a core error becomes an IRC reply). The connection's IRC
//! state (nick, negotiated capabilities, registration) lives here; everything else about a
//! connection (timers, flood control, writing) is `session`'s, as for the native front end.

pub mod apply;
pub mod caps;
pub mod register;
pub mod reply;

/// The IRC wire format (parser and serializer), shared with clients and tests.
pub use chatd_proto::irc as wire;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use crate::chat::client::{Client, Settled};
use crate::chat::model::{ConnId, Event};
use crate::chat::names::{RoomName, UserName};
use crate::chat::Chat;
use crate::config::{Config, Limits};
use crate::net::admission::ConnectionGate;
use crate::session::{Disconnect, Flow, Protocol};
use caps::Caps;
use reply::Reply;

/// What a client that sends plaintext to the IRC TLS port is told before the connection closes.
pub const PLAINTEXT_HINT: &[u8] =
    b"ERROR :Closing link: this port speaks IRC over TLS; connect with TLS (irssi: /connect -tls HOST PORT)\r\n";

/// The most bytes of an IRC line without its tags, CRLF included (RFC 1459, modern IRC).
pub const MAX_LINE: usize = wire::MAX_REST_BYTES;
/// The most bytes of a client's tag data (IRCv3 message-tags), without the `@` and the space.
pub const MAX_CLIENT_TAGS: usize = wire::MAX_CLIENT_TAG_DATA;

/// The shared limits with the IRC line length: a frame may hold the tags and the 512-byte line;
/// `apply` checks each part and answers 417 to a line over either.
pub fn session_limits(limits: &Limits) -> Limits {
    Limits { max_line_bytes: MAX_LINE + MAX_CLIENT_TAGS + 2, ..limits.clone() }
}

/// What every IRC connection shares: the server's names and MOTD, and where counts come from.
pub struct Settings {
    pub server_name: String,
    pub network: String,
    /// The MOTD's lines; empty: none. A reload replaces them.
    pub motd: RwLock<Vec<String>>,
    /// The most bytes of a message's text; a reload replaces it.
    max_message_bytes: AtomicUsize,
    pub rooms_per_connection: usize,
    /// When the server started, for 003.
    pub created: String,
    pub chat: Arc<Chat>,
    pub gate: Arc<ConnectionGate>,
}

impl Settings {
    pub fn new(config: &Config, chat: Arc<Chat>, gate: Arc<ConnectionGate>) -> Settings {
        Settings {
            server_name: config.irc.server_name.clone(),
            network: config.irc.network.clone(),
            motd: RwLock::new(motd_lines(&config.irc.motd)),
            max_message_bytes: AtomicUsize::new(config.limits.max_message_bytes),
            rooms_per_connection: config.limits.rooms_per_connection,
            created: crate::chat::model::format_time(crate::chat::model::now_millis()),
            chat,
            gate,
        }
    }

    /// The MOTD's lines now.
    pub fn motd(&self) -> Vec<String> {
        self.motd.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the MOTD (a reload): clients see it on their next MOTD or connection.
    pub fn set_motd(&self, motd: &str) {
        *self.motd.write().unwrap_or_else(|p| p.into_inner()) = motd_lines(motd);
    }

    /// Whether `user` is a configured bot account (the `bot` tag, bot mode `B`).
    pub fn is_bot(&self, user: &str) -> bool {
        UserName::parse(user).is_some_and(|u| self.chat.is_bot(&u))
    }

    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes.load(Ordering::Relaxed)
    }

    /// Replaces the message length limit (a reload), for the messages that come next.
    pub fn set_max_message_bytes(&self, bytes: usize) {
        self.max_message_bytes.store(bytes, Ordering::Relaxed);
    }
}

/// The MOTD text of the configuration as lines.
pub fn motd_lines(motd: &str) -> Vec<String> {
    motd.lines().map(str::to_string).collect()
}

/// What a post carries until it settles: how to echo or acknowledge it.
pub struct PostTag {
    /// The `label` of the PRIVMSG/NOTICE, when labeled-response is on.
    pub label: Option<String>,
    /// `PRIVMSG` or `NOTICE`, as the client sent it (for echo-message).
    pub command: &'static str,
}

/// A SASL exchange under way.
#[derive(Debug, Default)]
pub struct Sasl {
    /// The base64 received so far (chunks of 400 bytes).
    pub buffer: String,
}

/// One IRC connection's state.
#[derive(Default)]
pub struct State {
    /// The nick: as given before logging in, the account name after.
    pub nick: Option<String>,
    /// USER's username and realname, once sent.
    pub user: Option<(String, String)>,
    /// PASS, kept until registration completes.
    pub pass: Option<String>,
    pub caps: Caps,
    /// 302 once the client sent `CAP LS 302`.
    pub cap_version: u32,
    /// CAP negotiation holds registration open.
    pub negotiating: bool,
    /// The welcome (001) was sent.
    pub registered: bool,
    pub sasl: Option<Sasl>,
    /// The channels joined, in joining order.
    pub joined: Vec<RoomName>,
    pub away: Option<String>,
    /// User mode `i` (set by the client; chatd has no hidden users, it only reports it).
    pub invisible: bool,
    /// The nick last refused for a guest (433): registration waits for another NICK or a login
    /// instead of asking again after every line.
    pub refused_nick: Option<String>,
    next_batch: u64,
}

impl State {
    /// The nick for the first parameter of numerics: `*` until there is one.
    pub fn client(&self) -> &str {
        self.nick.as_deref().unwrap_or("*")
    }

    /// A fresh batch reference.
    pub fn batch_id(&mut self) -> String {
        self.next_batch += 1;
        format!("b{}", self.next_batch)
    }
}

/// The IRC protocol for one connection.
pub struct Irc {
    pub settings: Arc<Settings>,
    pub state: State,
}

pub type IrcClient = Client<PostTag>;

impl Irc {
    pub fn new(settings: Arc<Settings>) -> Irc {
        Irc { settings, state: State::default() }
    }

    /// A reply to a command carrying `label` (when labeled-response is on).
    pub fn reply(&self, label: Option<String>) -> Reply {
        Reply::new(self.settings.server_name.clone(), self.state.client().to_string(), label)
    }

    /// Writes a finished reply.
    pub fn finish(&mut self, reply: Reply, out: &mut Vec<u8>) {
        reply.finish(&mut self.state, out);
    }

    /// The echo (echo-message) or acknowledgement of a settled post, or its failure.
    pub fn render_settled(&mut self, settled: Settled<PostTag>, out: &mut Vec<u8>) {
        let m = &settled.message.msg;
        let mut r = self.reply(settled.tag.label);
        let target = reply::target_of(m);
        match &settled.result {
            Ok(()) => {
                if self.state.caps.has(caps::ECHO_MESSAGE) {
                    let msg = reply::message_line(
                        &self.state,
                        &self.settings,
                        m,
                        settled.tag.command,
                        &target,
                        reply::Stamp::Stored,
                    );
                    r.push(msg);
                }
            }
            Err(e) => r.error(e, settled.tag.command, &target),
        }
        self.finish(r, out);
    }
}

impl Protocol for Irc {
    type Tag = PostTag;

    /// IRC servers speak only when spoken to.
    fn greet(&mut self, _out: &mut Vec<u8>) {}

    async fn line(&mut self, client: &mut Client<Self::Tag>, line: Bytes, out: &mut Vec<u8>) -> Flow {
        apply::apply(self, client, line, out).await
    }

    fn line_too_long(&mut self, _max: usize, out: &mut Vec<u8>) {
        let mut r = self.reply(None);
        r.numeric("417", &["Input line was too long"]);
        self.finish(r, out);
    }

    fn event(&mut self, event: &Event, to: ConnId, out: &mut Vec<u8>) {
        reply::event(&self.state, &self.settings, event, to, out);
        // A kick of this user, or the channel's deletion: no longer on the channel.
        let gone = match event {
            Event::Kicked(k) if k.user.as_str() == self.state.client() => Some(&k.room),
            Event::RoomDeleted(d) => Some(&d.room),
            _ => None,
        };
        if let Some(room) = gone {
            self.state.joined.retain(|j| j != room);
        }
    }

    fn settled(&mut self, settled: Settled<Self::Tag>, out: &mut Vec<u8>) {
        self.render_settled(settled, out);
    }

    fn ping(&mut self, token: &str, out: &mut Vec<u8>) {
        let mut r = self.reply(None);
        r.raw(None, "PING", &[token]);
        self.finish(r, out);
    }

    fn flood_notice(&mut self, out: &mut Vec<u8>) {
        let mut r = self.reply(None);
        r.notice("slow down: you are sending too fast, your lines are being delayed");
        self.finish(r, out);
    }

    fn bye(&mut self, why: Disconnect, out: &mut Vec<u8>) {
        let mut r = self.reply(None);
        r.raw(None, "ERROR", &[&format!("Closing link: {}", why.reason())]);
        self.finish(r, out);
    }
}
