//! A connection's bounded outgoing queue. Rooms push events with `Outbox::push`, which never waits:
//! when the queue holds more than its byte or line bound, the push fails, the connection is marked
//! overflowed and its session disconnects it ("slow reader"). A slow reader never slows a room.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use super::model::{ConnId, Event};

struct State {
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    overflowed: AtomicBool,
    notify: Notify,
}

/// The sending side, held by rooms and the bot registry. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    pub conn: ConnId,
    tx: mpsc::Sender<Event>,
    state: Arc<State>,
}

/// The receiving side, owned by the connection's session.
pub struct Inbox {
    rx: mpsc::Receiver<Event>,
    state: Arc<State>,
}

pub fn outbox(conn: ConnId, max_lines: usize, max_bytes: usize) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(max_lines);
    let state = Arc::new(State {
        queued_bytes: AtomicUsize::new(0),
        max_bytes,
        overflowed: AtomicBool::new(false),
        notify: Notify::new(),
    });
    (Outbox { conn, tx, state: state.clone() }, Inbox { rx, state })
}

impl Outbox {
    /// Queues an event without waiting. `false` means the connection is gone or overflowed: the
    /// caller should forget it.
    pub fn push(&self, event: Event) -> bool {
        if self.state.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        let weight = event.weight();
        let queued = self.state.queued_bytes.fetch_add(weight, Ordering::Relaxed) + weight;
        if queued > self.state.max_bytes || self.tx.try_send(event).is_err() {
            self.state.queued_bytes.fetch_sub(weight, Ordering::Relaxed);
            self.state.overflowed.store(true, Ordering::Relaxed);
            self.state.notify.notify_one();
            return false;
        }
        true
    }
}

impl Inbox {
    pub async fn recv(&mut self) -> Option<Event> {
        let ev = self.rx.recv().await?;
        self.state.queued_bytes.fetch_sub(ev.weight(), Ordering::Relaxed);
        Some(ev)
    }

    pub fn try_recv(&mut self) -> Option<Event> {
        let ev = self.rx.try_recv().ok()?;
        self.state.queued_bytes.fetch_sub(ev.weight(), Ordering::Relaxed);
        Some(ev)
    }

    /// Whether a push has failed for lack of room. Checked on every delivery, so a session kept
    /// busy by deliveries notices at once; an idle one is woken by the watch below.
    pub fn has_overflowed(&self) -> bool {
        self.state.overflowed.load(Ordering::Relaxed)
    }

    /// A watch that resolves once a push has failed for lack of room.
    pub fn overflow_watch(&self) -> OverflowWatch {
        OverflowWatch { state: self.state.clone() }
    }
}

/// Resolves once the connection's queue has overflowed.
pub struct OverflowWatch {
    state: Arc<State>,
}

impl OverflowWatch {
    pub async fn overflowed(&self) {
        loop {
            if self.state.overflowed.load(Ordering::Relaxed) {
                return;
            }
            self.state.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_by_bytes_marks_the_connection() {
        let (out, mut inbox) = outbox(1, 100, 200);
        use crate::chat::model::BotLine;
        use crate::chat::names::{RoomName, UserName};
        let line = |text: &str| {
            let (room, sender) = (RoomName::parse("r").unwrap(), UserName::parse("bob").unwrap());
            Event::Command(std::sync::Arc::new(BotLine { room, time: 0, sender, text: text.into(), guest: false }))
        };
        assert!(out.push(line(&"x".repeat(60))), "156 bytes");
        assert!(!out.push(line(&"x".repeat(60))), "second push exceeds 200 bytes");
        assert!(!out.push(line("y")), "stays overflowed");
        inbox.overflow_watch().overflowed().await;
        assert!(inbox.try_recv().is_some());
    }
}
