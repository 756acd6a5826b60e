//! Every way a request can fail, as one typed enum. Each variant has its own protocol code; the
//! reply line is built from it in one place (`reply::error`).

use crate::names::{CommandWord, RoomName};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChatError {
    #[error("unknown command (type HELP for the list)")]
    UnknownCommand,
    #[error("wrong arguments, usage: {0}")]
    BadArguments(&'static str),
    #[error("log in first (LOGIN <user> <password> or REGISTER <user> <password>)")]
    NotLoggedIn,
    #[error("you have not joined {0}")]
    NotMember(RoomName),
    #[error("only bot accounts may do that")]
    NotABot,
    #[error("no such room")]
    NoSuchRoom(RoomName),
    #[error("invalid user name (2-24 characters: a letter, then letters, digits, _ or -)")]
    BadUserName,
    #[error("invalid room name (1-32 characters: a-z, 0-9, _ or -, starting with a letter or digit)")]
    BadRoomName,
    #[error("invalid password (8-128 bytes, no spaces or control characters)")]
    BadPassword,
    #[error("already logged in (LOGOUT first)")]
    AlreadyLoggedIn,
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("user name taken")]
    NameTaken,
    #[error("registration is closed on this server")]
    RegistrationClosed,
    #[error("too many attempts, wait {0} seconds and try again")]
    Throttled(u64),
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
    #[error("limit reached: {1}")]
    LimitReached(RoomName, &'static str),
    #[error("no bot is connected that answers /{1}")]
    NoBot(RoomName, CommandWord),
    #[error("bad HISTORY arguments: BEFORE takes a message id, LIMIT takes 1 to 50")]
    BadHistoryArguments,
    #[error("server error ({0}); the command had no effect, try again")]
    Storage(String),
}

impl ChatError {
    /// The protocol code (PROTOCOL.md §3).
    pub fn code(&self) -> u16 {
        use ChatError::*;
        match self {
            UnknownCommand => 400,
            BadArguments(_) => 401,
            NotLoggedIn => 402,
            NotMember(_) | NotABot => 403,
            NoSuchRoom(_) => 404,
            BadUserName => 405,
            BadRoomName => 406,
            BadPassword => 407,
            AlreadyLoggedIn => 408,
            BadCredentials => 409,
            NameTaken => 410,
            RegistrationClosed => 411,
            Throttled(_) => 412,
            LineTooLong(_) => 413,
            InvalidUtf8 => 414,
            ControlCharacter => 415,
            EmptyMessage => 416,
            MessageTooLong(_) => 417,
            LimitReached(..) => 418,
            NoBot(..) => 419,
            BadHistoryArguments => 421,
            Storage(_) => 500,
        }
    }
}
