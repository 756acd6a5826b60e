//! What both backends' writers share: the write operations the core queues, what each produced,
//! and how a group commit answers them (every operation after the commit, or every one with the
//! error: all or nothing).

use std::sync::Arc;

use tokio::sync::oneshot;

use chatd_proto::names::{RoomName, UserName};

use super::{Change, MessageRecord, RoomId, StoreError, StoredTopic};

pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum WriteOp {
    Append {
        message: Arc<dyn MessageRecord>,
        room: RoomId,
        ack: Reply<()>,
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
            WriteOp::Append { ack, .. } | WriteOp::UpsertBotAccount { ack, .. } => drop(ack.send(Err(e.clone()))),
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
            (
                WriteOp::Append { ack, .. }
                | WriteOp::UpsertBotAccount { ack, .. }
                | WriteOp::SetTopic { ack, .. }
                | WriteOp::Probe { ack },
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
