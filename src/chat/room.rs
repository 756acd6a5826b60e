//! A room is an actor: one task owns its members and its cache of recent messages; everything else
//! talks to it through a `RoomHandle` (a bounded channel; requests that need an answer carry a
//! oneshot). A post gets its id and time here and is fanned out with non-blocking pushes; the
//! poster then queues it for the group commit (`client`), so the room never waits for the store.
//! Posts already waiting in the room's channel are accepted together and fanned out as one batch:
//! under load a member gets one event (one wake-up, one write) for many messages; alone, a post
//! goes out at once.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::bots::Bots;
use super::error::{ChatError, Limit, Unavailable};
use super::model::{
    now_millis, Batch, BotLine, ConnId, Deletion, Event, Kick, Membership, Message, Millis, Posted, RoleChange,
    RoomDeleted, Topic, TopicChange,
};
use super::names::{CommandWord, RoomName, UserName};
use super::outbox::Outbox;
use super::HISTORY_PAGE;
use crate::store::{RoomId, Store};

/// A room's operators and the accounts banned from it, as stored. Shared by the room's actor (a
/// JOIN is checked against the bans there, so a ban and a JOIN never cross) and everyone who
/// asks who may moderate the room (without a round trip to the actor).
#[derive(Debug, Default)]
pub struct Roles {
    pub ops: HashSet<UserName>,
    pub bans: HashSet<UserName>,
}

pub type SharedRoles = Arc<Mutex<Roles>>;

/// Locks a room's roles (a poisoned lock still holds the sets).
pub fn roles(shared: &SharedRoles) -> std::sync::MutexGuard<'_, Roles> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a new member gets back.
pub struct Joined {
    pub history: Vec<Arc<Posted>>,
    pub users: usize,
    pub topic: Option<Topic>,
}

/// Where a history page comes from: the room's cache, or (for older pages) the store.
pub enum HistoryPage {
    Cached(Vec<Arc<Posted>>),
    FromStore,
}

/// A line said in the room: who said it, from which connection, and whether as a bot (a bot
/// answers in rooms it has not joined).
pub struct Said {
    pub conn: ConnId,
    pub user: UserName,
    pub text: String,
    pub as_bot: bool,
    /// Said by a guest.
    pub guest: bool,
}

/// What the actor is asked to do.
enum Ask {
    Join {
        conn: ConnId,
        user: UserName,
        guest: bool,
        outbox: Outbox,
        reply: oneshot::Sender<Result<Joined, ChatError>>,
    },
    Part {
        conn: ConnId,
        reply: oneshot::Sender<bool>,
    },
    Post {
        said: Said,
        reply: oneshot::Sender<Result<Arc<Posted>, ChatError>>,
    },
    BotCommand {
        said: Said,
        word: CommandWord,
        reply: oneshot::Sender<Result<(Millis, usize), ChatError>>,
    },
    History {
        conn: ConnId,
        before: Option<u64>,
        limit: usize,
        reply: oneshot::Sender<Result<HistoryPage, ChatError>>,
    },
    Names {
        conn: ConnId,
        reply: oneshot::Sender<Result<Vec<UserName>, ChatError>>,
    },
    /// The users here, for another node answering NAMES (it checked the asker is a member).
    Users {
        reply: oneshot::Sender<Vec<UserName>>,
    },
    Topic {
        conn: ConnId,
        reply: oneshot::Sender<Result<Option<Topic>, ChatError>>,
    },
    SetTopic {
        conn: ConnId,
        topic: Topic,
        reply: oneshot::Sender<Result<(), ChatError>>,
    },
    Retract {
        id: u64,
    },
    /// Removes every connection of `kick.user` (telling the members first); answers how many.
    /// `elsewhere`: the user is in the room on another node, so the kick goes out even with none
    /// here.
    Kick {
        kick: Kick,
        elsewhere: bool,
        reply: oneshot::Sender<usize>,
    },
    /// Drops a deleted message from the cache and tells the members but `conn` (when it was
    /// `stored` or cached); answers whether the cache held it.
    Delete {
        conn: ConnId,
        deletion: Deletion,
        stored: bool,
        reply: oneshot::Sender<bool>,
    },
    /// Tells the members of a change in the roles (already made in the shared roles).
    Roles {
        change: RoleChange,
    },
    /// The room is deleted: the members are told and removed, and the actor stops.
    Close {
        deleted: RoomDeleted,
        reply: oneshot::Sender<()>,
    },
    /// A cluster node's committed messages, each with the id of the room's message before it.
    Deliver {
        messages: Vec<(Arc<Posted>, u64)>,
    },
    /// A cluster node's room: every message up to `upto` is committed; read what is missing.
    CatchUp {
        upto: u64,
    },
    /// The messages read from the store after `after` up to `upto` (`u64::MAX`: all there were).
    Backfilled {
        upto: u64,
        messages: Vec<Message>,
    },
    /// An event from another node: applied here and told to the members here.
    Remote {
        event: Event,
    },
}

/// A room as loaded from the store.
pub struct Loaded {
    pub room_id: RoomId,
    /// Its latest messages, oldest first.
    pub recent: Vec<Message>,
    /// Whether `recent` is all the room has.
    pub complete: bool,
    pub topic: Option<Topic>,
    pub roles: SharedRoles,
}

/// A cheap, cloneable handle to a room actor.
#[derive(Clone)]
pub struct RoomHandle {
    pub name: RoomName,
    pub room_id: RoomId,
    /// The room's operators and bans.
    pub roles: SharedRoles,
    tx: mpsc::Sender<Ask>,
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
    /// Set on a node of a cluster: messages get their ids from the commit and come back to the
    /// room to be fanned out (`Deliver`), and the room's events go to the other nodes.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl RoomHandle {
    /// Starts the actor for a room, with what was loaded of it from the store.
    pub fn spawn(
        name: RoomName,
        loaded: Loaded,
        settings: RoomSettings,
        store: Arc<Store>,
        bots: Arc<Bots>,
    ) -> RoomHandle {
        let Loaded { room_id, recent, complete, topic, roles } = loaded;
        let (tx, rx) = mpsc::channel(1024);
        let users = Arc::new(AtomicUsize::new(0));
        let last_time = recent.last().map(|m| m.time).unwrap_or(0);
        let last_id = recent.last().map_or(0, |m| m.id);
        let clustered = settings.cluster.is_some();
        let room = Room {
            name: name.clone(),
            members: HashMap::new(),
            users: HashMap::new(),
            user_count: users.clone(),
            recent: recent.into_iter().map(|m| Posted::new(m, None)).collect(),
            unsent: Vec::new(),
            unsent_bytes: 0,
            complete,
            topic,
            roles: roles.clone(),
            closed: false,
            last_time,
            settings,
            store,
            bots,
            room_id,
            last_id,
            pending: BTreeMap::new(),
            backfilling: false,
            wanted: 0,
            remote: false,
            me: tx.downgrade(),
        };
        tokio::spawn(room.run(rx));
        if clustered {
            // Whatever was committed between the load and now.
            let _ = tx.try_send(Ask::CatchUp { upto: u64::MAX });
        }
        RoomHandle { name, room_id, roles, tx, users }
    }

    /// How many distinct users are in the room now.
    pub fn user_count(&self) -> usize {
        self.users.load(Ordering::Relaxed)
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Ask) -> Result<T, ChatError> {
        let (tx, rx) = oneshot::channel();
        let gone = || ChatError::Unavailable(Unavailable::RoomStopped);
        self.tx.send(make(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    pub async fn join(&self, conn: ConnId, user: UserName, outbox: Outbox) -> Result<Joined, ChatError> {
        self.join_as(conn, user, false, outbox).await
    }

    /// Joins as a member (`guest` false) or as a guest (its JOIN and PART events say so).
    pub async fn join_as(
        &self,
        conn: ConnId,
        user: UserName,
        guest: bool,
        outbox: Outbox,
    ) -> Result<Joined, ChatError> {
        self.ask(|reply| Ask::Join { conn, user, guest, outbox, reply }).await?
    }

    /// Leaves; `false` if the connection was not a member.
    pub async fn part(&self, conn: ConnId) -> bool {
        self.ask(|reply| Ask::Part { conn, reply }).await.unwrap_or(false)
    }

    /// Accepts a message: it gets its id and time and goes out to the members. Storing it is the
    /// caller's next step.
    pub async fn post(&self, said: Said) -> Result<Arc<Posted>, ChatError> {
        self.ask(|reply| Ask::Post { said, reply }).await?
    }

    /// Relays a bot command line; returns its time and how many bots serve its word.
    pub async fn bot_command(&self, said: Said, word: CommandWord) -> Result<(Millis, usize), ChatError> {
        self.ask(|reply| Ask::BotCommand { said, word, reply }).await?
    }

    pub async fn history(&self, conn: ConnId, before: Option<u64>, limit: usize) -> Result<HistoryPage, ChatError> {
        self.ask(|reply| Ask::History { conn, before, limit, reply }).await?
    }

    /// The room's users, for a member.
    pub async fn names(&self, conn: ConnId) -> Result<Vec<UserName>, ChatError> {
        self.ask(|reply| Ask::Names { conn, reply }).await?
    }

    /// The room's users on this node (for another node's NAMES).
    pub async fn users_here(&self) -> Vec<UserName> {
        self.ask(|reply| Ask::Users { reply }).await.unwrap_or_default()
    }

    /// The room's topic, for a member.
    pub async fn topic(&self, conn: ConnId) -> Result<Option<Topic>, ChatError> {
        self.ask(|reply| Ask::Topic { conn, reply }).await?
    }

    /// Sets the topic (already stored) and tells the members but `conn`.
    pub async fn set_topic(&self, conn: ConnId, topic: Topic) -> Result<(), ChatError> {
        self.ask(|reply| Ask::SetTopic { conn, topic, reply }).await?
    }

    /// Drops a message that could not be stored from the cache.
    pub async fn retract(&self, id: u64) {
        let _ = self.tx.send(Ask::Retract { id }).await;
    }

    /// Removes every connection of `kick.user` from the room; the members (the user's
    /// connections included) get the kick first. Returns how many connections were removed.
    pub async fn kick(&self, kick: Kick) -> Result<usize, ChatError> {
        self.ask(|reply| Ask::Kick { kick, elsewhere: false, reply }).await
    }

    /// A cluster node's kick of a user who is in the room on another node: the members of every
    /// node are told, and each node removes the user's connections there.
    pub async fn kick_elsewhere(&self, kick: Kick) -> Result<usize, ChatError> {
        self.ask(|reply| Ask::Kick { kick, elsewhere: true, reply }).await
    }

    /// Drops a deleted message from the cache and tells the members but `conn`. Returns whether
    /// the cache held it.
    pub async fn delete(&self, conn: ConnId, deletion: Deletion, stored: bool) -> Result<bool, ChatError> {
        self.ask(|reply| Ask::Delete { conn, deletion, stored, reply }).await
    }

    /// Tells the members of a change in the roles.
    pub async fn announce(&self, change: RoleChange) {
        let _ = self.tx.send(Ask::Roles { change }).await;
    }

    /// Closes the room (deleted): members are told and removed, and the actor stops.
    pub async fn close(&self, deleted: RoomDeleted) {
        let _ = self.ask(|reply| Ask::Close { deleted, reply }).await;
    }

    /// Closes the room here, deleted on another node (the other nodes are not told again).
    pub async fn close_here(&self, deleted: RoomDeleted) {
        self.remote(Event::RoomDeleted(Arc::new(deleted))).await;
    }

    /// Committed messages (a cluster node's), each with the id of the room's message before it:
    /// fanned out in id order, a gap first filled from the store.
    pub async fn deliver(&self, messages: Vec<(Arc<Posted>, u64)>) {
        let _ = self.tx.send(Ask::Deliver { messages }).await;
    }

    /// Tells the room (a cluster node's) that messages up to `upto` are committed.
    pub async fn catch_up(&self, upto: u64) {
        let _ = self.tx.send(Ask::CatchUp { upto }).await;
    }

    /// An event from another node.
    pub async fn remote(&self, event: Event) {
        let _ = self.tx.send(Ask::Remote { event }).await;
    }
}

struct Member {
    user: UserName,
    guest: bool,
    outbox: Outbox,
}

struct Room {
    name: RoomName,
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
    topic: Option<Topic>,
    roles: SharedRoles,
    /// Deleted: the actor stops after this request.
    closed: bool,
    last_time: Millis,
    settings: RoomSettings,
    store: Arc<Store>,
    bots: Arc<Bots>,
    room_id: RoomId,
    /// A cluster node's: the id of the latest message fanned out here (every one before it was).
    last_id: u64,
    /// A cluster node's: messages that came before one they follow, by id, with their `prev`.
    pending: BTreeMap<u64, (Arc<Posted>, u64)>,
    /// A read of missed messages is under way.
    backfilling: bool,
    /// The highest id known to be committed that was not fanned out here yet: the next read
    /// reaches it (one read for every gap seen meanwhile).
    wanted: u64,
    /// Handling an event from another node: it is not sent back out.
    remote: bool,
    me: mpsc::WeakSender<Ask>,
}

/// Most posts fanned out as one batch.
const MAX_BATCH: usize = 128;

/// A cluster node's room holds back at most this many messages waiting for a missing one; past
/// that it reads them all from the store.
const MAX_PENDING: usize = 4096;

/// How long a message waits for one it follows (late on NATS) before the store is asked.
const GAP_WAIT: Duration = Duration::from_millis(200);

/// Most times the room lets other tasks run while posts keep arriving before it fans out.
const MAX_YIELDS: usize = 32;

impl Room {
    async fn run(mut self, mut rx: mpsc::Receiver<Ask>) {
        while let Some(ask) = rx.recv().await {
            self.handle(ask);
            self.take_waiting(&mut rx);
            // Under load, more posts arrive while the senders' tasks run: the room lets them run
            // (a scheduler turn, not a timer) as long as that brings more, then fans out the lot.
            // Alone, a post costs one turn. This is what makes deliveries cheap in a burst: one
            // wake-up and one write per member for many messages.
            for _ in 0..MAX_YIELDS {
                if self.unsent.is_empty() || self.batch_full() {
                    break;
                }
                tokio::task::yield_now().await;
                if self.take_waiting(&mut rx) == 0 {
                    break;
                }
            }
            self.send_unsent();
            if self.closed {
                // Deleted: requests still waiting find the room gone.
                return;
            }
        }
    }

    /// Handles the requests already waiting (until a batch is full), never waiting for more.
    /// Returns how many it handled.
    fn take_waiting(&mut self, rx: &mut mpsc::Receiver<Ask>) -> usize {
        let mut handled = 0;
        while !self.batch_full() && !self.closed {
            match rx.try_recv() {
                Ok(ask) => self.handle(ask),
                Err(_) => break,
            }
            handled += 1;
        }
        handled
    }

    fn handle(&mut self, ask: Ask) {
        if !matches!(ask, Ask::Post { .. } | Ask::Deliver { .. } | Ask::Backfilled { .. }) {
            // Everything else sees the room as it is after the posts before it: a new member
            // gets them in its history, not live; events keep their order.
            self.send_unsent();
        }
        match ask {
            Ask::Join { conn, user, guest, outbox, reply } => {
                let _ = reply.send(self.join(conn, user, guest, outbox));
            }
            Ask::Part { conn, reply } => {
                let _ = reply.send(self.remove(conn));
            }
            Ask::Post { said, reply } => {
                let _ = reply.send(self.post(said));
            }
            Ask::BotCommand { said, word, reply } => {
                let _ = reply.send(self.bot_command(said, word));
            }
            Ask::History { conn, before, limit, reply } => {
                let _ = reply.send(self.history(conn, before, limit));
            }
            Ask::Names { conn, reply } => {
                let _ = reply.send(self.names(conn));
            }
            Ask::Users { reply } => {
                let _ = reply.send(self.users.keys().cloned().collect());
            }
            Ask::Topic { conn, reply } => {
                let _ = reply.send(self.member(conn).map(|()| self.topic.clone()));
            }
            Ask::SetTopic { conn, topic, reply } => {
                let _ = reply.send(self.set_topic(conn, topic));
            }
            Ask::Retract { id } => self.recent.retain(|p| p.msg.id != id),
            Ask::Kick { kick, elsewhere, reply } => {
                let _ = reply.send(self.kick(kick, elsewhere));
            }
            Ask::Delete { conn, deletion, stored, reply } => {
                let cached = self.recent.iter().any(|p| p.msg.id == deletion.id);
                self.recent.retain(|p| p.msg.id != deletion.id);
                if stored || cached {
                    self.broadcast(Event::Deleted(Arc::new(deletion)), Some(conn));
                }
                let _ = reply.send(cached);
            }
            Ask::Roles { change } => self.broadcast(Event::Roles(Arc::new(change)), None),
            Ask::Close { deleted, reply } => {
                self.broadcast(Event::RoomDeleted(Arc::new(deleted)), None);
                for conn in self.members.keys().copied().collect::<Vec<_>>() {
                    self.drop_member(conn);
                }
                self.closed = true;
                let _ = reply.send(());
            }
            Ask::Deliver { messages } => {
                for (posted, prev) in messages {
                    self.offer(posted, prev);
                }
            }
            Ask::CatchUp { upto } => {
                if upto > self.last_id {
                    self.need(upto, Duration::ZERO);
                }
            }
            Ask::Backfilled { upto, messages } => self.backfilled(upto, messages),
            Ask::Remote { event } => {
                self.remote = true;
                self.apply_remote(event);
                self.remote = false;
            }
        }
    }

    /// A committed message (cluster): fanned out when every message before it in the room was;
    /// kept back otherwise while the missing ones are read from the store.
    fn offer(&mut self, posted: Arc<Posted>, prev: u64) {
        if posted.msg.id <= self.last_id {
            return; // delivered already (a backfill got it first, or NATS repeated it)
        }
        if prev > self.last_id {
            // It is committed, so is everything before it: one read up to it fills the gap.
            let id = posted.msg.id;
            if self.pending.len() < MAX_PENDING {
                self.pending.insert(id, (posted, prev));
            } // else far behind: the read brings it back
            self.need(id, GAP_WAIT);
            return;
        }
        self.accept(posted);
        self.release_pending();
    }

    /// Takes a message into the batch to fan out and the recent cache.
    fn accept(&mut self, posted: Arc<Posted>) {
        self.last_id = posted.msg.id;
        self.last_time = self.last_time.max(posted.msg.time);
        self.unsent_bytes += posted.weight();
        self.unsent.push(posted.clone());
        self.recent.push_back(posted);
        if self.recent.len() > self.settings.cache_messages {
            self.recent.pop_front();
            self.complete = false;
        }
    }

    /// Fans out the held-back messages that no longer wait for another.
    fn release_pending(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            let (id, prev) = (*entry.key(), entry.get().1);
            if id <= self.last_id {
                entry.remove();
            } else if prev <= self.last_id {
                let (posted, _) = entry.remove();
                self.accept(posted);
            } else {
                return;
            }
        }
    }

    /// Messages up to `upto` are committed but not here: read them (after `wait`, when none is
    /// being read: a message late on NATS usually arrives meanwhile). A read under way is
    /// followed at once by another up to the highest id wanted meanwhile.
    fn need(&mut self, upto: u64, wait: Duration) {
        self.wanted = self.wanted.max(upto);
        if !self.backfilling {
            self.backfill(self.wanted, wait);
        }
    }

    /// Reads the room's messages after the latest one here up to `upto` from the store,
    /// retrying while the store fails.
    fn backfill(&mut self, upto: u64, wait: Duration) {
        let Some(me) = self.me.upgrade() else { return };
        self.backfilling = true;
        let (store, room, after) = (self.store.clone(), self.room_id, self.last_id);
        let name = self.name.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let messages = loop {
                match store.between(room, after, upto).await {
                    Ok(stored) => break stored.into_iter().map(|m| Message::stored(&name, m)).collect(),
                    Err(e) => {
                        tracing::warn!(error = %e, room = %name, "cannot read missed messages yet");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            let _ = me.send(Ask::Backfilled { upto, messages }).await;
        });
    }

    fn backfilled(&mut self, upto: u64, messages: Vec<Message>) {
        self.backfilling = false;
        let newest = messages.last().map_or(0, |m| m.id);
        for m in messages {
            if m.id > self.last_id {
                crate::metrics::metrics().cluster_backfilled.inc();
                self.accept(Posted::new(m, None));
            }
        }
        // Everything up to `upto` is committed and was read (a deleted one is simply not there).
        let upto = if upto == u64::MAX { newest } else { upto };
        self.last_id = self.last_id.max(upto);
        if self.wanted == u64::MAX {
            self.wanted = self.last_id; // "all there were" (at start) was read
        }
        self.release_pending();
        if self.wanted > self.last_id {
            self.backfill(self.wanted, Duration::ZERO);
        }
    }

    /// An event from another node: the room's state follows it, and the members here are told.
    fn apply_remote(&mut self, event: Event) {
        match &event {
            // A user also here (another connection) neither arrives nor leaves for the members here.
            Event::Joined(m) | Event::Parted(m) if self.users.contains_key(&m.user) => return,
            Event::Topic(change) => self.topic = Some(change.topic.clone()),
            Event::Kicked(kick) => {
                let kick = Kick {
                    room: kick.room.clone(),
                    user: kick.user.clone(),
                    by: kick.by.clone(),
                    reason: kick.reason.clone(),
                };
                // Every member here is told, whether or not the user had a connection here.
                self.kick(kick, true);
                return;
            }
            Event::Deleted(deletion) => self.recent.retain(|p| p.msg.id != deletion.id),
            Event::RoomDeleted(_) => {
                self.broadcast(event, None);
                for conn in self.members.keys().copied().collect::<Vec<_>>() {
                    self.drop_member(conn);
                }
                self.closed = true;
                return;
            }
            Event::Command(line) => {
                if let Some(word) = CommandWord::of_bot_line(&line.text) {
                    let members = &self.members;
                    self.bots.relay(&word, &event, |c| members.contains_key(&c));
                }
            }
            _ => {}
        }
        self.broadcast(event, None);
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
                self.broadcast_here(Event::Message(posted), from);
            }
            _ => {
                let first = self.unsent[0].from;
                let one_sender = self.unsent.iter().all(|p| p.from == first);
                let batch = Batch::new(std::mem::take(&mut self.unsent));
                self.broadcast_here(Event::Messages(batch), if one_sender { first } else { None });
            }
        }
    }

    fn join(&mut self, conn: ConnId, user: UserName, guest: bool, outbox: Outbox) -> Result<Joined, ChatError> {
        if !self.members.contains_key(&conn) {
            if roles(&self.roles).bans.contains(&user) {
                return Err(ChatError::Banned(self.name.clone()));
            }
            if self.members.len() >= self.settings.members_per_room {
                return Err(ChatError::LimitReached(self.name.clone(), Limit::MembersPerRoom));
            }
            let first = {
                let n = self.users.entry(user.clone()).or_insert(0);
                *n += 1;
                *n == 1
            };
            if first {
                self.broadcast(
                    Event::Joined(Arc::new(Membership { room: self.name.clone(), user: user.clone(), guest })),
                    None,
                );
            }
            self.members.insert(conn, Member { user, guest, outbox });
            crate::metrics::metrics().members.inc();
            self.user_count.store(self.users.len(), Ordering::Relaxed);
        }
        let skip = self.recent.len().saturating_sub(HISTORY_PAGE);
        Ok(Joined {
            history: self.recent.iter().skip(skip).cloned().collect(),
            users: self.users.len(),
            topic: self.topic.clone(),
        })
    }

    /// Removes every connection of the kicked user, after telling the members (them included).
    fn kick(&mut self, kick: Kick, elsewhere: bool) -> usize {
        let conns: Vec<ConnId> = self.members.iter().filter(|(_, m)| m.user == kick.user).map(|(c, _)| *c).collect();
        if conns.is_empty() && !elsewhere {
            return 0;
        }
        self.broadcast(Event::Kicked(Arc::new(kick)), None);
        for conn in &conns {
            self.drop_member(*conn);
        }
        conns.len()
    }

    /// Removes a member without a PART (a kick or the room's deletion told the members).
    fn drop_member(&mut self, conn: ConnId) {
        let Some(member) = self.members.remove(&conn) else { return };
        crate::metrics::metrics().members.dec();
        match self.users.get_mut(&member.user) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                self.users.remove(&member.user);
            }
        }
        self.user_count.store(self.users.len(), Ordering::Relaxed);
    }

    /// Removes a member; announces PART when it was the user's last connection here.
    fn remove(&mut self, conn: ConnId) -> bool {
        let Some(member) = self.members.remove(&conn) else { return false };
        crate::metrics::metrics().members.dec();
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
            let (room, user, guest) = (self.name.clone(), member.user, member.guest);
            self.broadcast(Event::Parted(Arc::new(Membership { room, user, guest })), None);
        }
        true
    }

    /// Pushes an event to every member but `except` (members whose queue is full are dropped),
    /// and, on a cluster node, to the other nodes when it happened here.
    fn broadcast(&mut self, event: Event, except: Option<ConnId>) {
        if let (Some(cluster), false) = (&self.settings.cluster, self.remote) {
            cluster.publish(&event);
        }
        self.broadcast_here(event, except);
    }

    fn broadcast_here(&mut self, event: Event, except: Option<ConnId>) {
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

    /// Members may read and post; bots may also post without joining.
    fn member(&self, conn: ConnId) -> Result<(), ChatError> {
        match self.members.contains_key(&conn) {
            true => Ok(()),
            false => Err(ChatError::NotMember(self.name.clone())),
        }
    }

    fn may_post(&self, said: &Said) -> Result<(), ChatError> {
        if said.as_bot {
            return Ok(());
        }
        self.member(said.conn)
    }

    /// Sets the topic; the client checked who may (a member, or an operator from outside).
    fn set_topic(&mut self, conn: ConnId, topic: Topic) -> Result<(), ChatError> {
        self.topic = Some(topic.clone());
        let change = Arc::new(TopicChange { room: self.name.clone(), topic });
        self.broadcast(Event::Topic(change), Some(conn));
        Ok(())
    }

    fn names(&self, conn: ConnId) -> Result<Vec<UserName>, ChatError> {
        self.member(conn)?;
        let mut names: Vec<UserName> = self.users.keys().cloned().collect();
        names.sort();
        Ok(names)
    }

    /// The time for a new message: now, but never before the previous one (clocks can step back).
    fn next_time(&mut self) -> Millis {
        self.last_time = self.last_time.max(now_millis());
        self.last_time
    }

    fn post(&mut self, said: Said) -> Result<Arc<Posted>, ChatError> {
        self.may_post(&said)?;
        // On a cluster node its id comes from the commit, and it comes back here to be fanned out
        // (`Deliver`); alone, it gets its id here and goes out at once.
        let clustered = self.settings.cluster.is_some();
        let msg = Message {
            id: if clustered { 0 } else { self.store.next_message_id() },
            room: self.name.clone(),
            time: self.next_time(),
            sender: said.user,
            text: said.text,
            guest: said.guest,
        };
        let posted = Posted::new(msg, Some(said.conn));
        if !clustered {
            self.accept(posted.clone());
        }
        Ok(posted)
    }

    fn bot_command(&mut self, said: Said, word: CommandWord) -> Result<(Millis, usize), ChatError> {
        self.may_post(&said)?;
        let (conn, time) = (said.conn, self.next_time());
        let (sender, text, guest) = (said.user, said.text, said.guest);
        let event = Event::Command(Arc::new(BotLine { room: self.name.clone(), time, sender, text, guest }));
        self.broadcast(event.clone(), Some(conn));
        let members = &self.members;
        let mut bots = self.bots.relay(&word, &event, |c| c == conn || members.contains_key(&c));
        if let Some(cluster) = &self.settings.cluster {
            bots += cluster.remote_bots(word.as_str());
        }
        Ok((time, bots))
    }

    fn history(&self, conn: ConnId, before: Option<u64>, limit: usize) -> Result<HistoryPage, ChatError> {
        self.member(conn)?;
        let older: Vec<&Arc<Posted>> = self.recent.iter().filter(|p| before.is_none_or(|b| p.msg.id < b)).collect();
        if older.len() >= limit || self.complete {
            let skip = older.len().saturating_sub(limit);
            return Ok(HistoryPage::Cached(older[skip..].iter().map(|p| (*p).clone()).collect()));
        }
        Ok(HistoryPage::FromStore)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::outbox::{outbox, Inbox};
    use crate::config::StorageSection;

    fn user(name: &str) -> UserName {
        UserName::parse(name).unwrap()
    }

    fn said(conn: ConnId, who: &str, text: &str) -> Said {
        Said { conn, user: user(who), text: text.to_string(), as_bot: false, guest: false }
    }

    async fn room(dir: &tempfile::TempDir) -> RoomHandle {
        let store =
            Store::open(&StorageSection { db: dir.path().join("chatd.db"), ..Default::default() }).await.unwrap();
        let name = RoomName::parse("general").unwrap();
        let room_id = store.create_room(name.clone()).await.unwrap();
        let settings = RoomSettings { cache_messages: 200, members_per_room: 10, batch_bytes: 1000, cluster: None };
        let loaded = Loaded { room_id, recent: Vec::new(), complete: true, topic: None, roles: Default::default() };
        RoomHandle::spawn(name, loaded, settings, store, Arc::new(Bots::default()))
    }

    /// The messages `conn` is sent for one event, as "sender:text".
    fn messages_of(event: &Event, conn: ConnId) -> Vec<String> {
        let line = |p: &Arc<Posted>| format!("{}:{}", p.msg.sender, p.msg.text);
        match event {
            Event::Message(p) => vec![line(p)],
            Event::Messages(batch) => batch.for_member(conn).map(line).collect(),
            other => panic!("not a message: {other:?}"),
        }
    }

    /// The events in `conn`'s queue, and the messages they carry for it, with their ids.
    fn delivered(inbox: &mut Inbox, conn: ConnId) -> (usize, Vec<String>) {
        let (mut events, mut out) = (0, Vec::new());
        while let Some(ev) = inbox.try_recv() {
            events += 1;
            if matches!(ev, Event::Message(_) | Event::Messages(_)) {
                out.extend(messages_of(&ev, conn));
            }
        }
        (events, out)
    }

    fn ids(event: &Event) -> Vec<u64> {
        match event {
            Event::Message(p) => vec![p.msg.id],
            Event::Messages(b) => b.posts.iter().map(|p| p.msg.id).collect(),
            _ => vec![],
        }
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
        delivered(&mut alice_in, 1);
        let post = |conn, who: &str, text: &str| room.post(said(conn, who, text));
        let (a1, b1, a2) = tokio::join!(post(1, "alice", "a1"), post(2, "bob", "b1"), post(1, "alice", "a2"));
        let posted = [a1.unwrap().msg.id, b1.unwrap().msg.id, a2.unwrap().msg.id];
        assert!(posted[0] < posted[1] && posted[1] < posted[2]);
        room.names(1).await.unwrap(); // any request after the posts: they have gone out
        let event = bob_in.try_recv().expect("one event");
        assert!(bob_in.try_recv().is_none(), "one event for the three posts");
        assert_eq!(ids(&event), posted, "the batch holds the three, in id order");
        assert_eq!(messages_of(&event, 2), ["alice:a1", "alice:a2"], "never bob's own");
        let (events, messages) = delivered(&mut alice_in, 1);
        assert_eq!(events, 1);
        assert_eq!(messages, ["bob:b1"]);
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
        let post = || room.post(said(1, "alice", &text));
        let _ = tokio::join!(post(), post(), post(), post(), post(), post(), post());
        room.names(2).await.unwrap();
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
        let post = |text: &str| room.post(said(1, "alice", text));
        let (_, _, joined, _) =
            tokio::join!(post("one"), post("two"), room.join(2, user("dave"), dave_out), post("three"));
        let history: Vec<&str> = joined.as_ref().unwrap().history.iter().map(|p| p.msg.text.as_str()).collect();
        assert_eq!(history, ["one", "two"]);
        let first = tokio::time::timeout(Duration::from_secs(5), dave_in.recv()).await.unwrap().unwrap();
        room.names(2).await.unwrap();
        let mut live = messages_of(&first, 2);
        live.extend(delivered(&mut dave_in, 2).1);
        assert_eq!(live, ["alice:three"], "live after the join");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_kick_removes_every_connection_of_the_user_and_a_ban_refuses_the_join() {
        let dir = tempfile::tempdir().unwrap();
        let room = room(&dir).await;
        let (alice_out, mut alice_in) = outbox(1, 100, 1 << 20);
        let (bob_out, mut bob_in) = outbox(2, 100, 1 << 20);
        let (bob_phone, _bob_phone_in) = outbox(3, 100, 1 << 20);
        room.join(1, user("alice"), alice_out).await.unwrap();
        room.join(2, user("bob"), bob_out.clone()).await.unwrap();
        room.join(3, user("bob"), bob_phone).await.unwrap();
        delivered(&mut alice_in, 1);
        let kick = Kick { room: room.name.clone(), user: user("bob"), by: user("alice"), reason: "bye".into() };
        assert_eq!(room.kick(kick).await.unwrap(), 2);
        assert!(matches!(bob_in.try_recv(), Some(Event::Kicked(k)) if k.reason == "bye"), "bob is told");
        assert!(matches!(alice_in.try_recv(), Some(Event::Kicked(_))), "and the members");
        assert!(alice_in.try_recv().is_none(), "no PART after a kick");
        assert_eq!(room.names(1).await.unwrap(), [user("alice")]);
        roles(&room.roles).bans.insert(user("bob"));
        assert!(matches!(room.join(2, user("bob"), bob_out).await, Err(ChatError::Banned(_))));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn only_members_see_who_is_in_a_room() {
        let dir = tempfile::tempdir().unwrap();
        let room = room(&dir).await;
        let (alice_out, _alice_in) = outbox(1, 100, 1 << 20);
        room.join(1, user("alice"), alice_out).await.unwrap();
        assert_eq!(room.names(1).await.unwrap(), [user("alice")]);
        assert!(matches!(room.names(2).await, Err(ChatError::NotMember(_))));
    }
}
