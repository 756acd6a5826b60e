//! The five scenarios. Each returns its parameters, results (JSON) and a human summary.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use chatd_proto::line::ServerLine;
use clap::Args;
use serde_json::{json, Value};
use tokio::time::Instant as TInstant;

use crate::client::{chatd_login, irc_login, Proto, Target};
use crate::engine::{end_progress, progress, run_phase, Fleet, PhaseSpec};
use crate::hist::{fmt_ns, Hist};
use crate::sys;

pub struct Ctx {
    pub target: Target,
    pub pid: Vec<u32>,
    pub deadline: TInstant,
    pub nofile: u64,
    pub concurrency: usize,
}

impl Ctx {
    /// Connects `clients` clients to `rooms` (the first `senders` of them post), at the run's
    /// connection concurrency and within its deadline.
    async fn fleet(&self, clients: usize, senders: usize, rooms: Vec<String>) -> Result<Fleet> {
        Fleet::connect(&self.target, clients, senders, rooms, self.concurrency, self.deadline).await
    }
}

pub struct Outcome {
    pub ok: bool,
    pub params: Value,
    pub results: Value,
    pub summary: String,
    pub problems: Vec<String>,
}

fn check_fds(ctx: &Ctx, conns: usize) -> Result<()> {
    if ctx.nofile > 0 && conns as u64 + 32 > ctx.nofile {
        bail!(
            "{conns} connections need about {} file descriptors but this process may hold {} (RLIMIT_NOFILE hard limit)",
            conns + 32,
            ctx.nofile
        );
    }
    Ok(())
}

fn room_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n.max(1)).map(|i| format!("{prefix}{i}")).collect()
}

fn finish(fleet: &Fleet, params: Value, results: Value, summary: String, phases_ok: bool) -> Outcome {
    fleet.close();
    let problems = fleet.shared.problems.lock().unwrap().clone();
    let ok = phases_ok && fleet.shared.disconnects.load(Relaxed) == 0;
    Outcome { ok, params, results, summary, problems }
}

fn phase_ok(r: &Value) -> bool {
    r["lost"].as_u64() == Some(0) && r["send_error"].is_null()
}

// ---------------------------------------------------------------------------------------------

#[derive(Args, Clone)]
pub struct FanoutArgs {
    /// Connected clients.
    #[arg(long, short = 'c', default_value_t = 100)]
    pub clients: usize,
    /// Rooms; client i joins room i % rooms.
    #[arg(long, short = 'r', default_value_t = 1)]
    pub rooms: usize,
    /// Clients that post (the first S clients, spread over the rooms).
    #[arg(long, short = 's', default_value_t = 10)]
    pub senders: usize,
    /// Messages per sender.
    #[arg(long, short = 'm', default_value_t = 100)]
    pub messages: u64,
    /// Total messages/s over all senders (open loop). Without it: closed loop at full speed.
    #[arg(long)]
    pub rate: Option<f64>,
    /// With --rate: messages per sender in the paced phase (default: --messages).
    #[arg(long)]
    pub paced_messages: Option<u64>,
    /// With --rate: run a closed-loop (burst) phase after the paced one, on the same clients.
    #[arg(long)]
    pub burst: bool,
    /// Closed loop: messages per sender in flight (not yet seen by the first other room member).
    #[arg(long, default_value_t = 16)]
    pub window: u32,
    /// Approximate message text length in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seconds to wait for outstanding deliveries after the last send.
    #[arg(long, default_value_t = 10)]
    pub drain: u64,
    /// Room name prefix.
    #[arg(long, default_value = "fan")]
    pub room_prefix: String,
    /// Shell command run (and waited for) just before each phase and just after it, with
    /// CHATD_BENCH_PHASE, CHATD_BENCH_EDGE=start|end and CHATD_BENCH_DELIVERIES set
    /// (bench/instructions.sh counts the daemon's instructions with it).
    #[arg(long)]
    pub phase_hook: Option<String>,
}

pub async fn fanout(ctx: &Ctx, a: &FanoutArgs) -> Result<Outcome> {
    if a.senders > a.clients || a.clients == 0 {
        bail!("--senders must be at most --clients (and --clients > 0)");
    }
    check_fds(ctx, a.clients)?;
    let fleet = ctx.fleet(a.clients, a.senders, room_names(&a.room_prefix, a.rooms)).await?;
    let mut plan = Vec::new();
    if let Some(rate) = a.rate {
        plan.push(("paced", Some(rate), a.paced_messages.unwrap_or(a.messages)));
    }
    if a.rate.is_none() || a.burst {
        plan.push(("burst", None, a.messages));
    }
    let mut phases = Vec::new();
    let mut summary = format!("connected {} clients in {:.2}s", a.clients, fleet.connect_secs);
    let mut ok = true;
    for (label, rate, messages) in plan {
        let spec = PhaseSpec {
            senders: (0..a.senders).collect(),
            messages,
            rate,
            window: a.window,
            size: a.size,
            drain: Duration::from_secs(a.drain),
            ack_window: false,
            label: label.into(),
            hook: a.phase_hook.clone(),
        };
        let r = run_phase(&fleet, &spec, &ctx.pid, ctx.deadline).await?;
        ok &= phase_ok(&r.json);
        summary += &format!("\n{}", r.summary);
        phases.push(r.json);
    }
    let params = json!({"clients": a.clients, "rooms": a.rooms, "senders": a.senders, "messages": a.messages,
        "rate": a.rate, "paced_messages": a.paced_messages, "burst": a.burst, "window": a.window, "size": a.size});
    let results = json!({"connect_secs": fleet.connect_secs, "phases": phases});
    Ok(finish(&fleet, params, results, summary, ok))
}

// ---------------------------------------------------------------------------------------------

#[derive(Args, Clone)]
pub struct IdleArgs {
    /// Connections to open and log in.
    #[arg(long, short = 'c', default_value_t = 1000)]
    pub clients: usize,
    /// Members per room (clients are spread over ceil(clients / room_size) rooms).
    #[arg(long, default_value_t = 100)]
    pub room_size: usize,
    /// Seconds to wait after the last login before reading the daemon's memory.
    #[arg(long, default_value_t = 2)]
    pub settle: u64,
    /// Seconds to keep the connections open after measuring.
    #[arg(long, default_value_t = 0)]
    pub hold: u64,
    #[arg(long, default_value = "idle")]
    pub room_prefix: String,
    /// Throwaway logins before the "before" memory reading.
    #[arg(long, default_value_t = 4)]
    pub warmup: usize,
}

pub async fn idle(ctx: &Ctx, a: &IdleArgs) -> Result<Outcome> {
    check_fds(ctx, a.clients)?;
    let rooms = a.clients.div_ceil(a.room_size.max(1)).max(1);
    // Warm-up: two logins first, so the daemon's password-hashing buffers (argon2: 19 MiB per
    // worker) are already counted in the "before" figure, not spread over the connections.
    let mut warm = tokio::task::JoinSet::new();
    for w in 0..a.warmup {
        let t = ctx.target.clone();
        warm.spawn(async move {
            let mut c = t.setup(&format!("{}w{w:03}", t.prefix), &[]).await?;
            let _ = c.send("QUIT").await;
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(r) = warm.join_next().await {
        r??;
    }
    if a.warmup > 0 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rss0 = sys::rss_kib_sum(&ctx.pid)?;
    let fleet = ctx.fleet(a.clients, 0, room_names(&a.room_prefix, rooms)).await?;
    let settle_end = (TInstant::now() + Duration::from_secs(a.settle)).min(ctx.deadline);
    tokio::time::sleep_until(settle_end).await;
    let rss1 = sys::rss_kib_sum(&ctx.pid)?;
    let per_conn = match (rss0, rss1) {
        (Some(b), Some(e)) => Some(e.saturating_sub(b) as f64 * 1024.0 / a.clients.max(1) as f64),
        _ => None,
    };
    let alive = a.clients as u64 - fleet.shared.disconnects.load(Relaxed);
    let hold_end = (TInstant::now() + Duration::from_secs(a.hold)).min(ctx.deadline);
    if a.hold > 0 {
        let sh = fleet.shared.clone();
        let n = a.clients as u64;
        let prog = progress(move || format!("holding: {}/{n} connections open", n - sh.disconnects.load(Relaxed)));
        tokio::time::sleep_until(hold_end).await;
        end_progress(prog);
    }
    let params = json!({"clients": a.clients, "room_size": a.room_size, "rooms": rooms, "settle": a.settle});
    let results = json!({
        "connected": a.clients,
        "alive_after_settle": alive,
        "connect_secs": fleet.connect_secs,
        "connects_per_sec": a.clients as f64 / fleet.connect_secs.max(1e-9),
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "bytes_per_connection": per_conn.map(|b| b.round()),
    });
    let mut summary = format!(
        "{} clients logged in and joined {} rooms in {:.2}s ({:.0}/s)",
        a.clients,
        rooms,
        fleet.connect_secs,
        a.clients as f64 / fleet.connect_secs.max(1e-9)
    );
    if let (Some(b), Some(e), Some(p)) = (rss0, rss1, per_conn) {
        summary += &format!("; daemon RSS {b} KiB -> {e} KiB = {:.1} KiB per connection", p / 1024.0);
    }
    Ok(finish(&fleet, params, results, summary, true))
}

// ---------------------------------------------------------------------------------------------

#[derive(Args, Clone)]
pub struct PostsArgs {
    /// Posting connections, all in one room (each also receives the others' messages).
    #[arg(long, short = 's', default_value_t = 8)]
    pub senders: usize,
    /// Messages per sender.
    #[arg(long, short = 'm', default_value_t = 5000)]
    pub messages: u64,
    /// MSGs per sender sent ahead of their `200 MSG` acknowledgement (pipelining).
    #[arg(long, default_value_t = 128)]
    pub window: u32,
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    #[arg(long, default_value_t = 20)]
    pub drain: u64,
    #[arg(long, default_value = "posts")]
    pub room: String,
}

pub async fn posts(ctx: &Ctx, a: &PostsArgs) -> Result<Outcome> {
    if ctx.target.proto != Proto::Chatd {
        bail!("posts counts chatd's durable `200 MSG` acknowledgements: --proto chatd only");
    }
    check_fds(ctx, a.senders)?;
    let fleet = ctx.fleet(a.senders, a.senders, vec![a.room.clone()]).await?;
    let acks0 = fleet.shared.acks.load(Relaxed);
    let t0 = Instant::now();
    let spec = PhaseSpec {
        senders: (0..a.senders).collect(),
        messages: a.messages,
        rate: None,
        window: a.window,
        size: a.size,
        drain: Duration::from_secs(a.drain),
        ack_window: true,
        label: "posts".into(),
        hook: None,
    };
    let r = run_phase(&fleet, &spec, &ctx.pid, ctx.deadline).await?;
    let acks = fleet.shared.acks.load(Relaxed) - acks0;
    let secs = t0.elapsed().as_secs_f64();
    let ack_rate = acks as f64 / r.json["seconds"].as_f64().unwrap_or(secs).max(1e-9);
    let ah = &fleet.shared.ack_hist;
    let params = json!({"senders": a.senders, "messages": a.messages, "window": a.window, "size": a.size});
    let mut results = json!({
        "acked": acks,
        "sent": r.json["sent"],
        "acked_per_sec": ack_rate.round(),
        "ack_latency": ah.summary_us(),
        "fanout": r.json,
    });
    results["server_cpu_us_per_post"] = match r.json["server_cpu_us"].as_u64() {
        Some(c) if acks > 0 => json!(c as f64 / acks as f64),
        _ => Value::Null,
    };
    let summary = format!(
        "{} senders x {} msgs, window {}: {acks} acknowledged (durable) posts = {:.0} posts/s; ack latency {}\n{}",
        a.senders,
        a.messages,
        a.window,
        ack_rate,
        ah.line(),
        r.summary
    );
    let ok = acks == a.senders as u64 * a.messages && fleet.shared.errors.load(Relaxed) == 0;
    Ok(finish(&fleet, params, results, summary, ok))
}

// ---------------------------------------------------------------------------------------------

#[derive(Args, Clone)]
pub struct HistoryArgs {
    /// Background fan-out: clients, rooms, senders, total msgs/s, messages per sender.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    #[arg(long, default_value_t = 4)]
    pub rooms: usize,
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Connections issuing HISTORY (each a member of the first fan-out room, which it queries).
    #[arg(long, default_value_t = 4)]
    pub queriers: usize,
    /// HISTORY requests per querier (stops early when the background load ends).
    #[arg(long, default_value_t = 1000)]
    pub queries: u64,
    /// Pause between one querier's requests, in ms.
    #[arg(long, default_value_t = 2)]
    pub interval_ms: u64,
    /// LIMIT of each HISTORY.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[arg(long, default_value = "hist")]
    pub room_prefix: String,
}

pub async fn history(ctx: &Ctx, a: &HistoryArgs) -> Result<Outcome> {
    if ctx.target.proto != Proto::Chatd {
        bail!("HISTORY is chatd's: --proto chatd only");
    }
    if a.senders > a.clients || a.clients < 2 {
        bail!("--senders must be at most --clients (and --clients >= 2)");
    }
    check_fds(ctx, a.clients + a.queriers)?;
    let rooms = room_names(&a.room_prefix, a.rooms);
    let fleet = ctx.fleet(a.clients, a.senders, rooms.clone()).await?;
    // Make sure the queried room has at least `limit` messages.
    let prefill = PhaseSpec {
        senders: vec![0],
        messages: a.limit as u64 + 10,
        rate: None,
        window: 8,
        size: 64,
        drain: Duration::from_secs(10),
        ack_window: false,
        label: "prefill".into(),
        hook: None,
    };
    run_phase(&fleet, &prefill, &[], ctx.deadline).await?;

    let mut queriers = Vec::new();
    for q in 0..a.queriers {
        queriers.push(ctx.target.setup(&ctx.target.user(a.clients + q), std::slice::from_ref(&rooms[0])).await?);
    }
    let rtt = Arc::new(Hist::new());
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let mut qtasks = tokio::task::JoinSet::new();
    for (qi, mut conn) in queriers.into_iter().enumerate() {
        let (rtt, stop, bad) = (rtt.clone(), stop.clone(), bad.clone());
        let room = rooms[0].clone();
        let (n, limit, pause, deadline) = (a.queries, a.limit, Duration::from_millis(a.interval_ms), ctx.deadline);
        qtasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await; // let the fan-out start
            for _ in 0..n {
                if stop.load(Relaxed) || TInstant::now() >= deadline {
                    break;
                }
                let t0 = Instant::now();
                conn.send(&format!("HISTORY {room} LIMIT {limit}")).await?;
                let mut rows = 0u32;
                loop {
                    let Some(line) = conn.next().await? else { bail!("querier {qi}: connection closed") };
                    match line {
                        ServerLine::Reply(r) if r.code == 130 => rows += 1,
                        ServerLine::Reply(r) if r.verb == "HISTORY" && r.code >= 200 => {
                            if r.code != 200 || rows != limit {
                                bad.fetch_add(1, Relaxed);
                            }
                            break;
                        }
                        ServerLine::Event(e) if e.name == "PING" => {
                            conn.send(&format!("PONG {}", e.fields.first().cloned().unwrap_or_default())).await?;
                        }
                        _ => {}
                    }
                }
                rtt.record(t0.elapsed().as_nanos() as u64);
                tokio::time::sleep(pause).await;
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    let spec = PhaseSpec {
        senders: (0..a.senders).collect(),
        messages: a.messages,
        rate: Some(a.rate),
        window: 16,
        size: 64,
        drain: Duration::from_secs(10),
        ack_window: false,
        label: "background".into(),
        hook: None,
    };
    let r = run_phase(&fleet, &spec, &ctx.pid, ctx.deadline).await?;
    stop.store(true, Relaxed);
    let mut qerr = None;
    while let Some(j) = qtasks.join_next().await {
        if let Ok(Err(e)) = j {
            qerr.get_or_insert(e.to_string());
        }
    }
    let params = json!({"clients": a.clients, "rooms": a.rooms, "senders": a.senders, "rate": a.rate,
        "queriers": a.queriers, "queries": a.queries, "interval_ms": a.interval_ms, "limit": a.limit});
    let results = json!({
        "history_rtt": rtt.summary_us(),
        "history_incomplete": bad.load(Relaxed),
        "querier_error": qerr,
        "background": r.json,
    });
    let summary = format!(
        "HISTORY {} LIMIT {} round trip ({} queries, {} queriers, under {:.0} msgs/s fan-out): {}\n{}",
        rooms[0],
        a.limit,
        rtt.count(),
        a.queriers,
        a.rate,
        rtt.line(),
        r.summary
    );
    let ok = qerr.is_none() && bad.load(Relaxed) == 0 && phase_ok(&r.json);
    Ok(finish(&fleet, params, results, summary, ok))
}

// ---------------------------------------------------------------------------------------------

#[derive(Args, Clone)]
pub struct StormArgs {
    /// Fan-out during both phases: clients, rooms, senders, total msgs/s, seconds per phase.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    #[arg(long, default_value_t = 4)]
    pub rooms: usize,
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Logins per second during the storm phase (each a new connection: LOGIN, then QUIT).
    #[arg(long, default_value_t = 50.0)]
    pub logins_per_sec: f64,
    /// Accounts the storm logs in as (registered first), cycled.
    #[arg(long, default_value_t = 20)]
    pub storm_accounts: usize,
    /// Storm logins in flight at most.
    #[arg(long, default_value_t = 256)]
    pub storm_concurrency: usize,
    #[arg(long, default_value = "storm")]
    pub room_prefix: String,
}

pub async fn storm(ctx: &Ctx, a: &StormArgs) -> Result<Outcome> {
    if a.senders > a.clients || a.clients < 2 {
        bail!("--senders must be at most --clients (and --clients >= 2)");
    }
    check_fds(ctx, a.clients + a.storm_concurrency)?;
    let fleet = ctx.fleet(a.clients, a.senders, room_names(&a.room_prefix, a.rooms)).await?;
    let storm_user = |i: usize| format!("{}s{:04}", ctx.target.prefix, i % a.storm_accounts.max(1));
    if ctx.target.proto == Proto::Chatd {
        for i in 0..a.storm_accounts.max(1) {
            let mut c = ctx.target.setup(&storm_user(i), &[]).await?;
            let _ = c.send("QUIT").await;
        }
    }
    let messages = ((a.rate * a.seconds as f64) / a.senders.max(1) as f64).ceil() as u64;
    let mut spec = PhaseSpec {
        senders: (0..a.senders).collect(),
        messages,
        rate: Some(a.rate),
        window: 16,
        size: 64,
        drain: Duration::from_secs(10),
        ack_window: false,
        label: "without storm".into(),
        hook: None,
    };
    let base = run_phase(&fleet, &spec, &ctx.pid, ctx.deadline).await?;

    // The storm: one new connection + login every 1/L s while the second phase runs.
    let stop = Arc::new(AtomicBool::new(false));
    let login_h = Arc::new(Hist::new());
    let (ok_n, fail_n) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_fail: Arc<std::sync::Mutex<Option<String>>> = Default::default();
    let storm_task = {
        let (stop, login_h, ok_n, fail_n, first_fail) =
            (stop.clone(), login_h.clone(), ok_n.clone(), fail_n.clone(), first_fail.clone());
        let target = ctx.target.clone();
        let users: Vec<String> = (0..a.storm_accounts.max(1)).map(storm_user).collect();
        let (rate, gate, deadline) =
            (a.logins_per_sec, Arc::new(tokio::sync::Semaphore::new(a.storm_concurrency.max(1))), ctx.deadline);
        let max_logins = (rate * (a.seconds as f64 + 10.0)).ceil() as u64;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.001)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut inflight = tokio::task::JoinSet::new();
            for k in 0..max_logins {
                tick.tick().await;
                if stop.load(Relaxed) || TInstant::now() >= deadline {
                    break;
                }
                let Ok(permit) = gate.clone().try_acquire_owned() else {
                    fail_n.fetch_add(1, Relaxed); // more than storm_concurrency logins pending
                    continue;
                };
                let (target, user) = (target.clone(), users[k as usize % users.len()].clone());
                let (login_h, ok_n, fail_n, first_fail) =
                    (login_h.clone(), ok_n.clone(), fail_n.clone(), first_fail.clone());
                inflight.spawn(async move {
                    let _permit = permit;
                    let t0 = Instant::now();
                    let r = tokio::time::timeout(Duration::from_secs(30), async {
                        let mut c = target.open().await?;
                        match target.proto {
                            Proto::Chatd => chatd_login(&mut c, &user, &target.password, "LOGIN").await?,
                            Proto::Irc => {
                                let account = target.irc_register.then_some(target.password.as_str());
                                irc_login(&mut c, &format!("{user}x{k}"), account).await?
                            }
                        }
                        let _ = c.send("QUIT").await;
                        Ok::<_, anyhow::Error>(())
                    })
                    .await;
                    match r {
                        Ok(Ok(())) => {
                            login_h.record(t0.elapsed().as_nanos() as u64);
                            ok_n.fetch_add(1, Relaxed);
                        }
                        Ok(Err(e)) => {
                            fail_n.fetch_add(1, Relaxed);
                            first_fail.lock().unwrap().get_or_insert(e.to_string());
                        }
                        Err(_) => {
                            fail_n.fetch_add(1, Relaxed);
                            first_fail.lock().unwrap().get_or_insert("login took over 30s".into());
                        }
                    }
                });
                while inflight.try_join_next().is_some() {}
            }
            while tokio::time::timeout_at(deadline, inflight.join_next()).await.ok().flatten().is_some() {}
        })
    };
    spec.label = "with storm".into();
    let with = run_phase(&fleet, &spec, &ctx.pid, ctx.deadline).await?;
    stop.store(true, Relaxed);
    let _ = tokio::time::timeout_at(ctx.deadline, storm_task).await;
    let ratio = with.p99_ns as f64 / base.p99_ns.max(1) as f64;
    let params = json!({"clients": a.clients, "rooms": a.rooms, "senders": a.senders, "rate": a.rate,
        "seconds": a.seconds, "logins_per_sec": a.logins_per_sec, "storm_accounts": a.storm_accounts});
    let logins = ok_n.load(Relaxed);
    let storm_secs = with.json["seconds"].as_f64().unwrap_or(a.seconds as f64).max(1e-9);
    let results = json!({
        "without_storm": base.json,
        "with_storm": with.json,
        "p99_ratio": ratio,
        "logins_ok": logins,
        "logins_failed": fail_n.load(Relaxed),
        "logins_per_sec_achieved": logins as f64 / storm_secs,
        "login_latency": login_h.summary_us(),
        "first_login_failure": first_fail.lock().unwrap().clone(),
    });
    let summary = format!(
        "{}\n{}\nstorm: {logins} logins ok, {} failed ({:.1}/s), login latency {}\nchat p99 without storm {} / with storm {} = {ratio:.2}x",
        base.summary,
        with.summary,
        fail_n.load(Relaxed),
        logins as f64 / storm_secs,
        login_h.line(),
        fmt_ns(base.p99_ns),
        fmt_ns(with.p99_ns),
    );
    let ok = phase_ok(&base.json) && phase_ok(&with.json) && fail_n.load(Relaxed) == 0;
    Ok(finish(&fleet, params, results, summary, ok))
}
