//! What the client knows of the conversation, across connections: who it is logged in as, the
//! joined rooms (in the order joined) and the current one, the ids of the messages already shown
//! in each room (so a replay after reconnecting shows only what was missed), the history paging
//! cursor, and the lines typed while disconnected. No I/O here.

use std::collections::{HashMap, HashSet, VecDeque};

use chatd_proto::command::Command;
use chatd_proto::names::RoomName;
use chatd_proto::ChatMessage;

use crate::command::DEFAULT_HISTORY;

pub struct State {
    /// The user name as the server shows it.
    pub me: String,
    rooms: Vec<RoomName>,
    current: Option<RoomName>,
    /// Ids of the messages already shown, per room.
    seen: HashMap<String, HashSet<u64>>,
    /// The oldest id shown per room: where `/history` pages on from.
    oldest: HashMap<String, u64>,
    /// Page size of the last `/history`, for `/more`.
    page: usize,
    /// Lines typed while disconnected, sent once connected again.
    queued: VecDeque<String>,
}

impl State {
    pub fn new(me: String) -> State {
        State {
            me,
            rooms: Vec::new(),
            current: None,
            seen: HashMap::new(),
            oldest: HashMap::new(),
            page: DEFAULT_HISTORY,
            queued: VecDeque::new(),
        }
    }

    pub fn rooms(&self) -> &[RoomName] {
        &self.rooms
    }

    pub fn current(&self) -> Option<&RoomName> {
        self.current.as_ref()
    }

    pub fn is_joined(&self, room: &RoomName) -> bool {
        self.rooms.contains(room)
    }

    /// Makes `room` current before the server confirmed the join (lines read meanwhile go there;
    /// the server handles them after the JOIN).
    pub fn expect_current(&mut self, room: &RoomName) {
        self.current = Some(room.clone());
    }

    /// The server confirmed a join.
    pub fn joined(&mut self, room: &RoomName, make_current: bool) {
        if !self.is_joined(room) {
            self.rooms.push(room.clone());
        }
        if make_current || self.current.is_none() {
            self.current = Some(room.clone());
        }
    }

    /// A join was refused: `room` stops being current if it was only expected to be.
    pub fn join_refused(&mut self, room: &RoomName) {
        if self.current.as_ref() == Some(room) && !self.is_joined(room) {
            self.current = self.rooms.last().cloned();
        }
    }

    /// A rejoin after reconnecting was refused: the room is gone from the list.
    pub fn rejoin_refused(&mut self, room: &RoomName) {
        self.rooms.retain(|r| r != room);
        if self.current.as_ref() == Some(room) {
            self.current = self.rooms.first().cloned();
        }
    }

    /// Left `room`. Returns the new current room when the current one was left.
    pub fn left(&mut self, room: &RoomName) -> Option<RoomName> {
        self.rooms.retain(|r| r != room);
        if self.current.as_ref() != Some(room) {
            return None;
        }
        self.current = self.rooms.last().cloned();
        self.current.clone()
    }

    /// Makes a joined room current; false when it is not joined.
    pub fn switch(&mut self, room: &RoomName) -> bool {
        let joined = self.is_joined(room);
        if joined {
            self.current = Some(room.clone());
        }
        joined
    }

    /// Remembers that `m` was shown; false when it had been shown already.
    pub fn remember(&mut self, m: &ChatMessage) -> bool {
        let Some(id) = m.id else { return true };
        let oldest = self.oldest.entry(m.room.clone()).or_insert(id);
        *oldest = (*oldest).min(id);
        self.seen.entry(m.room.clone()).or_default().insert(id)
    }

    /// True when some message of `room` was shown already.
    pub fn has_seen(&self, room: &RoomName) -> bool {
        self.seen.get(room.as_str()).is_some_and(|s| !s.is_empty())
    }

    /// The messages of a replay not shown yet.
    pub fn missed(&self, room: &RoomName, replay: &[ChatMessage]) -> Vec<ChatMessage> {
        let seen = self.seen.get(room.as_str());
        replay.iter().filter(|m| m.id.is_some_and(|id| !seen.is_some_and(|s| s.contains(&id)))).cloned().collect()
    }

    /// The `HISTORY` command for the next page of the current room, older than the oldest shown;
    /// `page` sets the page size for this and later pages.
    pub fn history(&mut self, page: Option<usize>) -> Option<(RoomName, Command)> {
        let room = self.current.clone()?;
        self.page = page.unwrap_or(self.page);
        let before = self.oldest.get(room.as_str()).copied();
        Some((room.clone(), Command::History { room, before, limit: Some(self.page) }))
    }

    /// Keeps a typed line to send after reconnecting (`first`: before the others).
    pub fn queue(&mut self, line: String, first: bool) {
        if first {
            self.queued.push_front(line);
        } else {
            self.queued.push_back(line);
        }
    }

    pub fn next_queued(&mut self) -> Option<String> {
        self.queued.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomName {
        RoomName::parse(s).unwrap()
    }

    fn msg(room: &str, id: u64) -> ChatMessage {
        ChatMessage {
            room: room.into(),
            id: Some(id),
            time: "2026-11-29T04:48:06.123Z".into(),
            sender: "bob".into(),
            text: format!("m{id}"),
            is_command: false,
        }
    }

    #[test]
    fn rooms_and_current() {
        let mut s = State::new("alice".into());
        s.expect_current(&room("a"));
        s.join_refused(&room("a"));
        assert_eq!(s.current(), None);
        s.joined(&room("a"), true);
        s.joined(&room("b"), false);
        assert_eq!(s.current(), Some(&room("a")));
        assert!(s.switch(&room("b")));
        assert!(!s.switch(&room("c")));
        assert_eq!(s.left(&room("b")), Some(room("a")));
        assert_eq!(s.left(&room("x")), None);
        assert_eq!(s.rooms(), &[room("a")]);
    }

    #[test]
    fn replays_show_only_what_was_missed_and_history_pages_back() {
        let mut s = State::new("alice".into());
        s.joined(&room("g"), true);
        assert!(s.remember(&msg("g", 5)));
        assert!(!s.remember(&msg("g", 5)));
        assert!(s.remember(&msg("g", 7)));
        let missed = s.missed(&room("g"), &[msg("g", 5), msg("g", 6), msg("g", 7), msg("g", 8)]);
        assert_eq!(missed.iter().map(|m| m.id.unwrap()).collect::<Vec<_>>(), [6, 8]);
        let (_, cmd) = s.history(Some(4)).unwrap();
        assert_eq!(cmd.to_string(), "HISTORY g BEFORE 5 LIMIT 4");
        s.remember(&msg("g", 1));
        assert_eq!(s.history(None).unwrap().1.to_string(), "HISTORY g BEFORE 1 LIMIT 4");
    }
}
