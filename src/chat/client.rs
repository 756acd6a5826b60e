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

use super::error::{ChatError, Limit, Unavailable};
use super::model::{ConnId, Message, Millis, Posted};
use super::names::{CommandWord, Password, RoomName, UserName};
use super::outbox::Outbox;
use super::room::{HistoryPage, Joined, RoomHandle, Said};
use super::Chat;
use crate::store::{Committed, StoreError};

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
}

/// What a post became.
#[derive(Debug)]
pub enum PostOutcome {
    /// Stored and fanned out; its acknowledgement is owed (see `Client::next_settled`).
    Accepted,
    /// A bot command line, relayed live (never stored) to this many bots.
    Relayed { time: Millis, bots: usize },
}

/// A post whose fate is known: committed, or not stored (and taken back from its room).
pub struct Settled<T> {
    /// What the front end attached to the post (a request label, say).
    pub tag: T,
    pub message: Arc<Posted>,
    pub result: Result<(), ChatError>,
}

/// A post accepted by its room, waiting for its commit.
struct Owed<T> {
    tag: T,
    room: RoomHandle,
    message: Arc<Posted>,
    committed: Committed,
}

/// One connection's state in the core. `T` is what the front end attaches to each post.
pub struct Client<T> {
    conn: ConnId,
    peer: IpAddr,
    outbox: Outbox,
    chat: Arc<Chat>,
    identity: Identity,
    /// The rooms joined (few: a Vec is smaller than a map).
    joined: Vec<RoomHandle>,
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

    fn user(&self) -> Result<UserName, ChatError> {
        match &self.identity {
            Identity::Anonymous => Err(ChatError::NotLoggedIn),
            Identity::User(name) | Identity::Bot { name, .. } => Ok(name.clone()),
        }
    }

    fn serving(&self) -> bool {
        matches!(self.identity, Identity::Bot { serving: true, .. })
    }

    fn joined(&self, room: &RoomName) -> Option<&RoomHandle> {
        self.joined.iter().find(|h| h.name == *room)
    }

    /// Creates an account and logs in as it.
    pub async fn register(&mut self, user: &UserName, password: &Password) -> Result<UserName, ChatError> {
        if self.is_logged_in() {
            return Err(ChatError::AlreadyLoggedIn);
        }
        let who = self.chat.accounts.register(user, password, self.peer).await?;
        self.identity = Identity::User(who.user.clone());
        Ok(who.user)
    }

    pub async fn login(&mut self, user: &UserName, password: &Password) -> Result<UserName, ChatError> {
        if self.is_logged_in() {
            return Err(ChatError::AlreadyLoggedIn);
        }
        let who = self.chat.accounts.login(user, password, self.peer).await?;
        tracing::debug!(conn = self.conn, user = %who.user, "logged in");
        self.identity = match who.is_bot {
            true => Identity::Bot { name: who.user.clone(), serving: false },
            false => Identity::User(who.user.clone()),
        };
        Ok(who.user)
    }

    /// Leaves every room and logs out.
    pub async fn logout(&mut self) {
        self.leave_everything().await;
        self.identity = Identity::Anonymous;
    }

    /// Every room with its number of users, by name.
    pub fn rooms(&self) -> Result<Vec<(RoomName, usize)>, ChatError> {
        self.user()?;
        Ok(self.chat.rooms.list())
    }

    pub async fn join(&mut self, room: &RoomName) -> Result<Joined, ChatError> {
        let user = self.user()?;
        let already = self.joined(room).is_some();
        if !already && self.joined.len() >= self.chat.rooms_per_connection {
            return Err(ChatError::LimitReached(room.clone(), Limit::RoomsPerConnection));
        }
        let handle = self.chat.rooms.get(room, self.chat.auto_create).await?;
        let joined = handle.join(self.conn, user, self.outbox.clone()).await?;
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
            None => self.chat.rooms.get(room, false).await?,
        };
        handle.names(self.conn).await
    }

    /// Posts `text`: a bot command line is relayed; anything else is stored, and its
    /// acknowledgement carries `tag` once it is durable.
    pub async fn post(&mut self, room: &RoomName, text: String, tag: T) -> Result<PostOutcome, ChatError> {
        let user = self.user()?;
        let as_bot = self.serving();
        let handle = match self.joined(room) {
            Some(h) => h.clone(),
            None if as_bot => self.chat.rooms.get(room, false).await?,
            None => return Err(ChatError::NotMember(room.clone())),
        };
        let said = Said { conn: self.conn, user, text, as_bot };
        if let Some(word) = CommandWord::of_bot_line(&said.text) {
            let (time, bots) = handle.bot_command(said, word.clone()).await?;
            if bots == 0 {
                return Err(ChatError::NoBot(room.clone(), word));
            }
            return Ok(PostOutcome::Relayed { time, bots });
        }
        let message = handle.post(said).await?;
        let committed = self.chat.store.append(handle.room_id, message.clone()).await;
        if self.owed.len() >= MAX_POSTS_IN_FLIGHT {
            let mut oldest = self.owed.pop_front().expect("not empty");
            let result = (&mut oldest.committed).await.ok();
            let settled = settle(oldest, result).await;
            self.settled.push_back(settled);
        }
        self.owed.push_back(Owed { tag, room: handle, message, committed });
        Ok(PostOutcome::Accepted)
    }

    /// Up to `limit` messages of a joined room before message `before`, oldest first.
    pub async fn history(&self, room: &RoomName, before: Option<u64>, limit: usize) -> Result<Vec<Message>, ChatError> {
        self.user()?;
        let handle = self.joined(room).ok_or_else(|| ChatError::NotMember(room.clone()))?;
        Ok(match handle.history(self.conn, before, limit).await? {
            HistoryPage::Cached(page) => page.iter().map(|p| p.msg.clone()).collect(),
            HistoryPage::FromStore => {
                let stored = self.chat.store.history(handle.room_id, before, limit).await?;
                stored.into_iter().map(|m| Message::stored(room, m)).collect()
            }
        })
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

    /// Leaves every room and stops serving bot commands (logout, quit, disconnect).
    pub async fn leave_everything(&mut self) {
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

    /// The oldest acknowledgement, once it is settled. Cancel-safe; pending forever when none is
    /// owed.
    pub async fn next_settled(&mut self) -> Settled<T> {
        if let Some(settled) = self.settled.pop_front() {
            return settled;
        }
        let Some(front) = self.owed.front_mut() else { return std::future::pending().await };
        let result = (&mut front.committed).await.ok();
        let owed = self.owed.pop_front().expect("front exists");
        settle(owed, result).await
    }

    /// The oldest acknowledgement if it is already settled (those committed in one group go out
    /// in one write).
    pub async fn settled_now(&mut self) -> Option<Settled<T>> {
        if let Some(settled) = self.settled.pop_front() {
            return Some(settled);
        }
        let result = match self.owed.front_mut()?.committed.try_recv() {
            Err(TryRecvError::Empty) => return None,
            Ok(result) => Some(result),
            Err(TryRecvError::Closed) => None,
        };
        let owed = self.owed.pop_front().expect("front exists");
        Some(settle(owed, result).await)
    }

    /// Waits for every owed acknowledgement, oldest first.
    pub async fn settle_all(&mut self) -> Vec<Settled<T>> {
        let mut out: Vec<Settled<T>> = self.settled.drain(..).collect();
        while let Some(mut owed) = self.owed.pop_front() {
            let result = (&mut owed.committed).await.ok();
            out.push(settle(owed, result).await);
        }
        out
    }
}

/// Turns an owed acknowledgement into a settled one, given the commit's result (`None`: the store
/// went away before answering). A message the store could not keep is taken back from its room's
/// cache.
async fn settle<T>(owed: Owed<T>, committed: Option<Result<(), StoreError>>) -> Settled<T> {
    let Owed { tag, room, message, .. } = owed;
    let result = match committed {
        Some(Ok(())) => Ok(()),
        failed => {
            room.retract(message.msg.id).await;
            let why = match failed {
                Some(Err(e)) => e,
                _ => StoreError::Closed,
            };
            Err(ChatError::Unavailable(Unavailable::Store(why)))
        }
    };
    Settled { tag, message, result }
}
