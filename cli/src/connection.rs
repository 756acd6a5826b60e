//! One logged-in connection to the daemon, as the session uses it: server lines read by their own
//! task (reading is not cancel-safe) and handed over whole; commands written from typed
//! `chatd_proto` values, each under a fresh label, with what the session attached to it kept until
//! the final reply with that label arrives; and why the connection ended (closed, `* BYE`, an I/O
//! error, silence), as data for the view to put into words.

use std::collections::BTreeMap;
use std::io;

use chatd_proto::client::LineWriter;
use chatd_proto::command::{Command, Request};
use chatd_proto::names::Label;
use chatd_proto::{LineConn, Reply, ServerLine};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Why a connection ended.
#[derive(Debug)]
pub enum Lost {
    /// The server closed it without a word.
    Closed,
    /// The server said `* BYE :<reason>`, then closed it.
    Bye(String),
    /// Reading or writing failed.
    Failed(io::Error),
    /// Nothing came back for too long, not even an answer to a PING.
    Silent,
}

/// What a reply answers.
pub enum Answer<T> {
    /// A data line (1xx) of the command sent with this id; the command is still pending.
    Partial(u64),
    /// The final reply of a command: what was attached to it.
    Final(T),
    /// Not the answer to a command sent here with a label.
    Unmatched,
}

/// The canonical line of a command (what is written, without the CRLF).
pub fn wire_line(label: Option<Label>, command: Command) -> String {
    Request { label, command }.to_string()
}

/// Labels are `c1`, `c2`, ...: the id the session knows a command by.
fn label_of(id: u64) -> Label {
    Label::parse(&format!("c{id}")).expect("c followed by digits is a valid label")
}

fn id_of(label: &str) -> Option<u64> {
    label.strip_prefix('c')?.parse().ok()
}

/// A live connection; `T` is what the session attaches to each command it sends.
pub struct Connection<T> {
    writer: LineWriter,
    lines: mpsc::Receiver<io::Result<Option<ServerLine>>>,
    _reader: AbortOnDrop,
    last_id: u64,
    pending: BTreeMap<u64, T>,
    bye: Option<String>,
}

impl<T> Connection<T> {
    /// Takes over a logged-in connection and starts reading from it.
    pub fn new(conn: LineConn) -> Self {
        let (mut reader, writer) = conn.split();
        let (tx, lines) = mpsc::channel::<io::Result<Option<ServerLine>>>(1024);
        let task = tokio::spawn(async move {
            loop {
                let item = reader.next().await;
                let last = !matches!(item, Ok(Some(_)));
                if tx.send(item).await.is_err() || last {
                    break;
                }
            }
        });
        Connection { writer, lines, _reader: AbortOnDrop(task), last_id: 0, pending: BTreeMap::new(), bye: None }
    }

    /// Sends `command` under a fresh label and keeps `what` until its final reply.
    pub async fn request(&mut self, command: Command, what: T) -> io::Result<()> {
        let id = self.last_id + 1;
        self.writer.send(&wire_line(Some(label_of(id)), command)).await?;
        self.last_id = id;
        self.pending.insert(id, what);
        Ok(())
    }

    /// Sends `command` without a label, expecting nothing back (`PONG`).
    pub async fn notify(&mut self, command: Command) -> io::Result<()> {
        self.writer.send(&wire_line(None, command)).await
    }

    /// The next server line (cancel-safe), or why there is none.
    pub async fn next(&mut self) -> Result<ServerLine, Lost> {
        match self.lines.recv().await {
            Some(Ok(Some(line))) => {
                if let ServerLine::Event(e) = &line {
                    if e.name == "BYE" {
                        self.bye = Some(e.text.clone().unwrap_or_default());
                    }
                }
                Ok(line)
            }
            Some(Ok(None)) | None => Err(self.bye.take().map_or(Lost::Closed, Lost::Bye)),
            Some(Err(e)) => Err(self.bye.take().map_or(Lost::Failed(e), Lost::Bye)),
        }
    }

    /// The next server line if one comes before `deadline`.
    pub async fn next_before(&mut self, deadline: Instant) -> Option<ServerLine> {
        tokio::time::timeout_at(deadline, self.next()).await.ok()?.ok()
    }

    /// Matches a reply to the command it answers; a final reply ends the command.
    pub fn answer(&mut self, reply: &Reply) -> Answer<T> {
        let Some(id) = reply.label.as_deref().and_then(id_of).filter(|id| self.pending.contains_key(id)) else {
            return Answer::Unmatched;
        };
        if !reply.is_final() {
            return Answer::Partial(id);
        }
        self.pending.remove(&id).map_or(Answer::Unmatched, Answer::Final)
    }

    /// What was attached to the pending command `id`.
    pub fn pending_mut(&mut self, id: u64) -> Option<&mut T> {
        self.pending.get_mut(&id)
    }

    /// The commands still waiting for their final reply, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &T> {
        self.pending.values()
    }

    /// Forgets the pending commands (the connection is gone), oldest first.
    pub fn take_pending(&mut self) -> Vec<T> {
        std::mem::take(&mut self.pending).into_values().collect()
    }

    /// Closes the writing side (TLS close_notify).
    pub async fn close(&mut self) {
        let _ = self.writer.shutdown().await;
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use chatd_proto::names::{RoomName, Token};
    use chatd_proto::parse::parse_line;

    use super::*;
    use crate::state::State;

    /// Every kind of line the session sends parses back, with the daemon's parser, to the typed
    /// request it was written from.
    #[test]
    fn lines_built_from_typed_commands_parse_back() {
        let room = RoomName::parse("#General").unwrap();
        let mut state = State::new("alice".into());
        state.joined(&room, true);
        let mut commands = vec![
            Command::Join(room.clone()),
            Command::Part(room.clone()),
            Command::Names(room.clone()),
            Command::Rooms,
            Command::Msg { room: room.clone(), text: "hello".into() },
            Command::Msg { room: room.clone(), text: "  spaces  kept  ".into() },
            Command::Msg { room: room.clone(), text: "/stock=aapl.us".into() },
            Command::Msg { room: room.clone(), text: ":colon and ünïcode".into() },
            Command::Quit(None),
            Command::Quit(Some("see you later".into())),
            Command::Ping(Token::parse("keepalive")),
            Command::Pong(Token::parse("abc123").unwrap()),
        ];
        commands.push(state.history(None).unwrap().1);
        state.remember(&chatd_proto::ChatMessage {
            room: "general".into(),
            id: Some(42),
            time: "2026-11-29T04:48:06.123Z".into(),
            sender: "bob".into(),
            text: "hi".into(),
            is_command: false,
        });
        commands.push(state.history(Some(5)).unwrap().1);
        for (i, command) in commands.into_iter().enumerate() {
            for label in [None, Some(label_of(i as u64 + 1))] {
                let line = wire_line(label.clone(), command.clone());
                let parsed = parse_line(line.as_bytes(), 2000).unwrap_or_else(|e| panic!("{line:?}: {e:?}"));
                assert_eq!(parsed, Request { label, command: command.clone() }, "{line:?}");
            }
        }
    }

    #[test]
    fn labels_carry_ids() {
        assert_eq!(label_of(17).as_str(), "c17");
        assert_eq!(id_of("c17"), Some(17));
        assert_eq!(id_of("login"), None);
        assert_eq!(id_of("c"), None);
    }
}
