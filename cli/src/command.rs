//! What a typed line means: a client slash command (`/join`, `/history`, ...) or text to post in
//! the current room. Unknown slash commands (`/stock=aapl.us`) are posted as they are, for the bots.
//! Room names are checked here, by the protocol's own rules.

use chatd_proto::names::RoomName;

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
  /raw <line>       send a protocol line (checked as the daemon would)
  /help             this help
  /quit [reason]    leave
  /stock=aapl.us    any other /command is posted to the room for the bots";

/// Default page size of `/history`.
pub const DEFAULT_HISTORY: usize = 20;

/// What a typed line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do (an empty line).
    Nothing,
    Join(RoomName),
    Part(Option<RoomName>),
    Switch(RoomName),
    Rooms,
    Who(Option<RoomName>),
    History(Option<usize>),
    More,
    Raw(String),
    Help,
    Quit(Option<String>),
    /// Text (or a bot command line) to post in the current room.
    Say(String),
    /// A client command used wrongly; the text says how to use it.
    Usage(&'static str),
    /// A room name the daemon would refuse (as typed).
    BadRoom(String),
}

impl Action {
    pub fn parse(line: &str) -> Action {
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            return Action::Nothing;
        }
        let Some(rest) = line.strip_prefix('/') else {
            return Action::Say(line.to_string());
        };
        let (word, arg) = match rest.split_once(char::is_whitespace) {
            Some((w, a)) => (w, a.trim()),
            None => (rest, ""),
        };
        let arg_opt = || (!arg.is_empty()).then(|| arg.to_string());
        // A room argument: none, a valid name, or a name the daemon would refuse.
        let room = || if arg.is_empty() { Ok(None) } else { RoomName::parse(arg).map(Some).ok_or(arg) };
        let needs_room = |usage| match room() {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(Action::Usage(usage)),
            Err(bad) => Err(Action::BadRoom(bad.to_string())),
        };
        match word.to_ascii_lowercase().as_str() {
            "join" | "j" => needs_room("usage: /join <room>").map_or_else(|e| e, Action::Join),
            "part" | "leave" => room().map_or_else(|bad| Action::BadRoom(bad.to_string()), Action::Part),
            "switch" | "sw" | "go" => needs_room("usage: /switch <room>").map_or_else(|e| e, Action::Switch),
            "rooms" | "list" => Action::Rooms,
            "who" | "names" => room().map_or_else(|bad| Action::BadRoom(bad.to_string()), Action::Who),
            "history" => match arg_opt() {
                None => Action::History(None),
                Some(n) => match n.parse::<usize>() {
                    Ok(n) if n >= 1 => Action::History(Some(n.min(50))),
                    _ => Action::Usage("usage: /history [n]   (1 to 50)"),
                },
            },
            "more" => Action::More,
            "raw" | "quote" => match arg_opt() {
                Some(l) => Action::Raw(l),
                None => Action::Usage("usage: /raw <protocol line>"),
            },
            "help" | "?" => Action::Help,
            "quit" | "exit" => Action::Quit(arg_opt()),
            _ => Action::Say(line.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let room = |s| RoomName::parse(s).unwrap();
        assert_eq!(Action::parse("hello there "), Action::Say("hello there ".into()));
        assert_eq!(Action::parse("/join #General"), Action::Join(room("general")));
        assert_eq!(Action::parse("/join no/slash"), Action::BadRoom("no/slash".into()));
        assert_eq!(Action::parse("/join a b"), Action::BadRoom("a b".into()));
        assert_eq!(Action::parse("/switch"), Action::Usage("usage: /switch <room>"));
        assert_eq!(Action::parse("/who #Random"), Action::Who(Some(room("random"))));
        assert_eq!(Action::parse("/join"), Action::Usage("usage: /join <room>"));
        assert_eq!(Action::parse("/part"), Action::Part(None));
        assert_eq!(Action::parse("/history 5"), Action::History(Some(5)));
        assert_eq!(Action::parse("/history 500"), Action::History(Some(50)));
        assert!(matches!(Action::parse("/history x"), Action::Usage(_)));
        assert_eq!(Action::parse("/stock=aapl.us"), Action::Say("/stock=aapl.us".into()));
        assert_eq!(Action::parse("/frob x"), Action::Say("/frob x".into()));
        assert_eq!(Action::parse("/quit bye now"), Action::Quit(Some("bye now".into())));
        assert_eq!(Action::parse("   "), Action::Nothing);
        assert_eq!(Action::parse("/who"), Action::Who(None));
    }
}
