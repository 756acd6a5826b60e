//! How a request to the core can fail, as data. These are the chat's own reasons, in no protocol's
//! words: each front end turns them into its replies in one place (`native::reply`).

use super::names::{CommandWord, RoomName, UserName};
use crate::store::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ChatError {
    #[error("log in first")]
    NotLoggedIn,
    #[error("you have not joined {0}")]
    NotMember(RoomName),
    #[error("only bot accounts may do that")]
    NotABot,
    #[error("no such room")]
    NoSuchRoom(RoomName),
    #[error("no such user")]
    NoSuchUser(UserName),
    #[error("topic too long (at most {0} bytes)")]
    TopicTooLong(usize),
    /// A history query by a reference it cannot take (TARGETS takes times).
    #[error("that history query takes times, not message ids")]
    BadReference,
    #[error("already logged in")]
    AlreadyLoggedIn,
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("user name taken")]
    NameTaken,
    #[error("registration is closed on this server")]
    RegistrationClosed,
    /// Too many attempts: wait this many seconds.
    #[error("too many attempts, wait {0} seconds and try again")]
    Throttled(u64),
    #[error("limit reached: {1}")]
    LimitReached(RoomName, Limit),
    #[error("no bot is connected that answers /{1}")]
    NoBot(RoomName, CommandWord),
    /// The command had no effect because a part of the server failed; trying again may work.
    #[error("server error ({0})")]
    Unavailable(Unavailable),
}

/// Which limit a request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Limit {
    #[error("you are in too many rooms")]
    RoomsPerConnection,
    #[error("this room is full")]
    MembersPerRoom,
    #[error("the server has too many rooms")]
    Rooms,
}

/// What failed inside the server.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("room unavailable")]
    RoomStopped,
    #[error("password hashing failed")]
    Hashing,
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        ChatError::Unavailable(Unavailable::Store(e))
    }
}
