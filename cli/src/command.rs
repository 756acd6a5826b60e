//! What a typed line means: a client slash command (`/join`, `/history`, ...) or text to post in
//! the current room. Unknown slash commands (`/stock=aapl.us`) are posted as they are, for the bots.

use crate::args::normalize_room;

pub const HELP: &str = "\
Commands (anything else is posted to the current room):
  /join <room>      join a room (shows its last 50 messages) and make it the current room
  /part [room]      leave a room (default: the current one)
  /switch <room>    make another joined room the current one
  /rooms            list the rooms on the server
  /who [room]       list the users in a room
  /history [n]      show up to n (default 20, at most 50) older messages of the current room;
                    again (or /more) to page further back
  /more             the next page of /history
  /raw <line>       send a protocol line as it is
  /help             this help
  /quit [reason]    leave
  /stock=aapl.us    any other /command is posted to the room for the bots";

/// Default page size of `/history`.
pub const DEFAULT_HISTORY: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Nothing to do (an empty line).
    Nothing,
    Join(String),
    Part(Option<String>),
    Switch(String),
    Rooms,
    Who(Option<String>),
    History(Option<usize>),
    More,
    Raw(String),
    Help,
    Quit(Option<String>),
    /// Text (or a bot command line) to post in the current room.
    Say(String),
    /// A client command used wrongly; the text says how to use it.
    Usage(&'static str),
}

impl Command {
    pub fn parse(line: &str) -> Command {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Command::Nothing;
        }
        let Some(rest) = line.strip_prefix('/') else {
            return Command::Say(line.to_string());
        };
        let (word, arg) = match rest.split_once(char::is_whitespace) {
            Some((w, a)) => (w, a.trim()),
            None => (rest, ""),
        };
        let arg_opt = || (!arg.is_empty()).then(|| arg.to_string());
        let room_opt = || (!arg.is_empty()).then(|| normalize_room(arg));
        match word.to_ascii_lowercase().as_str() {
            "join" | "j" => match room_opt() {
                Some(r) if !r.contains(char::is_whitespace) => Command::Join(r),
                _ => Command::Usage("usage: /join <room>"),
            },
            "part" | "leave" => Command::Part(room_opt()),
            "switch" | "sw" | "go" => match room_opt() {
                Some(r) => Command::Switch(r),
                None => Command::Usage("usage: /switch <room>"),
            },
            "rooms" | "list" => Command::Rooms,
            "who" | "names" => Command::Who(room_opt()),
            "history" => match arg_opt() {
                None => Command::History(None),
                Some(n) => match n.parse::<usize>() {
                    Ok(n) if n >= 1 => Command::History(Some(n.min(50))),
                    _ => Command::Usage("usage: /history [n]   (1 to 50)"),
                },
            },
            "more" => Command::More,
            "raw" | "quote" => match arg_opt() {
                Some(l) => Command::Raw(l),
                None => Command::Usage("usage: /raw <protocol line>"),
            },
            "help" | "?" => Command::Help,
            "quit" | "exit" => Command::Quit(arg_opt()),
            _ => Command::Say(line.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(Command::parse("hello there "), Command::Say("hello there ".into()));
        assert_eq!(Command::parse("/join #General"), Command::Join("general".into()));
        assert_eq!(Command::parse("/join"), Command::Usage("usage: /join <room>"));
        assert_eq!(Command::parse("/part"), Command::Part(None));
        assert_eq!(Command::parse("/history 5"), Command::History(Some(5)));
        assert_eq!(Command::parse("/history 500"), Command::History(Some(50)));
        assert!(matches!(Command::parse("/history x"), Command::Usage(_)));
        assert_eq!(Command::parse("/stock=aapl.us"), Command::Say("/stock=aapl.us".into()));
        assert_eq!(Command::parse("/frob x"), Command::Say("/frob x".into()));
        assert_eq!(Command::parse("/quit bye now"), Command::Quit(Some("bye now".into())));
        assert_eq!(Command::parse("   "), Command::Nothing);
        assert_eq!(Command::parse("/who"), Command::Who(None));
    }
}
