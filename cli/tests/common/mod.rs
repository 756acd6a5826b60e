//! Helpers for driving the real `chat` binary against a real daemon: a scripted client whose
//! stdout lines are collected and polled for, and a few line-matching helpers. Timeouts here only
//! guard against hangs; nothing asserts how long anything took.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// Generous guard for anything we wait for.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn chat_bin() -> PathBuf {
    testkit::bin_path("chat")
}

/// A `chat` process in scripted mode (stdin and stdout are pipes).
pub struct Scripted {
    pub child: Child,
    stdin: Option<ChildStdin>,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub errors: Arc<Mutex<Vec<String>>>,
    /// Private config folder (so the user's own known_hosts is never touched).
    pub config_home: PathBuf,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Scripted {
    /// Starts `chat ARGS...` with $CHAT_PASSWORD set to `password` (when given) and
    /// $XDG_CONFIG_HOME set to `config_home`.
    pub fn start(args: &[&str], password: Option<&str>, config_home: &Path) -> Scripted {
        let mut cmd = Command::new(chat_bin());
        cmd.args(args)
            .env("XDG_CONFIG_HOME", config_home)
            .env_remove("CHAT_PASSWORD")
            .env_remove("CHAT_USER")
            .env_remove("CHAT_SERVER")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(p) = password {
            cmd.env("CHAT_PASSWORD", p);
        }
        let mut child = cmd.spawn().expect("start the chat binary (is it built?)");
        let stdin = child.stdin.take();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut readers = Vec::new();
        for (stream, sink) in [
            (Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Send + Unpin>, lines.clone()),
            (Box::new(stderr), errors.clone()),
        ] {
            readers.push(tokio::spawn(async move {
                let mut r = BufReader::new(stream).lines();
                while let Ok(Some(l)) = r.next_line().await {
                    sink.lock().unwrap().push(l);
                }
            }));
        }
        Scripted { child, stdin, lines, errors, config_home: config_home.to_path_buf(), readers }
    }

    /// Starts a client that trusts the daemon by its CA file and registers (or logs in) `user`
    /// with the password `password-<user>`.
    pub fn user(daemon: &testkit::Daemon, user: &str, extra: &[&str], config_home: &Path) -> Scripted {
        let ca = daemon.ca_file.to_str().unwrap().to_string();
        let mut args = vec![daemon.addr.as_str(), "--ca", &ca, "--user", user, "--register", "--eof-grace", "1"];
        args.extend_from_slice(extra);
        Scripted::start(&args, Some(&format!("password-{user}")), config_home)
    }

    pub async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(format!("{line}\n").as_bytes()).await.expect("write to chat");
        stdin.flush().await.unwrap();
    }

    /// Closes stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.errors.lock().unwrap().join("\n")
    }

    /// Waits for an output line matching `pred` at index `from` or later; returns its index.
    pub async fn wait_from(&self, from: usize, what: &str, pred: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            {
                let lines = self.lines.lock().unwrap();
                if let Some(i) = lines.iter().skip(from).position(|l| pred(l)) {
                    return from + i;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.snapshot().join("\n"),
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> usize {
        self.wait_from(0, what, pred).await
    }

    /// Waits for a line containing `needle`.
    pub async fn wait_for(&self, needle: &str) -> usize {
        let n = needle.to_string();
        self.wait(&format!("a line containing {needle:?}"), move |l| l.contains(&n)).await
    }

    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.lines.lock().unwrap().iter().filter(|l| pred(l)).count()
    }

    /// Waits for the process to exit (and its output to be read); returns its exit code.
    pub async fn exit_code(&mut self) -> i32 {
        let code = match tokio::time::timeout(WAIT, self.child.wait()).await {
            Ok(status) => status.unwrap().code().unwrap_or(-1),
            Err(_) => panic!("chat did not exit\n--- stdout ---\n{}", self.snapshot().join("\n")),
        };
        for r in self.readers.drain(..) {
            let _ = tokio::time::timeout(WAIT, r).await;
        }
        code
    }
}

/// True when `line` is `HH:MM #room <sender> rest`.
pub fn is_msg(line: &str, room: &str, sender: &str, rest: &str) -> bool {
    let b = line.as_bytes();
    line.len() > 6
        && b[0].is_ascii_digit()
        && b[1].is_ascii_digit()
        && b[2] == b':'
        && b[3].is_ascii_digit()
        && b[4].is_ascii_digit()
        && b[5] == b' '
        && line[6..] == format!("#{room} <{sender}> {rest}")
}

/// Sends SIGSTOP / SIGCONT to a process.
pub fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap();
    assert!(ok.success(), "kill -{sig} {pid}");
}
