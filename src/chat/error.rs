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
    /// Guest access is off on this server (`[guests] enabled = false`).
    #[error("guest access is off on this server")]
    GuestsDisabled,
    /// A guest asked for a nick that is an account's name.
    #[error("{0} is a registered account")]
    NickIsAccount(UserName),
    /// A guest asked for a nick another guest holds now.
    #[error("{0} is in use by another guest")]
    NickInUse(UserName),
    /// Something guests may not do here.
    #[error("guests may not {0}")]
    GuestRefused(GuestRefusal),
    /// Only the room's operators (and admins) may do that.
    #[error("you are not an operator of {0}")]
    NotOperator(RoomName),
    /// Only the server's admins may do that.
    #[error("only server admins may do that")]
    NotAdmin,
    #[error("you are banned from {0}")]
    Banned(RoomName),
    /// The account is disabled (the reason an admin gave).
    #[error("account disabled: {0}")]
    AccountDisabled(String),
    #[error("no message {1} in {0}")]
    NoSuchMessage(RoomName, u64),
    #[error("{1} is not in {0}")]
    NotInRoom(RoomName, UserName),
    /// An admin's reload was refused; the settings in effect stay.
    #[error("configuration refused, the settings in effect stay: {0}")]
    ReloadRefused(String),
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

/// What a guest was refused (see `[guests]` in chatd.toml).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestRefusal {
    /// A room not open to guests.
    #[error("join {0} (not open to guests)")]
    Room(RoomName),
    /// A direct message to a member (unless `direct_messages_to_members`).
    #[error("send direct messages to members ({0})")]
    DirectMessage(UserName),
    /// A bot command line (unless `bot_commands`).
    #[error("use bot commands in {0}")]
    BotCommand(RoomName),
    #[error("set the topic of {0}")]
    Topic(RoomName),
    /// A guest has no password to change.
    #[error("change a password (a guest has none)")]
    Password,
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
    #[error("reload unavailable")]
    Reload,
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        ChatError::Unavailable(Unavailable::Store(e))
    }
}
