//! What both backends' writers share: the queue into the writer and the write operations the core
//! puts on it, what each produced, and how a group commit answers them (every operation after the
//! commit, or every one with the error: all or nothing).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use chatd_proto::names::{RoomName, UserName};

use super::{Change, Committed, MessageRecord, RoomId, Stamp, StoreError, StoredTopic};

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// The queue into a backend's writer (SQLite's thread, PostgreSQL's task): every write goes through
/// it, the same way for both.
pub(super) struct WriteQueue(mpsc::Sender<WriteOp>);

impl WriteQueue {
    pub(super) fn new(writer: mpsc::Sender<WriteOp>) -> WriteQueue {
        WriteQueue(writer)
    }

    async fn write<T>(&self, op: impl FnOnce(Reply<T>) -> WriteOp) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.0.send(op(tx)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub(super) async fn append(&self, room: RoomId, message: Arc<dyn MessageRecord>) -> Committed {
        let (ack, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(WriteOp::Append { ack, .. })) =
            self.0.send(WriteOp::Append { message, room, ack }).await
        {
            let _ = ack.send(Err(StoreError::Closed));
        }
        rx
    }

    /// Whether the store can write now: a write round trip through the writer.
    pub(super) async fn probe(&self) -> Result<(), StoreError> {
        self.write(|ack| WriteOp::Probe { ack }).await
    }

    pub(super) async fn create_account(&self, name: UserName, hash: String) -> Result<bool, StoreError> {
        self.write(|ack| WriteOp::CreateAccount { name, hash, ack }).await
    }

    pub(super) async fn upsert_bot_account(&self, name: UserName, hash: String) -> Result<(), StoreError> {
        self.write(|ack| WriteOp::UpsertBotAccount { name, hash, ack }).await
    }

    pub(super) async fn create_room(&self, name: RoomName) -> Result<RoomId, StoreError> {
        self.write(|ack| WriteOp::CreateRoom { name, ack }).await
    }

    pub(super) async fn change(&self, changes: Vec<Change>) -> Result<u64, StoreError> {
        self.write(|ack| WriteOp::Changes { changes, ack }).await
    }

    pub(super) async fn set_topic(&self, room: RoomId, topic: StoredTopic) -> Result<(), StoreError> {
        self.write(|ack| WriteOp::SetTopic { room, topic, ack }).await
    }

    pub(super) async fn direct_conversation(
        &self,
        name: RoomName,
        a: UserName,
        b: UserName,
    ) -> Result<RoomId, StoreError> {
        self.write(|ack| WriteOp::CreateDirect { name, a, b, ack }).await
    }

    /// Asks the writer to commit what is queued and stop.
    pub(super) async fn shutdown(&self) {
        let _ = self.0.send(WriteOp::Shutdown).await;
    }
}

pub(super) enum WriteOp {
    Append {
        message: Arc<dyn MessageRecord>,
        room: RoomId,
        ack: Reply<Stamp>,
    },
    CreateAccount {
        name: UserName,
        hash: String,
        ack: Reply<bool>,
    },
    UpsertBotAccount {
        name: UserName,
        hash: String,
        ack: Reply<()>,
    },
    CreateRoom {
        name: RoomName,
        ack: Reply<RoomId>,
    },
    CreateDirect {
        name: RoomName,
        a: UserName,
        b: UserName,
        ack: Reply<RoomId>,
    },
    SetTopic {
        room: RoomId,
        topic: StoredTopic,
        ack: Reply<()>,
    },
    /// Moderation writes, in one transaction; answers the rows the first one changed.
    Changes {
        changes: Vec<Change>,
        ack: Reply<u64>,
    },
    /// The health check: can the store write? Run on its own, never inside a group commit.
    Probe {
        ack: Reply<()>,
    },
    Shutdown,
}

/// What one operation produced, once the commit stands.
pub(super) enum Outcome {
    Unit,
    /// An appended message's id and time.
    Stamp(Stamp),
    Count(u64),
    Created(bool),
    RoomId(i64),
}

/// Takes the health probes out of a batch: they run after it, on their own.
pub(super) fn take_probes(batch: &mut Vec<WriteOp>) -> Vec<Reply<()>> {
    if !batch.iter().any(|op| matches!(op, WriteOp::Probe { .. })) {
        return Vec::new();
    }
    let mut probes = Vec::new();
    for op in std::mem::take(batch) {
        match op {
            WriteOp::Probe { ack } => probes.push(ack),
            op => batch.push(op),
        }
    }
    probes
}

/// Answers every operation of a batch that was not stored with `e`.
pub(super) fn fail(batch: &mut Vec<WriteOp>, e: &StoreError) {
    for op in batch.drain(..) {
        match op {
            WriteOp::Append { ack, .. } => drop(ack.send(Err(e.clone()))),
            WriteOp::UpsertBotAccount { ack, .. } => drop(ack.send(Err(e.clone()))),
            WriteOp::CreateAccount { ack, .. } => drop(ack.send(Err(e.clone()))),
            WriteOp::CreateRoom { ack, .. } | WriteOp::CreateDirect { ack, .. } => drop(ack.send(Err(e.clone()))),
            WriteOp::SetTopic { ack, .. } | WriteOp::Probe { ack } => drop(ack.send(Err(e.clone()))),
            WriteOp::Changes { ack, .. } => drop(ack.send(Err(e.clone()))),
            WriteOp::Shutdown => {}
        }
    }
}

/// Answers every operation of a committed batch with what it produced.
pub(super) fn answer(batch: &mut Vec<WriteOp>, outcomes: Vec<Outcome>) {
    for (op, outcome) in batch.drain(..).zip(outcomes) {
        match (op, outcome) {
            (WriteOp::Append { ack, .. }, Outcome::Stamp(stamp)) => drop(ack.send(Ok(stamp))),
            (
                WriteOp::UpsertBotAccount { ack, .. } | WriteOp::SetTopic { ack, .. } | WriteOp::Probe { ack },
                Outcome::Unit,
            ) => drop(ack.send(Ok(()))),
            (WriteOp::CreateAccount { ack, .. }, Outcome::Created(created)) => drop(ack.send(Ok(created))),
            (WriteOp::CreateRoom { ack, .. } | WriteOp::CreateDirect { ack, .. }, Outcome::RoomId(id)) => {
                drop(ack.send(Ok(id)))
            }
            (WriteOp::Changes { ack, .. }, Outcome::Count(n)) => drop(ack.send(Ok(n))),
            (WriteOp::Shutdown, _) => {}
            _ => unreachable!("apply answers each operation with its own kind of outcome"),
        }
    }
}
