//! One connection as a client of the core: who it is (`Identity`), the rooms it joined, and its
//! acknowledgement pipeline. A front end calls these methods and renders the results; it never
//! talks to a room, the registry or the store itself.
//!
//! The pipeline: a post is accepted by its room (fanned out at once), then queued for the group
//! commit, and its acknowledgement is owed until the commit stands. Posts are pipelined (the next
//! line is read while earlier ones commit), acknowledgements come out in order, and every other
//! reply waits until the owed ones are settled (`settle_all`), so replies keep the command order.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::oneshot::error::TryRecvError;

use super::error::{ChatError, GuestRefusal, Limit, Unavailable};
use super::model::{now_millis, ConnId, Event, Message, Millis, Posted, Topic};
use super::names::{CommandWord, Password, RoomName, UserName};
use super::outbox::Outbox;
use super::room::{HistoryPage, Joined, RoomHandle, Said};
use super::users::Online;
use super::{Chat, HISTORY_PAGE, TOPIC_MAX_BYTES};
use crate::store::{Bound, Committed, Position, Range, RoomId, Stamp, StoreError, StoredTopic};

/// Most of one connection's messages waiting for their commit at once. A fast sender fills the
/// group commit; past this, its next post waits for its oldest.
pub const MAX_POSTS_IN_FLIGHT: usize = 64;

/// Who is on the other end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// Connected, not logged in: may only register or log in.
    Anonymous,
    User(UserName),
    /// A bot account; `serving` once it asked for bot command lines (it may then post in rooms it
    /// has not joined).
    Bot {
        name: UserName,
        serving: bool,
    },
    /// A guest (where `[guests]` allows them): a nick that is no account's name, unique among
    /// the guests online, with the guests' limits. Logging in or registering turns the connection
    /// into the account's user.
    Guest(UserName),
}

/// What a post became.
#[derive(Debug)]
pub enum PostOutcome {
    /// Stored and fanned out; its acknowledgement is owed (see `Client::wait_settled`).
    Accepted,
    /// A bot command line, relayed live (never stored) to this many bots.
    Relayed { time: Millis, bots: usize },
    /// A direct message from or to a guest: delivered live to this many connections of the
    /// recipient, never stored (a guest's nick may become an account's name later).
    Delivered { time: Millis, connections: usize },
}

/// A conversation: a room, or the one with another user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversation {
    Room(RoomName),
    With(UserName),
}

/// A place in a conversation: a message id, or a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Id(u64),
    Time(Millis),
}

/// Which messages of a conversation to read (CHATHISTORY's subcommands). References are
/// exclusive except AROUND's, which includes the message it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryQuery {
    /// The newest `limit` messages (after `after`, when given).
    Latest {
        after: Option<Anchor>,
        limit: usize,
    },
    Before {
        anchor: Anchor,
        limit: usize,
    },
    After {
        anchor: Anchor,
        limit: usize,
    },
    /// About half before the anchor, the rest from it on.
    Around {
        anchor: Anchor,
        limit: usize,
    },
    /// Between two references, in either order: the `limit` nearest to `from`.
    Between {
        from: Anchor,
        to: Anchor,
        limit: usize,
    },
}

impl HistoryQuery {
    /// The store ranges that make up the answer, in time order.
    fn ranges(self) -> Vec<Range> {
        let limit = |n: usize| n.min(HISTORY_PAGE);
        let at = |a: Anchor, inclusive| {
            let p = match a {
                Anchor::Id(id) => Position::Id(id),
                Anchor::Time(t) => Position::Time(t),
            };
            Bound { at: p, inclusive }
        };
        let range = |after, before, n, newest_first| Range { after, before, limit: limit(n), newest_first };
        match self {
            HistoryQuery::Latest { after, limit: n } => vec![range(after.map(|a| at(a, false)), None, n, true)],
            HistoryQuery::Before { anchor, limit: n } => vec![range(None, Some(at(anchor, false)), n, true)],
            HistoryQuery::After { anchor, limit: n } => vec![range(Some(at(anchor, false)), None, n, false)],
            HistoryQuery::Around { anchor, limit: n } => {
                let before = limit(n) / 2;
                let mut ranges = vec![range(Some(at(anchor, true)), None, limit(n) - before, false)];
                if before > 0 {
                    ranges.insert(0, range(None, Some(at(anchor, false)), before, true));
                }
                ranges
            }
            HistoryQuery::Between { from, to, limit: n } => {
                // Which reference is the later one is only known for two of a kind; a message id
                // and a time are taken in the order given.
                let backwards = match (from, to) {
                    (Anchor::Id(a), Anchor::Id(b)) => a > b,
                    (Anchor::Time(a), Anchor::Time(b)) => a > b,
                    _ => false,
                };
                let (lo, hi) = if backwards { (to, from) } else { (from, to) };
                vec![range(Some(at(lo, false)), Some(at(hi, false)), n, backwards)]
            }
        }
    }
}

/// What one user may learn of another.
#[derive(Debug, Clone)]
pub struct UserInfo {
    pub user: UserName,
    pub is_bot: bool,
    /// `None` when offline.
    pub online: Option<Online>,
    /// The rooms the asker shares with the user.
    pub rooms: Vec<RoomName>,
}

/// A post whose fate is known: committed, or not stored (and taken back from its room).
pub struct Settled<T> {
    /// What the front end attached to the post (a request label, say).
    pub tag: T,
    pub message: Arc<Posted>,
    pub result: Result<(), ChatError>,
}

/// A post accepted by its room (or a direct message sent), waiting for its commit.
struct Owed<T> {
    tag: T,
    /// The room whose cache holds it (none for a direct message).
    room: Option<RoomHandle>,
    message: Arc<Posted>,
    committed: Committed,
    /// The commit's result once `wait_settled` saw it (`Some(None)`: the store went away).
    decided: Option<Option<Result<Stamp, StoreError>>>,
}

impl<T> Owed<T> {
    /// Waits for the commit's result (or takes the one already seen).
    async fn result(&mut self) -> Option<Result<Stamp, StoreError>> {
        match self.decided.take() {
            Some(result) => result,
            None => (&mut self.committed).await.ok(),
        }
    }
}

/// One connection's state in the core. `T` is what the front end attaches to each post.
pub struct Client<T> {
    pub(super) conn: ConnId,
    pub(super) peer: IpAddr,
    outbox: Outbox,
    pub(super) chat: Arc<Chat>,
    identity: Identity,
    /// The rooms joined (few: a Vec is smaller than a map).
    pub(super) joined: Vec<RoomHandle>,
    /// Acknowledgements owed, oldest first.
    owed: VecDeque<Owed<T>>,
    /// Settled while making room for a new post, not yet taken by the front end.
    settled: VecDeque<Settled<T>>,
}

impl<T> Client<T> {
    pub fn new(conn: ConnId, peer: IpAddr, outbox: Outbox, chat: Arc<Chat>) -> Client<T> {
        Client {
            conn,
            peer,
            outbox,
            chat,
            identity: Identity::Anonymous,
            joined: Vec::new(),
            owed: VecDeque::new(),
            settled: VecDeque::new(),
        }
    }

    pub fn conn(&self) -> ConnId {
        self.conn
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn is_logged_in(&self) -> bool {
        self.identity != Identity::Anonymous
    }

    pub fn is_bot(&self) -> bool {
        matches!(self.identity, Identity::Bot { .. })
    }

    /// Logged in to an account (a user or a bot), not a guest.
    pub fn is_member(&self) -> bool {
        matches!(self.identity, Identity::User(_) | Identity::Bot { .. })
    }

    pub fn is_guest(&self) -> bool {
        matches!(self.identity, Identity::Guest(_))
    }

    /// Whether `name` is a guest online now (for marking guests in lists).
    pub fn is_guest_name(&self, name: &UserName) -> bool {
        self.chat.users.is_guest(name, None)
    }

    /// The rooms this connection is in.
    pub fn joined_rooms(&self) -> Vec<RoomName> {
        self.joined.iter().map(|h| h.name.clone()).collect()
    }

    /// The name this connection goes by: a member's account, or a guest's nick.
    pub(super) fn user(&self) -> Result<UserName, ChatError> {
        match &self.identity {
            Identity::Anonymous => Err(ChatError::NotLoggedIn),
            Identity::User(name) | Identity::Bot { name, .. } | Identity::Guest(name) => Ok(name.clone()),
        }
    }

    fn serving(&self) -> bool {
        matches!(self.identity, Identity::Bot { serving: true, .. })
    }

    fn joined(&self, room: &RoomName) -> Option<&RoomHandle> {
        self.joined.iter().find(|h| h.name == *room)
    }

    /// Becomes a guest named `nick` (or renames a guest that is in no room yet).
    pub async fn guest(&mut self, nick: &UserName) -> Result<UserName, ChatError> {
        if !self.chat.guests.enabled {
            return Err(ChatError::GuestsDisabled);
        }
        match &self.identity {
            Identity::User(_) | Identity::Bot { .. } => return Err(ChatError::AlreadyLoggedIn),
            Identity::Guest(current) if current == nick => return Ok(nick.clone()),
            Identity::Guest(_) if !self.joined.is_empty() => return Err(ChatError::AlreadyLoggedIn),
            Identity::Guest(_) | Identity::Anonymous => {}
        }
        if self.chat.store().account_hash(nick.clone()).await?.is_some() {
            return Err(ChatError::NickIsAccount(nick.clone()));
        }
        if !self.chat.users.claim_guest(nick, self.outbox.clone()) {
            return Err(ChatError::NickInUse(nick.clone()));
        }
        if let Identity::Guest(old) = &self.identity {
            self.chat.users.leave(old, self.conn);
        }
        tracing::debug!(conn = self.conn, nick = %nick, "guest");
        self.identity = Identity::Guest(nick.clone());
        Ok(nick.clone())
    }

    /// Creates an account and logs in as it. A guest may: it becomes the account's user (see
    /// `become_member`); the name must not be another guest's now.
    pub async fn register(&mut self, user: &UserName, password: &Password) -> Result<UserName, ChatError> {
        if self.is_member() {
            return Err(ChatError::AlreadyLoggedIn);
        }
        if self.chat.users.is_guest(user, Some(self.conn)) {
            return Err(ChatError::NameTaken);
        }
        let who = self.chat.accounts.register(user, password, self.peer).await?;
        self.become_member(Identity::User(who.user.clone())).await;
        Ok(who.user)
    }

    pub async fn login(&mut self, user: &UserName, password: &Password) -> Result<UserName, ChatError> {
        if self.is_member() {
            return Err(ChatError::AlreadyLoggedIn);
        }
        let who = self.chat.accounts.login(user, password, self.peer).await?;
        tracing::debug!(conn = self.conn, user = %who.user, "logged in");
        let identity = match who.is_bot {
            true => Identity::Bot { name: who.user.clone(), serving: false },
            false => Identity::User(who.user.clone()),
        };
        self.become_member(identity).await;
        Ok(who.user)
    }

    /// Logs in as `identity`. A guest leaves its guest identity first: it parts the rooms it
    /// joined as a guest (members see the guest leave) and gives up its nick, then re-joins those
    /// rooms as the account's user (members see the user join). A room it cannot re-join (full)
    /// is left; `joined_rooms` tells which remain.
    async fn become_member(&mut self, identity: Identity) {
        let mut rooms = Vec::new();
        if let Identity::Guest(nick) = &self.identity {
            rooms = std::mem::take(&mut self.joined);
            for handle in &rooms {
                handle.part(self.conn).await;
            }
            self.chat.users.leave(nick, self.conn);
        }
        self.identity = identity;
        let me = self.user().expect("a member");
        self.chat.users.arrive(&me, self.outbox.clone());
        for handle in rooms {
            if handle.join(self.conn, me.clone(), self.outbox.clone()).await.is_ok() {
                self.joined.push(handle);
            }
        }
    }

    /// Leaves every room and logs out.
    pub async fn logout(&mut self) {
        self.leave_everything().await;
        if let Ok(me) = self.user() {
            self.chat.users.leave(&me, self.conn);
        }
        self.identity = Identity::Anonymous;
    }

    /// Every room with its number of users, by name.
    pub fn rooms(&self) -> Result<Vec<(RoomName, usize)>, ChatError> {
        self.user()?;
        Ok(self.chat.rooms.list())
    }

    pub async fn join(&mut self, room: &RoomName) -> Result<Joined, ChatError> {
        let user = self.user()?;
        let guest = self.is_guest();
        if guest && !self.chat.guests.may_join(room) {
            return Err(ChatError::GuestRefused(GuestRefusal::Room(room.clone())));
        }
        let already = self.joined(room).is_some();
        let most = if guest { self.chat.guests.rooms_per_connection } else { self.chat.rooms_per_connection };
        if !already && self.joined.len() >= most {
            return Err(ChatError::LimitReached(room.clone(), Limit::RoomsPerConnection));
        }
        // Guests never create rooms; a member who does is the new room's first operator.
        let creator = (self.chat.auto_create && !guest).then_some(&user);
        let handle = self.chat.rooms.get(room, creator).await?;
        let joined = handle.join_as(self.conn, user, guest, self.outbox.clone()).await?;
        if !already {
            self.joined.push(handle);
        }
        Ok(joined)
    }

    pub async fn part(&mut self, room: &RoomName) -> Result<(), ChatError> {
        self.user()?;
        let i = self.joined.iter().position(|h| h.name == *room).ok_or_else(|| ChatError::NotMember(room.clone()))?;
        self.joined.swap_remove(i).part(self.conn).await;
        Ok(())
    }

    /// The users in a room this connection joined.
    pub async fn names(&self, room: &RoomName) -> Result<Vec<UserName>, ChatError> {
        self.user()?;
        let handle = match self.joined(room) {
            Some(h) => h.clone(),
            None => self.chat.rooms.get(room, None).await?,
        };
        let mut names = handle.names(self.conn).await?;
        if let Some(cluster) = &self.chat.cluster {
            names.extend(cluster.remote_names(room).await);
            names.sort();
            names.dedup();
        }
        Ok(names)
    }

    /// Posts `text`: a bot command line is relayed; anything else is stored, and its
    /// acknowledgement carries `tag` once it is durable.
    pub async fn post(&mut self, room: &RoomName, text: String, tag: T) -> Result<PostOutcome, ChatError> {
        let user = self.user()?;
        let as_bot = self.serving();
        let handle = match self.joined(room) {
            Some(h) => h.clone(),
            None if as_bot => self.chat.rooms.get(room, None).await?,
            None => return Err(ChatError::NotMember(room.clone())),
        };
        let guest = self.is_guest();
        let said = Said { conn: self.conn, user, text, as_bot, guest };
        if let Some(word) = CommandWord::of_bot_line(&said.text) {
            if guest && !self.chat.guests.bot_commands {
                return Err(ChatError::GuestRefused(GuestRefusal::BotCommand(room.clone())));
            }
            let (time, bots) = handle.bot_command(said, word.clone()).await?;
            if bots == 0 {
                return Err(ChatError::NoBot(room.clone(), word));
            }
            crate::metrics::metrics().bot_commands_relayed.inc();
            return Ok(PostOutcome::Relayed { time, bots });
        }
        let message = handle.post(said).await?;
        crate::metrics::metrics().messages_accepted.inc();
        let committed = self.chat.store.append(handle.room_id, message.clone()).await;
        self.owe(Owed { tag, room: Some(handle), message, committed, decided: None }).await;
        Ok(PostOutcome::Accepted)
    }

    /// Queues an acknowledgement; past `MAX_POSTS_IN_FLIGHT`, first waits for the oldest.
    async fn owe(&mut self, owed: Owed<T>) {
        if self.owed.len() >= MAX_POSTS_IN_FLIGHT {
            let mut oldest = self.owed.pop_front().expect("not empty");
            let result = oldest.result().await;
            let settled = settle(oldest, result).await;
            self.settled.push_back(settled);
        }
        self.owed.push_back(owed);
    }

    /// Sends a direct message to `to`: stored like a post (its acknowledgement carries `tag`), and
    /// pushed to every connection of both users but this one.
    pub async fn direct(&mut self, to: &UserName, text: String, tag: T) -> Result<PostOutcome, ChatError> {
        let me = self.user()?;
        let guest = self.is_guest();
        if guest || self.chat.users.is_guest(to, None) {
            return self.direct_live(me, to, text).await;
        }
        let conversation =
            self.chat.conversation(&me, to, true).await?.ok_or_else(|| ChatError::NoSuchUser(to.clone()))?;
        let store = self.chat.store();
        if store.clustered() {
            // Its id comes from the commit, and it is delivered from there (`cluster`).
            let message = conversation.next(|time| {
                let msg =
                    Message { id: 0, room: RoomName::direct(&me, to), time, sender: me.clone(), text, guest: false };
                Posted::new(msg, Some(self.conn))
            });
            crate::metrics::metrics().messages_accepted.inc();
            let committed = store.append(conversation.id, message.clone()).await;
            self.owe(Owed { tag, room: None, message, committed, decided: None }).await;
            return Ok(PostOutcome::Accepted);
        }
        let message = conversation.next(|time| {
            let msg = Message {
                id: store.next_message_id(),
                room: RoomName::direct(&me, to),
                time,
                sender: me.clone(),
                text,
                guest: false,
            };
            let posted = Posted::new(msg, Some(self.conn));
            // Pushed while the conversation's order is held: events go out in id order.
            self.chat.users.deliver(&[&me, to], &Event::Direct(posted.clone()), self.conn);
            posted
        });
        crate::metrics::metrics().messages_accepted.inc();
        let committed = store.append(conversation.id, message.clone()).await;
        self.owe(Owed { tag, room: None, message, committed, decided: None }).await;
        Ok(PostOutcome::Accepted)
    }

    /// A direct message from or to a guest: pushed to the recipient's connections (and the
    /// sender's others), never stored. A guest may write to another guest, and to a member only
    /// where `[guests] direct_messages_to_members` allows it.
    async fn direct_live(&mut self, me: UserName, to: &UserName, text: String) -> Result<PostOutcome, ChatError> {
        let guest = self.is_guest();
        let to_guest = self.chat.users.is_guest(to, Some(self.conn));
        if guest && !to_guest {
            if !self.chat.guests.direct_messages_to_members {
                return Err(ChatError::GuestRefused(GuestRefusal::DirectMessage(to.clone())));
            }
            if self.chat.store().account_hash(to.clone()).await?.is_none() {
                return Err(ChatError::NoSuchUser(to.clone()));
            }
        }
        let time = now_millis();
        let id = self.chat.store().next_message_id();
        let msg = Message { id, room: RoomName::direct(&me, to), time, sender: me.clone(), text, guest };
        let connections = if *to == me { 0 } else { self.chat.users.connections(to) };
        self.chat.users.deliver(&[&me, to], &Event::Direct(Posted::new(msg, Some(self.conn))), self.conn);
        Ok(PostOutcome::Delivered { time, connections })
    }

    /// A room's topic (members only).
    pub async fn topic(&self, room: &RoomName) -> Result<Option<Topic>, ChatError> {
        self.user()?;
        let handle = self.joined(room).ok_or_else(|| ChatError::NotMember(room.clone()))?;
        handle.topic(self.conn).await
    }

    /// Sets a room's topic: stored first, then shown to the other members. In a room with
    /// operators only they (and admins) may; in a room without (the configured initial rooms,
    /// rooms made before operators existed) every member may.
    pub async fn set_topic(&mut self, room: &RoomName, text: String) -> Result<Topic, ChatError> {
        let me = self.user()?;
        if self.is_guest() {
            return Err(ChatError::GuestRefused(GuestRefusal::Topic(room.clone())));
        }
        if text.len() > TOPIC_MAX_BYTES {
            return Err(ChatError::TopicTooLong(TOPIC_MAX_BYTES));
        }
        let handle = match self.joined(room) {
            Some(h) => h.clone(),
            // Operators and admins set topics without joining.
            None if self.moderates(room).unwrap_or(false) => self.chat.rooms.get(room, None).await?,
            None => return Err(ChatError::NotMember(room.clone())),
        };
        let (open, op) = {
            let roles = super::room::roles(&handle.roles);
            (roles.ops.is_empty(), roles.ops.contains(&me))
        };
        if !open && !op && !self.is_admin() {
            return Err(ChatError::NotOperator(room.clone()));
        }
        let topic = Topic { text, set_by: me, time: now_millis() };
        let stored = StoredTopic { text: topic.text.clone(), set_by: topic.set_by.clone(), time: topic.time };
        self.chat.store().set_topic(handle.room_id, stored).await?;
        handle.set_topic(self.conn, topic.clone()).await?;
        Ok(topic)
    }

    /// Messages of a conversation (a joined room, or the one with another user), oldest first.
    pub async fn history_query(
        &self,
        conversation: &Conversation,
        query: HistoryQuery,
    ) -> Result<Vec<Message>, ChatError> {
        let started = std::time::Instant::now();
        let me = self.user()?;
        let (id, name) = match conversation {
            Conversation::Room(room) => {
                let handle = self.joined(room).ok_or_else(|| ChatError::NotMember(room.clone()))?;
                (handle.room_id, room.clone())
            }
            // A guest's direct messages are never stored.
            Conversation::With(_) if self.is_guest() => return Ok(Vec::new()),
            Conversation::With(peer) => match self.chat.conversation(&me, peer, false).await? {
                Some(c) => (c.id, RoomName::direct(&me, peer)),
                None => return Ok(Vec::new()),
            },
        };
        let store = self.chat.store();
        let mut out = Vec::new();
        for range in query.ranges() {
            out.extend(store.messages(id, range).await?.into_iter().map(|m| Message::stored(&name, m)));
        }
        crate::metrics::metrics().observe_history(started.elapsed());
        Ok(out)
    }

    /// The joined rooms and the users this one has written with, each with the time of its latest
    /// message strictly between `from` and `to` (those without one are left out), earliest first.
    pub async fn targets(
        &self,
        from: Anchor,
        to: Anchor,
        limit: usize,
    ) -> Result<Vec<(Conversation, Millis)>, ChatError> {
        let me = self.user()?;
        let (Anchor::Time(a), Anchor::Time(b)) = (from, to) else { return Err(ChatError::BadReference) };
        let (after, before) = (a.min(b), a.max(b));
        let store = self.chat.store();
        let mut names: Vec<(RoomId, Conversation)> =
            self.joined.iter().map(|h| (h.room_id, Conversation::Room(h.name.clone()))).collect();
        if !self.is_guest() {
            for (id, peer) in store.directs_of(me).await? {
                names.push((id, Conversation::With(peer)));
            }
        }
        let ids = names.iter().map(|(id, _)| *id).collect();
        let latest = store.latest_times(ids, after, before, limit).await?;
        Ok(latest
            .into_iter()
            .filter_map(|(id, t)| names.iter().find(|(i, _)| *i == id).map(|(_, c)| (c.clone(), t)))
            .collect())
    }

    /// Marks this connection away (`Some(message)`) or back.
    pub fn set_away(&mut self, message: Option<String>) {
        if let Ok(me) = self.user() {
            self.chat.users.set_away(&me, self.conn, message.map(Arc::from));
        }
    }

    /// What this connection may know of `user`: whether it is a bot, online (with how many
    /// connections, away or not) and the rooms it shares with this connection. `None` when there
    /// is no such account... or it is offline and shares nothing: the core does not look up
    /// accounts for this.
    pub async fn whois(&self, user: &UserName) -> Result<UserInfo, ChatError> {
        self.user()?;
        let online = self.chat.users.online(user);
        let mut rooms = Vec::new();
        for handle in &self.joined {
            if handle.names(self.conn).await.is_ok_and(|names| names.contains(user)) {
                rooms.push(handle.name.clone());
            }
        }
        if online.is_none() && rooms.is_empty() && self.chat.store().account_hash(user.clone()).await?.is_none() {
            return Err(ChatError::NoSuchUser(user.clone()));
        }
        Ok(UserInfo { user: user.clone(), is_bot: self.chat.is_bot(user), online, rooms })
    }

    /// Up to `limit` messages of a joined room before message `before`, oldest first.
    pub async fn history(&self, room: &RoomName, before: Option<u64>, limit: usize) -> Result<Vec<Message>, ChatError> {
        self.user()?;
        let started = std::time::Instant::now();
        let handle = self.joined(room).ok_or_else(|| ChatError::NotMember(room.clone()))?;
        let page = match handle.history(self.conn, before, limit).await? {
            HistoryPage::Cached(page) => page.iter().map(|p| p.msg.clone()).collect(),
            HistoryPage::FromStore => {
                let stored = self.chat.store.history(handle.room_id, before, limit).await?;
                stored.into_iter().map(|m| Message::stored(room, m)).collect()
            }
        };
        crate::metrics::metrics().observe_history(started.elapsed());
        Ok(page)
    }

    /// A bot asks for the lines starting with `/<word>` from every room.
    pub fn serve(&mut self, word: &CommandWord) -> Result<(), ChatError> {
        let Identity::Bot { serving, .. } = &mut self.identity else {
            return Err(ChatError::NotABot);
        };
        self.chat.bots.serve(word.clone(), self.outbox.clone());
        *serving = true;
        Ok(())
    }

    /// Follows what an event pushed to this connection means for its own state: a kick of this
    /// user, or the room's deletion, means the room is no longer joined.
    pub fn on_event(&mut self, event: &Event) {
        let gone = match event {
            Event::Kicked(k) if self.user().is_ok_and(|me| me == k.user) => &k.room,
            Event::RoomDeleted(d) => &d.room,
            _ => return,
        };
        self.joined.retain(|h| h.name != *gone);
    }

    /// The connection is closing: leave everything and go offline.
    pub async fn disconnect(&mut self) {
        self.logout().await;
    }

    /// Leaves every room and stops serving bot commands (logout, quit, disconnect).
    async fn leave_everything(&mut self) {
        for handle in std::mem::take(&mut self.joined) {
            handle.part(self.conn).await;
        }
        if let Identity::Bot { serving, .. } = &mut self.identity {
            if *serving {
                self.chat.bots.forget(self.conn);
                *serving = false;
            }
        }
    }

    /// Whether an acknowledgement is owed or waiting to be taken.
    pub fn owes(&self) -> bool {
        !self.owed.is_empty() || !self.settled.is_empty()
    }

    /// Resolves once the oldest acknowledgement can be taken with `settled_now`. Cancel-safe;
    /// pending forever when none is owed. It only waits for the commit's result: settling (which
    /// may talk to a room) is `settled_now`'s, so this future stays small, and a session keeps it
    /// alive for as long as its connection is idle.
    pub async fn wait_settled(&mut self) {
        if !self.settled.is_empty() {
            return;
        }
        let Some(front) = self.owed.front_mut() else { return std::future::pending().await };
        if front.decided.is_none() {
            front.decided = Some((&mut front.committed).await.ok());
        }
    }

    /// The oldest acknowledgement if it is already settled (those committed in one group go out
    /// in one write).
    pub async fn settled_now(&mut self) -> Option<Settled<T>> {
        if let Some(settled) = self.settled.pop_front() {
            return Some(settled);
        }
        let front = self.owed.front_mut()?;
        let result = match front.decided.take() {
            Some(result) => result,
            None => match front.committed.try_recv() {
                Err(TryRecvError::Empty) => return None,
                Ok(result) => Some(result),
                Err(TryRecvError::Closed) => None,
            },
        };
        let owed = self.owed.pop_front().expect("front exists");
        Some(settle(owed, result).await)
    }

    /// Waits for every owed acknowledgement, oldest first.
    pub async fn settle_all(&mut self) -> Vec<Settled<T>> {
        let mut out: Vec<Settled<T>> = self.settled.drain(..).collect();
        while let Some(mut owed) = self.owed.pop_front() {
            let result = owed.result().await;
            out.push(settle(owed, result).await);
        }
        out
    }
}

/// Turns an owed acknowledgement into a settled one, given the commit's result (`None`: the store
/// went away before answering). A message the store could not keep is taken back from its room's
/// cache.
async fn settle<T>(owed: Owed<T>, committed: Option<Result<Stamp, StoreError>>) -> Settled<T> {
    match committed {
        Some(Ok(Stamp { id, time })) if id == owed.message.msg.id && time == owed.message.msg.time => {
            Settled { tag: owed.tag, message: owed.message, result: Ok(()) }
        }
        // A cluster node's message got its id (and perhaps a later time) from the commit.
        Some(Ok(Stamp { id, time })) => {
            let message = Posted::new(Message { id, time, ..owed.message.msg.clone() }, owed.message.from);
            Settled { tag: owed.tag, message, result: Ok(()) }
        }
        // Boxed: rare (the store failed), and large; it would make every session's wait bigger.
        failed => Box::pin(not_stored(owed, failed)).await,
    }
}

async fn not_stored<T>(owed: Owed<T>, failed: Option<Result<Stamp, StoreError>>) -> Settled<T> {
    let Owed { tag, room, message, .. } = owed;
    if let (Some(room), false) = (room, message.msg.id == 0) {
        room.retract(message.msg.id).await;
    }
    let why = match failed {
        Some(Err(e)) => e,
        _ => StoreError::Closed,
    };
    Settled { tag, message, result: Err(ChatError::Unavailable(Unavailable::Store(why))) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StorageSection;
    use crate::store::Store;

    /// A room with messages 1..=10, several sharing a millisecond, as CHATHISTORY pages it.
    async fn room_with_ten(dir: &tempfile::TempDir) -> (Arc<Store>, RoomId) {
        let store =
            Store::open(&StorageSection { db: dir.path().join("chatd.db"), ..Default::default() }).await.unwrap();
        let room = RoomName::parse("general").unwrap();
        let id = store.create_room(room.clone()).await.unwrap();
        let times = [100, 100, 100, 101, 101, 102, 102, 102, 102, 103];
        for (i, time) in times.into_iter().enumerate() {
            let sender = UserName::parse("alice").unwrap();
            let text = format!("m{i}");
            let msg = Message { id: store.next_message_id(), room: room.clone(), time, sender, text, guest: false };
            assert_eq!(msg.id, i as u64 + 1);
            store.append(id, Posted::new(msg, None)).await.await.unwrap().unwrap();
        }
        (store, id)
    }

    async fn ids(store: &Store, room: RoomId, query: HistoryQuery) -> Vec<u64> {
        let mut out = Vec::new();
        for range in query.ranges() {
            out.extend(store.messages(room, range).await.unwrap().iter().map(|m| m.id));
        }
        out
    }

    #[tokio::test]
    async fn paging_by_id_never_skips_or_repeats_even_within_one_millisecond() {
        let dir = tempfile::tempdir().unwrap();
        let (store, room) = room_with_ten(&dir).await;
        let mut page = ids(&store, room, HistoryQuery::Latest { after: None, limit: 3 }).await;
        assert_eq!(page, [8, 9, 10]);
        let mut seen = page.clone();
        while let Some(&oldest) = page.first() {
            page = ids(&store, room, HistoryQuery::Before { anchor: Anchor::Id(oldest), limit: 3 }).await;
            seen.splice(0..0, page.iter().copied());
        }
        assert_eq!(seen, (1..=10).collect::<Vec<_>>(), "backwards");
        let (mut seen, mut from) = (Vec::new(), Anchor::Time(0));
        loop {
            let page = ids(&store, room, HistoryQuery::After { anchor: from, limit: 4 }).await;
            let Some(&newest) = page.last() else { break };
            seen.extend(page);
            from = Anchor::Id(newest);
        }
        assert_eq!(seen, (1..=10).collect::<Vec<_>>(), "forwards");
    }

    #[tokio::test]
    async fn times_around_and_between() {
        let dir = tempfile::tempdir().unwrap();
        let (store, room) = room_with_ten(&dir).await;
        let q = |query| ids(&store, room, query);
        assert_eq!(q(HistoryQuery::After { anchor: Anchor::Time(100), limit: 50 }).await, [4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(q(HistoryQuery::Before { anchor: Anchor::Time(102), limit: 50 }).await, [1, 2, 3, 4, 5]);
        assert_eq!(q(HistoryQuery::Around { anchor: Anchor::Id(5), limit: 4 }).await, [3, 4, 5, 6]);
        assert_eq!(q(HistoryQuery::Around { anchor: Anchor::Time(101), limit: 3 }).await, [3, 4, 5]);
        assert_eq!(q(HistoryQuery::Between { from: Anchor::Id(2), to: Anchor::Id(8), limit: 3 }).await, [3, 4, 5]);
        assert_eq!(q(HistoryQuery::Between { from: Anchor::Id(8), to: Anchor::Id(2), limit: 3 }).await, [5, 6, 7]);
        assert_eq!(
            q(HistoryQuery::Between { from: Anchor::Time(100), to: Anchor::Time(103), limit: 50 }).await,
            [4, 5, 6, 7, 8, 9]
        );
        assert_eq!(q(HistoryQuery::Latest { after: Some(Anchor::Id(7)), limit: 50 }).await, [8, 9, 10]);
        assert_eq!(q(HistoryQuery::Latest { after: None, limit: 500 }).await.len(), 10, "at most a page of 50");
        assert!(q(HistoryQuery::Before { anchor: Anchor::Id(999), limit: 5 }).await.is_empty(), "unknown id");
    }
}
