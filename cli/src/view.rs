//! How things are shown to the person: the sentences chat says (joined, left, who is in a room,
//! pages of history, replies it did not expect), counted nouns (`plural`), network and TLS
//! failures put into words (the library's own text only with `--verbose`), and the prompt naming
//! the current room. Every line goes out in the format of `render`.

use std::io;
use std::sync::{Arc, Mutex};

use chatd_proto::names::RoomName;
use chatd_proto::{ChatMessage, Event, Reply};

use crate::args::Config;
use crate::command::HELP;
use crate::connection::Lost;
use crate::render::{Mark, Output, Style};

/// `1 member`, `2 members`, `0 members`.
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// An I/O failure in words a person understands. With `verbose`, the library's text follows.
pub fn explain_io(e: &io::Error, verbose: bool) -> String {
    let words = io_words(e);
    match words {
        Some(w) if verbose => format!("{w} [{e}]"),
        Some(w) => w.to_string(),
        None => format!("{e}"),
    }
}

fn io_words(e: &io::Error) -> Option<&'static str> {
    use io::ErrorKind::*;
    let text = e.to_string();
    Some(match e.kind() {
        UnexpectedEof => "the server closed the connection",
        ConnectionReset | ConnectionAborted | BrokenPipe => "the connection was cut off",
        ConnectionRefused => "the connection was refused (is chatd running at that address?)",
        TimedOut => "the server did not answer in time",
        HostUnreachable | NetworkUnreachable | NetworkDown | AddrNotAvailable => "the server cannot be reached",
        InvalidData => tls_words(&text).unwrap_or("the server sent something chat cannot read"),
        _ if text.contains("lookup address") => "the server's host name cannot be resolved",
        _ => tls_words(&text)?,
    })
}

/// rustls reports TLS failures as I/O errors whose text names the problem.
fn tls_words(text: &str) -> Option<&'static str> {
    Some(if text.contains("NotValidForName") {
        "the server's certificate is not valid for this name (see --server-name)"
    } else if text.contains("Expired") {
        "the server's certificate has expired"
    } else if text.contains("NotValidYet") {
        "the server's certificate is not valid yet (check the clock)"
    } else if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        "the server's certificate is not signed by an authority chat trusts"
    } else if text.contains("does not match the pinned one") {
        "the server's certificate is not the one pinned"
    } else if text.contains("alert") || text.contains("HandshakeFailure") || text.contains("CorruptMessage") {
        "the TLS handshake failed (is this a chatd TLS port?)"
    } else {
        return None;
    })
}

/// Why a connection ended, in words.
pub fn explain_lost(lost: &Lost, verbose: bool) -> String {
    match lost {
        Lost::Closed => "the server closed the connection".into(),
        Lost::Bye(reason) if reason.is_empty() => "the server closed the connection".into(),
        Lost::Bye(reason) => format!("the server closed the connection ({reason})"),
        Lost::Failed(e) => explain_io(e, verbose),
        Lost::Silent => "the server stopped answering".into(),
    }
}

/// The server's words for a refusal: `text (code)`.
pub fn refusal(r: &Reply) -> String {
    format!("{} ({})", r.text.as_deref().unwrap_or("error"), r.code)
}

/// What is shown, and where.
pub struct View {
    out: Arc<Output>,
    style: Style,
    prompt: Arc<Mutex<String>>,
    cfg: Config,
}

impl View {
    pub fn new(cfg: Config, out: Arc<Output>, prompt: Arc<Mutex<String>>) -> View {
        View { out, style: Style { color: cfg.color }, prompt, cfg }
    }

    /// `-- text`
    pub fn info(&self, text: &str) {
        self.out.line(self.style.info(text));
    }

    /// `!! text`
    pub fn error(&self, text: &str) {
        self.out.line(self.style.error(text));
    }

    /// A chat message, marked when it is a bot command line or a bot's reply.
    pub fn message(&self, m: &ChatMessage) {
        let mark = if m.is_command {
            Mark::Cmd
        } else if self.cfg.is_bot(&m.sender) {
            Mark::Bot
        } else {
            Mark::None
        };
        self.out.line(self.style.message(m, mark));
    }

    /// `* bob joined` / `* bob left`.
    pub fn presence(&self, room: &str, user: &str, what: &str) {
        self.out.line(self.style.presence(room, user, what));
    }

    pub fn set_prompt(&self, current: Option<&RoomName>) {
        *self.prompt.lock().unwrap() = match current {
            Some(r) => format!("#{r}> "),
            None => "> ".to_string(),
        };
    }

    pub fn help(&self, joined: &[RoomName]) {
        for line in HELP.lines() {
            self.out.line(line.to_string());
        }
        if !joined.is_empty() {
            let rooms: Vec<String> = joined.iter().map(|r| format!("#{r}")).collect();
            self.info(&format!("joined: {}", rooms.join(", ")));
        }
    }

    pub fn joined(&self, room: &RoomName, members: Option<usize>) {
        match members {
            Some(n) => self.info(&format!("joined #{room} ({})", plural(n, "member"))),
            None => self.info(&format!("joined #{room}")),
        }
    }

    pub fn rejoined(&self, room: &RoomName, missed: usize) {
        self.info(&format!("rejoined #{room}: {}", plural(missed, "missed message")));
    }

    pub fn now_talking_in(&self, room: &RoomName) {
        self.info(&format!("now talking in #{room}"));
    }

    pub fn rooms(&self, rooms: &[(String, String)]) {
        let list: Vec<String> = rooms.iter().map(|(room, n)| format!("#{room} ({n})")).collect();
        self.info(&format!("rooms: {}", if list.is_empty() { "none".into() } else { list.join(", ") }));
    }

    pub fn who(&self, room: &RoomName, users: &[String]) {
        self.info(&format!("#{room}: {} ({})", users.join(", "), plural(users.len(), "user")));
    }

    /// `/who` refused: 403 (not a member) and 404 (no such room) in words.
    pub fn who_refused(&self, room: &RoomName, r: &Reply) {
        match r.code {
            403 => self.error(&format!("who #{room}: only members see who is in a room (/join {room} first)")),
            404 => self.error(&format!("who #{room}: there is no such room")),
            _ => self.error(&format!("who #{room}: {}", refusal(r))),
        }
    }

    pub fn history_page(&self, room: &RoomName, n: usize) {
        if n == 0 {
            self.info(&format!("#{room}: no older messages"));
        } else {
            self.info(&format!("#{room}: {} (/more for more)", plural(n, "older message")));
        }
    }

    pub fn disconnected(&self, lost: &Lost) {
        self.error(&format!("disconnected: {}", explain_lost(lost, self.cfg.verbose)));
    }

    /// A reply that answers nothing the client is waiting for, shown as the server wrote it.
    pub fn reply(&self, r: &Reply) {
        let mut s = format!("{} {}", r.code, r.verb);
        for f in &r.fields {
            s.push(' ');
            s.push_str(f);
        }
        if let Some(t) = &r.text {
            s.push_str(&format!(" :{t}"));
        }
        if r.code >= 400 {
            self.error(&s);
        } else {
            self.info(&s);
        }
    }

    /// An event the client does not know, shown as the server wrote it.
    pub fn event(&self, e: &Event) {
        let mut s = format!("* {} {}", e.name, e.fields.join(" "));
        if let Some(t) = &e.text {
            s.push_str(&format!(" :{t}"));
        }
        self.info(&s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        assert_eq!(plural(0, "member"), "0 members");
        assert_eq!(plural(1, "member"), "1 member");
        assert_eq!(plural(2, "member"), "2 members");
        assert_eq!(plural(1, "missed message"), "1 missed message");
        assert_eq!(plural(50, "older message"), "50 older messages");
    }

    #[test]
    fn failures_in_words() {
        let eof = io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "peer closed connection without sending TLS close_notify: https://docs.rs/rustls/latest/rustls/manual/_03_howto/index.html#unexpected-eof",
        );
        assert_eq!(explain_io(&eof, false), "the server closed the connection");
        assert!(explain_io(&eof, true).starts_with("the server closed the connection ["));
        assert!(explain_io(&eof, true).contains("close_notify"));
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(explain_io(&refused, false).starts_with("the connection was refused"));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(explain_io(&reset, false), "the connection was cut off");
        let timeout = io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out");
        assert_eq!(explain_io(&timeout, false), "the server did not answer in time");
        let cert = io::Error::new(io::ErrorKind::InvalidData, "invalid peer certificate: UnknownIssuer");
        assert_eq!(explain_io(&cert, false), "the server's certificate is not signed by an authority chat trusts");
        let name = io::Error::new(io::ErrorKind::InvalidData, "invalid peer certificate: NotValidForName");
        assert!(explain_io(&name, false).contains("not valid for this name"));
        let dns = io::Error::other("failed to lookup address information: Name or service not known");
        assert_eq!(explain_io(&dns, false), "the server's host name cannot be resolved");
        // Something unforeseen is shown as it is rather than hidden.
        let odd = io::Error::other("something odd");
        assert_eq!(explain_io(&odd, false), "something odd");
    }

    #[test]
    fn lost_in_words() {
        assert_eq!(explain_lost(&Lost::Closed, false), "the server closed the connection");
        assert_eq!(
            explain_lost(&Lost::Bye("server shutting down".into()), false),
            "the server closed the connection (server shutting down)"
        );
        assert_eq!(explain_lost(&Lost::Silent, true), "the server stopped answering");
    }
}
