//! Storage: the only place with SQL. `Store` is what the core holds: accounts, rooms and messages,
//! message ids, and the group commit that makes an acknowledged message durable. It is an enum of
//! backends (SQLite, the default, and PostgreSQL: docs/cluster.md) with the same guarantees, so
//! the core does not know which one it runs on.
//! Nothing here knows the chat core's types: the core hands messages in through `MessageRecord`
//! and gets `StoredMessage` values back.

mod batch;
mod error;
mod postgres;
mod sqlite;

use std::sync::Arc;

use tokio::sync::oneshot;

use chatd_proto::names::{RoomName, UserName};

use crate::config::{Backend, StorageSection};
pub use error::StoreError;
pub use sqlite::{backup, BackupSummary};

/// A room's key in the store.
pub type RoomId = i64;

/// Milliseconds since the Unix epoch, UTC, as the store keeps times.
pub type Millis = i64;

/// A message as the store gives it back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub id: u64,
    pub time: Millis,
    pub sender: UserName,
    pub text: String,
    /// Sent by a guest: `sender` is a guest's nick, not an account.
    pub guest: bool,
}

/// A room as the store knows it.
#[derive(Debug, Clone)]
pub struct StoredRoom {
    pub id: RoomId,
    pub name: RoomName,
    pub topic: Option<StoredTopic>,
    /// Its operators and the accounts banned from it.
    pub ops: Vec<UserName>,
    pub bans: Vec<UserName>,
}

/// An account as the store knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAccount {
    pub hash: String,
    /// Why it is disabled; `None` while it is enabled.
    pub disabled: Option<String>,
}

/// One line of the audit log: who did what to whom, when, and any detail (a reason).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub time: Millis,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// A moderation write (see `Store::change`).
#[derive(Debug, Clone)]
pub enum Change {
    SetOp {
        room: RoomId,
        user: UserName,
        on: bool,
    },
    SetBan {
        room: RoomId,
        user: UserName,
        by: UserName,
        on: bool,
    },
    DeleteMessage {
        room: RoomId,
        id: u64,
        /// The room accepted the message but it may not be committed yet: its commit must skip it.
        /// Only for an id the room's own cache confirmed (ids are unique across rooms).
        before_commit: bool,
    },
    /// The room, its messages, operators and bans.
    DeleteRoom {
        room: RoomId,
    },
    /// `Some(reason)` disables the account, `None` enables it.
    SetDisabled {
        user: UserName,
        reason: Option<String>,
    },
    SetPassword {
        user: UserName,
        hash: String,
    },
    Audit(AuditEntry),
}

/// A room's topic: its text, who set it and when.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTopic {
    pub text: String,
    pub set_by: UserName,
    pub time: Millis,
}

/// A place in a conversation: a message (by id) or a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Id(u64),
    Time(Millis),
}

/// One end of a range: a position, and whether the range includes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub at: Position,
    pub inclusive: bool,
}

/// Which messages of a conversation to read: between the bounds, at most `limit`, the newest or
/// the oldest of them. Always returned oldest first.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub after: Option<Bound>,
    pub before: Option<Bound>,
    pub limit: usize,
    pub newest_first: bool,
}

/// What the store needs of a message to append it. The core's fanned-out message implements it,
/// so the writer thread shares that value instead of a copy of it.
pub trait MessageRecord: Send + Sync {
    /// Its id; in a cluster, appended messages have none yet (0) and the commit gives them one.
    fn id(&self) -> u64;
    fn time(&self) -> Millis;
    fn sender(&self) -> &str;
    fn text(&self) -> &str;
    /// Whether the sender is a guest (stored with the message: an account registered later under
    /// the same name is not its sender).
    fn guest(&self) -> bool;
    /// The value itself, for the one who made it to take back (`Sequenced`).
    fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync>;
}

/// Resolves once an appended message is durable (or could not be stored), with its id and time:
/// those it came with, or (in a cluster, `Store::open_clustered`) those its commit gave it.
pub type Committed = oneshot::Receiver<Result<Stamp, StoreError>>;

/// A committed message's id and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub id: u64,
    pub time: Millis,
}

/// A message a cluster node committed, with the id its commit gave it and the id of the room's
/// message before it (0 for a room's first): a node receiving messages out of order, or missing
/// one, knows from `prev` that something is missing (docs/cluster.md).
pub struct Sequenced {
    pub room: RoomId,
    pub id: u64,
    /// Its time: the one it was accepted with, raised to its room's previous message's, so times
    /// never decrease in id order.
    pub time: Millis,
    pub prev: u64,
    pub message: Arc<dyn MessageRecord>,
}

/// Where a cluster node's writer hands every message it committed, in commit order, before it
/// acknowledges them.
pub type CommittedSink = tokio::sync::mpsc::Sender<Vec<Sequenced>>;

/// The store of record, by backend.
pub enum Store {
    Sqlite(sqlite::Sqlite),
    Postgres(postgres::Postgres),
}

/// Checks a `storage.postgres_url` without connecting; why it is not one otherwise.
pub fn check_postgres_url(url: &str) -> Result<(), String> {
    postgres::check_url(url).map(|_| ())
}

impl Store {
    /// Opens the configured store: SQLite at `options.db`, or PostgreSQL at `options.postgres_url`
    /// (connected, locked and its schema created or upgraded before this returns).
    pub async fn open(options: &StorageSection) -> Result<Arc<Store>, StoreError> {
        Ok(Arc::new(match options.backend {
            Backend::Sqlite => Store::Sqlite(sqlite::Sqlite::open(options)?),
            Backend::Postgres => Store::Postgres(postgres::Postgres::open(options, None).await?),
        }))
    }

    /// Opens PostgreSQL as one node of a cluster: several chatd processes share the database;
    /// messages are appended without ids and each commit numbers its own (under a lock that
    /// orders commits across nodes), then hands them to `sink` (docs/cluster.md).
    pub async fn open_clustered(options: &StorageSection, sink: CommittedSink) -> Result<Arc<Store>, StoreError> {
        match options.backend {
            Backend::Postgres => Ok(Arc::new(Store::Postgres(postgres::Postgres::open(options, Some(sink)).await?))),
            Backend::Sqlite => Err(StoreError::Postgres("a cluster needs storage.backend = \"postgres\"".into())),
        }
    }

    /// Whether this store is one node's of a cluster (ids come from the commit).
    pub fn clustered(&self) -> bool {
        matches!(self, Store::Postgres(s) if s.clustered())
    }

    /// The id of the latest message of each of `rooms` (0 for none), for a cluster node to see
    /// whether it missed any.
    pub async fn heads(&self, rooms: Vec<RoomId>) -> Result<Vec<(RoomId, u64)>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(Vec::new()),
            Store::Postgres(s) => s.heads(rooms).await,
        }
    }

    /// A room's messages with ids in `after+1 ..= upto`, oldest first (a cluster node's backfill).
    pub async fn between(&self, room: RoomId, after: u64, upto: u64) -> Result<Vec<StoredMessage>, StoreError> {
        match self {
            Store::Sqlite(_) => Ok(Vec::new()),
            Store::Postgres(s) => s.between(room, after, upto).await,
        }
    }

    /// A fresh message id: unique across rooms, increasing. The id source is the store's, so a
    /// backend shared by several processes can hand out ids for all of them.
    pub fn next_message_id(&self) -> u64 {
        match self {
            Store::Sqlite(s) => s.next_message_id(),
            Store::Postgres(s) => s.next_message_id(),
        }
    }

    /// Queues a message for the next group commit; waits only while the commit queue is full.
    pub async fn append(&self, room: RoomId, message: Arc<dyn MessageRecord>) -> Committed {
        self.queue().append(room, message).await
    }

    /// Creates an account; `false` when the name is taken.
    pub async fn create_account(&self, name: UserName, hash: String) -> Result<bool, StoreError> {
        self.queue().create_account(name, hash).await
    }

    /// Creates or re-keys a bot account.
    pub async fn upsert_bot_account(&self, name: UserName, hash: String) -> Result<(), StoreError> {
        self.queue().upsert_bot_account(name, hash).await
    }

    /// Creates the room if it does not exist; returns its id either way.
    pub async fn create_room(&self, name: RoomName) -> Result<RoomId, StoreError> {
        self.queue().create_room(name).await
    }

    /// The password hash of an account, if it exists.
    pub async fn account_hash(&self, name: UserName) -> Result<Option<String>, StoreError> {
        match self {
            Store::Sqlite(s) => s.account_hash(name).await,
            Store::Postgres(s) => s.account_hash(name).await,
        }
    }

    /// Applies moderation writes in one transaction (an action and its audit entry commit
    /// together); returns how many rows the first one changed. When that is 0 (nothing to
    /// change), the others are not applied.
    pub async fn change(&self, changes: Vec<Change>) -> Result<u64, StoreError> {
        self.queue().change(changes).await
    }

    /// An account's password hash and whether it is disabled.
    pub async fn account(&self, name: UserName) -> Result<Option<StoredAccount>, StoreError> {
        match self {
            Store::Sqlite(s) => s.account(name).await,
            Store::Postgres(s) => s.account(name).await,
        }
    }

    /// The latest `limit` entries of the audit log, newest first.
    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        match self {
            Store::Sqlite(s) => s.audit(limit).await,
            Store::Postgres(s) => s.audit(limit).await,
        }
    }

    /// All rooms (not the conversations of two users), by name.
    pub async fn rooms(&self) -> Result<Vec<StoredRoom>, StoreError> {
        match self {
            Store::Sqlite(s) => s.rooms().await,
            Store::Postgres(s) => s.rooms().await,
        }
    }

    /// Sets a room's topic.
    pub async fn set_topic(&self, room: RoomId, topic: StoredTopic) -> Result<(), StoreError> {
        self.queue().set_topic(room, topic).await
    }

    /// The conversation of users `a` and `b` (named `name`), created if new; its id either way.
    pub async fn direct_conversation(&self, name: RoomName, a: UserName, b: UserName) -> Result<RoomId, StoreError> {
        self.queue().direct_conversation(name, a, b).await
    }

    /// The conversations `user` has with other users, as (id, the other user).
    pub async fn directs_of(&self, user: UserName) -> Result<Vec<(RoomId, UserName)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.directs_of(user).await,
            Store::Postgres(s) => s.directs_of(user).await,
        }
    }

    /// The messages of a conversation in `range`, oldest first.
    pub async fn messages(&self, room: RoomId, range: Range) -> Result<Vec<StoredMessage>, StoreError> {
        match self {
            Store::Sqlite(s) => s.messages(room, range).await,
            Store::Postgres(s) => s.messages(room, range).await,
        }
    }

    /// For each of `rooms` with a message strictly between the two times, the time of its latest
    /// one there; the `limit` earliest of those, in time order.
    pub async fn latest_times(
        &self,
        rooms: Vec<RoomId>,
        after: Millis,
        before: Millis,
        limit: usize,
    ) -> Result<Vec<(RoomId, Millis)>, StoreError> {
        match self {
            Store::Sqlite(s) => s.latest_times(rooms, after, before, limit).await,
            Store::Postgres(s) => s.latest_times(rooms, after, before, limit).await,
        }
    }

    /// Up to `limit` messages of a room before message `before` (all when `None`), oldest first.
    pub async fn history(
        &self,
        room: RoomId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        match self {
            Store::Sqlite(s) => s.history(room, before, limit).await,
            Store::Postgres(s) => s.history(room, before, limit).await,
        }
    }

    /// Whether the store can write now (the health check): a write round trip that changes nothing.
    pub async fn probe(&self) -> Result<(), StoreError> {
        self.queue().probe().await
    }

    /// The queue into the backend's writer, which every write goes through.
    fn queue(&self) -> &batch::WriteQueue {
        match self {
            Store::Sqlite(s) => &s.queue,
            Store::Postgres(s) => &s.queue,
        }
    }

    /// Commits what is queued and stops. Later writes fail with `Closed`.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
        }
    }
}
