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
}

pub const ALL_VERBS: [Verb; 17] = [
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
        }
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
