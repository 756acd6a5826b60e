//! Real IRC clients from Debian, driven by tests: irssi (in a private tmux server) and WeeChat
//! (`weechat-headless`), plus [`IrcLineClient`], a raw IRC line client for the test's own side.
//!
//! This module owns each client's whole lifetime: a temporary home generated from
//! [`IrcClientOptions`] (server, TLS and CA verification, SASL PLAIN, PASS, nick, logging, nothing
//! autojoined), the process, the typing of command lines into it, the reading of what it shows, and
//! the cleanup on drop (the tmux server or the WeeChat process is killed, the home removed).
//!
//! What a client shows is read from its log files, not from the screen: a log has every line of
//! every window in order, unwrapped, uncoloured and never scrolled away, while a tmux pane only
//! holds the last screenful of the active window, wrapped at its width. The irssi pane is still
//! captured for timeout errors (it shows prompts that never reach a log).
//!
//! Versions this was written against (Debian 12): irssi 1.4.3, WeeChat 3.8, tmux 3.3a. Pitfalls:
//! - irssi 1.4 checks only DNS names in the certificate's subjectAltName: with `tls_verify` an IP
//!   address as host fails ("None of the Subject Alt Names ... match hostname '127.0.0.1'"), so
//!   connect to `localhost` (chatd's certificate names it; [`IrcClientOptions::new`] uses it).
//! - irssi throttles commands (`cmd_queue_speed`, 2.2 s) and detects fast typing as a paste;
//!   both are turned off, or a `/join` right after connecting is delayed by seconds.
//! - irssi asks "Remove unknown settings from config file (Y/n)?" on the screen (never in a log) if
//!   the config names a setting it does not know: keep the generated settings to ones 1.4 has.
//! - WeeChat 3.8 still names its TLS options `ssl*` (`ssl`, `ssl_verify`; renamed `tls*` in 4.0);
//!   the CA file is global, `weechat.network.gnutls_ca_user`.
//! - WeeChat's logger flushes every 120 s unless `logger.file.flush_delay = 0`.
//! - WeeChat keeps one log file per buffer, so lines of different buffers are merged by their
//!   timestamps (one-second resolution): order within a buffer is exact, across buffers only
//!   to the second.

use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chatd_proto::client::Stream;
use chatd_proto::tls::{client_config, Trust};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};

/// How often the log files are read while waiting.
const POLL: Duration = Duration::from_millis(50);
/// How long `start` waits for a client to come up (its log opened, its FIFO created).
const STARTUP: Duration = Duration::from_secs(15);
/// Lines of transcript quoted in a timeout error.
const ERROR_TAIL: usize = 80;

/// How a client connects. One server per client; it connects at start (nothing is autojoined).
#[derive(Debug, Clone)]
pub struct IrcClientOptions {
    /// Host name to connect to; with TLS also the name the certificate must carry (irssi checks
    /// only DNS names, see the module doc: use `localhost`).
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// Verify the server's certificate against this CA (PEM) and the host name. `None` with TLS:
    /// no verification at all.
    pub ca_file: Option<PathBuf>,
    /// Nick, user name and real name.
    pub nick: String,
    /// SASL PLAIN (account, password).
    pub sasl: Option<(String, String)>,
    /// Server password (`PASS`).
    pub password: Option<String>,
}

impl IrcClientOptions {
    /// TLS to `localhost:port` as `nick`, no verification, no SASL, no PASS.
    pub fn new(nick: &str, port: u16) -> Self {
        IrcClientOptions {
            host: "localhost".into(),
            port,
            tls: true,
            ca_file: None,
            nick: nick.into(),
            sasl: None,
            password: None,
        }
    }

    pub fn ca_file(mut self, ca: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(ca.into());
        self
    }

    pub fn sasl(mut self, account: &str, password: &str) -> Self {
        self.sasl = Some((account.into(), password.into()));
        self
    }

    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.into());
        self
    }

    pub fn plaintext(mut self) -> Self {
        self.tls = false;
        self
    }

    fn check(&self) -> Result<()> {
        // One line each in the config files; a newline would end the value (and start another).
        let mut values = vec![&self.host, &self.nick];
        if let Some((a, p)) = &self.sasl {
            values.extend([a, p]);
        }
        values.extend(self.password.iter());
        if values.iter().any(|v| v.contains(['\n', '\r', '\0'])) {
            bail!("client options must not contain line breaks: {self:?}");
        }
        if self.nick.is_empty() || self.nick.contains(' ') {
            bail!("bad nick {:?}", self.nick);
        }
        Ok(())
    }
}

/// Lines seen so far and how far `wait_for` has consumed them.
#[derive(Default)]
struct Lines {
    all: Vec<String>,
    cursor: usize,
}

impl Lines {
    /// The first line at or after the cursor containing `needle`; the cursor moves past it.
    fn take(&mut self, needle: &str) -> Option<String> {
        let i = self.all[self.cursor..].iter().position(|l| l.contains(needle))? + self.cursor;
        self.cursor = i + 1;
        Some(self.all[i].clone())
    }

    fn tail(&self, n: usize) -> String {
        let start = self.all.len().saturating_sub(n);
        self.all[start..].join("\n")
    }
}

/// Reads a growing file line by line: only complete lines, from where the last read stopped.
struct LogTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

impl LogTail {
    fn new(path: PathBuf) -> Self {
        LogTail { path, offset: 0, partial: Vec::new() }
    }

    fn read_new(&mut self) -> Vec<String> {
        let Ok(mut f) = std::fs::File::open(&self.path) else { return Vec::new() };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let Ok(n) = f.read_to_end(&mut buf) else { return Vec::new() };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else { return Vec::new() };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        String::from_utf8_lossy(&complete).lines().map(|l| l.trim_end_matches('\r').to_string()).collect()
    }
}

fn tool_exists(name: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file())).unwrap_or(false)
}

fn require_tool(name: &str, package: &str) -> Result<()> {
    if !tool_exists(name) {
        bail!("{name} is not installed: apt-get install {package} (scripts/test.sh installs it)");
    }
    Ok(())
}

fn check_line(line: &str) -> Result<()> {
    if line.contains(['\n', '\r']) {
        bail!("a command line must be one line: {line:?}");
    }
    Ok(())
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

// ---------------------------------------------------------------------------------------------
// irssi

/// irssi 1.4 in a tmux session of its own tmux server (socket in the temp home), so it has a
/// terminal without one being attached, and killing the server cannot touch anyone else's tmux.
pub struct Irssi {
    home: tempfile::TempDir,
    socket: PathBuf,
    pane_pid: i32,
    log: LogTail,
    lines: Lines,
}

/// The tmux session name inside the private server.
const IRSSI_SESSION: &str = "irssi";

/// irssi's config syntax: a string in double quotes with backslash escapes.
fn irssi_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The irssi `config` for these options, logging everything to `log_path`.
pub fn irssi_config(opts: &IrcClientOptions, log_path: &Path) -> String {
    let mut server = String::new();
    let _ = writeln!(server, "    address = {};", irssi_str(&opts.host));
    let _ = writeln!(server, "    chatnet = \"chatd\";");
    let _ = writeln!(server, "    port = \"{}\";", opts.port);
    let _ = writeln!(server, "    use_tls = \"{}\";", yes_no(opts.tls));
    // Verification needs a CA to verify against; without one (tls on), accept any certificate.
    let _ = writeln!(server, "    tls_verify = \"{}\";", yes_no(opts.tls && opts.ca_file.is_some()));
    if let (true, Some(ca)) = (opts.tls, &opts.ca_file) {
        let _ = writeln!(server, "    tls_cafile = {};", irssi_str(&ca.to_string_lossy()));
    }
    if let Some(pw) = &opts.password {
        let _ = writeln!(server, "    password = {};", irssi_str(pw));
    }
    let _ = writeln!(server, "    autoconnect = \"yes\";");
    let mut chatnet = String::from("    type = \"IRC\";\n");
    if let Some((account, pw)) = &opts.sasl {
        // irssi sends CAP REQ :sasl and AUTHENTICATE PLAIN; if the server offers no SASL it says
        // so and disconnects rather than going on unauthenticated.
        let _ = writeln!(chatnet, "    sasl_mechanism = \"PLAIN\";");
        let _ = writeln!(chatnet, "    sasl_username = {};", irssi_str(account));
        let _ = writeln!(chatnet, "    sasl_password = {};", irssi_str(pw));
    }
    let nick = irssi_str(&opts.nick);
    format!(
        r#"servers = (
  {{
{server}  }}
);
chatnets = {{
  chatd = {{
{chatnet}  }};
}};
channels = ( );
logs = {{
  {log} = {{ auto_open = "yes"; level = "ALL"; }};
}};
settings = {{
  core = {{
    nick = {nick};
    user_name = {nick};
    real_name = {nick};
    settings_autosave = "no";
    log_timestamp = "%H:%M:%S ";
  }};
  "irc/core" = {{ cmd_queue_speed = "0msec"; }};
  "fe-common/core" = {{ print_active_channel = "yes"; }};
  "fe-text" = {{ paste_detect_time = "0"; }};
}};
"#,
        log = irssi_str(&log_path.to_string_lossy()),
    )
}

impl Irssi {
    /// Writes the config into a fresh home and starts irssi, which connects at once; returns when
    /// irssi has opened its log (not when it is registered: wait for that with `wait_for`).
    ///
    /// One log for everything (`logs` with level ALL, not per-target autolog): it keeps the order
    /// across windows and has the status window's connection and error lines too.
    /// `print_active_channel` makes channel lines read `#general: <nick> text` in it.
    pub async fn start(opts: IrcClientOptions) -> Result<Self> {
        opts.check()?;
        require_tool("irssi", "irssi")?;
        require_tool("tmux", "tmux")?;
        let home = tempfile::Builder::new().prefix("irssi-test").tempdir()?;
        let log_path = home.path().join("irssi.log");
        std::fs::write(home.path().join("config"), irssi_config(&opts, &log_path))?;
        let socket = home.path().join("tmux.sock");
        let status = Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(["new-session", "-d", "-s", IRSSI_SESSION, "-x", "200", "-y", "50", "--", "irssi"])
            .arg(format!("--home={}", home.path().display()))
            // Tests may run inside someone's tmux: this is a separate server, not a nested session.
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .output()
            .context("run tmux")?;
        if !status.status.success() {
            bail!("tmux new-session failed: {}", String::from_utf8_lossy(&status.stderr));
        }
        let mut irssi =
            Irssi { home, socket, pane_pid: 0, log: LogTail::new(log_path.clone()), lines: Lines::default() };
        irssi.pane_pid = irssi
            .tmux(&["display-message", "-p", "-t", IRSSI_SESSION, "#{pane_pid}"])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let deadline = Instant::now() + STARTUP;
        while !log_path.exists() {
            if Instant::now() > deadline {
                bail!("irssi did not open its log in {STARTUP:?}; its screen:\n{}", irssi.screen());
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(irssi)
    }

    fn tmux(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("tmux").arg("-S").arg(&self.socket).args(args).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!("tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Types `line` and Enter, as a person would ("/join #general", "hello", "/quote CAP LS").
    pub async fn command(&mut self, line: &str) -> Result<()> {
        check_line(line)?;
        // -l: the text literally, not as key names ("Enter", "C-c"); Enter is a key of its own.
        self.tmux(&["send-keys", "-t", IRSSI_SESSION, "-l", "--", line])?;
        self.tmux(&["send-keys", "-t", IRSSI_SESSION, "Enter"])?;
        Ok(())
    }

    /// `/msg <channel> <text>`: the text is sent as it is, even if it starts with `/`.
    pub async fn say(&mut self, channel: &str, text: &str) -> Result<()> {
        self.command(&format!("/msg {channel} {text}")).await
    }

    /// Waits for a line (after the one the previous `wait_for` returned) containing `needle`,
    /// and returns it. Lines look like `12:34:56 #general: < bob> hello` or
    /// `12:34:56 -!- bob [~bob@127.0.0.1] has joined #general`.
    pub async fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.lines.all.extend(self.log.read_new());
            if let Some(line) = self.lines.take(needle) {
                return Ok(line);
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "irssi ({}): no line with {needle:?} within {timeout:?}\n--- log (last {ERROR_TAIL} lines):\n{}\n--- screen:\n{}",
                    self.home.path().display(),
                    self.lines.tail(ERROR_TAIL),
                    self.screen()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every logged line so far.
    pub fn transcript(&self) -> String {
        let mut lines = self.lines.all.clone();
        // Not yet read by wait_for: read without moving the shared offset.
        let mut peek =
            LogTail { path: self.log.path.clone(), offset: self.log.offset, partial: self.log.partial.clone() };
        lines.extend(peek.read_new());
        lines.join("\n")
    }

    /// The visible screen now (the active window only, wrapped at 200 columns).
    pub fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", IRSSI_SESSION]).unwrap_or_else(|e| format!("(no screen: {e})"))
    }

    /// The temporary home: `config`, `irssi.log`, `tmux.sock`.
    pub fn home(&self) -> &Path {
        self.home.path()
    }
}

impl Drop for Irssi {
    fn drop(&mut self) {
        // kill-server hangs up every pane (irssi exits on SIGHUP) and ends the tmux server.
        let _ = self.tmux(&["kill-server"]);
        // irssi can take a few hundred ms to quit (it unloads its modules first): give it half a
        // second, then SIGKILL, so nothing outlives the driver.
        for _ in 0..10 {
            if !pid_alive(self.pane_pid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if pid_alive(self.pane_pid) {
            // SAFETY: kill(2) of the irssi process this driver started.
            unsafe { libc::kill(self.pane_pid, libc::SIGKILL) };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// WeeChat

/// The name of the one server in WeeChat's config (buffers are `irc.chatd.#room`).
const WEECHAT_SERVER: &str = "chatd";

/// `weechat-headless` 3.8 with its home (`--dir`) in a temp dir: commands go in through the FIFO
/// plugin's pipe, what it shows comes out of the logger plugin's per-buffer files.
pub struct WeeChat {
    dir: tempfile::TempDir,
    child: Child,
    fifo: PathBuf,
    logs: Vec<(String, LogTail)>,
    lines: Lines,
}

/// WeeChat's config syntax: a string in double quotes. WeeChat strips the outer quotes and keeps
/// the rest as it is; `${...}` in a password is evaluated by WeeChat (avoid it in tests).
fn weechat_str(s: &str) -> String {
    format!("\"{s}\"")
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// The config files (name, contents) WeeChat starts from for these options in `dir`.
pub fn weechat_config(opts: &IrcClientOptions, dir: &Path) -> Vec<(&'static str, String)> {
    let s = WEECHAT_SERVER;
    let mut irc = String::from("[server]\n");
    let mut opt = |k: &str, v: String| {
        let _ = writeln!(irc, "{s}.{k} = {v}");
    };
    opt("addresses", weechat_str(&format!("{}/{}", opts.host, opts.port)));
    // chatd listens on 127.0.0.1: with ipv6 on, "localhost" may be tried as ::1 first.
    opt("ipv6", on_off(opts.host.contains(':')).into());
    opt("ssl", on_off(opts.tls).into());
    opt("ssl_verify", on_off(opts.tls && opts.ca_file.is_some()).into());
    opt("nicks", weechat_str(&opts.nick));
    opt("nicks_alternate", "off".into());
    opt("username", weechat_str(&opts.nick));
    opt("realname", weechat_str(&opts.nick));
    opt("autoconnect", "on".into());
    // Tests decide when to reconnect (/disconnect, /connect); a surprise reconnect hides bugs.
    opt("autoreconnect", "off".into());
    opt("autojoin", weechat_str(""));
    opt("password", weechat_str(opts.password.as_deref().unwrap_or("")));
    match &opts.sasl {
        Some((account, pw)) => {
            opt("sasl_mechanism", "plain".into());
            opt("sasl_username", weechat_str(account));
            opt("sasl_password", weechat_str(pw));
            // The default, reconnect, would retry a failed login forever.
            opt("sasl_fail", "disconnect".into());
        }
        // An empty username: WeeChat does not try SASL.
        None => opt("sasl_username", weechat_str("")),
    }
    let ca = match (&opts.ca_file, opts.tls) {
        (Some(ca), true) => ca.to_string_lossy().into_owned(),
        _ => String::new(),
    };
    let weechat = format!(
        "[look]\nsave_config_on_exit = off\nsave_layout_on_exit = none\n\n\
         [network]\n# Only the test's CA, not the system's.\ngnutls_ca_system = off\ngnutls_ca_user = {}\n\n\
         [plugin]\n# The plugins needed; scripting plugins only slow the start.\nautoload = \"irc,logger,fifo,alias\"\n",
        weechat_str(&ca)
    );
    let logger = format!(
        "[file]\nauto_log = on\nflush_delay = 0\npath = {}\nmask = \"$plugin.$name.weechatlog\"\n\
         time_format = \"%Y-%m-%d %H:%M:%S\"\n",
        weechat_str(&dir.join("logs").to_string_lossy())
    );
    let fifo = format!("[file]\nenabled = on\npath = {}\n", weechat_str(&dir.join("fifo").to_string_lossy()));
    vec![("irc.conf", irc), ("weechat.conf", weechat), ("logger.conf", logger), ("fifo.conf", fifo)]
}

impl WeeChat {
    /// Writes the config into a fresh dir and starts `weechat-headless`, which connects at once;
    /// returns when its FIFO is there (not when it is registered: wait for that with `wait_for`).
    pub async fn start(opts: IrcClientOptions) -> Result<Self> {
        opts.check()?;
        require_tool("weechat-headless", "weechat-headless")?;
        let dir = tempfile::Builder::new().prefix("weechat-test").tempdir()?;
        for (name, text) in weechat_config(&opts, dir.path()) {
            std::fs::write(dir.path().join(name), text)?;
        }
        let out = std::fs::File::create(dir.path().join("stdout.log"))?;
        let child = Command::new("weechat-headless")
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("spawn weechat-headless")?;
        let fifo = dir.path().join("fifo");
        let mut w = WeeChat { dir, child, fifo, logs: Vec::new(), lines: Lines::default() };
        let deadline = Instant::now() + STARTUP;
        while !w.fifo.exists() {
            if let Ok(Some(status)) = w.child.try_wait() {
                bail!("weechat-headless exited ({status}) at start:\n{}", w.stdout());
            }
            if Instant::now() > deadline {
                bail!("weechat-headless made no FIFO in {STARTUP:?}:\n{}", w.stdout());
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(w)
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
            + &std::fs::read_to_string(self.dir.path().join("weechat.log")).unwrap_or_default()
    }

    /// Types `line` into the current buffer: a command ("/join #general", "/quote CAP LS") or
    /// text for the current buffer.
    pub async fn command(&mut self, line: &str) -> Result<()> {
        check_line(line)?;
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!("weechat-headless has exited ({status})");
        }
        // Non-blocking open: if WeeChat is gone, fail (ENXIO) instead of blocking for a reader.
        // One write of one line under PIPE_BUF is atomic. "*" = the current buffer.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.fifo)
            .with_context(|| format!("open WeeChat's FIFO {}", self.fifo.display()))?;
        f.write_all(format!("*{line}\n").as_bytes())?;
        Ok(())
    }

    /// `/msg <channel> <text>`: the text is sent as it is, even if it starts with `/`.
    pub async fn say(&mut self, channel: &str, text: &str) -> Result<()> {
        self.command(&format!("/msg {channel} {text}")).await
    }

    /// Reads what the logger wrote since the last read, from every buffer's file.
    fn poll(&mut self) {
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("logs")) {
            let mut names: Vec<String> =
                entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            for name in names {
                if name.ends_with(".weechatlog") && !self.logs.iter().any(|(n, _)| *n == name) {
                    let path = self.dir.path().join("logs").join(&name);
                    self.logs.push((name, LogTail::new(path)));
                }
            }
        }
        let mut batch: Vec<(String, String)> = Vec::new();
        for (name, tail) in &mut self.logs {
            let buffer = weechat_buffer_name(name);
            for raw in tail.read_new() {
                batch.push(weechat_line(&buffer, &raw));
            }
        }
        // Stable: within a buffer the file order stays; across buffers, by the second.
        batch.sort_by(|a, b| a.0.cmp(&b.0));
        self.lines.all.extend(batch.into_iter().map(|(_, l)| l));
    }

    /// Waits for a line (after the one the previous `wait_for` returned) containing `needle`,
    /// and returns it. Lines look like `12:34:56 #general: bob hello` or
    /// `12:34:56 #general: --> bob (~bob@127.0.0.1) has joined #general` (`chatd:` for the server
    /// buffer, `weechat:` for the core buffer).
    pub async fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.poll();
            if let Some(line) = self.lines.take(needle) {
                return Ok(line);
            }
            if Instant::now() > deadline {
                let exited = match self.child.try_wait() {
                    Ok(Some(status)) => format!(" (exited: {status})"),
                    _ => String::new(),
                };
                return Err(anyhow!(
                    "WeeChat ({}){exited}: no line with {needle:?} within {timeout:?}\n--- logs (last {ERROR_TAIL} lines):\n{}",
                    self.dir.path().display(),
                    self.lines.tail(ERROR_TAIL),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every logged line read so far (`wait_for` reads; this does not, to stay `&self`).
    pub fn transcript(&self) -> String {
        self.lines.all.join("\n")
    }

    /// The temporary dir: `*.conf`, `logs/`, `fifo`, `weechat.log`, `stdout.log`.
    pub fn home(&self) -> &Path {
        self.dir.path()
    }
}

/// `irc.chatd.#general.weechatlog` -> `#general`, `irc.server.chatd...` -> `chatd`,
/// `core.weechat...` -> `weechat`.
fn weechat_buffer_name(file: &str) -> String {
    let stem = file.strip_suffix(".weechatlog").unwrap_or(file);
    let irc = format!("irc.{WEECHAT_SERVER}.");
    stem.strip_prefix(&irc)
        .or_else(|| stem.strip_prefix("irc.server."))
        .or_else(|| stem.strip_prefix("core."))
        .unwrap_or(stem)
        .to_string()
}

/// A logger line `2024-01-02 12:34:56<TAB>prefix<TAB>message` -> (sort key, shown line).
fn weechat_line(buffer: &str, raw: &str) -> (String, String) {
    let mut parts = raw.splitn(3, '\t');
    let (time, prefix, msg) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next());
    match msg {
        Some(msg) => {
            let clock = time.get(11..).unwrap_or(time);
            let line = if prefix.is_empty() {
                format!("{clock} {buffer}: {msg}")
            } else {
                format!("{clock} {buffer}: {prefix} {msg}")
            };
            (time.to_string(), line)
        }
        None => (String::new(), format!("{buffer}: {raw}")),
    }
}

impl Drop for WeeChat {
    fn drop(&mut self) {
        // No graceful /quit: nothing of its state is wanted, and SIGKILL cannot hang.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The test's own side

/// A raw IRC connection for the test side: sends lines as given, reads lines, answers PING while
/// it waits. Everything read is kept for assertion messages.
pub struct IrcLineClient {
    reader: BufReader<ReadHalf<Box<dyn Stream>>>,
    writer: WriteHalf<Box<dyn Stream>>,
    seen: Vec<String>,
}

impl IrcLineClient {
    /// TLS to `addr` (`127.0.0.1:PORT`), verifying the certificate against `ca_file` for
    /// `server_name` (e.g. `localhost`).
    pub async fn connect_tls(addr: &str, server_name: &str, ca_file: &Path) -> Result<Self> {
        let config = client_config(&Trust::CaFile(ca_file.to_path_buf()))?;
        let tls = chatd_proto::tls::connect(addr, server_name, config).await.with_context(|| format!("TLS {addr}"))?;
        Ok(Self::from_stream(Box::new(tls)))
    }

    /// Plain TCP (loopback listeners only).
    pub async fn connect_plain(addr: &str) -> Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
        Ok(Self::from_stream(Box::new(tcp)))
    }

    fn from_stream(stream: Box<dyn Stream>) -> Self {
        let (r, w) = tokio::io::split(stream);
        IrcLineClient { reader: BufReader::new(r), writer: w, seen: Vec::new() }
    }

    /// Sends one line; CRLF is added.
    pub async fn send(&mut self, line: &str) -> Result<()> {
        check_line(line)?;
        self.writer.write_all(format!("{line}\r\n").as_bytes()).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// The next line (without CRLF), `None` at end of stream; an error after `timeout`.
    pub async fn read_line(&mut self, timeout: Duration) -> Result<Option<String>> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(timeout, self.reader.read_until(b'\n', &mut buf))
            .await
            .map_err(|_| anyhow!("no line within {timeout:?}; read so far:\n{}", self.transcript()))??;
        if n == 0 {
            return Ok(None);
        }
        let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
        self.seen.push(line.clone());
        Ok(Some(line))
    }

    /// Reads until a line contains `needle` and returns it, answering PINGs on the way.
    pub async fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = self.read_line(left).await.with_context(|| format!("waiting for {needle:?}"))?;
            let Some(line) = line else {
                bail!("connection closed while waiting for {needle:?}; read:\n{}", self.transcript());
            };
            if let Some(token) = line.strip_prefix("PING ") {
                self.send(&format!("PONG {token}")).await?;
            }
            if line.contains(needle) {
                return Ok(line);
            }
        }
    }

    /// NICK and USER, then waits for 001.
    pub async fn register(&mut self, nick: &str, timeout: Duration) -> Result<()> {
        self.send(&format!("NICK {nick}")).await?;
        self.send(&format!("USER {nick} 0 * :{nick}")).await?;
        self.wait_for(&format!(" 001 {nick} "), timeout).await?;
        Ok(())
    }

    /// Every line read so far.
    pub fn transcript(&self) -> String {
        self.seen.join("\n")
    }
}
