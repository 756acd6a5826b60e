//! The Debian package, end to end on this machine: builds it with cargo-deb from the binaries
//! already built (`cargo deb -p chatd --no-build --profile dev --fast`: the debug binaries `cargo test`
//! just built, so no second, release build), installs it with `dpkg -i`, checks the units with
//! `systemd-analyze verify`, starts the installed /usr/bin/chatd on the installed
//! /etc/chatd/chatd.toml (as the unit would, without systemd), talks to it over TLS, starts the
//! installed chatd-bot on /etc/chatd/chatd-bot.toml, backs up the database, stops everything
//! and purges the package.
//!
//! It installs a package system-wide, so it runs only as root (CI runs the tests as root) and
//! skips, loudly, otherwise. It also skips when this machine already has chatd's state
//! (/var/lib/chatd), which its purge would delete.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chatd_proto::client::LineConn;
use chatd_proto::line::ServerLine;
use chatd_proto::tls::{client_config, Trust};
use testkit::{bin_path, call, expect_line, next_line, PATIENCE};
use tokio::io::{AsyncBufReadExt, BufReader};

const STATE: &str = "/var/lib/chatd";
const PRIVATE_STATE: &str = "/var/lib/private/chatd";
const UNITS: [&str; 2] = ["/usr/lib/systemd/system/chatd.service", "/usr/lib/systemd/system/chatd-bot.service"];

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn has_command(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Purges the package (and its state) however the test ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-P", "chatd"]).stdout(Stdio::null()).status();
    }
}

async fn tls_client(addr: &str, ca: &Path) -> LineConn {
    let config = client_config(&Trust::CaFile(ca.to_path_buf())).expect("client config");
    let mut conn = tokio::time::timeout(PATIENCE, LineConn::connect_tls(addr, "localhost", config))
        .await
        .expect("connect timed out")
        .expect("connect");
    assert!(next_line(&mut conn).await.is_event("HELLO"));
    conn
}

#[tokio::test]
async fn debian_package_installs_runs_and_purges() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED debian_package_installs_runs_and_purges: dpkg -i needs root (CI runs it as root)");
        return;
    }
    if Path::new(STATE).exists() || Path::new(PRIVATE_STATE).exists() {
        eprintln!("SKIPPED debian_package_installs_runs_and_purges: {STATE} exists (a chatd installation's state)");
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    assert!(
        Command::new(&cargo).args(["deb", "--version"]).output().is_ok_and(|o| o.status.success()),
        "cargo-deb is missing: cargo install cargo-deb --locked (scripts/test.sh does)"
    );
    for bin in ["chatd", "chatd-bot", "chat"] {
        bin_path(bin); // built, or a clear message
    }

    // Build the package from the binaries the tests use.
    let out = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = run(Command::new(&cargo)
        .args(["deb", "-p", "chatd", "--no-build", "--profile", "dev", "--fast", "--output"])
        .arg(out.path())
        .current_dir(root));
    let deb: PathBuf = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("no .deb written:\n{built}"));
    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for f in ["./usr/bin/chatd", "./usr/bin/chatd-bot", "./usr/bin/chat", "./etc/chatd/chatd.toml"] {
        assert!(contents.contains(f), "{f} not in the package:\n{contents}");
    }

    // Install.
    let _installed = Installed;
    run(Command::new("dpkg").arg("-i").arg(&deb));
    let conffiles = std::fs::read_to_string("/var/lib/dpkg/info/chatd.conffiles").unwrap();
    assert!(conffiles.contains("/etc/chatd/chatd.toml") && conffiles.contains("/etc/chatd/chatd-bot.toml"));
    for unit in UNITS {
        let text = std::fs::read_to_string(unit).unwrap_or_else(|e| panic!("{unit}: {e}"));
        for hardening in ["DynamicUser=yes", "StateDirectory=chatd", "ProtectSystem=strict", "NoNewPrivileges=yes"] {
            assert!(text.contains(hardening), "{unit} lacks {hardening}");
        }
    }
    if has_command("systemd-analyze") {
        let out = Command::new("systemd-analyze").arg("verify").args(UNITS).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && !text.contains("chatd"), "systemd-analyze verify:\n{text}");
    } else {
        eprintln!("NOTE: systemd-analyze is not installed; the units were not verified (scripts/test.sh installs it)");
    }
    let version = run(Command::new("/usr/bin/chatd").arg("--version"));
    assert!(version.starts_with("chatd "), "{version}");

    // Run the installed daemon on the installed configuration, as chatd.service does (its state in
    // /var/lib/chatd), on ephemeral ports so as not to collide with anything on this machine.
    let log = out.path().join("chatd.log");
    let mut daemon = tokio::process::Command::new("/usr/bin/chatd")
        .args(["--config", "/etc/chatd/chatd.toml", "--listen", "127.0.0.1:0", "--irc-listen", "127.0.0.1:0"])
        .current_dir(out.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .kill_on_drop(true)
        .spawn()
        .expect("start /usr/bin/chatd");
    let mut lines = BufReader::new(daemon.stdout.take().unwrap()).lines();
    let (mut addr, mut ca) = (String::new(), PathBuf::new());
    let ready = tokio::time::timeout(PATIENCE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(a) = line.strip_prefix("chatd listening tls ") {
                addr = a.into();
            } else if let Some(c) = line.strip_prefix("chatd ca ") {
                ca = c.into();
            } else if line == "chatd ready" {
                return true;
            }
        }
        false
    })
    .await;
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(ready, Ok(true), "installed chatd did not become ready:\n{}", log_text());
    assert_eq!(ca, Path::new(STATE).join("certs/ca.pem"), "the state is where the unit keeps it");
    assert!(Path::new(STATE).join("chatd.db").exists() && Path::new(STATE).join("stockbot.secret").exists());

    // A native round trip over TLS.
    let mut alice = tls_client(&addr, &ca).await;
    assert_eq!(call(&mut alice, "REGISTER alice correct-horse-battery").await.fin.code, 200);
    assert_eq!(call(&mut alice, "JOIN general").await.fin.code, 200);
    let mut bob = tls_client(&addr, &ca).await;
    assert_eq!(call(&mut bob, "REGISTER bob battery-staple-horse").await.fin.code, 200);
    assert_eq!(call(&mut bob, "JOIN general").await.fin.code, 200);
    assert_eq!(call(&mut alice, "MSG general hello from the package").await.fin.code, 200);
    expect_line(
        &mut bob,
        "alice's message",
        |l| matches!(l, ServerLine::Event(e) if e.name == "MSG" && e.text.as_deref() == Some("hello from the package")),
    )
    .await;

    // The installed bot on the installed bot configuration logs in with the password the daemon
    // provisioned and answers a command (a quote, or that the quote service is unreachable).
    let mut bot = tokio::process::Command::new("/usr/bin/chatd-bot")
        .args(["--config", "/etc/chatd/chatd-bot.toml", "--addr", &addr])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start /usr/bin/chatd-bot");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = call(&mut alice, "MSG general /stock=aapl.us").await;
        if r.fin.text.as_deref().is_some_and(|t| t.contains("relayed to 1 bot")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the installed bot never logged in: {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    expect_line(
        &mut alice,
        "the bot's answer",
        |l| matches!(l, ServerLine::Event(e) if e.name == "MSG" && e.fields.get(3).is_some_and(|s| s == "stockbot")),
    )
    .await;

    // A backup of the installed daemon's database while it runs.
    let backup = out.path().join("backup.db");
    let summary =
        run(Command::new("/usr/bin/chatd").args(["--config", "/etc/chatd/chatd.toml", "backup"]).arg(&backup));
    assert!(summary.contains(" messages, ") && backup.exists(), "{summary}");

    // Stop both, then purge: binaries, configuration and state are gone.
    for child in [&mut bot, &mut daemon] {
        // SAFETY: kill(2) on a child we started.
        unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
        let status = tokio::time::timeout(PATIENCE, child.wait()).await.expect("stops on SIGTERM").unwrap();
        assert!(status.success(), "{status:?}; chatd log:\n{}", log_text());
    }
    run(Command::new("dpkg").args(["-P", "chatd"]));
    for gone in ["/usr/bin/chatd", "/usr/bin/chatd-bot", "/usr/bin/chat", "/etc/chatd/chatd.toml", UNITS[0], STATE] {
        assert!(!Path::new(gone).exists(), "{gone} is still there after dpkg -P");
    }
}
