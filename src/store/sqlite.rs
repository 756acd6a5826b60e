//! The SQLite backend: WAL mode, one writer thread that commits in groups (one fsync for every
//! message that arrived while the previous commit ran), plus a reader connection used from the
//! blocking pool. Nothing here runs on the async worker threads.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::mpsc;

use chatd_proto::names::{RoomName, UserName};

use super::batch::{self, take_probes, Outcome, WriteOp, WriteQueue};
use super::{
    AuditEntry, Change, Millis, Position, Range, RoomId, StoreError, StoredAccount, StoredMessage, StoredRoom,
    StoredTopic,
};
use crate::config::StorageSection;

/// `chat` in ASCII: marks a file as chatd's database.
const APPLICATION_ID: i32 = 0x6368_6174;
const SCHEMA_VERSION: i32 = 4;

const SCHEMA: &str = "
CREATE TABLE accounts (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL,
    is_bot INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);
CREATE TABLE rooms (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL
);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    room_id INTEGER NOT NULL REFERENCES rooms(id),
    ts_ms INTEGER NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX messages_by_room ON messages(room_id, ts_ms, id);
";

/// What version 2 added: room topics, and the conversations of two users (a direct-message
/// conversation is a row of `rooms` with a name no room can have, plus its two users here).
const SCHEMA_2: &str = "
ALTER TABLE rooms ADD COLUMN topic TEXT;
ALTER TABLE rooms ADD COLUMN topic_by TEXT;
ALTER TABLE rooms ADD COLUMN topic_ms INTEGER;
CREATE TABLE directs (
    room_id INTEGER PRIMARY KEY REFERENCES rooms(id),
    a TEXT NOT NULL,
    b TEXT NOT NULL
);
CREATE INDEX directs_by_a ON directs(a);
CREATE INDEX directs_by_b ON directs(b);
";

/// What version 3 added: whether a message's sender was a guest (a nick, not an account).
const SCHEMA_3: &str = "
ALTER TABLE messages ADD COLUMN guest INTEGER NOT NULL DEFAULT 0;
";

/// What version 4 added: moderation. A disabled account keeps its reason (NULL: enabled); each
/// room's operators and bans; the audit log of every admin and operator action; the ids of
/// messages deleted before their commit, which the commit then skips.
const SCHEMA_4: &str = "
CREATE TABLE deleted_messages (id INTEGER PRIMARY KEY);
ALTER TABLE accounts ADD COLUMN disabled TEXT;
CREATE TABLE room_ops (
    room_id INTEGER NOT NULL REFERENCES rooms(id),
    user TEXT NOT NULL,
    PRIMARY KEY (room_id, user)
) WITHOUT ROWID;
CREATE TABLE room_bans (
    room_id INTEGER NOT NULL REFERENCES rooms(id),
    user TEXT NOT NULL,
    by_user TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    PRIMARY KEY (room_id, user)
) WITHOUT ROWID;
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
";

/// The SQLite store: a writer thread and a reader connection.
pub struct Sqlite {
    pub(super) queue: WriteQueue,
    reader: Arc<Mutex<Connection>>,
    next_id: AtomicU64,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Sqlite {
    /// Opens (or creates, owner-only) the database, checks it is chatd's and intact, and starts
    /// the writer thread.
    pub fn open(options: &StorageSection) -> Result<Sqlite, StoreError> {
        let (path, max_batch) = (options.db.as_path(), options.max_batch);
        create_private(path)?;
        let writer_conn = open_checked(path, options)?;
        let reader = open_checked(path, options)?;
        // A tombstoned id (a message deleted before its commit) counts too: handed out again, its
        // new message would be skipped by the tombstone after being acknowledged.
        let max_id: i64 = reader.query_row(
            "SELECT MAX((SELECT COALESCE(MAX(id), 0) FROM messages), (SELECT COALESCE(MAX(id), 0) FROM deleted_messages))",
            [],
            |r| r.get(0),
        )?;
        let (tx, rx) = mpsc::channel(max_batch * 4);
        let thread = std::thread::Builder::new()
            .name("chatd-store".into())
            .spawn(move || writer_loop(writer_conn, rx, max_batch))
            .map_err(|e| StoreError::Sqlite(e.to_string()))?;
        Ok(Sqlite {
            queue: WriteQueue::new(tx),
            reader: Arc::new(Mutex::new(reader)),
            next_id: AtomicU64::new(max_id as u64 + 1),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A fresh message id: one process owns the database, so an atomic seeded with the largest
    /// stored id is enough.
    pub fn next_message_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub async fn account(&self, name: UserName) -> Result<Option<StoredAccount>, StoreError> {
        self.read(move |c| {
            c.prepare_cached("SELECT hash, disabled FROM accounts WHERE name = ?1")?
                .query_row([name.as_str()], |r| Ok(StoredAccount { hash: r.get(0)?, disabled: r.get(1)? }))
                .optional()
        })
        .await
    }

    /// The latest `limit` audit entries, newest first.
    pub async fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT ts_ms, actor, action, target, detail FROM audit ORDER BY id DESC LIMIT ?1")?;
            let rows = stmt.query_map([limit as i64], |r| {
                Ok(AuditEntry {
                    time: r.get(0)?,
                    actor: r.get(1)?,
                    action: r.get(2)?,
                    target: r.get(3)?,
                    detail: r.get(4)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn).map_err(|e| {
                crate::metrics::metrics().storage_errors.inc();
                StoreError::from(e)
            })
        })
        .await
        .map_err(|e| StoreError::Sqlite(e.to_string()))?
    }

    pub async fn account_hash(&self, name: UserName) -> Result<Option<String>, StoreError> {
        self.read(move |c| {
            c.prepare_cached("SELECT hash FROM accounts WHERE name = ?1")?
                .query_row([name.as_str()], |r| r.get(0))
                .optional()
        })
        .await
    }

    pub async fn rooms(&self) -> Result<Vec<StoredRoom>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT id, name, topic, topic_by, topic_ms FROM rooms \
                 WHERE id NOT IN (SELECT room_id FROM directs) ORDER BY name",
            )?;
            let rows = stmt.query_map([], |r| {
                let (text, by, time): (Option<String>, Option<String>, Option<Millis>) =
                    (r.get(2)?, r.get(3)?, r.get(4)?);
                let topic = match (text, by.as_deref().and_then(UserName::parse), time) {
                    (Some(text), Some(set_by), Some(time)) => Some(StoredTopic { text, set_by, time }),
                    _ => None,
                };
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, topic))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, name, topic) = row?;
                if let Some(name) = RoomName::parse(&name) {
                    out.push(StoredRoom { id, name, topic, ops: Vec::new(), bans: Vec::new() });
                }
            }
            for (table, ops) in [("room_ops", true), ("room_bans", false)] {
                let mut stmt = c.prepare(&format!("SELECT room_id, user FROM {table}"))?;
                let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
                for row in rows {
                    let (id, user) = row?;
                    let (Some(room), Some(user)) = (out.iter_mut().find(|r| r.id == id), UserName::parse(&user)) else {
                        continue;
                    };
                    match ops {
                        true => room.ops.push(user),
                        false => room.bans.push(user),
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn directs_of(&self, user: UserName) -> Result<Vec<(RoomId, UserName)>, StoreError> {
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT room_id, b FROM directs WHERE a = ?1 UNION ALL SELECT room_id, a FROM directs WHERE b = ?1",
            )?;
            let rows = stmt.query_map([user.as_str()], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (id, peer) = row?;
                out.extend(UserName::parse(&peer).map(|peer| (id, peer)));
            }
            Ok(out)
        })
        .await
    }

    pub async fn messages(&self, room: RoomId, range: Range) -> Result<Vec<StoredMessage>, StoreError> {
        self.read(move |c| {
            let mut sql = String::from("SELECT id, ts_ms, sender, text, guest FROM messages WHERE room_id = ?1");
            if let Some(after) = range.after {
                let (op, at_time) = if after.inclusive { (">=", -1) } else { (">", i64::MAX) };
                sql += &format!(" AND (ts_ms, id) {op} {}", position(after.at, at_time));
            }
            if let Some(before) = range.before {
                let (op, at_time) = if before.inclusive { ("<=", i64::MAX) } else { ("<", -1) };
                sql += &format!(" AND (ts_ms, id) {op} {}", position(before.at, at_time));
            }
            let order = if range.newest_first { "DESC" } else { "ASC" };
            sql += &format!(" ORDER BY ts_ms {order}, id {order} LIMIT ?2");
            let mut stmt = c.prepare(&sql)?;
            let rows = stmt.query_map(params![room, range.limit as i64], stored_message)?;
            let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            if range.newest_first {
                out.reverse();
            }
            Ok(out)
        })
        .await
    }

    pub async fn latest_times(
        &self,
        rooms: Vec<RoomId>,
        after: Millis,
        before: Millis,
        limit: usize,
    ) -> Result<Vec<(RoomId, Millis)>, StoreError> {
        self.read(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT MAX(ts_ms) FROM messages WHERE room_id = ?1 AND ts_ms > ?2 AND ts_ms < ?3")?;
            let mut out = Vec::new();
            for room in rooms {
                if let Some(t) = stmt.query_row(params![room, after, before], |r| r.get::<_, Option<Millis>>(0))? {
                    out.push((room, t));
                }
            }
            out.sort_by_key(|(_, t)| *t);
            out.truncate(limit);
            Ok(out)
        })
        .await
    }

    pub async fn history(
        &self,
        room: RoomId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.read(move |c| {
            let before = before.map(|b| b as i64).unwrap_or(i64::MAX);
            let mut stmt = c.prepare_cached(
                "SELECT id, ts_ms, sender, text, guest FROM messages WHERE room_id = ?1 AND id < ?2 \
                 ORDER BY ts_ms DESC, id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![room, before, limit as i64], stored_message)?;
            let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            out.reverse();
            Ok(out)
        })
        .await
    }

    pub async fn close(&self) {
        self.queue.shutdown().await;
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// A message row (`id, ts_ms, sender, text, guest`).
fn stored_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let sender: String = r.get(2)?;
    let sender = UserName::parse(&sender).unwrap_or_else(|| UserName::parse("unknown").expect("a valid name"));
    let guest = r.get::<_, i64>(4)? != 0;
    Ok(StoredMessage { id: r.get::<_, i64>(0)? as u64, time: r.get(1)?, sender, text: r.get(3)?, guest })
}

/// A position in a conversation as an SQL row value `(ts_ms, id)`. A message id stands for its
/// own place; a time stands before (`id_at_time` -1) or after (`i64::MAX`) every message of that
/// millisecond, chosen so that an exclusive bound leaves out, and an inclusive one takes in, the
/// whole millisecond. Only integers go into the text.
fn position(p: Position, id_at_time: i64) -> String {
    match p {
        Position::Id(id) => format!("((SELECT ts_ms FROM messages WHERE id = {id}), {id})", id = id as i64),
        Position::Time(t) => format!("({t}, {id_at_time})"),
    }
}

/// Creates the file (and its directory) owner-only if missing, so no other user can read it.
fn create_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let err = |e: std::io::Error| StoreError::Create { path: path.into(), why: e.to_string() };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
    }
    std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).map_err(err)?;
    Ok(())
}

fn open_checked(path: &Path, options: &StorageSection) -> Result<Connection, StoreError> {
    let foreign = |why: String| StoreError::Foreign { path: path.into(), why };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_millis(options.busy_timeout_ms))?;
    let app_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(|e| foreign(e.to_string()))?;
    let tables: i64 =
        conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(|e| foreign(e.to_string()))?;
    if app_id == 0 && tables == 0 {
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; BEGIN; {SCHEMA} {SCHEMA_2} {SCHEMA_3} {SCHEMA_4} PRAGMA application_id = {APPLICATION_ID}; \
             PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))?;
    } else if app_id != APPLICATION_ID {
        return Err(foreign(format!("application_id is {app_id:#x}, not chatd's")));
    }
    let mut version: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == 1 {
        // Upgrade in place, in one transaction: a failure leaves the version-1 database as it was.
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA_2} PRAGMA user_version = 2; COMMIT;"))?;
        version = 2;
    }
    if version == 2 {
        // The same for 2 -> 3: every message stored before is a member's.
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA_3} PRAGMA user_version = 3; COMMIT;"))?;
        version = 3;
    }
    if version == 3 {
        // 3 -> 4: no account disabled, no operators (rooms made before keep being open to every
        // member for their topic), no bans, an empty audit log.
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {SCHEMA_4} PRAGMA user_version = 4; COMMIT;"))?;
        version = 4;
    }
    if version != SCHEMA_VERSION {
        return Err(foreign(format!("schema version {version}, this chatd knows {SCHEMA_VERSION}")));
    }
    let damaged = |why: String| StoreError::Damaged { path: path.into(), why };
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(|e| damaged(e.to_string()))?;
    if check != "ok" {
        return Err(damaged(format!("integrity check failed: {check}")));
    }
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
    if options.max_pages > 0 {
        conn.query_row(&format!("PRAGMA max_page_count = {}", options.max_pages), [], |_| Ok(()))?;
    }
    Ok(conn)
}

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<WriteOp>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(op) = rx.blocking_recv() {
        batch.push(op);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let stop = batch.iter().any(|op| matches!(op, WriteOp::Shutdown));
        let probes = take_probes(&mut batch);
        if !batch.is_empty() {
            let m = crate::metrics::metrics();
            m.commit_batch_size.observe(batch.len() as f64);
            let started = std::time::Instant::now();
            commit(&mut conn, &mut batch);
            m.commit_seconds.observe(started.elapsed().as_secs_f64());
        }
        if !probes.is_empty() {
            let result = probe(&mut conn);
            for ack in probes {
                let _ = ack.send(result.clone());
            }
        }
        if stop {
            break;
        }
    }
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
}

/// Whether the database takes a write now, without changing it: takes the write lock (waiting
/// up to the busy timeout, as a commit would), inserts a row of 8 KiB (new pages, as a message
/// would need on a full disk or at storage.max_pages) and rolls it back.
fn probe(conn: &mut Connection) -> Result<(), StoreError> {
    let result = (|| -> Result<(), StoreError> {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO accounts (name, hash, is_bot, created_ms) VALUES ('#health-probe', randomblob(8192), 0, 0)",
            [],
        )?;
        tx.rollback()?;
        Ok(())
    })();
    if let Err(e) = &result {
        crate::metrics::metrics().storage_errors.inc();
        tracing::warn!(error = %e, "health probe: the store cannot write");
    }
    result
}

/// Applies a batch in one transaction and answers every operation after the commit. All or
/// nothing: when any operation or the commit fails (disk full, database locked, I/O error), the
/// transaction is rolled back and every operation in the batch gets the error, so an error reply
/// always means nothing was stored. (SQLite may roll a transaction back by itself on such errors;
/// going on with the rest of the batch would then commit it piecemeal.)
fn commit(conn: &mut Connection, batch: &mut Vec<WriteOp>) {
    // BEGIN and COMMIT as cached statements: `Connection::transaction` parses both anew for every
    // commit (a tenth of the writer's work when each post is its own commit, as at a paced rate).
    let result = (|| -> Result<Vec<Outcome>, StoreError> {
        conn.prepare_cached("BEGIN")?.execute([])?;
        let outcomes = batch.iter().map(|op| apply(conn, op)).collect::<Result<Vec<_>, _>>()?;
        conn.prepare_cached("COMMIT")?.execute([])?;
        Ok(outcomes)
    })();
    if result.is_err() && !conn.is_autocommit() {
        // As a dropped `Transaction` would: nothing of a failed batch stays.
        let _ = conn.execute_batch("ROLLBACK");
    }
    let outcomes = match result {
        Ok(outcomes) => outcomes,
        Err(e) => {
            crate::metrics::metrics().storage_errors.inc();
            tracing::error!(error = %e, ops = batch.len(), "storage commit failed; nothing in the batch was stored");
            batch::fail(batch, &e);
            return;
        }
    };
    batch::answer(batch, outcomes);
}

fn apply(tx: &Connection, op: &WriteOp) -> Result<Outcome, StoreError> {
    let now = chrono::Utc::now().timestamp_millis();
    Ok(match op {
        WriteOp::Append { message: m, room, .. } => {
            // A message deleted between its acceptance and this commit stays deleted. Asked apart,
            // not as one INSERT ... SELECT: SQLite gives a statement that may write several rows
            // a statement journal (a copy of every page it changes, in case it must undo part of
            // itself), and a single-row INSERT none (callgrind: 14% fewer store instructions per post).
            let deleted = tx.prepare_cached("SELECT 1 FROM deleted_messages WHERE id = ?1")?.exists([m.id() as i64])?;
            if !deleted {
                tx.prepare_cached(
                    "INSERT INTO messages (id, room_id, ts_ms, sender, text, guest) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    m.id() as i64,
                    room,
                    m.time(),
                    m.sender(),
                    m.text(),
                    m.guest() as i64
                ])?;
            }
            Outcome::Stamp(super::Stamp { id: m.id(), time: m.time() })
        }
        WriteOp::CreateAccount { name, hash, .. } => {
            let n = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO accounts (name, hash, is_bot, created_ms) VALUES (?1, ?2, 0, ?3)",
                )?
                .execute(params![name.as_str(), hash, now])?;
            Outcome::Created(n == 1)
        }
        WriteOp::UpsertBotAccount { name, hash, .. } => {
            tx.prepare_cached(
                "INSERT INTO accounts (name, hash, is_bot, created_ms) VALUES (?1, ?2, 1, ?3) \
                 ON CONFLICT(name) DO UPDATE SET hash = excluded.hash, is_bot = 1",
            )?
            .execute(params![name.as_str(), hash, now])?;
            Outcome::Unit
        }
        WriteOp::CreateRoom { name, .. } => {
            tx.prepare_cached("INSERT OR IGNORE INTO rooms (name, created_ms) VALUES (?1, ?2)")?
                .execute(params![name.as_str(), now])?;
            Outcome::RoomId(
                tx.prepare_cached("SELECT id FROM rooms WHERE name = ?1")?.query_row([name.as_str()], |r| r.get(0))?,
            )
        }
        WriteOp::CreateDirect { name, a, b, .. } => {
            tx.prepare_cached("INSERT OR IGNORE INTO rooms (name, created_ms) VALUES (?1, ?2)")?
                .execute(params![name.as_str(), now])?;
            let id: RoomId =
                tx.prepare_cached("SELECT id FROM rooms WHERE name = ?1")?.query_row([name.as_str()], |r| r.get(0))?;
            tx.prepare_cached("INSERT OR IGNORE INTO directs (room_id, a, b) VALUES (?1, ?2, ?3)")?
                .execute(params![id, a.as_str(), b.as_str()])?;
            Outcome::RoomId(id)
        }
        WriteOp::SetTopic { room, topic, .. } => {
            tx.prepare_cached("UPDATE rooms SET topic = ?2, topic_by = ?3, topic_ms = ?4 WHERE id = ?1")?
                .execute(params![room, topic.text, topic.set_by.as_str(), topic.time])?;
            Outcome::Unit
        }
        WriteOp::Changes { changes, .. } => {
            // When the first change changes nothing, the rest (its audit entry) is not written.
            let mut first = None;
            for change in changes {
                let n = apply_change(tx, change, now)?;
                if *first.get_or_insert(n) == 0 {
                    break;
                }
            }
            Outcome::Count(first.unwrap_or(0))
        }
        WriteOp::Probe { .. } | WriteOp::Shutdown => Outcome::Unit,
    })
}

/// One moderation write; returns the rows it changed.
fn apply_change(tx: &Connection, change: &Change, now: Millis) -> Result<u64, StoreError> {
    let n = match change {
        Change::SetOp { room, user, on: true } => tx
            .prepare_cached("INSERT OR IGNORE INTO room_ops (room_id, user) VALUES (?1, ?2)")?
            .execute(params![room, user.as_str()])?,
        Change::SetOp { room, user, on: false } => tx
            .prepare_cached("DELETE FROM room_ops WHERE room_id = ?1 AND user = ?2")?
            .execute(params![room, user.as_str()])?,
        Change::SetBan { room, user, by, on: true } => tx
            .prepare_cached("INSERT OR IGNORE INTO room_bans (room_id, user, by_user, ts_ms) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![room, user.as_str(), by.as_str(), now])?,
        Change::SetBan { room, user, on: false, .. } => tx
            .prepare_cached("DELETE FROM room_bans WHERE room_id = ?1 AND user = ?2")?
            .execute(params![room, user.as_str()])?,
        Change::DeleteMessage { room, id, before_commit } => {
            let deleted = tx
                .prepare_cached("DELETE FROM messages WHERE room_id = ?1 AND id = ?2")?
                .execute(params![room, *id as i64])?;
            let tombstone = match before_commit {
                true => tx
                    .prepare_cached("INSERT OR IGNORE INTO deleted_messages (id) VALUES (?1)")?
                    .execute([*id as i64])?,
                false => 0,
            };
            deleted + tombstone
        }
        Change::DeleteRoom { room } => {
            let messages = tx.prepare_cached("DELETE FROM messages WHERE room_id = ?1")?.execute([room])?;
            tx.prepare_cached("DELETE FROM room_ops WHERE room_id = ?1")?.execute([room])?;
            tx.prepare_cached("DELETE FROM room_bans WHERE room_id = ?1")?.execute([room])?;
            tx.prepare_cached("DELETE FROM rooms WHERE id = ?1")?.execute([room])?;
            messages
        }
        Change::SetDisabled { user, reason } => tx
            .prepare_cached("UPDATE accounts SET disabled = ?2 WHERE name = ?1")?
            .execute(params![user.as_str(), reason])?,
        Change::SetPassword { user, hash } => {
            tx.prepare_cached("UPDATE accounts SET hash = ?2 WHERE name = ?1")?.execute(params![user.as_str(), hash])?
        }
        Change::Audit(e) => tx
            .prepare_cached("INSERT INTO audit (ts_ms, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)")?
            .execute(params![e.time, e.actor, e.action, e.target, e.detail])?,
    };
    Ok(n as u64)
}

/// What a backup holds, counted in the copy once it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub accounts: u64,
    pub rooms: u64,
    pub messages: u64,
    pub bytes: u64,
}

/// Copies the database at `db` to `dest` with SQLite's online backup API while chatd may be
/// writing to it. All pages are copied in one step, inside one read transaction: the copy is the
/// database as of one commit (every message acknowledged before the backup started is in it), and
/// in WAL mode the daemon's writer is never blocked by it. The copy is written beside `dest`,
/// checked (`quick_check`, chatd's application id) and renamed into place, owner-only (0600).
pub fn backup(db: &Path, dest: &Path) -> Result<BackupSummary, StoreError> {
    use rusqlite::backup::{Backup, StepResult};
    use std::os::unix::fs::OpenOptionsExt;
    if !db.exists() {
        return Err(StoreError::Sqlite(format!("{}: no such database", db.display())));
    }
    let foreign = |why: String| StoreError::Foreign { path: db.into(), why };
    let src = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    src.busy_timeout(std::time::Duration::from_secs(10))?;
    let app_id: i32 = src.query_row("PRAGMA application_id", [], |r| r.get(0)).map_err(|e| foreign(e.to_string()))?;
    if app_id != APPLICATION_ID {
        return Err(foreign(format!("application_id is {app_id:#x}, not chatd's")));
    }
    let name = dest.file_name().ok_or_else(|| StoreError::Sqlite(format!("{}: not a file name", dest.display())))?;
    let partial = dest.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let _ = std::fs::remove_file(&partial);
    let create = |e: std::io::Error| StoreError::Create { path: partial.clone(), why: e.to_string() };
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&partial).map_err(create)?;
    let result = (|| -> Result<BackupSummary, StoreError> {
        {
            let mut dst = Connection::open(&partial)?;
            let backup = Backup::new(&src, &mut dst)?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                // -1: every page in one step, so the copy is one consistent snapshot.
                match backup.step(-1)? {
                    StepResult::Done => break,
                    StepResult::More => {}
                    StepResult::Busy | StepResult::Locked if std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(50))
                    }
                    _ => return Err(StoreError::Sqlite("the database stayed locked for 60 s".into())),
                }
            }
        }
        // The copy keeps the source's WAL mode; fold everything into the one file.
        let copy = Connection::open(&partial)?;
        let check: String = copy.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(StoreError::Damaged { path: partial.clone(), why: check });
        }
        let count = |table: &str| -> Result<u64, StoreError> {
            Ok(copy.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get::<_, i64>(0))? as u64)
        };
        let (accounts, messages) = (count("accounts")?, count("messages")?);
        let rooms: i64 =
            copy.query_row("SELECT COUNT(*) FROM rooms WHERE id NOT IN (SELECT room_id FROM directs)", [], |r| {
                r.get(0)
            })?;
        copy.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        drop(copy);
        let bytes = std::fs::metadata(&partial).map_err(create)?.len();
        Ok(BackupSummary { accounts, rooms: rooms as u64, messages, bytes })
    })();
    match result {
        Ok(summary) => {
            std::fs::rename(&partial, dest)
                .map_err(|e| StoreError::Create { path: dest.into(), why: e.to_string() })?;
            for suffix in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", partial.display()));
            }
            Ok(summary)
        }
        Err(e) => {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", partial.display()));
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MessageRecord;

    struct Record(u64, &'static str);

    impl MessageRecord for Record {
        fn id(&self) -> u64 {
            self.0
        }
        fn time(&self) -> Millis {
            1
        }
        fn sender(&self) -> &str {
            "alice"
        }
        fn text(&self) -> &str {
            self.1
        }
        fn guest(&self) -> bool {
            false
        }
        fn into_any(self: Arc<Self>) -> Arc<dyn std::any::Any + Send + Sync> {
            self
        }
    }

    /// An operator may delete a message the room accepted before its commit reached the writer:
    /// the deletion leaves a tombstone, and the commit that comes after stores nothing.
    #[tokio::test]
    async fn a_message_deleted_before_its_commit_is_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(&StorageSection { db: dir.path().join("chatd.db"), ..Default::default() }).unwrap();
        let room = store.queue.create_room(RoomName::parse("general").unwrap()).await.unwrap();
        let (kept, deleted) = (store.next_message_id(), store.next_message_id());
        let gone = store.queue.change(vec![Change::DeleteMessage { room, id: deleted, before_commit: true }]).await;
        assert_eq!(gone.unwrap(), 1, "the tombstone counts as the change");
        for (id, text) in [(kept, "kept"), (deleted, "deleted")] {
            store.queue.append(room, Arc::new(Record(id, text))).await.await.unwrap().unwrap();
        }
        let range = Range { after: None, before: None, limit: 10, newest_first: false };
        let texts: Vec<String> = store.messages(room, range).await.unwrap().into_iter().map(|m| m.text).collect();
        assert_eq!(texts, ["kept"]);
        // Its id is not handed out again after a restart (a new message under it would be skipped).
        store.close().await;
        let again = Sqlite::open(&StorageSection { db: dir.path().join("chatd.db"), ..Default::default() }).unwrap();
        assert!(again.next_message_id() > deleted);
    }

    /// A version-2 database (as chatd wrote it before guests) is upgraded in place to version 3:
    /// its messages are kept, as members' messages.
    #[test]
    fn a_version_2_database_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chatd.db");
        {
            let conn = Connection::open(&db).unwrap();
            conn.execute_batch(&format!(
                "BEGIN; {SCHEMA} {SCHEMA_2} PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = 2; \
                 INSERT INTO rooms (id, name, created_ms) VALUES (1, 'general', 0); \
                 INSERT INTO messages (id, room_id, ts_ms, sender, text) VALUES (1, 1, 5, 'alice', 'old'); COMMIT;"
            ))
            .unwrap();
        }
        let options = StorageSection { db: db.clone(), ..Default::default() };
        let conn = open_checked(&db, &options).unwrap();
        let version: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, 4);
        let row = conn.query_row("SELECT id, ts_ms, sender, text, guest FROM messages", [], stored_message).unwrap();
        assert_eq!((row.sender.as_str(), row.text.as_str(), row.guest), ("alice", "old", false));
        // Version 4: no operators, bans or audit entries yet, no account disabled.
        for table in ["room_ops", "room_bans", "audit"] {
            let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).unwrap();
            assert_eq!(n, 0, "{table}");
        }
        let disabled: i64 =
            conn.query_row("SELECT COUNT(*) FROM accounts WHERE disabled IS NOT NULL", [], |r| r.get(0)).unwrap();
        assert_eq!(disabled, 0);
    }
}
