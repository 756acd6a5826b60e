//! The fleet of connected clients and the fan-out engine shared by the scenarios.
//!
//! Every client has one reader task (it owns the read half) and a writer behind an async mutex
//! (shared by the sender task and the reader, which answers PINGs). A posted message carries
//! `B<phase> <sender> <seq> <t_ns>` where `t_ns` is nanoseconds since the generator's epoch
//! `Instant` (the generator is one process, so every task shares that clock); a reader that gets
//! it records `now - t_ns` in the phase's histogram. In open loop `t_ns` is the *intended* send
//! time, so a generator that falls behind shows up as latency (no coordinated omission).
//!
//! Closed loop keeps at most `window` messages of each sender in flight: a message leaves flight
//! when the sender's *observer* (the first other member of its room) receives it. The same rule
//! works for chatd and IRC, which has no acknowledgement.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use chatd_proto::client::{LineReader, LineWriter};
use chatd_proto::line::ServerLine;
use serde_json::json;
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant as TInstant;

use crate::client::{parse_irc, Proto, Target};
use crate::hist::{fmt_ns, Hist};
use crate::sys::CpuMark;

pub const MAX_PHASES: usize = 8;
pub const FLOW_NONE: u8 = 0;
pub const FLOW_OBSERVER: u8 = 1;
pub const FLOW_ACK: u8 = 2;

pub struct Shared {
    pub proto: Proto,
    pub epoch: Instant,
    pub phase: AtomicU32,
    pub hists: Vec<Hist>,
    pub delivered: Vec<AtomicU64>,
    pub last_delivery_ns: Vec<AtomicU64>,
    pub flow: AtomicU8,
    /// Per sender (client index): the client whose receipt frees a window slot.
    pub observer: Vec<AtomicU32>,
    pub sems: Vec<Semaphore>,
    /// Per client: send times (ns) of its MSGs not yet acknowledged (chatd only).
    pub ack_fifo: Vec<std::sync::Mutex<VecDeque<u64>>>,
    pub ack_hist: Hist,
    pub acks: AtomicU64,
    pub errors: AtomicU64,
    pub disconnects: AtomicU64,
    pub problems: std::sync::Mutex<Vec<String>>,
    pub closing: AtomicBool,
}

impl Shared {
    pub fn new(proto: Proto, clients: usize) -> Arc<Shared> {
        Arc::new(Shared {
            proto,
            epoch: Instant::now(),
            phase: AtomicU32::new(0),
            hists: (0..MAX_PHASES).map(|_| Hist::new()).collect(),
            delivered: (0..MAX_PHASES).map(|_| AtomicU64::new(0)).collect(),
            last_delivery_ns: (0..MAX_PHASES).map(|_| AtomicU64::new(0)).collect(),
            flow: AtomicU8::new(FLOW_NONE),
            observer: (0..clients).map(|_| AtomicU32::new(u32::MAX)).collect(),
            sems: (0..clients).map(|_| Semaphore::new(0)).collect(),
            ack_fifo: (0..clients).map(|_| Default::default()).collect(),
            ack_hist: Hist::new(),
            acks: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            problems: Default::default(),
            closing: AtomicBool::new(false),
        })
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn problem(&self, what: String) {
        let mut p = self.problems.lock().unwrap();
        if p.len() < 10 {
            p.push(what);
        }
    }

    fn on_payload(&self, me: usize, text: &str) {
        let mut it = text.split(' ');
        let Some(phase) = it.next().and_then(|t| t.strip_prefix('B')).and_then(|p| p.parse::<u32>().ok()) else {
            return;
        };
        if phase != self.phase.load(Relaxed) || phase as usize >= MAX_PHASES {
            return; // a replayed or stale message
        }
        let (Some(sender), _seq, Some(t)) =
            (it.next().and_then(|s| s.parse::<usize>().ok()), it.next(), it.next().and_then(|s| s.parse::<u64>().ok()))
        else {
            return;
        };
        let now = self.now_ns();
        let p = phase as usize;
        self.hists[p].record(now.saturating_sub(t));
        self.delivered[p].fetch_add(1, Relaxed);
        self.last_delivery_ns[p].fetch_max(now, Relaxed);
        if self.flow.load(Relaxed) == FLOW_OBSERVER
            && sender < self.observer.len()
            && self.observer[sender].load(Relaxed) == me as u32
        {
            self.sems[sender].add_permits(1);
        }
    }

    fn on_ack(&self, me: usize, ok: bool) {
        let sent = self.ack_fifo[me].lock().unwrap().pop_front();
        if ok {
            self.acks.fetch_add(1, Relaxed);
            if let Some(t) = sent {
                self.ack_hist.record(self.now_ns().saturating_sub(t));
            }
        }
        if self.flow.load(Relaxed) == FLOW_ACK {
            self.sems[me].add_permits(1);
        }
    }
}

/// The reader task of client `me`: counts deliveries and acks, answers PINGs, notes trouble.
pub async fn reader_loop(mut reader: LineReader, writer: Arc<Mutex<LineWriter>>, shared: Arc<Shared>, me: usize) {
    loop {
        let line = match reader.read_line().await {
            Ok(Some(l)) => l,
            Ok(None) | Err(_) if shared.closing.load(Relaxed) => return,
            Ok(None) => {
                shared.disconnects.fetch_add(1, Relaxed);
                shared.problem(format!("client {me}: the server closed the connection"));
                return;
            }
            Err(e) => {
                shared.disconnects.fetch_add(1, Relaxed);
                shared.problem(format!("client {me}: connection error: {e}"));
                return;
            }
        };
        match shared.proto {
            Proto::Chatd => on_chatd_line(&line, &writer, &shared, me).await,
            Proto::Irc => on_irc_line(&line, &writer, &shared, me).await,
        }
    }
}

async fn on_chatd_line(line: &str, writer: &Mutex<LineWriter>, shared: &Shared, me: usize) {
    if line.starts_with("* MSG ") {
        if let Ok(ServerLine::Event(e)) = ServerLine::parse(line) {
            if let Some(text) = e.text {
                shared.on_payload(me, &text);
            }
        }
        return;
    }
    match ServerLine::parse(line) {
        Ok(ServerLine::Event(e)) if e.name == "PING" => {
            let token = e.fields.first().cloned().unwrap_or_default();
            let _ = writer.lock().await.send(&format!("PONG {token}")).await;
        }
        Ok(ServerLine::Event(e)) if e.name == "BYE" && !shared.closing.load(Relaxed) => {
            shared.problem(format!("client {me}: * BYE :{}", e.text.unwrap_or_default()));
        }
        Ok(ServerLine::Reply(r)) if r.verb == "MSG" => {
            if r.code >= 400 {
                shared.errors.fetch_add(1, Relaxed);
                shared.problem(format!("client {me}: {line}"));
            }
            shared.on_ack(me, r.code == 200);
        }
        Ok(ServerLine::Reply(r)) if r.code >= 400 => {
            shared.errors.fetch_add(1, Relaxed);
            shared.problem(format!("client {me}: {line}"));
        }
        _ => {}
    }
}

async fn on_irc_line(line: &str, writer: &Mutex<LineWriter>, shared: &Shared, me: usize) {
    let Some(m) = parse_irc(line) else { return };
    match m.command {
        "PRIVMSG" => {
            if let Some(text) = m.params.get(1) {
                shared.on_payload(me, text);
            }
        }
        "PING" => {
            let token = m.params.last().copied().unwrap_or("");
            let _ = writer.lock().await.send(&format!("PONG :{token}")).await;
        }
        "ERROR" if !shared.closing.load(Relaxed) => {
            shared.problem(format!("client {me}: {line}"));
        }
        c if c.len() == 3 && (c.starts_with('4') || c.starts_with('5')) => {
            shared.errors.fetch_add(1, Relaxed);
            shared.problem(format!("client {me}: {line}"));
        }
        _ => {}
    }
}

/// Connected, logged-in clients, each a member of one room.
pub struct Fleet {
    pub target: Target,
    pub shared: Arc<Shared>,
    pub writers: Vec<Arc<Mutex<LineWriter>>>,
    pub room_of: Vec<usize>,
    pub rooms: Vec<String>,
    pub connect_secs: f64,
}

/// Progress on stderr once a second: `\r`-rewritten on a terminal, one line per tick otherwise.
pub fn progress<F: Fn() -> String + Send + 'static>(f: F) -> tokio::task::JoinHandle<()> {
    let tty = unsafe { libc::isatty(2) } == 1;
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let s = format!("[{:>5.1}s] {}", start.elapsed().as_secs_f64(), f());
            if tty {
                eprint!("\r\x1b[K{s}");
            } else {
                eprintln!("{s}");
            }
        }
    })
}

pub fn end_progress(h: tokio::task::JoinHandle<()>) {
    h.abort();
    if unsafe { libc::isatty(2) } == 1 {
        eprint!("\r\x1b[K");
    }
}

impl Fleet {
    /// Connects `n` clients (`concurrency` at a time); client `i` is user `i`, joins
    /// room `i % rooms.len()` and, if `i < senders` (the clients that will post), connects to
    /// `--addr`, else to `--recv-addr` (`Target::for_client`).
    pub async fn connect(
        target: &Target,
        n: usize,
        senders: usize,
        rooms: Vec<String>,
        concurrency: usize,
        deadline: TInstant,
    ) -> Result<Fleet> {
        let shared = Shared::new(target.proto, n);
        let start = Instant::now();
        let done = Arc::new(AtomicU64::new(0));
        let d = done.clone();
        let prog = progress(move || format!("connecting: {}/{n} logged in and joined", d.load(Relaxed)));
        let gate = Arc::new(Semaphore::new(concurrency.max(1)));
        let room_of: Vec<usize> = (0..n).map(|i| i % rooms.len().max(1)).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let (t, gate, shared, done) =
                (target.for_client(i, i < senders), gate.clone(), shared.clone(), done.clone());
            let room = rooms[room_of[i]].clone();
            tasks.spawn(async move {
                let _permit = gate.acquire_owned().await.unwrap();
                let conn = t.setup(&t.user(i), std::slice::from_ref(&room)).await?;
                let (reader, writer) = conn.split();
                let writer = Arc::new(Mutex::new(writer));
                tokio::spawn(reader_loop(reader, writer.clone(), shared, i));
                done.fetch_add(1, Relaxed);
                Ok::<_, anyhow::Error>((i, writer))
            });
        }
        let mut writers: Vec<Option<Arc<Mutex<LineWriter>>>> = vec![None; n];
        let result = tokio::time::timeout_at(deadline, async {
            while let Some(r) = tasks.join_next().await {
                let (i, w) = r.map_err(|e| anyhow!("client task failed: {e}"))??;
                writers[i] = Some(w);
            }
            Ok::<_, anyhow::Error>(())
        })
        .await;
        end_progress(prog);
        match result {
            Err(_) => bail!("--timeout reached while connecting ({}/{n} connected)", done.load(Relaxed)),
            Ok(Err(e)) => {
                shared.closing.store(true, Relaxed);
                return Err(e.context(format!("after {}/{n} clients connected", done.load(Relaxed))));
            }
            Ok(Ok(())) => {}
        }
        Ok(Fleet {
            target: target.clone(),
            shared,
            writers: writers.into_iter().map(Option::unwrap).collect(),
            room_of,
            rooms,
            connect_secs: start.elapsed().as_secs_f64(),
        })
    }

    pub fn room_size(&self, room: usize) -> usize {
        self.room_of.iter().filter(|r| **r == room).count()
    }

    /// The first other member of `sender`'s room.
    fn observer_of(&self, sender: usize) -> Option<usize> {
        let room = self.room_of[sender];
        (0..self.room_of.len()).find(|&i| i != sender && self.room_of[i] == room)
    }

    pub fn close(&self) {
        self.shared.closing.store(true, Relaxed);
    }
}

/// One fan-out phase: `senders` each post `messages`, paced at `rate` msgs/s in total (open loop)
/// or as fast as the window allows (closed loop).
#[derive(Clone)]
pub struct PhaseSpec {
    pub senders: Vec<usize>,
    pub messages: u64,
    pub rate: Option<f64>,
    pub window: u32,
    pub size: usize,
    pub drain: Duration,
    /// `FLOW_ACK`: the window counts unacknowledged MSGs (chatd `posts`) instead of deliveries.
    pub ack_window: bool,
    pub label: String,
    /// A shell command run (and waited for) just before the phase starts and just after it ends
    /// (`fanout --phase-hook`), e.g. to zero and dump callgrind's counters around the phase.
    pub hook: Option<String>,
}

/// Runs `sh -c hook` with CHATD_BENCH_PHASE, CHATD_BENCH_EDGE (start or end) and, at the end,
/// CHATD_BENCH_DELIVERIES in its environment; fails unless it exits 0.
async fn run_hook(hook: &str, label: &str, edge: &str, deliveries: u64) -> Result<()> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(hook)
        .env("CHATD_BENCH_PHASE", label)
        .env("CHATD_BENCH_EDGE", edge)
        .env("CHATD_BENCH_DELIVERIES", deliveries.to_string())
        .status()
        .await
        .map_err(|e| anyhow!("--phase-hook: cannot run sh: {e}"))?;
    if !status.success() {
        bail!("--phase-hook failed at the {edge} of phase {label} ({status})");
    }
    Ok(())
}

pub struct PhaseResult {
    pub json: serde_json::Value,
    pub summary: String,
    pub p99_ns: u64,
}

pub async fn run_phase(fleet: &Fleet, spec: &PhaseSpec, pids: &[u32], deadline: TInstant) -> Result<PhaseResult> {
    let shared = &fleet.shared;
    let phase = shared.phase.load(Relaxed) + 1;
    if phase as usize >= MAX_PHASES {
        bail!("too many phases");
    }
    let p = phase as usize;
    let mut expected: u64 = 0;
    for &s in &spec.senders {
        expected += spec.messages * (fleet.room_size(fleet.room_of[s]) as u64 - 1);
    }
    let flow = if spec.ack_window {
        FLOW_ACK
    } else if spec.rate.is_some() {
        FLOW_NONE
    } else {
        FLOW_OBSERVER
    };
    if flow == FLOW_OBSERVER && spec.senders.iter().any(|&s| fleet.observer_of(s).is_none()) {
        bail!("closed loop needs at least two clients in every sender's room");
    }
    for &s in &spec.senders {
        let sem = &shared.sems[s];
        sem.forget_permits(sem.available_permits());
        sem.add_permits(spec.window.max(1) as usize);
        shared.observer[s].store(fleet.observer_of(s).map(|o| o as u32).unwrap_or(u32::MAX), Relaxed);
        shared.ack_fifo[s].lock().unwrap().clear();
    }
    shared.flow.store(flow, Relaxed);
    shared.phase.store(phase, Relaxed);

    let sent = Arc::new(AtomicU64::new(0));
    let total = spec.messages * spec.senders.len() as u64;
    let (sh, se, label) = (shared.clone(), sent.clone(), spec.label.clone());
    let prog = progress(move || {
        format!(
            "{label}: sent {}/{total}, delivered {}/{expected}, acks {}, errors {}, drops {}",
            se.load(Relaxed),
            sh.delivered[p].load(Relaxed),
            sh.acks.load(Relaxed),
            sh.errors.load(Relaxed),
            sh.disconnects.load(Relaxed)
        )
    });

    if let Some(hook) = &spec.hook {
        run_hook(hook, &spec.label, "start", 0).await?;
    }
    let pad: String = "x".repeat(spec.size.saturating_sub(40));
    let start_at = TInstant::now() + Duration::from_millis(20);
    let start_ns = shared.now_ns() + 20_000_000;
    let cpu0 = CpuMark::now(pids);
    let mut tasks = tokio::task::JoinSet::new();
    let nsend = spec.senders.len() as f64;
    for (k, &s) in spec.senders.iter().enumerate() {
        let writer = fleet.writers[s].clone();
        let shared = shared.clone();
        let sent = sent.clone();
        let room = fleet.rooms[fleet.room_of[s]].clone();
        let target = fleet.target.clone();
        let pad = pad.clone();
        let messages = spec.messages;
        // Open loop: sender k posts every nsend/rate seconds, offset by k/rate.
        let pace = spec.rate.map(|r| (1e9 * nsend / r, 1e9 * k as f64 / r));
        tasks.spawn(async move {
            for seq in 0..messages {
                let t_ns = match pace {
                    Some((interval, offset)) => {
                        let due = offset + interval * seq as f64;
                        tokio::time::sleep_until(start_at + Duration::from_nanos(due as u64)).await;
                        start_ns + due as u64
                    }
                    None => {
                        match tokio::time::timeout_at(deadline, shared.sems[s].acquire()).await {
                            Ok(Ok(permit)) => permit.forget(),
                            _ => return Err(anyhow!("sender {s}: window never reopened (messages lost?)")),
                        }
                        shared.now_ns()
                    }
                };
                let line = target.post_line(&room, &format!("B{phase} {s} {seq} {t_ns} {pad}"));
                let mut w = writer.lock().await;
                if target.proto == Proto::Chatd {
                    shared.ack_fifo[s].lock().unwrap().push_back(t_ns);
                }
                w.send(&line).await.map_err(|e| anyhow!("sender {s}: {e}"))?;
                drop(w);
                sent.fetch_add(1, Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    let mut send_error = None;
    let joined = tokio::time::timeout_at(deadline, async {
        while let Some(r) = tasks.join_next().await {
            if let Ok(Err(e)) = r {
                send_error.get_or_insert(e.to_string());
            }
        }
    })
    .await;
    if joined.is_err() {
        tasks.abort_all();
        send_error.get_or_insert("--timeout reached while sending".into());
    }
    let sends_done = shared.now_ns();
    // Drain: wait for every delivery (and, in posts, every ack), at most `drain` after the last send.
    let drain_end = TInstant::now() + spec.drain;
    loop {
        let got_all = shared.delivered[p].load(Relaxed) >= expected
            && (!spec.ack_window || shared.acks.load(Relaxed) >= sent.load(Relaxed));
        if got_all || TInstant::now() >= drain_end || TInstant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let cpu1 = CpuMark::now(pids);
    end_progress(prog);
    if let Some(hook) = &spec.hook {
        run_hook(hook, &spec.label, "end", shared.delivered[p].load(Relaxed)).await?;
    }
    shared.flow.store(FLOW_NONE, Relaxed);

    let delivered = shared.delivered[p].load(Relaxed);
    let sent_n = sent.load(Relaxed);
    let last = shared.last_delivery_ns[p].load(Relaxed).max(sends_done);
    let secs = (last.saturating_sub(start_ns)) as f64 / 1e9;
    let rate = if secs > 0.0 { delivered as f64 / secs } else { 0.0 };
    let (server_cpu, gen_cpu, wall_us) = cpu0.delta(&cpu1);
    let cpu_by_pid = cpu0.delta_by_pid(&cpu1);
    let cpu_per = server_cpu.map(|c| if delivered > 0 { c as f64 / delivered as f64 } else { 0.0 });
    let h = &shared.hists[p];
    let lost = expected.saturating_sub(delivered);
    let json = json!({
        "phase": spec.label,
        "senders": spec.senders.len(),
        "messages_per_sender": spec.messages,
        "mode": if spec.rate.is_some() { "open" } else { "closed" },
        "rate_target": spec.rate,
        "window": spec.window,
        "sent": sent_n,
        "expected_deliveries": expected,
        "deliveries": delivered,
        "lost": lost,
        "seconds": secs,
        "deliveries_per_sec": rate.round(),
        "messages_per_sec": if secs > 0.0 { (sent_n as f64 / secs).round() } else { 0.0 },
        "latency": h.summary_us(),
        "server_cpu_us": server_cpu,
        "server_cpu_us_per_delivery": cpu_per,
        "server_cpu_us_by_pid": (pids.len() > 1).then_some(cpu_by_pid),
        "server_cpu_util": server_cpu.map(|c| c as f64 / wall_us.max(1) as f64),
        "generator_cpu_util": gen_cpu as f64 / wall_us.max(1) as f64,
        "acks": shared.acks.load(Relaxed),
        "errors": shared.errors.load(Relaxed),
        "disconnects": shared.disconnects.load(Relaxed),
        "send_error": send_error,
    });
    let mut summary = format!(
        "{}: {} msgs -> {}/{} deliveries in {:.2}s = {:.0} deliveries/s; latency {}",
        spec.label,
        sent_n,
        delivered,
        expected,
        secs,
        rate,
        h.line()
    );
    if let Some(c) = cpu_per {
        summary += &format!(
            "; server CPU {:.2} µs/delivery ({:.0}% of a core)",
            c,
            100.0 * server_cpu.unwrap() as f64 / wall_us.max(1) as f64
        );
    }
    summary += &format!("; generator {:.0}% of a core", 100.0 * gen_cpu as f64 / wall_us.max(1) as f64);
    if lost > 0 {
        summary += &format!("; LOST {lost}");
    }
    if let Some(e) = json["send_error"].as_str() {
        summary += &format!("; SEND ERROR: {e}");
    }
    let _ = fmt_ns;
    Ok(PhaseResult { json, summary, p99_ns: h.quantile(0.99) })
}
