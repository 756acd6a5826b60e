//! Test harness shared by every crate's integration tests: starts the real `chatd` binary (from
//! the workspace's target directory) on an ephemeral 127.0.0.1 port, with a temporary directory
//! for its configuration, certificates and database, and opens TLS client connections to it.
//!
//! `cargo test --workspace` builds every binary before it runs any test, so `target/debug/chatd`
//! (and `chatd-bot`, `chat`, `chatd-bench`) are there when the tests need them.

pub mod cluster;
pub mod irc_clients;
pub mod nats;
pub mod postgres;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chatd_proto::client::{LineConn, Response};
use chatd_proto::line::ServerLine;
use chatd_proto::tls::{client_config, Trust};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a test waits for anything before it calls it a failure (a guard, not a measurement).
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The path of a binary built in this workspace (`target/<profile>/<name>`).
pub fn bin_path(name: &str) -> PathBuf {
    // The test executable lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace, or run cargo test --workspace)",
        path.display()
    );
    path
}

/// The configuration every test daemon starts from: loopback exempt from per-address limits, flood
/// control relaxed, fast argon2 pool. `start_with` merges a test's own TOML over it.
pub const BASE_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
[irc]
listen = "127.0.0.1:0"
[storage]
db = "data/chatd.db"
[limits]
exempt_loopback = true
flood_burst = 10000
flood_rate_per_sec = 10000.0
flood_max_backlog = 10000
registrations_per_address_per_hour = 100000
registrations_per_hour = 100000
[[bots]]
name = "stockbot"
password_file = "data/stockbot.secret"
"#;

/// A running chatd.
pub struct Daemon {
    /// `127.0.0.1:PORT` of the TLS listener.
    pub addr: String,
    /// `127.0.0.1:PORT` of the plaintext listener, when the configuration has one.
    pub plain_addr: Option<String>,
    /// `127.0.0.1:PORT` of the IRC TLS listener.
    pub irc_addr: String,
    /// `127.0.0.1:PORT` of the IRC plaintext listener, when the configuration has one.
    pub irc_plain_addr: Option<String>,
    /// `127.0.0.1:PORT` of the metrics and health HTTP listener, when the configuration has one.
    pub metrics_addr: Option<String>,
    /// `127.0.0.1:PORT` of the web client's HTTPS and plain HTTP listeners, when configured.
    pub web_addr: Option<String>,
    pub web_plain_addr: Option<String>,
    pub ca_file: PathBuf,
    pub fingerprint: String,
    /// The daemon's directory: chatd.toml, certs/, data/, chatd.log.
    pub dir: PathBuf,
    pub pid: u32,
    child: Option<Child>,
    _tmp: Option<tempfile::TempDir>,
}

impl Daemon {
    pub async fn start() -> Daemon {
        Self::start_with("").await
    }

    /// Starts with `extra` (TOML) merged over [`BASE_CONFIG`].
    pub async fn start_with(extra: &str) -> Daemon {
        let tmp = tempfile::Builder::new().prefix("chatd-test").tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("chatd.toml"), merged_config(extra)).unwrap();
        let mut d = Daemon {
            addr: String::new(),
            plain_addr: None,
            irc_addr: String::new(),
            irc_plain_addr: None,
            metrics_addr: None,
            web_addr: None,
            web_plain_addr: None,
            ca_file: dir.join("certs/ca.pem"),
            fingerprint: String::new(),
            dir,
            pid: 0,
            child: None,
            _tmp: Some(tmp),
        };
        d.spawn(None).await;
        d
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("chatd.toml")
    }

    /// Starts the binary and waits for `chatd ready`. `listen` pins the TLS addresses, native and
    /// IRC (restarts).
    async fn spawn(&mut self, listen: Option<(String, String)>) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("chatd.log")).unwrap();
        let mut cmd = Command::new(bin_path("chatd"));
        cmd.arg("--config").arg(self.config_path()).arg("--log").arg("info,chatd=debug");
        if let Some((listen, irc)) = listen {
            cmd.arg("--listen").arg(listen);
            if !irc.is_empty() {
                cmd.arg("--irc-listen").arg(irc);
            }
        }
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn chatd");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let ready = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(a) = line.strip_prefix("chatd listening tls ") {
                    self.addr = a.to_string();
                } else if let Some(a) = line.strip_prefix("chatd listening plain ") {
                    self.plain_addr = Some(a.to_string());
                } else if let Some(a) = line.strip_prefix("chatd listening irc ") {
                    self.irc_addr = a.to_string();
                } else if let Some(a) = line.strip_prefix("chatd listening irc-plain ") {
                    self.irc_plain_addr = Some(a.to_string());
                } else if let Some(a) = line.strip_prefix("chatd listening web ") {
                    self.web_addr = Some(a.to_string());
                } else if let Some(a) = line.strip_prefix("chatd listening web-plain ") {
                    self.web_plain_addr = Some(a.to_string());
                } else if let Some(a) = line.strip_prefix("chatd listening metrics ") {
                    self.metrics_addr = Some(a.to_string());
                } else if let Some(f) = line.strip_prefix("chatd certificate sha256 ") {
                    self.fingerprint = f.to_string();
                } else if line == "chatd ready" {
                    return true;
                }
            }
            false
        };
        let ok = tokio::time::timeout(PATIENCE, ready).await.unwrap_or(false);
        if !ok {
            let log = std::fs::read_to_string(self.dir.join("chatd.log")).unwrap_or_default();
            panic!("chatd did not become ready; its log:\n{log}");
        }
        self.pid = child.id().unwrap_or(0);
        self.child = Some(child);
    }

    /// The daemon's log so far (stderr), for assertions and for debugging a failed test.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("chatd.log")).unwrap_or_default()
    }

    /// Connects over TLS (trusting the daemon's CA file) and reads the `* HELLO` greeting.
    pub async fn client(&self) -> LineConn {
        let config = client_config(&Trust::CaFile(self.ca_file.clone())).expect("client config");
        let mut conn = tokio::time::timeout(PATIENCE, LineConn::connect_tls(&self.addr, "localhost", config))
            .await
            .expect("connect timed out")
            .expect("connect");
        let hello = next_line(&mut conn).await;
        assert!(hello.is_event("HELLO"), "expected * HELLO, got {hello:?}");
        conn
    }

    /// Opens a WebSocket to the web listener (`/ws`, over TLS trusting the daemon's CA) and reads
    /// nothing: the first line is the front end's greeting. `Err` carries the refusal (e.g.
    /// "HTTP 403: ...").
    pub async fn try_websocket(&self, subprotocol: Option<&str>, origin: Option<&str>) -> std::io::Result<LineConn> {
        let addr = self.web_addr.as_ref().expect("the daemon has no [web] listen");
        let config = client_config(&Trust::CaFile(self.ca_file.clone())).expect("client config");
        let tls = chatd_proto::tls::connect(addr, "localhost", config).await?;
        let handshake = chatd_proto::ws::Handshake {
            host: addr.clone(),
            subprotocol: subprotocol.map(str::to_string),
            origin: origin.map(str::to_string),
        };
        let (stream, _) = chatd_proto::ws::connect(Box::new(tls), &handshake).await?;
        Ok(LineConn::from_stream(stream))
    }

    /// A native-protocol WebSocket client (subprotocol `chatd.native`, from the daemon's own
    /// origin, as the web client), its `* HELLO` read.
    pub async fn websocket(&self) -> LineConn {
        let port = self.web_addr.as_ref().and_then(|a| a.rsplit(':').next()).expect("web listener");
        let origin = format!("https://localhost:{port}");
        let mut conn = tokio::time::timeout(PATIENCE, self.try_websocket(Some("chatd.native"), Some(&origin)))
            .await
            .expect("WebSocket connect timed out")
            .expect("WebSocket connect");
        let hello = next_line(&mut conn).await;
        assert!(hello.is_event("HELLO"), "expected * HELLO, got {hello:?}");
        conn
    }

    /// Connects without TLS-verification setup, as raw TCP (for plaintext-to-TLS-port tests).
    pub async fn raw_tcp(&self) -> tokio::net::TcpStream {
        tokio::net::TcpStream::connect(&self.addr).await.expect("tcp connect")
    }

    /// A client logged in as `user` (registered with password `password-<user>` on first use).
    pub async fn login(&self, user: &str) -> LineConn {
        let mut conn = self.client().await;
        let password = format!("password-{user}");
        let r = call(&mut conn, &format!("REGISTER {user} {password}")).await;
        if r.fin.code == 410 {
            let r = call(&mut conn, &format!("LOGIN {user} {password}")).await;
            assert_eq!(r.fin.code, 200, "LOGIN {user}: {:?}", r.fin);
        } else {
            assert_eq!(r.fin.code, 200, "REGISTER {user}: {:?}", r.fin);
        }
        conn
    }

    /// A client logged in as `user` and joined to `room` (its replay consumed).
    pub async fn member(&self, user: &str, room: &str) -> LineConn {
        let mut conn = self.login(user).await;
        let r = call(&mut conn, &format!("JOIN {room}")).await;
        assert_eq!(r.fin.code, 200, "JOIN {room}: {:?}", r.fin);
        conn
    }

    /// The password file of the `stockbot` account the daemon provisions.
    pub fn bot_password_file(&self) -> PathBuf {
        self.dir.join("data/stockbot.secret")
    }

    pub fn bot_password(&self) -> String {
        std::fs::read_to_string(self.bot_password_file()).unwrap().trim().to_string()
    }

    /// SIGKILL: no chance to commit anything not yet committed.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGTERM and wait for the graceful exit; returns whether it exited successfully.
    pub async fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        // SAFETY: kill(2) with a pid we spawned.
        unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
        match tokio::time::timeout(PATIENCE, child.wait()).await {
            Ok(Ok(status)) => status.success(),
            _ => {
                let _ = child.start_kill();
                false
            }
        }
    }

    /// Graceful stop, then start again on the same port with the same data.
    pub async fn restart(&mut self) {
        assert!(self.stop().await, "chatd did not stop cleanly; log:\n{}", self.log());
        self.start_again().await;
    }

    /// Starts again (after `kill9` or `stop`) on the same port with the same data.
    pub async fn start_again(&mut self) {
        let addrs = (self.addr.clone(), self.irc_addr.clone());
        self.spawn(Some(addrs)).await;
    }
}

/// BASE_CONFIG with `extra` merged over it, table by table.
pub fn merged_config(extra: &str) -> String {
    let mut base: toml::Table = BASE_CONFIG.parse().unwrap();
    let extra: toml::Table = extra.parse().expect("extra config is TOML");
    merge(&mut base, extra);
    toml::to_string(&base).unwrap()
}

fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (k, v) in extra {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge(b, e),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// The next server line, failing the test after [`PATIENCE`].
pub async fn next_line(conn: &mut LineConn) -> ServerLine {
    tokio::time::timeout(PATIENCE, conn.next())
        .await
        .expect("timed out waiting for a server line")
        .expect("read")
        .expect("connection closed")
}

/// The code of the final reply to `line`.
pub async fn code(conn: &mut LineConn, line: &str) -> u16 {
    call(conn, line).await.fin.code
}

/// Posts `text` to `room`, checks it was acknowledged, and returns its message id.
pub async fn post(conn: &mut LineConn, room: &str, text: &str) -> u64 {
    let r = call(conn, &format!("MSG {room} {text}")).await;
    assert_eq!(r.fin.code, 200, "{:?}", r.fin);
    r.fin.fields[1].parse().unwrap()
}

/// Runs one burst into room `dur`: each of `clients` members (`w0`, `w1`, ...) pipelines
/// `per_client` labelled posts (`r<round> c<client> m<i>`); the daemon is killed with `kill -9` once
/// `kill_after` acknowledgements have arrived. Returns, per client, the acknowledged (id, text) in
/// order. The durability tests of every store backend share it.
pub async fn burst_and_kill(
    d: &mut Daemon,
    clients: usize,
    per_client: usize,
    round: usize,
    kill_after: usize,
) -> Vec<Vec<(u64, String)>> {
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut readers = Vec::new();
    for c in 0..clients {
        let conn = d.member(&format!("w{c}"), "dur").await;
        let (mut reader, mut writer) = conn.split();
        let lines: String = (0..per_client).map(|i| format!("@c{c}m{i} MSG dur r{round} c{c} m{i}\r\n")).collect();
        // Writes may fail once the daemon is gone; that is the point.
        tokio::spawn(async move {
            let _ = writer.send_raw(lines.as_bytes()).await;
            writer
        });
        let acks = acks.clone();
        readers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Ok(Ok(Some(line))) = tokio::time::timeout(PATIENCE, reader.next()).await {
                if let ServerLine::Reply(r) = line {
                    assert_eq!((r.code, r.verb.as_str()), (200, "MSG"), "{r:?}");
                    let i: usize = r.label.as_deref().unwrap().rsplit('m').next().unwrap().parse().unwrap();
                    got.push((r.fields[1].parse::<u64>().unwrap(), format!("r{round} c{c} m{i}")));
                    acks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
            got
        }));
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while acks.load(std::sync::atomic::Ordering::Relaxed) < kill_after {
        assert!(tokio::time::Instant::now() < deadline, "no progress before the kill; log:\n{}", d.log());
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    d.kill9().await;
    let mut acked = Vec::new();
    for r in readers {
        acked.push(r.await.expect("reader task"));
    }
    let total: usize = acked.iter().map(Vec::len).sum();
    assert!(total < clients * per_client, "round {round}: the burst had finished before the kill");
    acked
}

/// Every stored message of `room`, oldest first, as its `130` reply lines: a `checker` member
/// pages back with `HISTORY BEFORE` until a page comes back empty.
pub async fn whole_history(d: &Daemon, room: &str) -> Vec<chatd_proto::line::Reply> {
    let mut conn = d.member("checker", room).await;
    let mut all = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let cmd = match before {
            None => format!("HISTORY {room}"),
            Some(id) => format!("HISTORY {room} BEFORE {id}"),
        };
        let mut page = call(&mut conn, &cmd).await;
        assert_eq!(page.fin.code, 200, "{cmd}: {:?}", page.fin);
        if page.data.is_empty() {
            return all;
        }
        before = Some(page.data[0].fields[1].parse().expect("a message id"));
        page.data.append(&mut all);
        all = page.data;
    }
}

/// Sends a command and waits for its final reply.
pub async fn call(conn: &mut LineConn, line: &str) -> Response {
    tokio::time::timeout(PATIENCE, conn.call(line))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for the reply to {line:?}"))
        .unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// Reads lines until one matches, failing after [`PATIENCE`]; returns it.
pub async fn expect_line(conn: &mut LineConn, what: &str, pred: impl Fn(&ServerLine) -> bool) -> ServerLine {
    let wait = async {
        loop {
            match conn.next().await {
                Ok(Some(l)) if pred(&l) => return l,
                Ok(Some(_)) => {}
                Ok(None) => panic!("connection closed while waiting for {what}"),
                Err(e) => panic!("error while waiting for {what}: {e}"),
            }
        }
    };
    tokio::time::timeout(PATIENCE, wait).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}
