//! Test support: the real `chatd-bot` binary as a child process, pointed at a test daemon and a
//! stand-in quote service, with its log read line by line so a test can wait for "serving" or for
//! requests to arrive instead of sleeping.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use chatd_proto::{ChatMessage, LineConn, ServerLine};
use testkit::{Daemon, PATIENCE};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Sessions established ("serving /stock").
    pub serving: usize,
    /// Quote requests received ("quote request").
    pub requests: usize,
    /// Answers the daemon acknowledged as stored (`200 MSG <room> <id>`).
    pub stored: usize,
}

pub struct BotProcess {
    child: Child,
    counts: watch::Receiver<Counts>,
    pub log: Arc<Mutex<Vec<String>>>,
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl BotProcess {
    /// Starts the bot for `daemon` with stooq at `quote_url`. `extra` flags (`("--timeout", "1")`)
    /// replace the test defaults of the same name (an empty value removes the flag); `env` adds
    /// variables.
    pub async fn start(daemon: &Daemon, quote_url: &str, extra: &[(&str, &str)], env: &[(&str, &str)]) -> BotProcess {
        let mut flags: BTreeMap<String, String> = BTreeMap::new();
        flags.insert("--addr".into(), daemon.addr.clone());
        flags.insert("--ca".into(), daemon.ca_file.display().to_string());
        flags.insert("--password-file".into(), daemon.bot_password_file().display().to_string());
        flags.insert("--quote-url".into(), quote_url.to_string());
        flags.insert("--rate-limit".into(), "1000".into());
        flags.insert("--backoff-max".into(), "1".into());
        flags.insert("--send-rate".into(), "100".into());
        flags.insert("--send-burst".into(), "100".into());
        for (k, v) in extra {
            if v.is_empty() {
                flags.remove(*k);
            } else {
                flags.insert(k.to_string(), v.to_string());
            }
        }
        let mut cmd = Command::new(testkit::bin_path("chatd-bot"));
        for (k, v) in &flags {
            cmd.arg(k).arg(v);
        }
        let vars = ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"];
        for var in vars.into_iter().chain(["CHATD_BOT_PASSWORD", "STOOQ_API_KEY"]) {
            cmd.env_remove(var);
        }
        cmd.env("RUST_LOG", "info,chatd_bot=debug").env("NO_PROXY", "*");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.current_dir(&daemon.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn chatd-bot");
        let stderr = child.stderr.take().unwrap();
        let (tx, counts) = watch::channel(Counts::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("[chatd-bot] {line}");
                tx.send_modify(|c| {
                    if line.contains("serving /stock") {
                        c.serving += 1;
                    }
                    if line.contains("quote request") {
                        c.requests += 1;
                    }
                    if line.contains("line=200 MSG ") {
                        c.stored += 1;
                    }
                });
                log2.lock().unwrap().push(line);
            }
        });
        BotProcess { child, counts, log, reader: Some(reader) }
    }

    /// Waits until the bot has established its `n`-th session.
    pub async fn wait_serving(&mut self, n: usize) {
        self.wait(&format!("session {n}"), |c| c.serving >= n).await;
    }

    /// Waits until the bot has received `n` quote requests in all.
    pub async fn wait_requests(&mut self, n: usize) {
        self.wait(&format!("{n} requests"), |c| c.requests >= n).await;
    }

    /// Waits until the daemon has acknowledged `n` of the bot's answers in all (durably stored).
    pub async fn wait_stored(&mut self, n: usize) {
        self.wait(&format!("{n} stored answers"), |c| c.stored >= n).await;
    }

    async fn wait(&mut self, what: &str, pred: impl Fn(&Counts) -> bool) {
        let ok = matches!(tokio::time::timeout(PATIENCE, self.counts.wait_for(|c| pred(c))).await, Ok(Ok(_)));
        assert!(ok, "chatd-bot: timed out waiting for {what}; log:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Stops the bot and returns its whole log (read to the end, so nothing logged is missed).
    pub async fn stop_and_read_log(&mut self) -> Vec<String> {
        self.stop().await;
        if let Some(reader) = self.reader.take() {
            tokio::time::timeout(PATIENCE, reader).await.expect("chatd-bot's log did not end").unwrap();
        }
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then wait for the exit.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running");
        // SAFETY: kill(2) on the pid of our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        tokio::time::timeout(PATIENCE, self.child.wait()).await.expect("chatd-bot did not exit").unwrap()
    }
}

/// Reads until the next message posted by `stockbot` (skipping `* CMD` lines and the rest).
pub async fn next_bot_message(conn: &mut LineConn) -> ChatMessage {
    let line = testkit::expect_line(conn, "a message from stockbot", |l| {
        l.as_message().is_some_and(|m| !m.is_command && m.sender == "stockbot")
    })
    .await;
    line.as_message().unwrap()
}

/// Sends `MSG <room> <text>` and checks that the daemon relayed it to one bot.
pub async fn ask(conn: &mut LineConn, room: &str, text: &str) {
    let r = testkit::call(conn, &format!("MSG {room} {text}")).await;
    assert_eq!(r.fin.code, 200, "MSG {room} {text}: {:?}", r.fin);
    assert_eq!(r.fin.fields.get(1).map(String::as_str), Some("-"), "a bot command line is not stored: {:?}", r.fin);
    assert_eq!(r.fin.text.as_deref(), Some("relayed to 1 bot(s)"), "{:?}", r.fin);
}

/// The texts of the messages `HISTORY <room>` returns, with their senders.
pub async fn history(conn: &mut LineConn, room: &str) -> Vec<(String, String)> {
    let r = testkit::call(conn, &format!("HISTORY {room}")).await;
    assert_eq!(r.fin.code, 200, "HISTORY {room}: {:?}", r.fin);
    r.data.into_iter().filter_map(|d| ServerLine::Reply(d).as_message()).map(|m| (m.sender, m.text)).collect()
}

/// What `chatd-bot --check` printed and how it exited.
pub struct CheckRun {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `chatd-bot --check <code>` with `args` and `env` (no daemon needed), without proxies and
/// without the real stooq key variables of the machine running the tests.
pub async fn run_check(code: &str, args: &[&str], env: &[(&str, &str)]) -> CheckRun {
    let mut cmd = Command::new(testkit::bin_path("chatd-bot"));
    cmd.arg("--check").arg(code).args(args);
    for var in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "STOOQ_API_KEY"] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info").env("NO_PROXY", "*");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(PATIENCE, cmd.output()).await.expect("chatd-bot --check did not exit").unwrap();
    CheckRun {
        success: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
