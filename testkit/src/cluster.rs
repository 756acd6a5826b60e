//! Several chatd nodes as one server (docs/cluster.md): one throwaway PostgreSQL database (the store
//! of record, [`PgServer`]), one throwaway NATS server (the nodes' messages to each other,
//! [`NatsServer`]) and N real `chatd` processes, `n1`..`nN`, each with its own listeners,
//! certificates and data directory ([`Daemon`]), all on loopback.
//!
//! Around it, what the cluster tests observe with: a [`Watcher`] is a member that records every live
//! event it gets; a poster ([`spawn_poster`]) pipelines labelled `MSG`s and records what became of
//! each (acknowledged with an id, refused with a code, or never answered); [`Msg`] is a stored or
//! delivered message, compared across nodes.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chatd_proto::line::{Event, ServerLine};
use chatd_proto::LineConn;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::nats::NatsServer;
use crate::postgres::PgServer;
use crate::{call, merge, whole_history, Daemon, PATIENCE};

/// How long a cluster test waits for something that involves a node taking over a room (a lease
/// running out), a reconnect to NATS or PostgreSQL, or a backfill: a failure guard, not a
/// measurement.
pub const CLUSTER_PATIENCE: Duration = Duration::from_secs(60);

/// The database every node of a [`Cluster`] shares.
pub const DATABASE: &str = "chatd";

/// A running cluster. `nodes[i]` is node `n{i+1}`.
pub struct Cluster {
    pub pg: PgServer,
    pub nats: NatsServer,
    pub nodes: Vec<Daemon>,
}

impl Cluster {
    /// `n` nodes on one fresh database and one NATS server.
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, "").await
    }

    /// `n` nodes, each with `extra` (TOML) merged over its cluster configuration.
    pub async fn start_with(n: usize, extra: &str) -> Cluster {
        assert!(n >= 1);
        let pg = PgServer::start();
        pg.create_database(DATABASE);
        let nats = NatsServer::start();
        let mut cluster = Cluster { pg, nats, nodes: Vec::new() };
        // One at a time: node 1 writes the bot's password file the others then read, and the
        // schema is made once.
        for i in 0..n {
            let config = cluster.node_config(i, extra);
            cluster.nodes.push(Daemon::start_with(&config).await);
        }
        cluster
    }

    /// The configuration of node `i` (over testkit's BASE_CONFIG): the shared database and NATS
    /// server, its name `n{i+1}`, and (from node 2 on) node 1's bot password file, so that every
    /// node provisions the `stockbot` account with the same password.
    pub fn node_config(&self, i: usize, extra: &str) -> String {
        let mut config = format!(
            "[storage]\nbackend = \"postgres\"\npostgres_url = \"{pg}\"\n\
             [cluster]\nnode = \"n{n}\"\nnats_url = \"{nats}\"\n",
            pg = self.pg.url_for(DATABASE),
            n = i + 1,
            nats = self.nats.url(),
        );
        if i > 0 {
            let file = self.nodes[0].bot_password_file();
            config += &format!("[[bots]]\nname = \"stockbot\"\npassword_file = {}\n", toml_string(&file));
        }
        let mut table: toml::Table = config.parse().expect("cluster config is TOML");
        merge(&mut table, extra.parse().expect("extra config is TOML"));
        toml::to_string(&table).unwrap()
    }

    /// `kill -9` node `i`: it commits nothing more, its clients see their connections drop.
    pub async fn kill9(&mut self, i: usize) {
        self.nodes[i].kill9().await;
    }

    /// Starts node `i` again (after `kill9`) on its addresses, with its configuration and data.
    pub async fn start_again(&mut self, i: usize) {
        self.nodes[i].start_again().await;
    }

    /// SIGSTOP node `i`: it is frozen mid-whatever (its connections stay open, nothing answers).
    pub fn sigstop(&self, i: usize) {
        signal(&self.nodes[i], libc::SIGSTOP);
    }

    /// SIGCONT node `i` after `sigstop`.
    pub fn sigcont(&self, i: usize) {
        signal(&self.nodes[i], libc::SIGCONT);
    }

    /// Stops NATS (the nodes lose their connections to it).
    pub fn stop_nats(&mut self) {
        blocking(|| self.nats.stop());
    }

    /// Starts NATS again on the same port.
    pub fn start_nats_again(&mut self) {
        blocking(|| self.nats.start_again());
    }

    /// Stops PostgreSQL (fast shutdown: the nodes' sessions end, what was committed is kept).
    pub fn stop_postgres(&self) {
        blocking(|| self.pg.stop());
    }

    /// Starts PostgreSQL again on the same port with the same data.
    pub fn start_postgres_again(&self) {
        blocking(|| self.pg.start_again());
    }

    /// Every stored message of `room` as node `i` pages it back with `HISTORY ... BEFORE`.
    pub async fn history(&self, i: usize, room: &str) -> Vec<Msg> {
        whole_history(&self.nodes[i], room)
            .await
            .into_iter()
            .map(|r| Msg::from_line(&ServerLine::Reply(r)).expect("a 130 line"))
            .collect()
    }

    /// The history of `room` from each node in `nodes`, checked to be the same on all of them
    /// (ids, times, senders, texts) and in increasing id order; returns it.
    pub async fn agreed_history(&self, nodes: &[usize], room: &str) -> Vec<Msg> {
        let mut first: Option<(usize, Vec<Msg>)> = None;
        for &i in nodes {
            let h = self.history(i, room).await;
            assert!(
                h.windows(2).all(|w| w[0].id < w[1].id),
                "HISTORY {room} on n{} is not in increasing id order: {}",
                i + 1,
                first_disorder(&h)
            );
            match &first {
                None => first = Some((i, h)),
                Some((j, f)) => assert!(
                    *f == h,
                    "HISTORY {room} differs between n{} and n{}: {}",
                    j + 1,
                    i + 1,
                    first_difference(f, &h)
                ),
            }
        }
        first.map(|(_, h)| h).unwrap_or_default()
    }

    /// Every node's log and NATS's, for a failure message.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for (i, d) in self.nodes.iter().enumerate() {
            all += &format!("===== n{} =====\n{}\n", i + 1, d.log());
        }
        all += &format!("===== nats =====\n{}\n", self.nats.log());
        all
    }
}

fn toml_string(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

fn signal(d: &Daemon, sig: i32) {
    assert!(d.pid > 0, "the node is not running");
    // SAFETY: kill(2) with the pid of a chatd we spawned and have not reaped (it is running).
    let rc = unsafe { libc::kill(d.pid as i32, sig) };
    assert_eq!(rc, 0, "kill({}, {sig}): {}", d.pid, std::io::Error::last_os_error());
}

/// Runs a blocking step (pg_ctl, stopping nats-server) without stalling the other tasks of a
/// multi-threaded test runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A message as delivered live (`* MSG`) or stored (`130`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Msg {
    pub id: u64,
    pub room: String,
    pub time: String,
    pub sender: String,
    pub text: String,
}

impl Msg {
    /// A `* MSG` event or a `130` line; `None` for anything else (`* CMD` included).
    pub fn from_line(line: &ServerLine) -> Option<Msg> {
        let m = line.as_message()?;
        Some(Msg { id: m.id?, room: m.room, time: m.time, sender: m.sender, text: m.text })
    }

    /// What a member must see the same live as in HISTORY: id, sender, text (not the time's
    /// formatting).
    pub fn key(&self) -> (u64, &str, &str) {
        (self.id, &self.sender, &self.text)
    }
}

/// Where two message lists first differ, briefly (the lists can be thousands long).
pub fn first_difference(a: &[Msg], b: &[Msg]) -> String {
    let at = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    format!(
        "lengths {} and {}; first difference at index {at}: {:?} vs {:?}",
        a.len(),
        b.len(),
        a.get(at).map(|m| (m.id, &m.sender, &m.text)),
        b.get(at).map(|m| (m.id, &m.sender, &m.text))
    )
}

fn first_disorder(h: &[Msg]) -> String {
    match h.windows(2).position(|w| w[0].id >= w[1].id) {
        Some(at) => format!(
            "at index {at} of {}: {:?}",
            h.len(),
            h[at.saturating_sub(2)..(at + 3).min(h.len())]
                .iter()
                .map(|m| (m.id, &m.sender, &m.text))
                .collect::<Vec<_>>()
        ),
        None => "none".into(),
    }
}

/// What a [`Watcher`] got so far.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// `* MSG` events, in arrival order.
    pub msgs: Vec<Msg>,
    /// Every other event (`* JOIN`, `* PART`, `* TOPIC`, `* KICK`, `* CMD`, ...), in arrival order.
    pub events: Vec<Event>,
    /// The connection ended (the node died, or closed it).
    pub closed: bool,
}

/// A member that only listens: it joined its rooms, records every live event (answering `* PING`),
/// and never posts.
pub struct Watcher {
    pub node: usize,
    pub user: String,
    /// Per room joined: the newest id of its JOIN replay (0 when the room was empty). Live
    /// messages are those after it.
    pub joined_after: Vec<(String, u64)>,
    seen: watch::Receiver<Seen>,
    task: JoinHandle<()>,
}

impl Watcher {
    /// `user` logs in on `cluster.nodes[node]` and joins `rooms`; from then on everything it gets is
    /// recorded.
    pub async fn start(cluster: &Cluster, node: usize, user: &str, rooms: &[&str]) -> Watcher {
        let mut conn = cluster.nodes[node].login(user).await;
        let mut joined_after = Vec::new();
        let mut early = Seen::default();
        for room in rooms {
            let r = call(&mut conn, &format!("JOIN {room}")).await;
            assert_eq!(r.fin.code, 200, "{user} on n{}: JOIN {room}: {:?}", node + 1, r.fin);
            let newest =
                r.data.iter().filter_map(|d| Msg::from_line(&ServerLine::Reply(d.clone()))).map(|m| m.id).max();
            joined_after.push((room.to_string(), newest.unwrap_or(0)));
            // Events that came in while the JOINs were answered (a message of a room joined before).
            for e in r.events {
                record(&mut early, ServerLine::Event(e));
            }
        }
        let (tx, seen) = watch::channel(early);
        let task = tokio::spawn(async move {
            loop {
                match conn.next().await {
                    Ok(Some(ServerLine::Event(e))) if e.name == "PING" => {
                        let token = e.fields.first().cloned().unwrap_or_default();
                        let _ = conn.send(&format!("PONG {token}")).await;
                    }
                    Ok(Some(line)) => tx.send_modify(|s| record(s, line)),
                    Ok(None) | Err(_) => {
                        tx.send_modify(|s| s.closed = true);
                        return;
                    }
                }
            }
        });
        Watcher { node, user: user.to_string(), joined_after, seen, task }
    }

    /// What it got so far.
    pub fn seen(&self) -> Seen {
        self.seen.borrow().clone()
    }

    /// The `* MSG`s of `room` it got so far, in arrival order.
    pub fn live(&self, room: &str) -> Vec<Msg> {
        self.seen.borrow().msgs.iter().filter(|m| m.room == room).cloned().collect()
    }

    /// The newest id of `room` it saw in its JOIN replay.
    pub fn joined_after(&self, room: &str) -> u64 {
        self.joined_after.iter().find(|(r, _)| r == room).map(|(_, id)| *id).expect("a room the watcher joined")
    }

    /// Waits (at most `patience`) until what it saw satisfies `pred`; panics naming `what`.
    pub async fn wait_for(&mut self, what: &str, patience: Duration, pred: impl Fn(&Seen) -> bool) -> Seen {
        let node = self.node + 1;
        let user = self.user.clone();
        let found = match tokio::time::timeout(patience, self.seen.wait_for(|s| pred(s))).await {
            Ok(Ok(s)) => Some(s.clone()),
            _ => None,
        };
        match found {
            Some(s) => s,
            None => {
                let s = self.seen();
                panic!(
                    "{user} on n{node} did not see {what}; it saw {} messages (last {:?}), events {:?}, closed {}",
                    s.msgs.len(),
                    s.msgs.last(),
                    s.events.iter().rev().take(10).collect::<Vec<_>>(),
                    s.closed
                )
            }
        }
    }

    /// Waits for the `* MSG` of `room` with this text.
    pub async fn wait_for_text(&mut self, room: &str, text: &str, patience: Duration) -> Seen {
        self.wait_for(&format!("the message {text:?} in {room}"), patience, |s| {
            s.msgs.iter().any(|m| m.room == room && m.text == text)
        })
        .await
    }

    /// Waits for an event named `name` whose fields start with `fields` (and whose text is `text`,
    /// when given).
    pub async fn wait_for_event(&mut self, name: &str, fields: &[&str], text: Option<&str>) -> Event {
        let matches = |e: &Event| {
            e.name == name
                && e.fields.len() >= fields.len()
                && e.fields.iter().zip(fields).all(|(a, b)| a == b)
                && text.is_none_or(|t| e.text.as_deref() == Some(t))
        };
        let what = format!("* {name} {} {text:?}", fields.join(" "));
        let s = self.wait_for(&what, CLUSTER_PATIENCE, |s| s.events.iter().any(matches)).await;
        s.events.into_iter().find(matches).unwrap()
    }

    /// Checks that what it got live of `room` is exactly `history` after its join point: every
    /// stored message once, in id order, under its stored id, none missing, nothing else (on a
    /// cluster node members get a message once it is committed: PROTOCOL.md, "Several nodes").
    /// Call it once the last message of `history` has reached it (a sentinel).
    pub fn assert_saw_exactly(&self, room: &str, history: &[Msg]) {
        self.check_live(room, history, Gaps::None);
    }

    /// As [`Watcher::assert_saw_exactly`] for a member whose connection ended (its node was
    /// killed): what it got are the first messages of `history` after its join point.
    pub fn assert_saw_a_prefix(&self, room: &str, history: &[Msg]) {
        self.check_live(room, history, Gaps::AtTheEnd);
    }

    fn check_live(&self, room: &str, history: &[Msg], gaps: Gaps) {
        let who = format!("{} on n{}", self.user, self.node + 1);
        let after = self.joined_after(room);
        let live = self.live(room);
        if let Some(at) = live.windows(2).position(|w| w[0].id >= w[1].id) {
            panic!(
                "{who} got {room} live out of id order or twice: id {} ({:?}) then id {} ({:?}), at index {at} of {}",
                live[at].id,
                live[at].text,
                live[at + 1].id,
                live[at + 1].text,
                live.len()
            );
        }
        if let Some(m) = live.first().filter(|m| m.id <= after) {
            panic!("{who} got id {} of {room} live, but its JOIN replay went up to id {after}", m.id);
        }
        let stored_by_id: std::collections::HashMap<u64, &Msg> = history.iter().map(|m| (m.id, m)).collect();
        let stored_by_content: std::collections::HashMap<(&str, &str), u64> =
            history.iter().map(|m| ((m.sender.as_str(), m.text.as_str()), m.id)).collect();
        let mut extra = Vec::new();
        let mut seen_stored = Vec::new();
        for m in &live {
            match stored_by_id.get(&m.id) {
                Some(s) => {
                    assert_eq!(s.key(), m.key(), "{who}: id {} of {room} live is not what is stored under it", m.id);
                    seen_stored.push(m.id);
                }
                None => {
                    if let Some(id) = stored_by_content.get(&(m.sender.as_str(), m.text.as_str())) {
                        panic!("{who} got {:?} of {room} live as id {}, but it is stored as id {id}", m.text, m.id);
                    }
                    extra.push(m.clone());
                }
            }
        }
        let want: Vec<u64> = history.iter().map(|m| m.id).filter(|id| *id > after).collect();
        let complete = match gaps {
            Gaps::None => seen_stored == want,
            Gaps::AtTheEnd => want.starts_with(&seen_stored),
        };
        if !complete {
            let got: std::collections::HashSet<u64> = seen_stored.iter().copied().collect();
            let last = seen_stored.last().copied().unwrap_or(0);
            let missing: Vec<u64> =
                want.iter().copied().filter(|id| !got.contains(id) && (gaps == Gaps::None || *id < last)).collect();
            panic!(
                "{who} missed stored messages of {room} (after id {after}): {} of {} missing{}, first ids {:?}",
                missing.len(),
                want.len(),
                if gaps == Gaps::AtTheEnd { " before the last one it got" } else { "" },
                &missing[..missing.len().min(10)]
            );
        }
        assert!(
            extra.is_empty(),
            "{who} got {} messages of {room} live that are not stored, e.g. {:?}",
            extra.len(),
            &extra[..extra.len().min(5)]
        );
    }
}

/// Where a live stream may stop short of the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gaps {
    /// Nowhere: it has everything.
    None,
    /// After the last message it got (the connection ended).
    AtTheEnd,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(seen: &mut Seen, line: ServerLine) {
    if let Some(m) = Msg::from_line(&line) {
        seen.msgs.push(m);
    } else if let ServerLine::Event(e) = line {
        seen.events.push(e);
    }
}

/// What became of one post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `200 MSG <room> <id> <time>`: committed under this id.
    Acked(u64),
    /// A final reply other than 200 (a `5xx` while storage or a node is unavailable).
    Refused(u16),
    /// Sent (or being sent) when the connection ended or the node stopped answering.
    Unanswered,
}

/// One post of a poster: its text (unique in the test) and what became of it.
#[derive(Debug, Clone)]
pub struct Posted {
    pub text: String,
    pub outcome: Outcome,
}

/// Shared by the posters of a test: the count of acknowledgements so far and the signal to stop
/// sending.
#[derive(Clone)]
pub struct Traffic {
    acked: Arc<AtomicUsize>,
    stop: Arc<watch::Sender<bool>>,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic { acked: Arc::default(), stop: Arc::new(watch::channel(false).0) }
    }
}

impl Traffic {
    /// How many posts were acknowledged so far, by every poster.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` posts were acknowledged in all (at most `patience`).
    pub async fn wait_acked(&self, n: usize, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        while self.acked() < n {
            assert!(tokio::time::Instant::now() < deadline, "only {} of {n} posts acknowledged", self.acked());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Posters send nothing more; what they sent still gets its replies.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }
}

/// Starts a poster on `conn` (a member of `room`): it pipelines `MSG <room> <label> m<i>` for i in
/// 0..`total` (labelled `@m<i>`), at most `window` unanswered at a time, until done or
/// `traffic.stop()`. Replies must come in order (PROTOCOL.md: pipelined posts are acknowledged in
/// order); the task panics otherwise. It returns every post sent with its outcome, once each has
/// a reply or the connection ended or was silent for [`CLUSTER_PATIENCE`].
pub fn spawn_poster(
    conn: LineConn,
    room: &str,
    label: &str,
    total: usize,
    window: usize,
    traffic: &Traffic,
) -> JoinHandle<Vec<Posted>> {
    let (mut reader, mut writer) = conn.split();
    let permits = Arc::new(Semaphore::new(window));
    let sent = Arc::new(AtomicUsize::new(0));
    let (fin_tx, mut fin_rx) = watch::channel(false);
    let texts: Vec<String> = (0..total).map(|i| format!("{label} m{i}")).collect();
    let writing = {
        let (permits, sent, texts, room) = (permits.clone(), sent.clone(), texts.clone(), room.to_string());
        let mut stop = traffic.stop.subscribe();
        tokio::spawn(async move {
            for (i, text) in texts.iter().enumerate() {
                let permit = tokio::select! {
                    p = permits.clone().acquire_owned() => p,
                    _ = stop.wait_for(|s| *s) => break,
                };
                let Ok(permit) = permit else { break };
                if *stop.borrow() {
                    break;
                }
                permit.forget();
                sent.store(i + 1, Ordering::SeqCst);
                if writer.send(&format!("@m{i} MSG {room} {text}")).await.is_err() {
                    break;
                }
            }
            let _ = fin_tx.send(true);
            writer
        })
    };
    let acked = traffic.acked.clone();
    let room = room.to_string();
    tokio::spawn(async move {
        let mut outcomes: Vec<Outcome> = Vec::new();
        loop {
            if *fin_rx.borrow() && outcomes.len() >= sent.load(Ordering::SeqCst) {
                break;
            }
            let line = tokio::select! {
                line = tokio::time::timeout(CLUSTER_PATIENCE, reader.next()) => line,
                _ = fin_rx.changed() => continue,
            };
            let r = match line {
                Ok(Ok(Some(ServerLine::Reply(r)))) => r,
                Ok(Ok(Some(ServerLine::Event(_)))) => continue,
                _ => break,
            };
            let i = outcomes.len();
            assert_eq!(
                r.label.as_deref(),
                Some(format!("m{i}").as_str()),
                "a reply out of order in {room} (pipelined posts are answered in order): {r:?}"
            );
            if r.code == 200 {
                assert_eq!(r.verb, "MSG", "{r:?}");
                outcomes.push(Outcome::Acked(r.fields[1].parse().expect("an id in 200 MSG")));
                acked.fetch_add(1, Ordering::Relaxed);
            } else {
                outcomes.push(Outcome::Refused(r.code));
            }
            permits.add_permits(1);
        }
        // Unblock a writer waiting for a permit; give one stuck writing (a stopped node) a while.
        permits.close();
        let _ = tokio::time::timeout(PATIENCE, writing).await;
        let n = sent.load(Ordering::SeqCst);
        texts
            .into_iter()
            .take(n)
            .enumerate()
            .map(|(i, text)| Posted { text, outcome: outcomes.get(i).cloned().unwrap_or(Outcome::Unanswered) })
            .collect()
    })
}
