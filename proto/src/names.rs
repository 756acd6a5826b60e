//! Checked names and texts. A value of these types has passed the rules in PROTOCOL.md §1, so the
//! daemon's core and every client share one definition of a valid user, room or command word, and
//! never look at a raw string again.

use std::fmt;
use std::sync::Arc;

/// A user name: 2–24 characters, a letter first, then letters, digits, `_`, `-`; lower-cased.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(Arc<str>);

/// A room name: 1–32 of `a-z 0-9 _ -`, not starting with `_`/`-`; lower-cased, `#` prefix dropped.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

/// A request label: 1–32 of letters, digits, `.`, `_`, `-`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Label(String);

/// A password: 8–128 bytes without spaces or control characters. Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

/// A bot command word (`stock` in `/stock=aapl.us`): 1–32 of `a-z 0-9 _ -`, lower-cased.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct CommandWord(String);

/// A PING/PONG token: 1–64 printable characters without spaces.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Token(String);

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

impl UserName {
    pub fn parse(s: &str) -> Option<UserName> {
        let n = s.chars().count();
        let first = s.chars().next()?;
        ((2..=24).contains(&n) && first.is_ascii_alphabetic() && s.chars().all(is_name_char))
            .then(|| UserName(s.to_ascii_lowercase().into()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl RoomName {
    pub fn parse(s: &str) -> Option<RoomName> {
        let s = s.strip_prefix('#').unwrap_or(s);
        let first = s.chars().next()?;
        (s.len() <= 32 && first.is_ascii_alphanumeric() && s.chars().all(is_name_char))
            .then(|| RoomName(s.to_ascii_lowercase().into()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl RoomName {
    /// The conversation of two users: a name no room can have (a room name never starts with
    /// `@`), the same whichever of the two asks.
    pub fn direct(a: &UserName, b: &UserName) -> RoomName {
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        RoomName(format!("@{first},{second}").into())
    }

    /// Whether this names the conversation of two users.
    pub fn is_direct(&self) -> bool {
        self.0.starts_with('@')
    }

    /// The two users of a conversation made by `direct`.
    pub fn direct_peers(&self) -> Option<(UserName, UserName)> {
        let (a, b) = self.0.strip_prefix('@')?.split_once(',')?;
        Some((UserName::parse(a)?, UserName::parse(b)?))
    }

    /// In a conversation of two users, the one who is not `me` (`me` when it is with oneself).
    pub fn other_peer(&self, me: &UserName) -> Option<UserName> {
        let (a, b) = self.direct_peers()?;
        Some(if a == *me { b } else { a })
    }
}

impl Label {
    pub fn parse(s: &str) -> Option<Label> {
        ((1..=32).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .then(|| Label(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Password {
    pub fn parse(s: &str) -> Option<Password> {
        ((8..=128).contains(&s.len()) && !s.chars().any(|c| c == ' ' || c.is_control()))
            .then(|| Password(s.to_string()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl CommandWord {
    pub fn parse(s: &str) -> Option<CommandWord> {
        ((1..=32).contains(&s.len()) && s.chars().all(is_name_char)).then(|| CommandWord(s.to_ascii_lowercase()))
    }
    /// The command word of a bot command line (`/stock=aapl.us` → `stock`), if `text` is one.
    pub fn of_bot_line(text: &str) -> Option<CommandWord> {
        let rest = text.strip_prefix('/')?;
        let end = rest.find(['=', ' ']).unwrap_or(rest.len());
        CommandWord::parse(&rest[..end])
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Token {
    pub fn parse(s: &str) -> Option<Token> {
        ((1..=64).contains(&s.len()) && !s.starts_with(':') && s.chars().all(|c| c.is_ascii_graphic()))
            .then(|| Token(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
display_as_str!(UserName, RoomName, Label, CommandWord, Token, Password);

impl fmt::Debug for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}
impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", &*self.0)
    }
}
impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        assert_eq!(UserName::parse("Alice").unwrap().as_str(), "alice");
        assert!(UserName::parse("a").is_none());
        assert!(UserName::parse("1abc").is_none());
        assert!(UserName::parse("al ice").is_none());
        assert!(UserName::parse("abcdefghijklmnopqrstuvwxy").is_none());
        assert!(UserName::parse("bob_the-2nd").is_some());
    }

    #[test]
    fn room_names() {
        assert_eq!(RoomName::parse("#General").unwrap().as_str(), "general");
        assert!(RoomName::parse("no/slash").is_none());
        assert!(RoomName::parse("").is_none());
        assert!(RoomName::parse("#").is_none());
        assert!(RoomName::parse("-x").is_none());
        assert!(RoomName::parse(&"a".repeat(33)).is_none());
    }

    #[test]
    fn direct_conversations_are_named_apart_from_rooms() {
        let (alice, bob) = (UserName::parse("alice").unwrap(), UserName::parse("Bob").unwrap());
        let name = RoomName::direct(&bob, &alice);
        assert_eq!(name, RoomName::direct(&alice, &bob), "the same whichever asks");
        assert!(name.is_direct() && RoomName::parse(name.as_str()).is_none(), "no room can be called {name}");
        assert_eq!(name.direct_peers(), Some((alice.clone(), bob.clone())));
        assert_eq!(name.other_peer(&alice), Some(bob.clone()));
        assert_eq!(RoomName::direct(&bob, &bob).other_peer(&bob), Some(bob));
        assert!(!RoomName::parse("general").unwrap().is_direct());
    }

    #[test]
    fn bot_lines() {
        assert_eq!(CommandWord::of_bot_line("/stock=aapl.us").unwrap().as_str(), "stock");
        assert_eq!(CommandWord::of_bot_line("/STOCK=x").unwrap().as_str(), "stock");
        assert_eq!(CommandWord::of_bot_line("/help me").unwrap().as_str(), "help");
        assert!(CommandWord::of_bot_line("hello /stock").is_none());
        assert!(CommandWord::of_bot_line("/").is_none());
        assert!(CommandWord::of_bot_line("//x").is_none());
    }

    #[test]
    fn passwords_are_not_debug_printed() {
        let p = Password::parse("hunter2hunter2").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
