//! The native protocol's commands, as typed values (what `parse` produces), and their canonical
//! text form (`Display`), which parses back to the same command. Clients build their lines from
//! these values, so a line a client sends is one the daemon parses.

use std::fmt;

use crate::names::{CommandWord, Label, Password, RoomName, Token, UserName};

/// The command words, for HELP and for the verb of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Help,
    Register,
    Login,
    Logout,
    Quit,
    Rooms,
    Join,
    Part,
    Names,
    Msg,
    History,
    Ping,
    Pong,
    Serve,
    Topic,
    Dm,
    Guest,
    Passwd,
    Op,
    Deop,
    Kick,
    Ban,
    Unban,
    Bans,
    Delete,
    DelRoom,
    Disable,
    Enable,
    ResetPass,
    Announce,
    Kill,
    Audit,
    Reload,
}

pub const ALL_VERBS: [Verb; 33] = [
    Verb::Help,
    Verb::Register,
    Verb::Login,
    Verb::Logout,
    Verb::Quit,
    Verb::Rooms,
    Verb::Join,
    Verb::Part,
    Verb::Names,
    Verb::Msg,
    Verb::History,
    Verb::Ping,
    Verb::Pong,
    Verb::Serve,
    Verb::Topic,
    Verb::Dm,
    Verb::Guest,
    Verb::Passwd,
    Verb::Op,
    Verb::Deop,
    Verb::Kick,
    Verb::Ban,
    Verb::Unban,
    Verb::Bans,
    Verb::Delete,
    Verb::DelRoom,
    Verb::Disable,
    Verb::Enable,
    Verb::ResetPass,
    Verb::Announce,
    Verb::Kill,
    Verb::Audit,
    Verb::Reload,
];

impl Verb {
    pub fn from_word(word: &str) -> Option<Verb> {
        let w = word.to_ascii_uppercase();
        if w == "WHO" {
            return Some(Verb::Names);
        }
        ALL_VERBS.iter().copied().find(|v| v.as_str() == w)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Help => "HELP",
            Verb::Register => "REGISTER",
            Verb::Login => "LOGIN",
            Verb::Logout => "LOGOUT",
            Verb::Quit => "QUIT",
            Verb::Rooms => "ROOMS",
            Verb::Join => "JOIN",
            Verb::Part => "PART",
            Verb::Names => "NAMES",
            Verb::Msg => "MSG",
            Verb::History => "HISTORY",
            Verb::Ping => "PING",
            Verb::Pong => "PONG",
            Verb::Serve => "SERVE",
            Verb::Topic => "TOPIC",
            Verb::Dm => "DM",
            Verb::Guest => "GUEST",
            Verb::Passwd => "PASSWD",
            Verb::Op => "OP",
            Verb::Deop => "DEOP",
            Verb::Kick => "KICK",
            Verb::Ban => "BAN",
            Verb::Unban => "UNBAN",
            Verb::Bans => "BANS",
            Verb::Delete => "DELETE",
            Verb::DelRoom => "DELROOM",
            Verb::Disable => "DISABLE",
            Verb::Enable => "ENABLE",
            Verb::ResetPass => "RESETPASS",
            Verb::Announce => "ANNOUNCE",
            Verb::Kill => "KILL",
            Verb::Audit => "AUDIT",
            Verb::Reload => "RELOAD",
        }
    }

    pub fn usage(self) -> &'static str {
        match self {
            Verb::Help => "HELP [command]",
            Verb::Register => "REGISTER <user> <password>",
            Verb::Login => "LOGIN <user> <password>",
            Verb::Logout => "LOGOUT",
            Verb::Quit => "QUIT [reason]",
            Verb::Rooms => "ROOMS",
            Verb::Join => "JOIN <room>",
            Verb::Part => "PART <room>",
            Verb::Names => "NAMES <room>",
            Verb::Msg => "MSG <room> <text>",
            Verb::History => "HISTORY <room>|@<user> [BEFORE <id>] [LIMIT <n>]",
            Verb::Ping => "PING [token]",
            Verb::Pong => "PONG <token>",
            Verb::Serve => "SERVE <command-word>",
            Verb::Topic => "TOPIC <room> [text]",
            Verb::Dm => "DM <user> <text>",
            Verb::Guest => "GUEST <nick>",
            Verb::Passwd => "PASSWD <old-password> <new-password>",
            Verb::Op => "OP <room> <user>",
            Verb::Deop => "DEOP <room> <user>",
            Verb::Kick => "KICK <room> <user> [reason]",
            Verb::Ban => "BAN <room> <user> [reason]",
            Verb::Unban => "UNBAN <room> <user>",
            Verb::Bans => "BANS <room>",
            Verb::Delete => "DELETE <room> <id>",
            Verb::DelRoom => "DELROOM <room> [reason]",
            Verb::Disable => "DISABLE <user> [reason]",
            Verb::Enable => "ENABLE <user>",
            Verb::ResetPass => "RESETPASS <user> <new-password>",
            Verb::Announce => "ANNOUNCE <text>",
            Verb::Kill => "KILL <user> [reason]",
            Verb::Audit => "AUDIT [LIMIT <n>]",
            Verb::Reload => "RELOAD",
        }
    }

    pub fn summary(self) -> &'static str {
        match self {
            Verb::Help => "list the commands, or explain one",
            Verb::Register => "create an account and log in",
            Verb::Login => "log in",
            Verb::Logout => "leave every room and log out",
            Verb::Quit => "close the connection",
            Verb::Rooms => "list the rooms",
            Verb::Join => "join a room (created if new) and see its last 50 messages",
            Verb::Part => "leave a room",
            Verb::Names => "list the users in a room (also WHO)",
            Verb::Msg => "post to a room you joined; text starting with / goes to the bots",
            Verb::History => "messages before an id, at most 50 at a time (@user: your direct messages)",
            Verb::Ping => "check the server is there",
            Verb::Pong => "answer the server's * PING",
            Verb::Serve => "bots only: receive /<command-word> lines from every room",
            Verb::Topic => "show a room's topic, or set it",
            Verb::Dm => "send a direct message, seen only by the two of you",
            Verb::Guest => "chat as a guest without an account, where the server allows guests",
            Verb::Passwd => "change your password",
            Verb::Op => "operators: make a user an operator of a room",
            Verb::Deop => "operators: make a user no longer an operator of a room",
            Verb::Kick => "operators: remove a user from a room",
            Verb::Ban => "operators: ban a user from a room (and kick them)",
            Verb::Unban => "operators: lift a ban",
            Verb::Bans => "list the users banned from a room",
            Verb::Delete => "operators: delete a message from a room's history",
            Verb::DelRoom => "admins: delete a room and its history",
            Verb::Disable => "admins: disable an account and close its connections",
            Verb::Enable => "admins: enable a disabled account",
            Verb::ResetPass => "admins: set a new password for an account",
            Verb::Announce => "admins: send a notice to every connection",
            Verb::Kill => "admins: close every connection of a user",
            Verb::Audit => "admins: the latest moderation actions (default 20, at most 200)",
            Verb::Reload => "admins: reload chatd.toml and the certificate, as SIGHUP does",
        }
    }

    /// Commands allowed before LOGIN.
    pub fn allowed_anonymous(self) -> bool {
        matches!(self, Verb::Help | Verb::Register | Verb::Login | Verb::Quit | Verb::Ping | Verb::Pong | Verb::Guest)
    }
}

/// A parsed client line.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub label: Option<Label>,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Help(Option<Verb>),
    Register {
        user: UserName,
        password: Password,
    },
    Login {
        user: UserName,
        password: Password,
    },
    Logout,
    Quit(Option<String>),
    Rooms,
    Join(RoomName),
    Part(RoomName),
    Names(RoomName),
    Msg {
        room: RoomName,
        text: String,
    },
    History {
        room: RoomName,
        before: Option<u64>,
        limit: Option<usize>,
    },
    /// `HISTORY @<user>`: the direct messages with that user.
    DirectHistory {
        with: UserName,
        before: Option<u64>,
        limit: Option<usize>,
    },
    /// `TOPIC <room>` shows the topic; with text, sets it.
    Topic {
        room: RoomName,
        text: Option<String>,
    },
    Dm {
        to: UserName,
        text: String,
    },
    Ping(Option<Token>),
    Pong(Token),
    Serve(CommandWord),
    /// `GUEST <nick>`: chat as a guest under `nick` (a name no account has).
    Guest(UserName),
    Passwd {
        old: Password,
        new: Password,
    },
    /// `OP`/`DEOP <room> <user>` (`on`: OP).
    Op {
        room: RoomName,
        user: UserName,
        on: bool,
    },
    Kick {
        room: RoomName,
        user: UserName,
        reason: Option<String>,
    },
    Ban {
        room: RoomName,
        user: UserName,
        reason: Option<String>,
    },
    Unban {
        room: RoomName,
        user: UserName,
    },
    Bans(RoomName),
    Delete {
        room: RoomName,
        id: u64,
    },
    DelRoom {
        room: RoomName,
        reason: Option<String>,
    },
    Disable {
        user: UserName,
        reason: Option<String>,
    },
    Enable(UserName),
    ResetPass {
        user: UserName,
        password: Password,
    },
    Announce(String),
    Kill {
        user: UserName,
        reason: Option<String>,
    },
    Audit {
        limit: Option<usize>,
    },
    Reload,
}

impl Command {
    pub fn verb(&self) -> Verb {
        match self {
            Command::Help(_) => Verb::Help,
            Command::Register { .. } => Verb::Register,
            Command::Login { .. } => Verb::Login,
            Command::Logout => Verb::Logout,
            Command::Quit(_) => Verb::Quit,
            Command::Rooms => Verb::Rooms,
            Command::Join(_) => Verb::Join,
            Command::Part(_) => Verb::Part,
            Command::Names(_) => Verb::Names,
            Command::Msg { .. } => Verb::Msg,
            Command::History { .. } | Command::DirectHistory { .. } => Verb::History,
            Command::Topic { .. } => Verb::Topic,
            Command::Dm { .. } => Verb::Dm,
            Command::Ping(_) => Verb::Ping,
            Command::Pong(_) => Verb::Pong,
            Command::Serve(_) => Verb::Serve,
            Command::Guest(_) => Verb::Guest,
            Command::Passwd { .. } => Verb::Passwd,
            Command::Op { on: true, .. } => Verb::Op,
            Command::Op { on: false, .. } => Verb::Deop,
            Command::Kick { .. } => Verb::Kick,
            Command::Ban { .. } => Verb::Ban,
            Command::Unban { .. } => Verb::Unban,
            Command::Bans(_) => Verb::Bans,
            Command::Delete { .. } => Verb::Delete,
            Command::DelRoom { .. } => Verb::DelRoom,
            Command::Disable { .. } => Verb::Disable,
            Command::Enable(_) => Verb::Enable,
            Command::ResetPass { .. } => Verb::ResetPass,
            Command::Announce(_) => Verb::Announce,
            Command::Kill { .. } => Verb::Kill,
            Command::Audit { .. } => Verb::Audit,
            Command::Reload => Verb::Reload,
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(label) = &self.label {
            write!(f, "@{label} ")?;
        }
        write!(f, "{}", self.command)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = self.verb().as_str();
        match self {
            Command::Help(None) | Command::Logout | Command::Quit(None) | Command::Rooms | Command::Ping(None) => {
                f.write_str(verb)
            }
            Command::Help(Some(v)) => write!(f, "{verb} {}", v.as_str()),
            Command::Register { user, password } | Command::Login { user, password } => {
                write!(f, "{verb} {user} {password}")
            }
            Command::Quit(Some(reason)) => write!(f, "{verb} {reason}"),
            Command::Join(room) | Command::Part(room) | Command::Names(room) => write!(f, "{verb} {room}"),
            Command::Msg { room, text } => write!(f, "{verb} {room} {text}"),
            Command::History { room, before, limit } => {
                write!(f, "{verb} {room}")?;
                history_options(f, *before, *limit)
            }
            Command::DirectHistory { with, before, limit } => {
                write!(f, "{verb} @{with}")?;
                history_options(f, *before, *limit)
            }
            Command::Topic { room, text: None } => write!(f, "{verb} {room}"),
            Command::Topic { room, text: Some(text) } => write!(f, "{verb} {room} {text}"),
            Command::Dm { to, text } => write!(f, "{verb} {to} {text}"),
            Command::Ping(Some(t)) | Command::Pong(t) => write!(f, "{verb} {t}"),
            Command::Serve(word) => write!(f, "{verb} {word}"),
            Command::Guest(nick) => write!(f, "{verb} {nick}"),
            Command::Passwd { old, new } => write!(f, "{verb} {old} {new}"),
            Command::Op { room, user, .. } | Command::Unban { room, user } => write!(f, "{verb} {room} {user}"),
            Command::Kick { room, user, reason } | Command::Ban { room, user, reason } => {
                write!(f, "{verb} {room} {user}")?;
                reason_text(f, reason)
            }
            Command::Bans(room) => write!(f, "{verb} {room}"),
            Command::Delete { room, id } => write!(f, "{verb} {room} {id}"),
            Command::DelRoom { room, reason } => {
                write!(f, "{verb} {room}")?;
                reason_text(f, reason)
            }
            Command::Disable { user, reason } | Command::Kill { user, reason } => {
                write!(f, "{verb} {user}")?;
                reason_text(f, reason)
            }
            Command::Enable(user) => write!(f, "{verb} {user}"),
            Command::ResetPass { user, password } => write!(f, "{verb} {user} {password}"),
            Command::Announce(text) => write!(f, "{verb} {text}"),
            Command::Audit { limit: None } | Command::Reload => f.write_str(verb),
            Command::Audit { limit: Some(n) } => write!(f, "{verb} LIMIT {n}"),
        }
    }
}

fn reason_text(f: &mut fmt::Formatter<'_>, reason: &Option<String>) -> fmt::Result {
    match reason {
        Some(r) => write!(f, " {r}"),
        None => Ok(()),
    }
}

fn history_options(f: &mut fmt::Formatter<'_>, before: Option<u64>, limit: Option<usize>) -> fmt::Result {
    if let Some(id) = before {
        write!(f, " BEFORE {id}")?;
    }
    if let Some(n) = limit {
        write!(f, " LIMIT {n}")?;
    }
    Ok(())
}
