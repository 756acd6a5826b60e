//! A connection's bounded outgoing queue. Rooms push events with `Outbox::push`, which never waits:
//! when the queue holds more than its byte or line bound, the push fails, the connection is marked
//! overflowed and its session disconnects it ("slow reader"). A slow reader never slows a room.
//!
//! The queue is a `VecDeque` under a mutex, with the waiting session's waker beside it: one short,
//! uncontended lock per push and per receive, and nothing kept while the queue is empty. (A tokio
//! channel keeps blocks of 32 slots and its own state, about 1 KiB per connection even when idle,
//! and a bounded one also takes a lock on every receive.) The push that overflows still goes in,
//! one event past the bound, so that it wakes a session waiting for events; that session sees the
//! overflow before writing anything and disconnects.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use tokio::sync::Notify;

use super::model::{ConnId, Event};

/// Most empty slots an idle queue keeps; a larger one is given back once drained.
const KEEP_SLOTS: usize = 8;

struct State {
    queue: Mutex<Queue>,
    max_bytes: usize,
    max_lines: usize,
    overflowed: AtomicBool,
    notify: Notify,
}

struct Queue {
    events: VecDeque<Event>,
    /// The weight of `events` (see `Event::weight`).
    bytes: usize,
    /// The session's task, when it waits for an event.
    waiting: Option<Waker>,
    /// The session is gone: pushes fail.
    closed: bool,
}

impl State {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending side, held by rooms and the bot registry. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    pub conn: ConnId,
    state: Arc<State>,
}

/// The receiving side, owned by the connection's session.
pub struct Inbox {
    state: Arc<State>,
}

pub fn outbox(conn: ConnId, max_lines: usize, max_bytes: usize) -> (Outbox, Inbox) {
    let state = Arc::new(State {
        queue: Mutex::new(Queue { events: VecDeque::new(), bytes: 0, waiting: None, closed: false }),
        max_bytes,
        max_lines,
        overflowed: AtomicBool::new(false),
        notify: Notify::new(),
    });
    (Outbox { conn, state: state.clone() }, Inbox { state })
}

impl Outbox {
    /// Queues an event without waiting. `false` means the connection is gone or overflowed: the
    /// caller should forget it.
    pub fn push(&self, event: Event) -> bool {
        if self.state.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        let weight = event.weight();
        let mut queue = self.state.queue();
        if queue.closed {
            return false;
        }
        let over = queue.bytes + weight > self.state.max_bytes || queue.events.len() >= self.state.max_lines;
        // In even when over (one past the bound; later pushes stop at the flag above): it wakes a
        // session waiting for events, which sees the overflow and never writes it.
        queue.bytes += weight;
        queue.events.push_back(event);
        let waiting = queue.waiting.take();
        drop(queue);
        if over {
            self.state.overflowed.store(true, Ordering::Relaxed);
            self.state.notify.notify_one();
        }
        if let Some(task) = waiting {
            task.wake();
        }
        !over
    }
}

impl Inbox {
    /// The next event. Cancel-safe. (Never `None` while an `Outbox` of this connection is held.)
    pub async fn recv(&mut self) -> Option<Event> {
        poll_fn(|cx| {
            let mut queue = self.state.queue();
            if let Some(event) = Self::pop(&mut queue) {
                return Poll::Ready(Some(event));
            }
            if Arc::strong_count(&self.state) == 1 {
                return Poll::Ready(None);
            }
            match &queue.waiting {
                Some(task) if task.will_wake(cx.waker()) => {}
                _ => queue.waiting = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    pub fn try_recv(&mut self) -> Option<Event> {
        Self::pop(&mut self.state.queue())
    }

    fn pop(queue: &mut Queue) -> Option<Event> {
        let event = queue.events.pop_front()?;
        queue.bytes -= event.weight();
        if queue.events.is_empty() && queue.events.capacity() > KEEP_SLOTS {
            queue.events = VecDeque::new(); // a burst's queue is not kept for the idle hours
        }
        Some(event)
    }

    /// Whether a push has failed for lack of room. Checked on every delivery: the overflowing
    /// push itself wakes a session waiting for events; one blocked writing waits on the watch
    /// below.
    pub fn has_overflowed(&self) -> bool {
        self.state.overflowed.load(Ordering::Relaxed)
    }

    /// A watch that resolves once a push has failed for lack of room.
    pub fn overflow_watch(&self) -> OverflowWatch {
        OverflowWatch { state: self.state.clone() }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut queue = self.state.queue();
        queue.closed = true;
        queue.waiting = None;
        // Dropped outside the lock: an event's last reference may free a batch.
        let events = std::mem::take(&mut queue.events);
        drop(queue);
        drop(events);
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

    #[tokio::test]
    async fn overflow_by_lines_wakes_the_receiver_and_stays_bounded() {
        let (out, mut inbox) = outbox(1, 2, 1 << 20);
        use crate::chat::model::{Event, Membership};
        use crate::chat::names::{RoomName, UserName};
        let (room, user) = (RoomName::parse("r").unwrap(), UserName::parse("bob").unwrap());
        let joined = Event::Joined(Arc::new(Membership { room, user, guest: false }));
        assert!(out.push(joined.clone()) && out.push(joined.clone()));
        assert!(!out.push(joined.clone()), "a third line exceeds 2");
        assert!(!out.push(joined.clone()), "stays overflowed");
        let mut n = 0;
        while inbox.try_recv().is_some() {
            n += 1;
        }
        assert_eq!(n, 3, "the overflowing push is queued (to wake the session), nothing after it");
        assert!(inbox.has_overflowed());
    }
}
