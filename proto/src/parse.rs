//! The native line parser: one client line (bytes, without its line ending) into a typed
//! [`Request`], or a typed rejection that still knows the label and verb, so the error reply can
//! carry them. Built with nom: the lexing of label / verb / arguments is a small grammar, the names
//! are checked by the `names` constructors. The daemon, the fuzz target and the property test use
//! this one parser.

use nom::bytes::complete::{tag_no_case, take_while1};
use nom::character::complete::{char, digit1, space0, space1};
use nom::combinator::{all_consuming, map_res, opt};
use nom::sequence::{pair, preceded, terminated};
use nom::IResult;

use crate::command::{Command, Request, Verb};
use crate::names::{CommandWord, Label, Password, RoomName, Token, UserName};

/// The largest `LIMIT` a HISTORY line may ask for (PROTOCOL.md: at most 50 at a time).
pub const MAX_HISTORY_LIMIT: usize = 50;

/// Why a line is not a command. Each variant has its own reply code (PROTOCOL.md §3); the texts
/// are the native protocol's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown command (type HELP for the list)")]
    UnknownCommand,
    #[error("wrong arguments, usage: {0}")]
    BadArguments(&'static str),
    #[error("invalid user name (2-24 characters: a letter, then letters, digits, _ or -)")]
    BadUserName,
    #[error("invalid room name (1-32 characters: a-z, 0-9, _ or -, starting with a letter or digit)")]
    BadRoomName,
    #[error("invalid password (8-128 bytes, no spaces or control characters)")]
    BadPassword,
    #[error("line too long (at most {0} bytes); it was discarded")]
    LineTooLong(usize),
    #[error("line is not valid UTF-8")]
    InvalidUtf8,
    #[error("control character in the line")]
    ControlCharacter,
    #[error("empty message")]
    EmptyMessage,
    #[error("message too long (at most {0} bytes)")]
    MessageTooLong(usize),
    #[error("bad HISTORY arguments: BEFORE takes a message id, LIMIT takes 1 to 50")]
    BadHistoryArguments,
}

impl ParseError {
    /// The reply code (PROTOCOL.md §3).
    pub fn code(&self) -> u16 {
        use ParseError::*;
        match self {
            UnknownCommand => 400,
            BadArguments(_) => 401,
            BadUserName => 405,
            BadRoomName => 406,
            BadPassword => 407,
            LineTooLong(_) => 413,
            InvalidUtf8 => 414,
            ControlCharacter => 415,
            EmptyMessage => 416,
            MessageTooLong(_) => 417,
            BadHistoryArguments => 421,
        }
    }
}

/// A line that did not parse: what to echo back and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub label: Option<Label>,
    /// The verb to put in the reply (`*` when there is no usable command word).
    pub verb: String,
    pub error: ParseError,
}

/// Parses one line. `max_message_bytes` bounds the text of MSG.
pub fn parse_line(bytes: &[u8], max_message_bytes: usize) -> Result<Request, Rejected> {
    let reject = |label, verb: &str, error| Err(Rejected { label, verb: verb.to_string(), error });
    let Ok(line) = std::str::from_utf8(bytes) else {
        return reject(None, "*", ParseError::InvalidUtf8);
    };
    let Ok((args, (raw_label, word))) = head(line) else {
        return reject(None, "*", ParseError::UnknownCommand);
    };
    let label = match raw_label.map(Label::parse) {
        None => None,
        Some(Some(l)) => Some(l),
        Some(None) => return reject(None, "*", ParseError::BadArguments("@<label> is 1-32 of A-Z a-z 0-9 . _ -")),
    };
    let Some(verb) = Verb::from_word(word) else {
        let shown = if word.len() <= 32 && word.chars().all(|c| c.is_ascii_alphanumeric()) {
            word.to_ascii_uppercase()
        } else {
            "*".to_string()
        };
        return reject(label, &shown, ParseError::UnknownCommand);
    };
    if line.chars().any(|c| c.is_control()) {
        return reject(label, verb.as_str(), ParseError::ControlCharacter);
    }
    match arguments(verb, args, max_message_bytes) {
        Ok(command) => Ok(Request { label, command }),
        Err(error) => reject(label, verb.as_str(), error),
    }
}

/// `[@label SP] word`, returning the rest after the word (which starts with a space or is empty).
fn head(line: &str) -> IResult<&str, (Option<&str>, &str)> {
    pair(opt(terminated(preceded(char('@'), take_while1(|c| c != ' ')), space1)), take_while1(|c: char| c != ' '))(line)
}

fn word(i: &str) -> IResult<&str, &str> {
    preceded(space1, take_while1(|c| c != ' '))(i)
}

/// Exactly `n` space-separated words and nothing else (trailing spaces tolerated).
fn words(args: &str, n: usize) -> Option<Vec<&str>> {
    let mut out = Vec::with_capacity(n);
    let mut rest = args;
    for _ in 0..n {
        let (r, w) = word(rest).ok()?;
        out.push(w);
        rest = r;
    }
    rest.trim_start_matches(' ').is_empty().then_some(out)
}

fn arguments(verb: Verb, args: &str, max_message_bytes: usize) -> Result<Command, ParseError> {
    let usage = ParseError::BadArguments(verb.usage());
    let exactly = |n| words(args, n).ok_or(usage.clone());
    let room = |s: &str| RoomName::parse(s).ok_or(ParseError::BadRoomName);
    let user = |s: &str| UserName::parse(s).ok_or(ParseError::BadUserName);
    let password = |s: &str| Password::parse(s).ok_or(ParseError::BadPassword);
    Ok(match verb {
        Verb::Help => match words(args, 0) {
            Some(_) => Command::Help(None),
            None => {
                let w = exactly(1)?;
                Command::Help(Some(Verb::from_word(w[0]).ok_or(usage)?))
            }
        },
        Verb::Register | Verb::Login => {
            let w = exactly(2)?;
            let (user, password) = (user(w[0])?, password(w[1])?);
            if verb == Verb::Register {
                Command::Register { user, password }
            } else {
                Command::Login { user, password }
            }
        }
        Verb::Logout => {
            exactly(0)?;
            Command::Logout
        }
        Verb::Rooms => {
            exactly(0)?;
            Command::Rooms
        }
        Verb::Quit => Command::Quit(free_text(args).filter(|t| !t.trim().is_empty()).map(str::to_string)),
        Verb::Join => Command::Join(room(exactly(1)?[0])?),
        Verb::Part => Command::Part(room(exactly(1)?[0])?),
        Verb::Names => Command::Names(room(exactly(1)?[0])?),
        Verb::Msg => {
            let (text, name) = word(args).map_err(|_| usage.clone())?;
            let room = room(name)?;
            Command::Msg { room, text: message_text(text, max_message_bytes)? }
        }
        Verb::History => {
            let (opts, name) = word(args).map_err(|_| usage.clone())?;
            let (before, limit) = history_options(opts)?;
            match name.strip_prefix('@') {
                Some(with) => Command::DirectHistory { with: user(with)?, before, limit },
                None => Command::History { room: room(name)?, before, limit },
            }
        }
        Verb::Topic => {
            let (text, name) = word(args).map_err(|_| usage.clone())?;
            let room = room(name)?;
            let text = free_text(text).filter(|t| !t.trim().is_empty()).map(str::to_string);
            Command::Topic { room, text }
        }
        Verb::Dm => {
            let (text, name) = word(args).map_err(|_| usage.clone())?;
            let to = user(name)?;
            Command::Dm { to, text: message_text(text, max_message_bytes)? }
        }
        Verb::Ping => match words(args, 0) {
            Some(_) => Command::Ping(None),
            None => Command::Ping(Some(Token::parse(exactly(1)?[0]).ok_or(usage)?)),
        },
        Verb::Pong => Command::Pong(Token::parse(exactly(1)?[0]).ok_or(usage)?),
        Verb::Serve => Command::Serve(CommandWord::parse(exactly(1)?[0]).ok_or(usage)?),
        Verb::Guest => Command::Guest(user(exactly(1)?[0])?),
        Verb::Passwd => {
            let w = exactly(2)?;
            Command::Passwd { old: password(w[0])?, new: password(w[1])? }
        }
        Verb::Op | Verb::Deop | Verb::Unban => {
            let w = exactly(2)?;
            let (room, user) = (room(w[0])?, user(w[1])?);
            match verb {
                Verb::Unban => Command::Unban { room, user },
                _ => Command::Op { room, user, on: verb == Verb::Op },
            }
        }
        Verb::Kick | Verb::Ban => {
            let (rest, name) = word(args).map_err(|_| usage.clone())?;
            let (rest, who) = word(rest).map_err(|_| usage.clone())?;
            let (room, user) = (room(name)?, user(who)?);
            let reason = reason(rest, max_message_bytes)?;
            match verb {
                Verb::Kick => Command::Kick { room, user, reason },
                _ => Command::Ban { room, user, reason },
            }
        }
        Verb::Bans => Command::Bans(room(exactly(1)?[0])?),
        Verb::Delete => {
            let w = exactly(2)?;
            let id = w[1].parse::<u64>().ok().filter(|id| *id > 0 && w[1].bytes().all(|b| b.is_ascii_digit()));
            Command::Delete { room: room(w[0])?, id: id.ok_or(usage)? }
        }
        Verb::DelRoom => {
            let (rest, name) = word(args).map_err(|_| usage.clone())?;
            Command::DelRoom { room: room(name)?, reason: reason(rest, max_message_bytes)? }
        }
        Verb::Disable | Verb::Kill => {
            let (rest, who) = word(args).map_err(|_| usage.clone())?;
            let (user, reason) = (user(who)?, reason(rest, max_message_bytes)?);
            match verb {
                Verb::Disable => Command::Disable { user, reason },
                _ => Command::Kill { user, reason },
            }
        }
        Verb::Enable => Command::Enable(user(exactly(1)?[0])?),
        Verb::ResetPass => {
            let w = exactly(2)?;
            Command::ResetPass { user: user(w[0])?, password: password(w[1])? }
        }
        Verb::Announce => Command::Announce(message_text(args, max_message_bytes)?),
        Verb::Audit => match words(args, 0) {
            Some(_) => Command::Audit { limit: None },
            None => {
                let w = exactly(2)?;
                let n = w[1].parse::<usize>().ok().filter(|n| (1..=MAX_AUDIT_LIMIT).contains(n));
                if !w[0].eq_ignore_ascii_case("LIMIT") || !w[1].bytes().all(|b| b.is_ascii_digit()) {
                    return Err(usage);
                }
                Command::Audit { limit: Some(n.ok_or(usage)?) }
            }
        },
        Verb::Reload => {
            exactly(0)?;
            Command::Reload
        }
    })
}

/// The most entries one `AUDIT` may ask for.
pub const MAX_AUDIT_LIMIT: usize = 200;

/// An optional free-text reason after the previous argument (blank: none), at most `max` bytes.
fn reason(after_previous: &str, max: usize) -> Result<Option<String>, ParseError> {
    let text = free_text(after_previous).filter(|t| !t.trim().is_empty());
    match text {
        Some(t) if t.len() > max => Err(ParseError::MessageTooLong(max)),
        Some(t) => Ok(Some(t.to_string())),
        None => Ok(None),
    }
}

/// The text of a message: what follows the single space after the previous argument, not blank,
/// at most `max` bytes.
fn message_text(after_previous: &str, max: usize) -> Result<String, ParseError> {
    let text = free_text(after_previous).unwrap_or("");
    if text.trim().is_empty() {
        return Err(ParseError::EmptyMessage);
    }
    if text.len() > max {
        return Err(ParseError::MessageTooLong(max));
    }
    Ok(text.to_string())
}

/// The free-text last argument: everything after the single space that ends the previous argument.
fn free_text(after_previous: &str) -> Option<&str> {
    after_previous.strip_prefix(' ')
}

/// `[BEFORE <id>] [LIMIT <n>]`, in that order.
fn history_options(i: &str) -> Result<(Option<u64>, Option<usize>), ParseError> {
    let number = |i| map_res(digit1, str::parse::<u64>)(i);
    let before = preceded(pair(space1, tag_no_case("BEFORE")), preceded(space1, number));
    let limit = preceded(pair(space1, tag_no_case("LIMIT")), preceded(space1, number));
    let parsed: IResult<&str, _> = all_consuming(terminated(pair(opt(before), opt(limit)), space0))(i);
    let (_, (before, limit)) = parsed.map_err(|_| ParseError::BadHistoryArguments)?;
    if before == Some(0) || limit.is_some_and(|n| n == 0 || n > MAX_HISTORY_LIMIT as u64) {
        return Err(ParseError::BadHistoryArguments);
    }
    Ok((before, limit.map(|n| n as usize)))
}

/// The parser's contract, as the fuzz target (`fuzz/`) and the property test check it: parsing
/// any bytes returns (never panics), and a parsed command's canonical form (`Display`) parses back
/// to the same request. The error names the offending input.
pub fn check_round_trip(bytes: &[u8], max_message_bytes: usize) -> Result<(), String> {
    let Ok(request) = parse_line(bytes, max_message_bytes) else { return Ok(()) };
    let canonical = request.to_string();
    match parse_line(canonical.as_bytes(), max_message_bytes) {
        Ok(again) if again == request => Ok(()),
        again => Err(format!("{bytes:?} parsed as {request:?}, but its canonical form {canonical:?} gave {again:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Request {
        parse_line(line.as_bytes(), 2000).unwrap_or_else(|e| panic!("{line:?}: {e:?}"))
    }
    fn err(line: &[u8]) -> Rejected {
        parse_line(line, 2000).expect_err("should be rejected")
    }

    #[test]
    fn commands_are_case_insensitive() {
        assert_eq!(ok("join General").command, Command::Join(RoomName::parse("general").unwrap()));
        assert_eq!(ok("JoIn #general").command, ok("JOIN general").command);
    }

    #[test]
    fn message_text_is_verbatim() {
        let r = ok("@a1 MSG general   hello  :world  ");
        assert_eq!(r.label.unwrap().as_str(), "a1");
        match r.command {
            Command::Msg { room, text } => {
                assert_eq!(room.as_str(), "general");
                assert_eq!(text, "  hello  :world  ");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_carry_label_and_verb() {
        let e = err(b"@x FROB a b");
        assert_eq!((e.label.unwrap().as_str(), e.verb.as_str(), e.error), ("x", "FROB", ParseError::UnknownCommand));
        assert_eq!(err(b"JOIN").error.code(), 401);
        assert_eq!(err(b"JOIN a b").error.code(), 401);
        assert_eq!(err(b"JOIN no/slash").error, ParseError::BadRoomName);
        assert_eq!(err(b"MSG general ").error, ParseError::EmptyMessage);
        assert_eq!(err(b"MSG general    ").error, ParseError::EmptyMessage);
        assert_eq!(err(b"MSG general").error, ParseError::EmptyMessage);
        assert_eq!(err(b"LOGIN a pw").error, ParseError::BadUserName);
        assert_eq!(err(b"LOGIN alice short").error, ParseError::BadPassword);
        assert_eq!(err(b"MSG general a\x07b").error, ParseError::ControlCharacter);
        assert_eq!(err(b"MSG general \xff\xfe").error, ParseError::InvalidUtf8);
        assert_eq!(err(b"HISTORY general LIMIT 51").error, ParseError::BadHistoryArguments);
        assert_eq!(err(b"HISTORY general BEFORE x").error, ParseError::BadHistoryArguments);
        assert_eq!(err(b"@bad:label PING").error.code(), 401);
        assert_eq!(err(b"AUDIT LIMIT 201").error.code(), 401);
        assert_eq!(err(b"AUDIT LIMIT 0").error.code(), 401);
        assert_eq!(err(b"DELETE general 0").error.code(), 401);
        assert_eq!(err(b"DELETE general x").error.code(), 401);
        assert_eq!(err(b"KICK general").error.code(), 401);
        assert_eq!(err(b"KICK general b").error, ParseError::BadUserName);
        assert_eq!(err(b"PASSWD short new-password").error, ParseError::BadPassword);
        assert_eq!(err(b"ANNOUNCE  ").error, ParseError::EmptyMessage);
    }

    #[test]
    fn message_length_limit() {
        let line = format!("MSG general {}", "x".repeat(2001));
        assert_eq!(err(line.as_bytes()).error, ParseError::MessageTooLong(2000));
        let line = format!("MSG general {}", "x".repeat(2000));
        ok(&line);
    }

    #[test]
    fn history_options_parse() {
        match ok("history general before 12 limit 10").command {
            Command::History { before, limit, .. } => assert_eq!((before, limit), (Some(12), Some(10))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn canonical_form_round_trips() {
        for line in [
            "HELP",
            "HELP join",
            "REGISTER alice correct-horse",
            "@l.1 LOGIN Alice correct-horse",
            "LOGOUT",
            "QUIT",
            "QUIT gone fishing ",
            "ROOMS",
            "WHO #x",
            "PART r",
            "MSG general  two spaces",
            "MSG general /stock=aapl.us",
            "HISTORY general",
            "HISTORY general LIMIT 3",
            "HISTORY general BEFORE 7",
            "HISTORY @Bob LIMIT 5",
            "TOPIC general",
            "TOPIC general  a :topic ",
            "DM bob hi there",
            "DM bob /stock=aapl.us",
            "PING",
            "PING abc",
            "PONG abc",
            "SERVE Stock",
            "PASSWD old-password new-password",
            "OP room bob",
            "deop room bob",
            "KICK room bob",
            "KICK room bob  spamming, twice ",
            "BAN room bob bye",
            "UNBAN room bob",
            "BANS room",
            "DELETE room 42",
            "DELROOM room",
            "DELROOM room gone",
            "DISABLE bob abuse",
            "ENABLE bob",
            "RESETPASS bob new-password",
            "ANNOUNCE  maintenance at noon",
            "KILL bob",
            "KILL bob flood",
            "AUDIT",
            "AUDIT limit 5",
            "RELOAD",
        ] {
            let first = ok(line);
            let again = ok(&first.to_string());
            assert_eq!(first, again, "{line:?} -> {}", first);
        }
    }
}
