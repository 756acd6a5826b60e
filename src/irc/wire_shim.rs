//! A stand-in for `chatd_proto::irc::Message` (being written on branch `irc-parser`), with the same
//! API, until that branch is merged: one IRC message (tags, source, command, parameters), parsed
//! from a line and written with CRLF and tag escaping. Deleted once the real one is in.

use std::fmt;

/// One IRC message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    pub tags: Vec<(String, Option<String>)>,
    pub source: Option<String>,
    pub command: String,
    pub params: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Empty,
    NoCommand,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Empty => f.write_str("empty line"),
            ParseError::NoCommand => f.write_str("no command"),
        }
    }
}

impl std::error::Error for ParseError {}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn escape(v: &str, out: &mut Vec<u8>) {
    for c in v.chars() {
        match c {
            ';' => out.extend_from_slice(b"\\:"),
            ' ' => out.extend_from_slice(b"\\s"),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\n' => out.extend_from_slice(b"\\n"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

impl Message {
    /// Parses one line (without its CRLF; a trailing CR or LF is tolerated).
    pub fn parse(line: &str) -> Result<Message, ParseError> {
        let mut rest = line.trim_end_matches(['\r', '\n']).trim_start_matches(' ');
        if rest.is_empty() {
            return Err(ParseError::Empty);
        }
        let mut m = Message::default();
        if let Some(r) = rest.strip_prefix('@') {
            let (tags, after) = r.split_once(' ').unwrap_or((r, ""));
            for tag in tags.split(';').filter(|t| !t.is_empty()) {
                let (k, v) = match tag.split_once('=') {
                    Some((k, v)) => (k, Some(unescape(v))),
                    None => (tag, None),
                };
                let v = v.filter(|v| !v.is_empty());
                match m.tags.iter_mut().find(|(key, _)| key == k) {
                    Some(slot) => slot.1 = v,
                    None => m.tags.push((k.to_string(), v)),
                }
            }
            rest = after.trim_start_matches(' ');
        }
        if let Some(r) = rest.strip_prefix(':') {
            let (source, after) = r.split_once(' ').unwrap_or((r, ""));
            m.source = Some(source.to_string());
            rest = after.trim_start_matches(' ');
        }
        let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if command.is_empty() {
            return Err(ParseError::NoCommand);
        }
        m.command = command.to_string();
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if let Some(trailing) = rest.strip_prefix(':') {
                m.params.push(trailing.to_string());
                break;
            }
            let (param, after) = rest.split_once(' ').unwrap_or((rest, ""));
            m.params.push(param.to_string());
            rest = after;
        }
        Ok(m)
    }

    /// Appends the message and its CRLF.
    pub fn write(&self, out: &mut Vec<u8>) {
        if !self.tags.is_empty() {
            out.push(b'@');
            for (i, (k, v)) in self.tags.iter().enumerate() {
                if i > 0 {
                    out.push(b';');
                }
                out.extend_from_slice(k.as_bytes());
                if let Some(v) = v {
                    out.push(b'=');
                    escape(v, out);
                }
            }
            out.push(b' ');
        }
        if let Some(source) = &self.source {
            out.push(b':');
            out.extend_from_slice(source.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(self.command.as_bytes());
        for (i, p) in self.params.iter().enumerate() {
            out.push(b' ');
            let last = i + 1 == self.params.len();
            if last && (p.is_empty() || p.contains(' ') || p.starts_with(':')) {
                out.push(b':');
            }
            out.extend_from_slice(p.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = Message::parse("@a=b\\sc;d :nick!u@h PRIVMSG #chan :hello there").unwrap();
        assert_eq!(m.tags, vec![("a".into(), Some("b c".into())), ("d".into(), None)]);
        assert_eq!(m.source.as_deref(), Some("nick!u@h"));
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, ["#chan", "hello there"]);
        let mut out = Vec::new();
        m.write(&mut out);
        assert_eq!(out, b"@a=b\\sc;d :nick!u@h PRIVMSG #chan :hello there\r\n");
        assert_eq!(Message::parse("CAP  LS   302").unwrap().params, ["LS", "302"]);
        assert_eq!(Message::parse("PRIVMSG #a ::)").unwrap().params, ["#a", ":)"]);
    }
}
