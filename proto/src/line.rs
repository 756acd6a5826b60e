//! Server lines: `reply = [@label SP] code SP verb *(SP field) [SP ":" text]` and
//! `event = "*" SP EVENT *(SP field) [SP ":" text]`. Formatting (used by the daemon) and parsing
//! (used by clients) live side by side so they cannot drift apart.

use std::io::Write as _;

/// A line the server sent: a reply to a command, or a pushed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerLine {
    Reply(Reply),
    Event(Event),
}

/// `[@label] code VERB fields... [:text]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub label: Option<String>,
    pub code: u16,
    pub verb: String,
    pub fields: Vec<String>,
    pub text: Option<String>,
}

/// `* NAME fields... [:text]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub fields: Vec<String>,
    pub text: Option<String>,
}

/// A chat message as carried by `* MSG`, `* CMD` and the `130` history lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub room: String,
    /// `None` for a bot command line (`* CMD`), which is never stored.
    pub id: Option<u64>,
    pub time: String,
    pub sender: String,
    pub text: String,
    /// True for a bot command line (`* CMD`).
    pub is_command: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed server line: {0}")]
pub struct ParseError(pub String);

impl ServerLine {
    /// Parses one server line (without its line ending; a trailing CR is tolerated).
    pub fn parse(line: &str) -> Result<ServerLine, ParseError> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        let bad = || ParseError(line.to_string());
        let (head, text) = split_text(line);
        let mut tokens = head.split(' ').filter(|t| !t.is_empty());
        let mut first = tokens.next().ok_or_else(bad)?;
        if first == "*" {
            let name = tokens.next().ok_or_else(bad)?.to_string();
            let fields = tokens.map(str::to_string).collect();
            return Ok(ServerLine::Event(Event { name, fields, text }));
        }
        let mut label = None;
        if let Some(l) = first.strip_prefix('@') {
            label = Some(l.to_string());
            first = tokens.next().ok_or_else(bad)?;
        }
        if first.len() != 3 {
            return Err(bad());
        }
        let code: u16 = first.parse().map_err(|_| bad())?;
        let verb = tokens.next().ok_or_else(bad)?.to_string();
        let fields = tokens.map(str::to_string).collect();
        Ok(ServerLine::Reply(Reply { label, code, verb, fields, text }))
    }

    /// The chat message this line carries, if it is `* MSG`, `* CMD` or a `130` history line.
    pub fn as_message(&self) -> Option<ChatMessage> {
        match self {
            ServerLine::Event(e) if e.name == "MSG" && e.fields.len() == 4 => Some(ChatMessage {
                room: e.fields[0].clone(),
                id: Some(e.fields[1].parse().ok()?),
                time: e.fields[2].clone(),
                sender: e.fields[3].clone(),
                text: e.text.clone().unwrap_or_default(),
                is_command: false,
            }),
            ServerLine::Event(e) if e.name == "CMD" && e.fields.len() == 3 => Some(ChatMessage {
                room: e.fields[0].clone(),
                id: None,
                time: e.fields[1].clone(),
                sender: e.fields[2].clone(),
                text: e.text.clone().unwrap_or_default(),
                is_command: true,
            }),
            ServerLine::Reply(r) if r.code == 130 && r.fields.len() == 4 => Some(ChatMessage {
                room: r.fields[0].clone(),
                id: Some(r.fields[1].parse().ok()?),
                time: r.fields[2].clone(),
                sender: r.fields[3].clone(),
                text: r.text.clone().unwrap_or_default(),
                is_command: false,
            }),
            _ => None,
        }
    }

    pub fn is_event(&self, name: &str) -> bool {
        matches!(self, ServerLine::Event(e) if e.name == name)
    }
}

impl Reply {
    /// True for a final reply (2xx, 4xx, 5xx); false for the 1xx data lines that precede it.
    pub fn is_final(&self) -> bool {
        self.code >= 200
    }
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

/// Splits off the free text: the first field that starts with `:` runs to the end of the line.
fn split_text(line: &str) -> (&str, Option<String>) {
    if let Some(rest) = line.strip_prefix(':') {
        return ("", Some(rest.to_string()));
    }
    match line.find(" :") {
        Some(i) => (&line[..i], Some(line[i + 2..].to_string())),
        None => (line, None),
    }
}

/// Appends a reply line (with CRLF) to `out`. Fields must not contain spaces or start with `:`.
pub fn write_reply(out: &mut Vec<u8>, label: Option<&str>, code: u16, verb: &str, fields: &[&str], text: Option<&str>) {
    if let Some(l) = label {
        out.push(b'@');
        out.extend_from_slice(l.as_bytes());
        out.push(b' ');
    }
    let _ = write!(out, "{code:03} {verb}");
    finish(out, fields, text);
}

/// Appends an event line (with CRLF) to `out`.
pub fn write_event(out: &mut Vec<u8>, name: &str, fields: &[&str], text: Option<&str>) {
    out.extend_from_slice(b"* ");
    out.extend_from_slice(name.as_bytes());
    finish(out, fields, text);
}

fn finish(out: &mut Vec<u8>, fields: &[&str], text: Option<&str>) {
    for f in fields {
        debug_assert!(!f.is_empty() && !f.contains(' ') && !f.starts_with(':'), "bad field {f:?}");
        out.push(b' ');
        out.extend_from_slice(f.as_bytes());
    }
    if let Some(t) = text {
        out.extend_from_slice(b" :");
        out.extend_from_slice(t.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_round_trip() {
        let mut out = Vec::new();
        write_reply(&mut out, Some("a1"), 200, "MSG", &["general", "8", "2026-11-29T04:48:06.123Z"], None);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s, "@a1 200 MSG general 8 2026-11-29T04:48:06.123Z\r\n");
        let ServerLine::Reply(r) = ServerLine::parse(&s).unwrap() else { panic!() };
        assert_eq!(r.label.as_deref(), Some("a1"));
        assert_eq!(r.code, 200);
        assert_eq!(r.fields, ["general", "8", "2026-11-29T04:48:06.123Z"]);
        assert_eq!(r.text, None);
    }

    #[test]
    fn event_text_keeps_colons_and_spaces() {
        let mut out = Vec::new();
        write_event(&mut out, "MSG", &["general", "9", "2026-11-29T04:48:09.870Z", "bob"], Some(" a :b  c "));
        let s = String::from_utf8(out).unwrap();
        let line = ServerLine::parse(&s).unwrap();
        let m = line.as_message().unwrap();
        assert_eq!(m.text, " a :b  c ");
        assert_eq!(m.id, Some(9));
        assert_eq!(m.sender, "bob");
        assert!(!m.is_command);
    }

    #[test]
    fn command_event_is_marked() {
        let line = ServerLine::parse("* CMD general 2026-11-29T04:48:12.001Z alice :/stock=aapl.us").unwrap();
        let m = line.as_message().unwrap();
        assert!(m.is_command);
        assert_eq!(m.id, None);
        assert_eq!(m.text, "/stock=aapl.us");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(ServerLine::parse("").is_err());
        assert!(ServerLine::parse("hello").is_err());
        assert!(ServerLine::parse("@x").is_err());
    }
}
