//! The IRC wire format for chatd's IRC front end: one line into an owned [`Message`] (IRCv3 tags,
//! source, command, parameters) and back. It owns the framing rules only — tag escaping, the
//! `:` before a last parameter, the byte limits — and knows no command: what `PRIVMSG` means is the
//! front end's business.
//!
//! The texts it follows: the modern IRC client protocol (modern.ircdocs.horse, "Messages") for the
//! line grammar, and IRCv3 message-tags (ircv3.net/specs/extensions/message-tags) for tags, their
//! escaping and their size limit. Where those leave room it does what the public parser test vectors
//! (ircdocs/parser-tests, `proto/tests/irc_parser_tests.rs`) expect: a run of spaces separates atoms,
//! trailing spaces add no parameter, the last of duplicated tags wins.
//!
//! Plain string slicing rather than nom: the grammar is "split on spaces, with three markers", and
//! slices say that more directly than combinators.

use std::borrow::Cow;
use std::collections::HashSet;

/// Tag data a client may send: the bytes between the leading `@` and the space after the tags.
/// IRCv3 message-tags, "Size limit": "Clients MUST NOT send messages with tag data exceeding 4094
/// bytes" and servers "MUST reply with ERR_INPUTTOOLONG (417)" when one does, never truncating.
/// 4094 is 4096 minus the `@` and the space. A server's line may carry a longer section (its own
/// 4094 bytes, a `;`, the client's 4094: 8191 with `@` and space), which matters to a client
/// reading server lines, not to this parser of what clients send.
pub const MAX_CLIENT_TAG_DATA: usize = 4094;

/// The rest of a line (source, command, parameters) including its CRLF: 512 bytes, unchanged by
/// message-tags ("The size limit for the rest of the message remains unchanged at 512 bytes").
pub const MAX_REST_BYTES: usize = 512;

/// Tags as [`Message`] holds them.
type Tags = Vec<(String, Option<String>)>;

/// The numeric a server answers a too-long line with (IRCv3 message-tags, modern.ircdocs.horse).
pub const ERR_INPUTTOOLONG: u16 = 417;

/// One IRC message, owned. `parse` and `write` are inverse on every message whose atoms are valid
/// (see [`Message::write`]); `parse` normalises what the protocol says is equivalent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Tags in line order, values unescaped. A key appears at most once; an empty value is `None`
    /// (message-tags: `foo=` and `foo` are equivalent, and a parser may normalise to the latter).
    pub tags: Vec<(String, Option<String>)>,
    /// The source without its leading `:` (`nick!user@host` or a server name); see [`split_source`].
    pub source: Option<String>,
    /// The command as sent (`privmsg`, `PRIVMSG` or `001`): callers compare case-insensitively, for
    /// instance with [`Message::is`].
    pub command: String,
    /// The parameters, the trailing one without its `:`.
    pub params: Vec<String>,
}

/// Why a line is not an IRC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty line")]
    Empty,
    #[error("line is not valid UTF-8")]
    InvalidUtf8,
    #[error("NUL, CR or LF inside the line")]
    ForbiddenChar,
    #[error("tag data is {0} bytes, more than {MAX_CLIENT_TAG_DATA}")]
    TagsTooLong(usize),
    #[error("line is {0} bytes without its tags, more than {MAX_REST_BYTES} with CRLF")]
    InputTooLong(usize),
    #[error("empty source after ':'")]
    EmptySource,
    #[error("no command")]
    NoCommand,
    #[error("malformed command {0:?}")]
    BadCommand(String),
}

impl ParseError {
    /// The numeric a server answers with, when the protocol names one: 417 ERR_INPUTTOOLONG for
    /// both length limits. Other malformed lines have no numeric; servers commonly ignore them.
    pub fn numeric(&self) -> Option<u16> {
        match self {
            ParseError::TagsTooLong(_) | ParseError::InputTooLong(_) => Some(ERR_INPUTTOOLONG),
            _ => None,
        }
    }
}

impl Message {
    /// A message without tags or source.
    pub fn new<I>(command: impl Into<String>, params: I) -> Message
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Message {
            tags: Vec::new(),
            source: None,
            command: command.into(),
            params: params.into_iter().map(Into::into).collect(),
        }
    }

    /// Sets a tag, replacing an earlier one of the same key (a key appears once per message).
    pub fn with_tag(mut self, key: impl Into<String>, value: Option<&str>) -> Message {
        let key = key.into();
        self.tags.retain(|(k, _)| *k != key);
        self.tags.push((key, value.filter(|v| !v.is_empty()).map(str::to_string)));
        self
    }

    /// Sets the source (`nick!user@host` or a server name).
    pub fn with_source(mut self, source: impl Into<String>) -> Message {
        self.source = Some(source.into());
        self
    }

    /// The tag of that key: `None` when absent, `Some(None)` when present without a value.
    pub fn tag(&self, key: &str) -> Option<Option<&str>> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_deref())
    }

    /// Whether the command is `command`, ignoring ASCII case (IRC commands are case-insensitive).
    pub fn is(&self, command: &str) -> bool {
        self.command.eq_ignore_ascii_case(command)
    }

    /// Parses one line as received, with or without its line ending (CRLF, or a lone LF or CR).
    /// The limits are the ones a server applies to a client's line; both answer 417.
    pub fn parse(line: &str) -> Result<Message, ParseError> {
        let line = strip_line_ending(line);
        // A NUL, CR or LF cannot be in any atom; inside the line it is smuggling, not framing.
        if line.contains(['\0', '\r', '\n']) {
            return Err(ParseError::ForbiddenChar);
        }
        if line.trim_start_matches(' ').is_empty() {
            return Err(ParseError::Empty);
        }
        let (tags, rest) = split_tags(line)?;
        // Everything after the tag section counts, spaces included, as sent with CRLF whatever
        // ending this line came with.
        if rest.len() + 2 > MAX_REST_BYTES {
            return Err(ParseError::InputTooLong(rest.len() + 2));
        }
        let (source, rest) = split_source_prefix(rest.trim_start_matches(' '))?;
        let (command, rest) = next_word(rest);
        check_command(command)?;
        Ok(Message { tags, source: source.map(str::to_string), command: command.to_string(), params: params(rest) })
    }

    /// Parses bytes as received: IRC text is UTF-8 for chatd (ISUPPORT `UTF8ONLY`).
    pub fn parse_bytes(line: &[u8]) -> Result<Message, ParseError> {
        std::str::from_utf8(line).map_err(|_| ParseError::InvalidUtf8).and_then(Message::parse)
    }

    /// Appends the message as one line with CRLF. Tag values are escaped; the last parameter gets a
    /// `:` only when it needs one (empty, has a space, or starts with `:`).
    ///
    /// It never panics and always writes exactly one line: NUL, CR and LF are left out of every atom
    /// (escaped in tag values, where a NUL has no escape and is left out too), tags whose key could
    /// not be read back (empty, or with a space, `;` or `=`) are left out, and an empty source is not
    /// written. What it cannot repair is the
    /// caller's to avoid: a command that is not one word, a source with a space, or a parameter
    /// before the last that is empty, has a space or starts with `:` — those write a line that
    /// parses to another message. It does not enforce the length limits: a sender splits its text.
    pub fn write(&self, out: &mut Vec<u8>) {
        self.write_tags(out);
        if let Some(source) = self.source.as_deref().map(strip_forbidden).filter(|s| !s.is_empty()) {
            out.push(b':');
            out.extend_from_slice(source.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(strip_forbidden(&self.command).as_bytes());
        if let Some((last, middle)) = self.params.split_last() {
            for param in middle {
                out.push(b' ');
                out.extend_from_slice(strip_forbidden(param).as_bytes());
            }
            let last = strip_forbidden(last);
            out.push(b' ');
            if last.is_empty() || last.contains(' ') || last.starts_with(':') {
                out.push(b':');
            }
            out.extend_from_slice(last.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The line `write` appends, as bytes (CRLF included).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write_tags(&self, out: &mut Vec<u8>) {
        let mut first = true;
        for (key, value) in self.tags.iter().filter(|(key, _)| writable_tag_key(key)) {
            out.push(if first { b'@' } else { b';' });
            first = false;
            out.extend_from_slice(key.as_bytes());
            let escaped = escape_tag_value(value.as_deref().unwrap_or(""));
            // An empty value is written as a bare key: the equivalent, shorter form.
            if !escaped.is_empty() {
                out.push(b'=');
                out.extend_from_slice(escaped.as_bytes());
            }
        }
        if !first {
            out.push(b' ');
        }
    }
}

/// Splits a source into (nick, user, host), each empty when missing, as the parser test vectors
/// define it: `nick!user@host`, `nick@host`, `nick!user`, or a lone nick or server name.
pub fn split_source(source: &str) -> (&str, &str, &str) {
    let (nick_user, host) = source.split_once('@').unwrap_or((source, ""));
    let (nick, user) = nick_user.split_once('!').unwrap_or((nick_user, ""));
    (nick, user, host)
}

/// Escapes a tag value (IRCv3 message-tags, "Escaping values"): `;` `\:`, space `\s`, `\` `\\`,
/// CR `\r`, LF `\n`. A NUL has no escape and cannot be on the wire, so it is left out.
pub fn escape_tag_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            ';' => out.push_str("\\:"),
            ' ' => out.push_str("\\s"),
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\0' => {}
            c => out.push(c),
        }
    }
    out
}

/// Unescapes a tag value. Per the spec and the vectors: an unknown escape drops the backslash and
/// keeps the character (`\1` is `1`); a lone backslash at the end is dropped. Reading character by
/// character keeps `\\n` a backslash and an `n`, not a backslash-newline.
pub fn unescape_tag_value(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
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

/// Whether `write` can put the key on the wire so that it reads back the same. Keys are otherwise
/// opaque: message-tags says implementations "MUST NOT perform any validation that would reject the
/// message if an invalid tag key name is used", so parsing checks nothing more.
fn writable_tag_key(key: &str) -> bool {
    !key.is_empty() && !key.contains([' ', ';', '=', '\0', '\r', '\n'])
}

/// Parses `bytes` and, when it is a message, checks that writing it gives a line that parses back to
/// the same message. The fuzz target and the property tests use it; `Err` says what differed.
pub fn check_round_trip(bytes: &[u8]) -> Result<(), String> {
    let Ok(message) = Message::parse_bytes(bytes) else { return Ok(()) };
    let written = message.to_bytes();
    match Message::parse_bytes(&written) {
        Ok(again) if again == message => Ok(()),
        again => Err(format!("{bytes:?} parsed as {message:?}, written as {written:?}, which gave {again:?}")),
    }
}

/// Drops one line ending: CRLF, or the lone LF or CR some clients send.
fn strip_line_ending(line: &str) -> &str {
    line.strip_suffix("\r\n").or_else(|| line.strip_suffix('\n')).or_else(|| line.strip_suffix('\r')).unwrap_or(line)
}

/// Splits off the tag section: `@`, the tag data, and the space that ends it. Tags open the line or
/// are not tags (a line with leading spaces then `@` reads `@...` as its command, and fails).
fn split_tags(line: &str) -> Result<(Tags, &str), ParseError> {
    let Some(after_at) = line.strip_prefix('@') else { return Ok((Vec::new(), line)) };
    let (data, rest) = after_at.split_once(' ').unwrap_or((after_at, ""));
    if data.len() > MAX_CLIENT_TAG_DATA {
        return Err(ParseError::TagsTooLong(data.len()));
    }
    Ok((parse_tags(data), rest))
}

/// Parses tag data (`key[=value];...`), keeping the final occurrence of a repeated key (the spec:
/// receivers "SHOULD disregard all but the final occurrence"). Keys are opaque and case-sensitive
/// and never reject the line (see [`writable_tag_key`]); an empty key (`@;a`, `@=v`) names nothing
/// and is dropped. Linear, whatever the number of tags.
fn parse_tags(data: &str) -> Tags {
    let raw = data
        .split(';')
        .map(|item| item.split_once('=').map_or((item, None), |(k, v)| (k, Some(v))))
        .filter(|(key, _)| !key.is_empty());
    let mut seen = HashSet::new();
    let mut tags: Vec<_> = raw
        .rev()
        .filter(|(key, _)| seen.insert(*key))
        .map(|(key, value)| {
            let value = value.map(unescape_tag_value).filter(|v| !v.is_empty());
            (key.to_string(), value)
        })
        .collect();
    tags.reverse();
    tags
}

/// Splits off `:source` and the spaces after it, when the line has one.
fn split_source_prefix(rest: &str) -> Result<(Option<&str>, &str), ParseError> {
    let Some(after_colon) = rest.strip_prefix(':') else { return Ok((None, rest)) };
    let (source, rest) = next_word(after_colon);
    if source.is_empty() {
        return Err(ParseError::EmptySource);
    }
    Ok((Some(source), rest))
}

/// A command is one word of printable ASCII (letters for named commands, three digits for
/// numerics; anything else printable is kept so the server can answer 421 with it). It cannot
/// start with `:` or `@`, which would read back as a source or tags.
fn check_command(command: &str) -> Result<(), ParseError> {
    if command.is_empty() {
        return Err(ParseError::NoCommand);
    }
    let printable = command.bytes().all(|b| b.is_ascii_graphic());
    if !printable || command.starts_with([':', '@']) {
        return Err(ParseError::BadCommand(command.to_string()));
    }
    Ok(())
}

/// The parameters: space-separated words, and a trailing one after ` :` that takes the rest of the
/// line verbatim. Runs of spaces separate, trailing spaces add nothing (the vectors' RFC 1459 reading).
fn params(mut rest: &str) -> Vec<String> {
    let mut params = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            return params;
        }
        if let Some(trailing) = rest.strip_prefix(':') {
            params.push(trailing.to_string());
            return params;
        }
        let (word, after) = next_word(rest);
        params.push(word.to_string());
        rest = after;
    }
}

/// The word up to the first space, and what follows with its leading spaces removed.
fn next_word(s: &str) -> (&str, &str) {
    let (word, rest) = s.split_once(' ').unwrap_or((s, ""));
    (word, rest.trim_start_matches(' '))
}

/// The atom without NUL, CR and LF, which would end or corrupt the line.
fn strip_forbidden(atom: &str) -> Cow<'_, str> {
    if atom.contains(['\0', '\r', '\n']) {
        Cow::Owned(atom.chars().filter(|c| !matches!(c, '\0' | '\r' | '\n')).collect())
    } else {
        Cow::Borrowed(atom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Message {
        Message::parse(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }
    fn written(m: &Message) -> String {
        String::from_utf8(m.to_bytes()).unwrap()
    }

    #[test]
    fn parses_the_parts() {
        let m = ok("@label=a1;+draft/reply=9 :alice!a@host PRIVMSG #general :hello there\r\n");
        assert_eq!(m.tag("label"), Some(Some("a1")));
        assert_eq!(m.tag("+draft/reply"), Some(Some("9")));
        assert_eq!(m.tag("msgid"), None);
        assert_eq!(m.source.as_deref(), Some("alice!a@host"));
        assert!(m.is("privmsg"));
        assert_eq!(m.params, ["#general", "hello there"]);
    }

    #[test]
    fn empty_value_is_no_value() {
        assert_eq!(ok("@a=;b COMMAND").tags, [("a".into(), None), ("b".into(), None)]);
        assert_eq!(written(&Message::new("PING", ["x"]).with_tag("a", Some(""))), "@a PING x\r\n");
    }

    #[test]
    fn tag_keys_are_opaque() {
        // Keys outside the grammar never reject the line; empty ones name nothing and are dropped.
        assert_eq!(ok("@a_b;/x;Éé PING").tags, [("a_b".into(), None), ("/x".into(), None), ("Éé".into(), None)]);
        assert_eq!(ok("@;a;;=v;b=1 PING").tags, [("a".into(), None), ("b".into(), Some("1".into()))]);
        assert!(ok("@ PING").tags.is_empty());
        // Case-sensitive: two keys, not a repeat.
        assert_eq!(ok("@K=1;k=2 PING").tags.len(), 2);
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert_eq!(Message::parse(""), Err(ParseError::Empty));
        assert_eq!(Message::parse("  \r\n"), Err(ParseError::Empty));
        assert_eq!(Message::parse("  PING x").unwrap().params, ["x"]);
        assert_eq!(Message::parse(" @a PING"), Err(ParseError::BadCommand("@a".into())));
        assert_eq!(Message::parse("@a=b"), Err(ParseError::NoCommand));
        assert_eq!(Message::parse(":src"), Err(ParseError::NoCommand));
        assert_eq!(Message::parse(": PING"), Err(ParseError::EmptySource));
        assert_eq!(Message::parse(":s :PING"), Err(ParseError::BadCommand(":PING".into())));
        assert_eq!(Message::parse("PRIVMSG #a :x\ry"), Err(ParseError::ForbiddenChar));
        assert_eq!(Message::parse("PRIVMSG #a :x\0"), Err(ParseError::ForbiddenChar));
        assert_eq!(Message::parse_bytes(b"PRIVMSG #a :\xff"), Err(ParseError::InvalidUtf8));
    }

    #[test]
    fn rest_limit_is_512_with_crlf() {
        let at_limit = format!("PRIVMSG #a :{}", "x".repeat(510 - 12));
        assert_eq!(ok(&at_limit).params[1].len(), 498);
        let over = format!("{at_limit}x");
        assert_eq!(Message::parse(&over), Err(ParseError::InputTooLong(513)));
        assert_eq!(Message::parse(&over).unwrap_err().numeric(), Some(417));
        // Tags do not count against the rest; spaces do.
        assert!(Message::parse(&format!("@a=b {at_limit}\r\n")).is_ok());
        assert_eq!(Message::parse(&format!("@a=b  {at_limit}")), Err(ParseError::InputTooLong(513)));
    }

    #[test]
    fn client_tag_data_limit_is_4094() {
        let data = format!("a={}", "v".repeat(4092));
        assert!(Message::parse(&format!("@{data} TAGMSG #a")).is_ok());
        let err = Message::parse(&format!("@{data}v TAGMSG #a")).unwrap_err();
        assert_eq!((err.clone(), err.numeric()), (ParseError::TagsTooLong(4095), Some(417)));
    }

    #[test]
    fn last_param_gets_a_colon_only_when_needed() {
        assert_eq!(written(&Message::new("JOIN", ["#a"])), "JOIN #a\r\n");
        assert_eq!(written(&Message::new("X", ["a", ""])), "X a :\r\n");
        assert_eq!(written(&Message::new("X", ["a b"])), "X :a b\r\n");
        assert_eq!(written(&Message::new("X", [":)"])), "X ::)\r\n");
        assert_eq!(written(&Message::new("AWAY", Vec::<String>::new()).with_source("n!u@h")), ":n!u@h AWAY\r\n");
    }

    #[test]
    fn write_keeps_to_one_line() {
        let m = Message::new("PRIVMSG", ["#a", "x\r\nQUIT :y\0"])
            .with_tag("k", Some("v\0;"))
            .with_tag("bad key", None)
            .with_tag("a=b", None)
            .with_tag("", Some("v"));
        assert_eq!(written(&m), "@k=v\\: PRIVMSG #a :xQUIT :y\r\n");
    }

    #[test]
    fn tag_escapes_round_trip() {
        let value = "a;b c\\d\re\nf";
        assert_eq!(escape_tag_value(value), "a\\:b\\sc\\\\d\\re\\nf");
        assert_eq!(unescape_tag_value(&escape_tag_value(value)), value);
        assert_eq!(unescape_tag_value("x\\"), "x");
        assert_eq!(unescape_tag_value("x\\1"), "x1");
    }

    #[test]
    fn with_tag_replaces() {
        let m = Message::new("TAGMSG", ["#a"]).with_tag("k", Some("1")).with_tag("k", None);
        assert_eq!(m.tags, [("k".into(), None)]);
    }

    #[test]
    fn split_source_parts() {
        assert_eq!(split_source("nick!user@host"), ("nick", "user", "host"));
        assert_eq!(split_source("irc.example.com"), ("irc.example.com", "", ""));
    }
}
