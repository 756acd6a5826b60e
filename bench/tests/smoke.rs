//! CI check for the load generator: it builds, and tiny scenarios run against a real chatd
//! (started by testkit on an ephemeral port) with every message delivered and acknowledged; and
//! the bare server (chatd-bare) answers the generator's IRC subset over TLS and plaintext; and chatd's
//! IRC front end serves the same IRC load, each client registering its account first.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use testkit::Daemon;
use tokio::io::{AsyncBufReadExt, BufReader};

const BENCH: &str = env!("CARGO_BIN_EXE_chatd-bench");
const BARE: &str = env!("CARGO_BIN_EXE_chatd-bare");

/// Runs chatd-bench against `addr` (TLS when `ca` is given), asserts it succeeded with `"ok": true`.
async fn bench(pid: u32, log: &dyn Fn() -> String, out: &Path, addr: &str, ca: Option<&Path>, args: &[&str]) -> Value {
    let pid = pid.to_string();
    let mut all = vec!["--addr", addr, "--pid", &pid];
    if let Some(ca) = ca {
        all.extend(["--tls", "--ca", ca.to_str().unwrap()]);
    }
    all.extend(args);
    bench_with(log, out, &all).await
}

/// Runs chatd-bench with `args` (and --json `out`), asserts it succeeded with `"ok": true`.
async fn bench_with(log: &dyn Fn() -> String, out: &Path, args: &[&str]) -> Value {
    let mut cmd = tokio::process::Command::new(BENCH);
    cmd.arg("--timeout").arg("60").arg("--json").arg(out).args(args);
    let res = tokio::time::timeout(std::time::Duration::from_secs(90), cmd.output())
        .await
        .expect("chatd-bench finished in time")
        .expect("chatd-bench runs");
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "chatd-bench {args:?} failed: {stdout}\n{stderr}\ndaemon log:\n{}", log());
    let v: Value = serde_json::from_str(&std::fs::read_to_string(out).unwrap()).unwrap();
    assert_eq!(v["ok"], true, "{v:#}");
    v
}

async fn run_bench(d: &Daemon, out: &Path, addr: &str, tls: bool, args: &[&str]) -> Value {
    bench(d.pid, &|| d.log(), out, addr, tls.then_some(d.ca_file.as_path()), args).await
}

#[tokio::test]
async fn the_irc_load_against_chatds_irc_front_end() {
    let d = Daemon::start().await;
    let dir = tempfile::tempdir().unwrap();
    let args = ["--proto", "irc", "--irc-register", "--prefix", "q"];
    let fanout = ["fanout", "-c", "6", "-r", "2", "-s", "2", "-m", "10", "--rate", "200", "--burst"];
    let v = run_bench(&d, &dir.path().join("irc.json"), &d.irc_addr, true, &[&args[..], &fanout[..]].concat()).await;
    let phases = v["results"]["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2);
    for p in phases {
        assert_eq!(p["deliveries"], 40, "every message to both other members: {p:#}");
    }
}

#[tokio::test]
async fn fanout_and_idle_over_websockets() {
    let d = Daemon::start_with("[web]\nlisten = \"127.0.0.1:0\"\nplain_listen = \"127.0.0.1:0\"\n").await;
    let dir = tempfile::tempdir().unwrap();
    let wss = d.web_addr.clone().unwrap();
    let fanout =
        ["--ws", "--prefix", "w", "fanout", "-c", "6", "-r", "2", "-s", "2", "-m", "10", "--rate", "200", "--burst"];
    let v = run_bench(&d, &dir.path().join("wss.json"), &wss, true, &fanout).await;
    assert_eq!(v["ws"], true);
    for p in v["results"]["phases"].as_array().unwrap() {
        assert_eq!(p["deliveries"], 40, "{p:#}");
    }
    let ws = d.web_plain_addr.clone().unwrap();
    let idle = ["--ws", "--prefix", "wi", "idle", "-c", "5", "--settle", "0", "--warmup", "1"];
    let v = run_bench(&d, &dir.path().join("ws-idle.json"), &ws, false, &idle).await;
    assert!(v["results"]["rss_after_kib"].as_u64().unwrap() > 0);
    let irc = [
        "--ws",
        "--proto",
        "irc",
        "--irc-register",
        "--prefix",
        "wq",
        "fanout",
        "-c",
        "4",
        "-r",
        "1",
        "-s",
        "1",
        "-m",
        "5",
    ];
    // IRC on a daemon of its own, as the_irc_load_against_chatds_irc_front_end.
    let d = Daemon::start_with("[web]\nlisten = \"127.0.0.1:0\"\n").await;
    let wss = d.web_addr.clone().unwrap();
    let v = run_bench(&d, &dir.path().join("ws-irc.json"), &wss, true, &irc).await;
    for p in v["results"]["phases"].as_array().unwrap() {
        assert_eq!(p["deliveries"], 15, "{p:#}");
    }
}

#[tokio::test]
async fn tiny_scenarios_against_a_real_daemon() {
    let d = Daemon::start_with("[server]\nplain_listen = \"127.0.0.1:0\"\n").await;
    let dir = tempfile::tempdir().unwrap();
    let plain = d.plain_addr.clone().expect("plaintext listener");

    // Fan-out over TLS: a paced phase, then a closed-loop burst; 6 clients, 2 rooms, 2 senders.
    let v = run_bench(
        &d,
        &dir.path().join("fanout.json"),
        &d.addr,
        true,
        &["--prefix", "f", "fanout", "-c", "6", "-r", "2", "-s", "2", "-m", "10", "--rate", "200", "--burst"],
    )
    .await;
    let phases = v["results"]["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2);
    for p in phases {
        // Each sender's room has 3 members: 2 senders x 10 messages x 2 receivers.
        assert_eq!(p["deliveries"], 40, "{p:#}");
        assert!(p["latency"]["p99_us"].as_f64().unwrap() > 0.0);
        assert!(p["server_cpu_us"].is_u64(), "CPU read from /proc: {p:#}");
    }

    // Durable posts over plaintext, pipelined: every MSG acknowledged.
    let v = run_bench(
        &d,
        &dir.path().join("posts.json"),
        &plain,
        false,
        &["--prefix", "p", "posts", "-s", "2", "-m", "20", "--window", "4"],
    )
    .await;
    assert_eq!(v["results"]["acked"], 40, "{v:#}");

    // Idle connections and daemon memory; then HISTORY under a little load; then a tiny storm.
    let v = run_bench(
        &d,
        &dir.path().join("idle.json"),
        &d.addr,
        true,
        &["--prefix", "i", "idle", "-c", "5", "--settle", "0", "--warmup", "1"],
    )
    .await;
    assert!(v["results"]["rss_after_kib"].as_u64().unwrap() > 0);
    let v = run_bench(
        &d,
        &dir.path().join("history.json"),
        &plain,
        false,
        &[
            "--prefix",
            "h",
            "history",
            "--clients",
            "4",
            "--rooms",
            "1",
            "--senders",
            "1",
            "--rate",
            "100",
            "--messages",
            "50",
            "--queriers",
            "1",
            "--queries",
            "20",
            "--limit",
            "10",
        ],
    )
    .await;
    assert!(v["results"]["history_rtt"]["count"].as_u64().unwrap() > 0, "{v:#}");
    let v = run_bench(
        &d,
        &dir.path().join("storm.json"),
        &plain,
        false,
        &[
            "--prefix",
            "s",
            "storm",
            "--clients",
            "4",
            "--rooms",
            "1",
            "--senders",
            "1",
            "--rate",
            "50",
            "--seconds",
            "1",
            "--logins-per-sec",
            "4",
            "--storm-accounts",
            "2",
        ],
    )
    .await;
    assert!(v["results"]["logins_ok"].as_u64().unwrap() > 0, "{v:#}");
}

/// bench/cluster.sh's placements against a real two-node cluster (PostgreSQL + NATS, testkit):
/// senders on n1 and receivers on n2 (`--recv-addr`), posters spread over both (`--addr` list),
/// and the CPU of both nodes (`--pid` list).
#[tokio::test]
async fn senders_and_receivers_on_different_nodes_of_a_cluster() {
    let cluster = testkit::cluster::Cluster::start_with(2, "[server]\nplain_listen = \"127.0.0.1:0\"\n").await;
    let (n1, n2) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (a1, a2) = (n1.plain_addr.clone().unwrap(), n2.plain_addr.clone().unwrap());
    let pids = format!("{},{}", n1.pid, n2.pid);
    let dir = tempfile::tempdir().unwrap();
    let log = || cluster.logs();
    let fanout = ["fanout", "-c", "6", "-r", "2", "-s", "2", "-m", "10", "--rate", "200"];
    let args = [&["--pid", &pids, "--addr", &a1, "--recv-addr", &a2][..], &fanout[..]].concat();
    let v = bench_with(&log, &dir.path().join("cross.json"), &args).await;
    assert_eq!(v["recv_addr"], a2.as_str());
    let p = &v["results"]["phases"][0];
    assert_eq!(p["deliveries"], 40, "every message to both other members, across nodes: {p:#}");
    let by_pid = p["server_cpu_us_by_pid"].as_array().expect("each node's CPU");
    assert_eq!(by_pid.len(), 2);
    assert_eq!(p["server_cpu_us"], by_pid[0].as_u64().unwrap() + by_pid[1].as_u64().unwrap());

    let both = format!("{a1},{a2}");
    let posts = ["--pid", &pids, "--addr", &both, "--prefix", "p", "posts", "-s", "3", "-m", "20", "--window", "4"];
    let v = bench_with(&log, &dir.path().join("posts.json"), &posts).await;
    assert_eq!(v["results"]["acked"], 60, "{v:#}");
    assert_eq!(v["results"]["fanout"]["deliveries"], 120, "{v:#}");
}

#[tokio::test]
async fn refused_connection_is_a_clear_error() {
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = tokio::process::Command::new(BENCH)
        .args(["--addr", &format!("127.0.0.1:{port}"), "--timeout", "10", "fanout", "-c", "2", "-s", "1", "-m", "1"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused"), "{err}");
    // Never anything but loopback.
    let out = tokio::process::Command::new(BENCH).args(["--addr", "192.0.2.1:6697", "idle"]).output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not loopback"));
}

#[tokio::test]
async fn bare_server_answers_the_generator() {
    bare_server_answers_the_generator_with(&[]).await;
}

/// The same with one writer task per worker thread (compare.sh's `barewl` column).
#[tokio::test]
async fn bare_server_with_a_write_loop_answers_the_generator() {
    bare_server_answers_the_generator_with(&["--write-loop"]).await;
}

async fn bare_server_answers_the_generator_with(extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = localhost_cert(dir.path());
    let mut child = tokio::process::Command::new(BARE)
        .args(["--tls-listen", "127.0.0.1:0", "--plain-listen", "127.0.0.1:0", "--threads", "2"])
        .args(extra)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chatd-bare starts");
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
        .await
        .expect("chatd-bare ready in time")
        .unwrap()
        .unwrap();
    // "chatd-bare ready tls=127.0.0.1:P plain=127.0.0.1:Q"
    let addr = |kind: &str| {
        ready.split(' ').find_map(|w| w.strip_prefix(kind)).unwrap_or_else(|| panic!("{ready}")).to_string()
    };
    let (tls, plain) = (addr("tls="), addr("plain="));
    let log = || String::from("(chatd-bare logs nothing but dropped deliveries)");

    // Fan-out over TLS, paced then burst: 6 clients in 2 rooms, 2 senders.
    let v = bench(
        pid,
        &log,
        &dir.path().join("bare-fanout.json"),
        &tls,
        Some(&ca),
        &["--proto", "irc", "fanout", "-c", "6", "-r", "2", "-s", "2", "-m", "10", "--rate", "200", "--burst"],
    )
    .await;
    let phases = v["results"]["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2);
    for p in phases {
        assert_eq!(p["deliveries"], 40, "{p:#}");
        assert!(p["server_cpu_us"].is_u64(), "CPU read from /proc: {p:#}");
    }
    // Idle over plaintext (the warm-up logins QUIT).
    let v = bench(
        pid,
        &log,
        &dir.path().join("bare-idle.json"),
        &plain,
        None,
        &["--proto", "irc", "--prefix", "i", "idle", "-c", "5", "--settle", "0", "--warmup", "1"],
    )
    .await;
    assert!(v["results"]["rss_after_kib"].as_u64().unwrap() > 0);
    // fanout --phase-hook runs before and after the phase, with the phase's deliveries at the end.
    let hook_log = dir.path().join("hook.log");
    let hook =
        format!("echo \"$CHATD_BENCH_PHASE $CHATD_BENCH_EDGE $CHATD_BENCH_DELIVERIES\" >> {}", hook_log.display());
    bench(
        pid,
        &log,
        &dir.path().join("bare-hook.json"),
        &plain,
        None,
        &[
            "--proto",
            "irc",
            "--prefix",
            "k",
            "fanout",
            "-c",
            "4",
            "-s",
            "1",
            "-m",
            "5",
            "--rate",
            "100",
            "--phase-hook",
            &hook,
        ],
    )
    .await;
    assert_eq!(std::fs::read_to_string(&hook_log).unwrap(), "paced start 0\npaced end 15\n");
    child.kill().await.unwrap();
}

/// A throwaway CA and a localhost certificate signed by it: (ca.pem, cert.pem, key.pem) in `dir`.
fn localhost_cert(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into()]).unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let paths = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}
