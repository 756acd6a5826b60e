//! chatd-bench: a load generator for chatd (and, for comparison, plain IRC daemons).
//!
//! Scenarios: fanout, idle, posts, history, storm. Each prints a human summary and a JSON
//! result (stdout, or the file given with --json). It only ever connects to loopback addresses,
//! and every loop is bounded in count and by --timeout.

mod client;
mod engine;
mod hist;
mod report;
mod scenarios;
mod sys;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use client::{Proto, Target};

#[derive(Parser)]
#[command(name = "chatd-bench", version, about = "Load generator for chatd and IRC daemons (loopback only)")]
pub struct Cli {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Args, Clone)]
pub struct Common {
    /// Protocol spoken by the target.
    #[arg(long, value_enum, default_value = "chatd", global = true)]
    pub proto: Proto,
    /// Target address (must be loopback); a comma-separated list spreads the clients round robin
    /// (client i connects to the (i mod n)-th address: several nodes of one chatd cluster).
    #[arg(long, default_value = "127.0.0.1:6697", value_delimiter = ',', global = true)]
    pub addr: Vec<String>,
    /// The clients that never post (fan-out receivers, idle clients) connect here instead (a list
    /// is spread round robin as --addr's): senders on one cluster node, receivers on another.
    #[arg(long, value_delimiter = ',', global = true)]
    pub recv_addr: Vec<String>,
    /// Use TLS (chatd's main listener; IRC TLS ports). Without it: plain TCP.
    #[arg(long, global = true)]
    pub tls: bool,
    /// Over a WebSocket: --addr is chatd's web listener ([web] listen with --tls, plain_listen
    /// without), each client opens /ws with the subprotocol of --proto (chatd.native or
    /// text.ircv3.net), one line per message.
    #[arg(long, global = true)]
    pub ws: bool,
    /// CA certificate (PEM) to trust for --tls, e.g. chatd's certs/ca.pem.
    #[arg(long, global = true)]
    pub ca: Option<PathBuf>,
    /// With --tls and no --ca: pin whatever certificate the server shows (self-signed test certs).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Name checked against the server certificate.
    #[arg(long, default_value = "localhost", global = true)]
    pub server_name: String,
    /// PID of the daemon: report its CPU time (fanout) and memory (idle) from /proc. A
    /// comma-separated list (the nodes of a cluster) reports their sum, and each one's CPU apart.
    #[arg(long, value_delimiter = ',', global = true)]
    pub pid: Vec<u32>,
    /// Write the JSON result to this file (the summary then goes to stdout); default: JSON on stdout.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Overall time limit in seconds; the run stops (with what it has) when reached.
    #[arg(long, default_value_t = 600, global = true)]
    pub timeout: u64,
    /// Generator worker threads (the daemon under test shares the machine).
    #[arg(long, default_value_t = 1, global = true)]
    pub threads: usize,
    /// User names / nicks are <prefix><5 digits>.
    #[arg(long, default_value = "bench", global = true)]
    pub prefix: String,
    /// chatd password of the bench accounts.
    #[arg(long, default_value = "bench-password-1", global = true)]
    pub password: String,
    /// IRC to chatd's IRC front end: create each client's account first (IRCv3
    /// draft/account-registration with --password), since chatd lets only accounts join.
    #[arg(long, global = true)]
    pub irc_register: bool,
    /// chatd: try LOGIN before REGISTER (accounts from an earlier run; REGISTER hashes the password
    /// even when the name is taken).
    #[arg(long, global = true)]
    pub login_first: bool,
    /// Connections set up at once.
    #[arg(long, default_value_t = 64, global = true)]
    pub concurrency: usize,
    /// Seconds one connect + login + join may take.
    #[arg(long, default_value_t = 60, global = true)]
    pub setup_timeout: u64,
}

#[derive(Subcommand)]
pub enum Scenario {
    /// C clients in R rooms; S of them post M messages each (open loop with --rate, else closed loop).
    Fanout(scenarios::FanoutArgs),
    /// N idle logged-in clients (each joined to a room): daemon memory per connection, connect time.
    Idle(scenarios::IdleArgs),
    /// chatd only: acknowledged (durable) messages/s from many senders into one room.
    Posts(scenarios::PostsArgs),
    /// chatd only: HISTORY round trips while a paced fan-out runs.
    History(scenarios::HistoryArgs),
    /// Chat latency without and with a login storm of L logins/s.
    Storm(scenarios::StormArgs),
    /// Offline: the median table over bench/compare.sh's result files (r<round>-<server>-<scenario>.json).
    Report {
        dir: PathBuf,
        /// The server compared against the others.
        #[arg(long, default_value = "chatd")]
        subject: String,
        /// Servers that are not peers (not in the best-peer ratio) but get a ratio column of their
        /// own: the bare server (the limit of the stack), an earlier chatd build, chatd over IRC.
        #[arg(long, value_delimiter = ',', default_value = "bare,barewl,before,chatdirc")]
        not_peers: Vec<String>,
        /// Also every round's figures, and the subject's ratio to each server round by round.
        #[arg(long)]
        rounds: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let nofile = sys::raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.common.threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async move {
        match run(cli, nofile).await {
            Ok(ok) => {
                if ok {
                    0
                } else {
                    3
                }
            }
            Err(e) => {
                eprintln!("chatd-bench: error: {e:#}");
                1
            }
        }
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    std::process::exit(code);
}

/// Runs the scenario; Ok(false) when it finished but with lost messages, drops or errors.
async fn run(cli: Cli, nofile: u64) -> Result<bool> {
    let c = &cli.common;
    if let Scenario::Report { dir, subject, not_peers, rounds } = &cli.scenario {
        let not_peers: Vec<&str> = not_peers.iter().map(String::as_str).collect();
        print!("{}", report::report(dir, subject, &not_peers, *rounds)?);
        return Ok(true);
    }
    for addr in c.addr.iter().chain(&c.recv_addr) {
        client::check_loopback(addr)?;
    }
    if !c.tls && (c.ca.is_some() || c.insecure) {
        anyhow::bail!("--ca/--insecure only make sense with --tls");
    }
    let tls = if c.tls {
        Some(client::tls_config(&c.addr[0], &c.server_name, c.ca.as_deref(), c.insecure).await?)
    } else {
        None
    };
    let target = Target {
        proto: c.proto,
        addr: c.addr[0].clone(),
        addrs: c.addr.clone(),
        recv_addrs: c.recv_addr.clone(),
        tls,
        ws: c.ws,
        server_name: c.server_name.clone(),
        prefix: c.prefix.clone(),
        password: c.password.clone(),
        irc_register: c.irc_register,
        first_verb: if c.login_first { "LOGIN" } else { "REGISTER" },
        setup_timeout: Duration::from_secs(c.setup_timeout),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(c.timeout);
    let ctx = scenarios::Ctx { target, pid: c.pid.clone(), deadline, nofile, concurrency: c.concurrency };
    let (name, out) = match &cli.scenario {
        Scenario::Fanout(a) => ("fanout", scenarios::fanout(&ctx, a).await?),
        Scenario::Idle(a) => ("idle", scenarios::idle(&ctx, a).await?),
        Scenario::Posts(a) => ("posts", scenarios::posts(&ctx, a).await?),
        Scenario::History(a) => ("history", scenarios::history(&ctx, a).await?),
        Scenario::Storm(a) => ("storm", scenarios::storm(&ctx, a).await?),
        Scenario::Report { .. } => unreachable!(),
    };
    let report = serde_json::json!({
        "scenario": name,
        "proto": c.proto,
        "tls": c.tls,
        "ws": c.ws,
        "addr": c.addr.join(","),
        "recv_addr": (!c.recv_addr.is_empty()).then(|| c.recv_addr.join(",")),
        "pid": match c.pid.as_slice() {
            [] => serde_json::Value::Null,
            [one] => serde_json::json!(one),
            many => serde_json::json!(many),
        },
        "generator_threads": c.threads,
        "ok": out.ok,
        "params": out.params,
        "results": out.results,
        "problems": out.problems,
    });
    let text = serde_json::to_string_pretty(&report)?;
    let mut summary = format!(
        "chatd-bench {name} against {}{} ({:?}, {})\n{}",
        c.addr.join(","),
        if c.recv_addr.is_empty() { String::new() } else { format!(" (receivers: {})", c.recv_addr.join(",")) },
        c.proto,
        match (c.tls, c.ws) {
            (true, false) => "TLS",
            (false, false) => "plaintext",
            (true, true) => "WebSocket over TLS",
            (false, true) => "WebSocket, plaintext",
        },
        out.summary
    );
    for p in &out.problems {
        summary += &format!("\n  problem: {p}");
    }
    match &c.json {
        Some(path) => {
            std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
            println!("{summary}");
        }
        None => {
            eprintln!("{summary}");
            println!("{text}");
        }
    }
    Ok(out.ok)
}
