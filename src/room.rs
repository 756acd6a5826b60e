//! A room is an actor: one task owns its members and its cache of recent messages; everything else
//! talks to it through a `RoomHandle` (a bounded channel; requests that need an answer carry a
//! oneshot). A post is fanned out with non-blocking pushes, then queued for the group commit; the
//! sender's acknowledgement waits for the commit, nobody else does. Posts already waiting in the
//! room's channel are accepted together and fanned out as one batch: under load a member gets
//! one event (one wake-up, one write) for many messages; alone, a post goes out at once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::bots::Bots;
use crate::error::ChatError;
use crate::model::{now_millis, Batch, BotLine, Event, Membership, Message, Millis, Posted};
use crate::names::{CommandWord, RoomName, UserName};
use crate::outbox::{ConnId, Outbox};
use crate::store::{Store, StoreError};

/// What a new member gets back.
pub struct Joined {
    pub history: Vec<Arc<Posted>>,
    pub users: usize,
}

/// Where a history page comes from: the room's cache, or (for older pages) the database.
pub enum HistoryPage {
    Cached(Vec<Arc<Posted>>),
    FromStore { room_id: i64 },
}

/// An accepted post: the message, and the receiver that resolves once it is durably committed.
pub struct Accepted {
    pub posted: Arc<Posted>,
    pub committed: oneshot::Receiver<Result<(), StoreError>>,
}

enum Request {
    Join { conn: ConnId, user: UserName, outbox: Outbox, reply: oneshot::Sender<Result<Joined, ChatError>> },
    Part { conn: ConnId, reply: oneshot::Sender<bool> },
    Post { conn: ConnId, user: UserName, text: String, as_bot: bool, reply: oneshot::Sender<Result<Accepted, ChatError>> },
    BotCommand {
        conn: ConnId,
        user: UserName,
        text: String,
        word: CommandWord,
        as_bot: bool,
        reply: oneshot::Sender<Result<(Millis, usize), ChatError>>,
    },
    History { conn: ConnId, before: Option<u64>, limit: usize, reply: oneshot::Sender<Result<HistoryPage, ChatError>> },
    Names { reply: oneshot::Sender<Vec<UserName>> },
    Retract { id: u64 },
}

/// A cheap, cloneable handle to a room actor.
#[derive(Clone)]
pub struct RoomHandle {
    pub name: RoomName,
    tx: mpsc::Sender<Request>,
    users: Arc<AtomicUsize>,
}

/// Settings a room needs from the configuration.
#[derive(Clone)]
pub struct RoomSettings {
    pub cache_messages: usize,
    pub members_per_room: usize,
    /// Most bytes of messages in one batch: a fraction of a connection's queue bound, so a batch
    /// never overflows the queue of a member that keeps up.
    pub batch_bytes: usize,
}

impl RoomHandle {
    /// Starts the actor for a room whose `recent` messages (oldest first) were loaded from the
    /// store; `complete` says whether they are all the room has.
    pub fn spawn(
        name: RoomName,
        room_id: i64,
        recent: Vec<Message>,
        complete: bool,
        settings: RoomSettings,
        store: Arc<Store>,
        bots: Arc<Bots>,
    ) -> RoomHandle {
        let (tx, rx) = mpsc::channel(1024);
        let users = Arc::new(AtomicUsize::new(0));
        let last_time = recent.last().map(|m| m.time).unwrap_or(0);
        let room = Room {
            name: name.clone(),
            room_id,
            members: HashMap::new(),
            users: HashMap::new(),
            user_count: users.clone(),
            recent: recent.into_iter().map(|m| Posted::new(m, None)).collect(),
            unsent: Vec::new(),
            unsent_bytes: 0,
            complete,
            last_time,
            settings,
            store,
            bots,
        };
        tokio::spawn(room.run(rx));
        RoomHandle { name, tx, users }
    }

    /// How many distinct users are in the room now.
    pub fn user_count(&self) -> usize {
        self.users.load(Ordering::Relaxed)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, ChatError> {
        let (tx, rx) = oneshot::channel();
        let gone = || ChatError::Storage("room unavailable".into());
        self.tx.send(make(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    pub async fn join(&self, conn: ConnId, user: UserName, outbox: Outbox) -> Result<Joined, ChatError> {
        self.ask(|reply| Request::Join { conn, user, outbox, reply }).await?
    }

    /// Leaves; `false` if the connection was not a member.
    pub async fn part(&self, conn: ConnId) -> bool {
        self.ask(|reply| Request::Part { conn, reply }).await.unwrap_or(false)
    }

    pub async fn post(&self, conn: ConnId, user: UserName, text: String, as_bot: bool) -> Result<Accepted, ChatError> {
        self.ask(|reply| Request::Post { conn, user, text, as_bot, reply }).await?
    }

    /// Relays a bot command line; returns its time and how many bots serve its word.
    pub async fn bot_command(
        &self,
        conn: ConnId,
        user: UserName,
        text: String,
        word: CommandWord,
        as_bot: bool,
    ) -> Result<(Millis, usize), ChatError> {
        self.ask(|reply| Request::BotCommand { conn, user, text, word, as_bot, reply }).await?
    }

    pub async fn history(&self, conn: ConnId, before: Option<u64>, limit: usize) -> Result<HistoryPage, ChatError> {
        self.ask(|reply| Request::History { conn, before, limit, reply }).await?
    }

    pub async fn names(&self) -> Result<Vec<UserName>, ChatError> {
        self.ask(|reply| Request::Names { reply }).await
    }

    /// Drops a message that could not be stored from the cache.
    pub async fn retract(&self, id: u64) {
        let _ = self.tx.send(Request::Retract { id }).await;
    }
}

struct Member {
    user: UserName,
    outbox: Outbox,
}

struct Room {
    name: RoomName,
    room_id: i64,
    members: HashMap<ConnId, Member>,
    /// Connections per user, for JOIN/PART events and NAMES.
    users: HashMap<UserName, usize>,
    user_count: Arc<AtomicUsize>,
    recent: VecDeque<Arc<Posted>>,
    /// Accepted posts not yet fanned out (the current batch).
    unsent: Vec<Arc<Posted>>,
    unsent_bytes: usize,
    /// True while `recent` holds every message the room has (so no page needs the database).
    complete: bool,
    last_time: Millis,
    settings: RoomSettings,
    store: Arc<Store>,
    bots: Arc<Bots>,
}

/// Most posts fanned out as one batch.
const MAX_BATCH: usize = 128;

/// Most times the room lets other tasks run while posts keep arriving before it fans out.
const MAX_YIELDS: usize = 32;

impl Room {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(req) = rx.recv().await {
            self.handle(req).await;
            self.take_waiting(&mut rx).await;
            // Under load, more posts arrive while the senders' tasks run: the room lets them run
            // (a scheduler turn, not a timer) as long as that brings more, then fans out the lot.
            // Alone, a post costs one turn. This is what makes deliveries cheap in a burst: one
            // wake-up and one write per member for many messages.
            for _ in 0..MAX_YIELDS {
                if self.unsent.is_empty() || self.batch_full() {
                    break;
                }
                tokio::task::yield_now().await;
                if self.take_waiting(&mut rx).await == 0 {
                    break;
                }
            }
            self.send_unsent();
        }
    }

    /// Handles the requests already waiting (until a batch is full), never waiting for more.
    /// Returns how many it handled.
    async fn take_waiting(&mut self, rx: &mut mpsc::Receiver<Request>) -> usize {
        let mut handled = 0;
        while !self.batch_full() {
            match rx.try_recv() {
                Ok(req) => self.handle(req).await,
                Err(_) => break,
            }
            handled += 1;
        }
        handled
    }

    async fn handle(&mut self, req: Request) {
        if !matches!(req, Request::Post { .. }) {
            // Everything else sees the room as it is after the posts before it: a new member
            // gets them in its history, not live; events keep their order.
            self.send_unsent();
        }
        match req {
            Request::Join { conn, user, outbox, reply } => {
                let _ = reply.send(self.join(conn, user, outbox));
            }
            Request::Part { conn, reply } => {
                let _ = reply.send(self.remove(conn));
            }
            Request::Post { conn, user, text, as_bot, reply } => {
                let result = self.post(conn, user, text, as_bot).await;
                let _ = reply.send(result);
            }
            Request::BotCommand { conn, user, text, word, as_bot, reply } => {
                let _ = reply.send(self.bot_command(conn, user, text, word, as_bot));
            }
            Request::History { conn, before, limit, reply } => {
                let _ = reply.send(self.history(conn, before, limit));
            }
            Request::Names { reply } => {
                let mut names: Vec<UserName> = self.users.keys().cloned().collect();
                names.sort();
                let _ = reply.send(names);
            }
            Request::Retract { id } => self.recent.retain(|p| p.msg.id != id),
        }
    }

    fn batch_full(&self) -> bool {
        self.unsent.len() >= MAX_BATCH || self.unsent_bytes >= self.settings.batch_bytes
    }

    /// Fans out the posts accepted since the last call: one alone as itself (not to its sender),
    /// several as one batch (each member skips its own).
    fn send_unsent(&mut self) {
        self.unsent_bytes = 0;
        match self.unsent.len() {
            0 => {}
            1 => {
                let posted = self.unsent.pop().expect("one");
                let from = posted.from;
                self.broadcast(Event::Message(posted), from);
            }
            _ => {
                let first = self.unsent[0].from;
                let one_sender = self.unsent.iter().all(|p| p.from == first);
                let batch = Batch::new(std::mem::take(&mut self.unsent));
                self.broadcast(Event::Messages(batch), if one_sender { first } else { None });
            }
        }
    }

    fn join(&mut self, conn: ConnId, user: UserName, outbox: Outbox) -> Result<Joined, ChatError> {
        if !self.members.contains_key(&conn) {
            if self.members.len() >= self.settings.members_per_room {
                return Err(ChatError::LimitReached(self.name.clone(), "this room is full"));
            }
            let first = {
                let n = self.users.entry(user.clone()).or_insert(0);
                *n += 1;
                *n == 1
            };
            if first {
                self.broadcast(Event::Joined(Arc::new(Membership { room: self.name.clone(), user: user.clone() })), None);
            }
            self.members.insert(conn, Member { user, outbox });
            self.user_count.store(self.users.len(), Ordering::Relaxed);
        }
        let skip = self.recent.len().saturating_sub(crate::parse::HISTORY_PAGE);
        Ok(Joined { history: self.recent.iter().skip(skip).cloned().collect(), users: self.users.len() })
    }

    /// Removes a member; announces PART when it was the user's last connection here.
    fn remove(&mut self, conn: ConnId) -> bool {
        let Some(member) = self.members.remove(&conn) else { return false };
        let last = match self.users.get_mut(&member.user) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                self.users.remove(&member.user);
                true
            }
        };
        self.user_count.store(self.users.len(), Ordering::Relaxed);
        if last {
            self.broadcast(Event::Parted(Arc::new(Membership { room: self.name.clone(), user: member.user })), None);
        }
        true
    }

    /// Pushes an event to every member but `except`; members whose queue is full are dropped.
    fn broadcast(&mut self, event: Event, except: Option<ConnId>) {
        let mut overflowed = Vec::new();
        for (conn, member) in &self.members {
            if Some(*conn) != except && !member.outbox.push(event.clone()) {
                overflowed.push(*conn);
            }
        }
        for conn in overflowed {
            self.remove(conn);
        }
    }

    fn may_post(&self, conn: ConnId, as_bot: bool) -> Result<(), ChatError> {
        if as_bot || self.members.contains_key(&conn) {
            Ok(())
        } else {
            Err(ChatError::NotMember(self.name.clone()))
        }
    }

    /// The time for a new message: now, but never before the previous one (clocks can step back).
    fn next_time(&mut self) -> Millis {
        self.last_time = self.last_time.max(now_millis());
        self.last_time
    }

    async fn post(&mut self, conn: ConnId, user: UserName, text: String, as_bot: bool) -> Result<Accepted, ChatError> {
        self.may_post(conn, as_bot)?;
        let msg = Message {
            id: self.store.next_message_id(),
            room: self.name.clone(),
            time: self.next_time(),
            sender: user,
            text,
        };
        let posted = Posted::new(msg, Some(conn));
        self.unsent_bytes += posted.weight();
        self.unsent.push(posted.clone());
        self.recent.push_back(posted.clone());
        if self.recent.len() > self.settings.cache_messages {
            self.recent.pop_front();
            self.complete = false;
        }
        let committed = self.store.append(self.room_id, posted.clone()).await;
        Ok(Accepted { posted, committed })
    }

    fn bot_command(
        &mut self,
        conn: ConnId,
        user: UserName,
        text: String,
        word: CommandWord,
        as_bot: bool,
    ) -> Result<(Millis, usize), ChatError> {
        self.may_post(conn, as_bot)?;
        let time = self.next_time();
        let event = Event::Command(Arc::new(BotLine { room: self.name.clone(), time, sender: user, text }));
        self.broadcast(event.clone(), Some(conn));
        let members = &self.members;
        let bots = self.bots.relay(&word, &event, |c| c == conn || members.contains_key(&c));
        Ok((time, bots))
    }

    fn history(&self, conn: ConnId, before: Option<u64>, limit: usize) -> Result<HistoryPage, ChatError> {
        if !self.members.contains_key(&conn) {
            return Err(ChatError::NotMember(self.name.clone()));
        }
        let older: Vec<&Arc<Posted>> = self.recent.iter().filter(|p| before.is_none_or(|b| p.msg.id < b)).collect();
        if older.len() >= limit || self.complete {
            let skip = older.len().saturating_sub(limit);
            return Ok(HistoryPage::Cached(older[skip..].iter().map(|p| (*p).clone()).collect()));
        }
        Ok(HistoryPage::FromStore { room_id: self.room_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageSection;
    use crate::outbox::{outbox, Inbox};
    use std::time::Duration;

    fn user(name: &str) -> UserName {
        UserName::parse(name).unwrap()
    }

    async fn room(dir: &tempfile::TempDir) -> RoomHandle {
        let store = Store::open(&StorageSection { db: dir.path().join("chatd.db"), ..Default::default() }).unwrap();
        let name = RoomName::parse("general").unwrap();
        let room_id = store.create_room(name.clone()).await.unwrap();
        let settings = RoomSettings { cache_messages: 200, members_per_room: 10, batch_bytes: 1000 };
        RoomHandle::spawn(name, room_id, Vec::new(), true, settings, store, Arc::new(Bots::default()))
    }

    /// What `conn` would be sent for everything in its queue.
    fn rendered(inbox: &mut Inbox, conn: ConnId) -> (usize, String) {
        let (mut events, mut out) = (0, Vec::new());
        while let Some(ev) = inbox.try_recv() {
            events += 1;
            crate::reply::event(&mut out, &ev, conn);
        }
        (events, String::from_utf8(out).unwrap())
    }

    // A current-thread runtime: the room's task runs only when the test awaits, so requests sent
    // together are waiting in its channel together, as under load.

    #[tokio::test(flavor = "current_thread")]
    async fn posts_that_arrive_together_go_out_as_one_event_never_to_their_sender() {
        let dir = tempfile::tempdir().unwrap();
        let room = room(&dir).await;
        let (alice_out, mut alice_in) = outbox(1, 100, 1 << 20);
        let (bob_out, mut bob_in) = outbox(2, 100, 1 << 20);
        room.join(1, user("alice"), alice_out).await.unwrap();
        room.join(2, user("bob"), bob_out).await.unwrap();
        rendered(&mut alice_in, 1);
        let post = |conn, who: &str, text: &str| room.post(conn, user(who), text.to_string(), false);
        let (a1, b1, a2) = tokio::join!(post(1, "alice", "a1"), post(2, "bob", "b1"), post(1, "alice", "a2"));
        let ids = [a1.unwrap().posted.msg.id, b1.unwrap().posted.msg.id, a2.unwrap().posted.msg.id];
        assert!(ids[0] < ids[1] && ids[1] < ids[2]);
        room.names().await.unwrap(); // any request after the posts: they have gone out
        let (events, text) = rendered(&mut bob_in, 2);
        assert_eq!(events, 1, "one event for the three posts");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with(&format!("* MSG general {} ", ids[0])) && lines[0].ends_with(" alice :a1"), "{text}");
        assert!(lines[1].starts_with(&format!("* MSG general {} ", ids[2])) && lines[1].ends_with(" alice :a2"), "{text}");
        assert!(text.contains(":a1\r\n") && text.contains(":a2\r\n") && !text.contains(":b1"), "{text}");
        let (events, text) = rendered(&mut alice_in, 1);
        assert_eq!(events, 1);
        assert!(text.contains(":b1\r\n") && !text.contains(":a1") && !text.contains(":a2"), "{text}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_stays_within_its_byte_bound() {
        let dir = tempfile::tempdir().unwrap();
        let room = room(&dir).await; // batch_bytes: 1000
        let (alice_out, _alice_in) = outbox(1, 100, 1 << 20);
        let (bob_out, mut bob_in) = outbox(2, 100, 1 << 20);
        room.join(1, user("alice"), alice_out).await.unwrap();
        room.join(2, user("bob"), bob_out).await.unwrap();
        let text = "x".repeat(300); // about 400 bytes each on the wire
        let post = || room.post(1, user("alice"), text.clone(), false);
        let _ = tokio::join!(post(), post(), post(), post(), post(), post(), post());
        room.names().await.unwrap();
        let mut sizes = Vec::new();
        while let Some(ev) = bob_in.try_recv() {
            sizes.push(ev.weight());
            assert!(ev.weight() < 1000 + 400, "batch of {} bytes", ev.weight());
        }
        assert_eq!(sizes.len(), 3, "7 posts of ~400 bytes in batches of at most 3: {sizes:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn posts_accepted_before_a_join_are_the_joiners_history_not_live_messages() {
        let dir = tempfile::tempdir().unwrap();
        let room = room(&dir).await;
        let (alice_out, _alice_in) = outbox(1, 100, 1 << 20);
        let (dave_out, mut dave_in) = outbox(2, 100, 1 << 20);
        room.join(1, user("alice"), alice_out).await.unwrap();
        let post = |text: &str| room.post(1, user("alice"), text.to_string(), false);
        let (_, _, joined, _) = tokio::join!(post("one"), post("two"), room.join(2, user("dave"), dave_out), post("three"));
        let history: Vec<&str> = joined.as_ref().unwrap().history.iter().map(|p| p.msg.text.as_str()).collect();
        assert_eq!(history, ["one", "two"]);
        let first = tokio::time::timeout(Duration::from_secs(5), dave_in.recv()).await.unwrap().unwrap();
        let mut live = Vec::new();
        crate::reply::event(&mut live, &first, 2);
        room.names().await.unwrap();
        let live = String::from_utf8(live).unwrap() + &rendered(&mut dave_in, 2).1;
        assert!(live.ends_with(":three\r\n") && live.lines().count() == 1, "live after the join: {live:?}");
    }
}
