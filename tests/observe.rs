//! Observing a running chatd: the Prometheus metrics (checked by `promtool check metrics`, from
//! Debian's `prometheus` package, and against what the test did), the health check (200, and 503
//! when the store cannot write: full, or locked by another process), JSON logs, and `chatd --check-config`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use testkit::{bin_path, call, expect_line, merged_config, Daemon};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WITH_METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// `GET path` over HTTP/1.1; returns (status, content type, body).
async fn get(addr: &str, path: &str) -> (u16, String, String) {
    get_accepting(addr, path, "*/*").await
}

async fn get_accepting(addr: &str, path: &str, accept: &str) -> (u16, String, String) {
    let fetch = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect to the metrics listener");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.unwrap();
        String::from_utf8(raw).expect("UTF-8 response")
    };
    let raw = tokio::time::timeout(testkit::PATIENCE, fetch).await.expect("HTTP response in time");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_string))
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

/// A scrape: every sample line, by its name and labels as written.
struct Scrape {
    text: String,
    samples: HashMap<String, f64>,
}

impl Scrape {
    async fn of(d: &Daemon) -> Scrape {
        let (status, content_type, text) = get(d.metrics_addr.as_deref().expect("metrics listener"), "/metrics").await;
        assert_eq!(status, 200, "{text}");
        assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').expect("name value");
                (name.to_string(), value.parse().expect("a number"))
            })
            .collect();
        Scrape { text, samples }
    }

    fn get(&self, sample: &str) -> f64 {
        *self.samples.get(sample).unwrap_or_else(|| panic!("no sample {sample} in:\n{}", self.text))
    }
}

/// Runs `promtool check metrics` on an exposition; panics with its findings unless it is clean.
fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test.sh installs it)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\non:\n{text}");
}

#[tokio::test]
async fn metrics_count_what_clients_did_and_pass_promtool() {
    let d = Daemon::start_with(WITH_METRICS).await;
    let before = Scrape::of(&d).await;
    promtool_check(&before.text);
    // What Prometheus itself asks for: OpenMetrics, the same samples.
    let addr = d.metrics_addr.as_deref().unwrap();
    let (status, content_type, open_metrics) =
        get_accepting(addr, "/metrics", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(open_metrics.ends_with("# EOF\n") && open_metrics.contains("# TYPE chatd_logins counter"));

    let mut alice = d.member("alice", "general").await;
    let mut bob = d.member("bob", "general").await;
    let mut failed = d.client().await;
    assert_eq!(call(&mut failed, "LOGIN alice not-her-password").await.fin.code, 409);
    let mut again = d.client().await;
    assert_eq!(call(&mut again, "LOGIN bob password-bob").await.fin.code, 200);
    let mut bot = d.client().await;
    assert_eq!(call(&mut bot, &format!("LOGIN stockbot {}", d.bot_password())).await.fin.code, 200);
    assert_eq!(call(&mut bot, "SERVE stock").await.fin.code, 200);

    const N: usize = 7;
    for i in 0..N {
        assert_eq!(call(&mut alice, &format!("MSG general post {i}")).await.fin.code, 200);
    }
    let last = format!("post {}", N - 1);
    expect_line(&mut bob, "alice's last post", |l| l.as_message().is_some_and(|m| m.text == last)).await;
    assert_eq!(call(&mut alice, "MSG general /stock=aapl.us").await.fin.code, 200);
    assert_eq!(call(&mut bob, "HISTORY general").await.data.len(), N);
    assert_eq!(call(&mut bob, "JOIN elsewhere").await.fin.code, 200);

    let after = Scrape::of(&d).await;
    promtool_check(&after.text);
    let delta = |s: &str| after.get(s) - before.get(s);
    assert_eq!(delta("chatd_messages_accepted_total"), N as f64);
    assert_eq!(delta("chatd_messages_delivered_total"), N as f64, "each post went to bob only");
    assert_eq!(delta("chatd_registrations_total"), 2.0);
    assert_eq!(delta("chatd_logins_total{result=\"ok\"}"), 2.0, "bob again, and the bot");
    assert_eq!(delta("chatd_logins_total{result=\"failed\"}"), 1.0);
    assert_eq!(delta("chatd_logins_total{result=\"throttled\"}"), 0.0);
    assert_eq!(delta("chatd_bot_commands_relayed_total"), 1.0);
    assert_eq!(delta("chatd_rooms"), 1.0, "elsewhere");
    assert_eq!(after.get("chatd_members"), 3.0, "alice and bob in general, bob in elsewhere");
    assert_eq!(after.get("chatd_connections{protocol=\"native\",transport=\"tls\"}"), 5.0);
    assert_eq!(after.get("chatd_connections{protocol=\"irc\",transport=\"tls\"}"), 0.0);
    assert!(delta("chatd_history_seconds_count") >= 1.0);
    // Registrations, N posts and the new room each went through a group commit.
    assert!(delta("chatd_commit_batch_size_sum") >= (N + 3) as f64);
    assert!(delta("chatd_commit_seconds_count") >= 1.0);
    assert_eq!(after.get("chatd_storage_errors_total"), 0.0);

    drop((alice, bob, failed, again, bot));
    // The gauges come back down as the sessions end.
    let deadline = std::time::Instant::now() + testkit::PATIENCE;
    loop {
        let now = Scrape::of(&d).await;
        if now.get("chatd_connections{protocol=\"native\",transport=\"tls\"}") == 0.0 && now.get("chatd_members") == 0.0
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "gauges stayed up:\n{}", now.text);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn health_is_200_while_the_store_writes_and_503_when_it_cannot() {
    let d = Daemon::start_with(&format!("{WITH_METRICS}[storage]\nmax_pages = 40\n")).await;
    let addr = d.metrics_addr.clone().unwrap();
    let (status, _, body) = get(&addr, "/health").await;
    assert_eq!((status, body.as_str()), (200, "ok: the store is writable\n"));
    assert_eq!(get(&addr, "/nothing-here").await.0, 404);

    let mut alice = d.member("alice", "general").await;
    let big = "x".repeat(1900);
    for i in 0.. {
        assert!(i < 1000, "the database never filled up");
        match call(&mut alice, &format!("MSG general {i} {big}")).await.fin.code {
            200 => continue,
            500 => break,
            other => panic!("unexpected {other}"),
        }
    }
    let (status, _, body) = get(&addr, "/health").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("unhealthy: the store cannot write") && body.contains("full"), "says why: {body}");
    let scrape = Scrape::of(&d).await;
    assert!(scrape.get("chatd_storage_errors_total") >= 2.0, "the failed commit and the probe");
    // Still serving what needs no write.
    assert_eq!(call(&mut alice, "PING alive").await.fin.code, 200);
}

#[tokio::test]
async fn health_is_503_while_another_process_locks_the_database_and_200_after() {
    let d = Daemon::start_with(&format!("{WITH_METRICS}[storage]\nbusy_timeout_ms = 200\n")).await;
    let addr = d.metrics_addr.clone().unwrap();
    assert_eq!(get(&addr, "/health").await.0, 200);

    // Another process (a careless backup, say) takes the write lock and keeps it.
    let db = rusqlite::Connection::open(d.dir.join("data/chatd.db")).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let (status, _, body) = get(&addr, "/health").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("unhealthy: the store cannot write") && body.contains("locked"), "says why: {body}");

    db.execute_batch("COMMIT").unwrap();
    drop(db);
    let (status, _, body) = get(&addr, "/health").await;
    assert_eq!((status, body.as_str()), (200, "ok: the store is writable\n"));
}

#[tokio::test]
async fn json_logs_are_one_object_a_line() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("chatd.toml"), merged_config("")).unwrap();
    let mut child = tokio::process::Command::new(bin_path("chatd"))
        .args(["--config", "chatd.toml", "--log-format", "json"])
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = async {
        while let Some(line) = stdout.next_line().await.unwrap() {
            if line == "chatd ready" {
                return;
            }
        }
        panic!("chatd exited before it was ready");
    };
    tokio::time::timeout(testkit::PATIENCE, ready).await.expect("ready in time");
    // SAFETY: kill(2) with a pid we spawned.
    unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
    let out = tokio::time::timeout(testkit::PATIENCE, child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> =
        stderr.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(lines.len() >= 2, "{stderr}");
    for line in &lines {
        assert!(line["timestamp"].is_string() && line["level"].is_string() && line["message"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|l| l["message"] == "bot account ready" && l["bot"] == "stockbot"), "{stderr}");
    assert!(lines.iter().any(|l| l["message"] == "stopped"), "{stderr}");
}

/// Runs `chatd --check-config --config <file>`; returns (success, stdout, stderr).
fn check_config(file: &Path) -> (bool, String, String) {
    let out = Command::new(bin_path("chatd"))
        .arg("--check-config")
        .arg("--config")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

#[test]
fn check_config_accepts_the_shipped_file_and_names_what_is_wrong() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("chatd.toml");
    let (ok, stdout, stderr) = check_config(&shipped);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("the configuration is valid") && stdout.contains("chatd.toml"), "{stdout}");

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("chatd.toml");
    let refused = |toml: &str, says: &[&str]| {
        std::fs::write(&file, toml).unwrap();
        let (ok, _, stderr) = check_config(&file);
        assert!(!ok, "accepted:\n{toml}");
        assert!(stderr.contains(file.to_str().unwrap()), "names the file: {stderr}");
        for s in says {
            assert!(stderr.contains(s), "{toml}\nshould say {s:?}: {stderr}");
        }
    };
    refused(
        "[server]\nlisten = \"127.0.0.1:6697\"\nlisen_backlog = 10\n",
        &["line 3", "unknown field `lisen_backlog`"],
    );
    refused("[server]\nlisten = \"localhost:six\"\n", &["server.listen", "\"localhost:six\"", "not an address:port"]);
    refused("[irc]\nlisten = \"127.0.0.1:99999\"\n", &["irc.listen", "not an address:port"]);
    refused(
        "[server]\nplain_listen = \"0.0.0.0:6667\"\n",
        &["server.plain_listen", "not loopback", "allow_plain_non_loopback"],
    );
    refused("[metrics]\nlisten = \"0.0.0.0:9187\"\n", &["metrics.listen", "not loopback", "allow_plain_non_loopback"]);
    refused("[rooms]\ninitial = [\"has space\"]\n", &["rooms.initial", "not a valid room name"]);
    refused(
        "[tls]\ngenerate_self_signed = false\ncert = \"missing.pem\"\n",
        &["tls.cert", "missing.pem", "No such file"],
    );
    refused("[limits]\nmax_line_bytes = \"big\"\n", &["line 2", "max_line_bytes", "invalid type"]);

    // Forced plaintext beyond loopback is valid; a missing file is an error naming it.
    std::fs::write(&file, "[server]\nallow_plain_non_loopback = true\n[metrics]\nlisten = \"0.0.0.0:9187\"\n").unwrap();
    assert!(check_config(&file).0);
    let (ok, _, stderr) = check_config(&tmp.path().join("absent.toml"));
    assert!(!ok && stderr.contains("absent.toml"), "{stderr}");
}
