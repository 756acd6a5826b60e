//! Reloading the configuration with SIGHUP over real sockets: the new certificate for new
//! handshakes, registration closed and a per-address cap for new connections, while the
//! connections already open keep talking and a client posting throughout loses nothing; a key that
//! needs a restart is named in the log; a broken file is refused and the settings stay. And the IRC
//! MOTD: new IRC clients get the new one, one connected before sees it on its next MOTD. And the
//! bot list and the line limits: a bot added by a reload logs in as a bot; new connections get the
//! new line and message limits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatd_proto::client::LineConn;
use chatd_proto::line::ServerLine;
use chatd_proto::tls::{client_config, fingerprint_hex, parse_fingerprint, Trust};
use testkit::{call, expect_line, merged_config, Daemon, PATIENCE};

/// A new CA and a localhost certificate signed by it: (certificate PEM, key PEM, CA PEM,
/// certificate fingerprint).
fn new_certificate() -> (String, String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, "reload test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    (cert.pem(), key.serialize_pem(), ca.pem(), fingerprint_hex(cert.der()))
}

async fn connect(addr: &str, trust: Trust) -> std::io::Result<LineConn> {
    let config = client_config(&trust).unwrap();
    let mut conn = tokio::time::timeout(PATIENCE, LineConn::connect_tls(addr, "localhost", config))
        .await
        .expect("connect timed out")?;
    let hello = tokio::time::timeout(PATIENCE, conn.next()).await.expect("hello timed out")?;
    match hello {
        Some(l) if l.is_event("HELLO") => Ok(conn),
        other => Err(std::io::Error::other(format!("no HELLO: {other:?}"))),
    }
}

fn hangup(d: &Daemon) {
    // SAFETY: kill(2) with the pid of the daemon this test started.
    assert_eq!(unsafe { libc::kill(d.pid as i32, libc::SIGHUP) }, 0);
}

/// Waits until the log has `n` lines containing `what`; returns the last of them.
async fn log_line(d: &Daemon, what: &str, n: usize) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let log = d.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(what)).collect();
        if lines.len() >= n {
            return lines[n - 1].to_string();
        }
        assert!(tokio::time::Instant::now() < deadline, "no {what:?} (#{n}) in the log:\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connects once a place at the per-address cap is free: a closed connection frees its place
/// when the daemon has seen the close, a moment after the client dropped it.
async fn connect_when_free(addr: &str, trust: Trust) -> LineConn {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match connect(addr, trust.clone()).await {
            Ok(c) => return c,
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "no place after a close: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sighup_swaps_certificate_and_settings_without_dropping_connections() {
    let d = Daemon::start().await;
    let old_ca = Trust::CaFile(d.ca_file.clone());
    let mut alice = d.member("alice", "general").await;
    let mut bob = d.member("bob", "general").await;

    // A client posts throughout the reload.
    let mut poster = d.member("carol", "load").await;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let posting = {
        let (acked, stop) = (acked.clone(), stop.clone());
        tokio::spawn(async move {
            for i in 0..45 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let r = call(&mut poster, &format!("MSG load post {i}")).await;
                assert_eq!(r.fin.code, 200, "{r:?}");
                acked.lock().unwrap().push(format!("post {i}"));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            poster
        })
    };

    // The certificate renewed in place, registration closed, a per-address cap (loopback no longer
    // exempt), and a key that needs a restart.
    let (cert, key, ca, fingerprint) = new_certificate();
    std::fs::write(d.dir.join("certs/cert.pem"), cert).unwrap();
    std::fs::write(d.dir.join("certs/key.pem"), key).unwrap();
    std::fs::write(d.dir.join("certs/new-ca.pem"), ca).unwrap();
    let reloaded = "[accounts]\nopen_registration = false\n[storage]\nmax_batch = 7\n\
                    [limits]\nexempt_loopback = false\nmax_connections_per_address = 5\n";
    std::fs::write(d.config_path(), merged_config(reloaded)).unwrap();
    hangup(&d);
    let applied = log_line(&d, "configuration reloaded", 1).await;
    assert!(applied.contains(&fingerprint) && applied.contains("new_certificate=true"), "{applied}");
    for key in ["accounts.open_registration", "limits.exempt_loopback", "limits.max_connections_per_address"] {
        assert!(applied.contains(key), "{key} not applied: {applied}");
    }
    let restart = log_line(&d, "take effect only after a restart", 1).await;
    assert!(restart.contains("storage.max_batch") && !restart.contains("open_registration"), "{restart}");

    // New handshakes get the new certificate: pinned by its fingerprint, and by the new CA; the old
    // CA no longer verifies them.
    let mut dave = connect(&d.addr, Trust::Fingerprint(parse_fingerprint(&fingerprint).unwrap())).await.unwrap();
    let mut erin = connect(&d.addr, Trust::CaFile(d.dir.join("certs/new-ca.pem"))).await.unwrap();
    assert!(connect(&d.addr, old_ca.clone()).await.is_err(), "the old certificate is still served");

    // New connections get the new settings: registration is closed, logging in still works.
    assert_eq!(call(&mut dave, "REGISTER dave password-dave").await.fin.code, 411);
    assert_eq!(call(&mut erin, "LOGIN alice password-alice").await.fin.code, 200);

    // The connections opened before the reload keep talking.
    assert_eq!(call(&mut alice, "MSG general still here").await.fin.code, 200);
    expect_line(
        &mut bob,
        "alice's message",
        |l| matches!(l, ServerLine::Event(e) if e.name == "MSG" && e.text.as_deref() == Some("still here")),
    )
    .await;

    // The per-address cap: alice, bob, carol, dave and erin are five; a sixth is turned away.
    let trust = Trust::CaFile(d.dir.join("certs/new-ca.pem"));
    assert!(connect(&d.addr, trust.clone()).await.is_err(), "a sixth connection from 127.0.0.1 was admitted");
    drop(dave);
    let mut frank = connect_when_free(&d.addr, trust.clone()).await;

    // A broken file is refused, and everything stays as it was.
    std::fs::write(d.config_path(), "[limits\nmax_connections = ").unwrap();
    hangup(&d);
    let refused = log_line(&d, "configuration reload refused", 1).await;
    assert!(refused.contains("chatd.toml"), "{refused}");
    assert_eq!(call(&mut frank, "REGISTER frank password-frank").await.fin.code, 411);
    assert_eq!(call(&mut alice, "MSG general after the broken file").await.fin.code, 200);
    // A file whose certificate and key do not match is refused too.
    std::fs::write(d.config_path(), merged_config(reloaded)).unwrap();
    let (other_cert, _, _, _) = new_certificate();
    std::fs::write(d.dir.join("certs/cert.pem"), other_cert).unwrap();
    hangup(&d);
    let refused = log_line(&d, "configuration reload refused", 2).await;
    assert!(refused.contains("do not match"), "{refused}");
    drop(frank);
    let pinned = Trust::Fingerprint(parse_fingerprint(&fingerprint).unwrap());
    let mut grace = connect_when_free(&d.addr, pinned).await;
    assert_eq!(call(&mut grace, "PING").await.fin.code, 200);

    // Nothing the poster was told was stored got lost.
    stop.store(true, Ordering::Relaxed);
    let mut poster = posting.await.expect("poster");
    let history = call(&mut poster, "HISTORY load").await;
    let stored: Vec<String> = history.data.iter().filter_map(|r| r.text.clone()).collect();
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    for text in &acked {
        assert!(stored.contains(text), "acknowledged {text:?} is not in HISTORY");
    }
}

/// Reads IRC lines up to and including one with `command`; returns them.
async fn irc_until(conn: &mut LineConn, command: &str) -> Vec<chatd::irc::wire::Message> {
    let mut got = Vec::new();
    loop {
        let line = tokio::time::timeout(PATIENCE, conn.read_line())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {command}"))
            .unwrap()
            .unwrap_or_else(|| panic!("closed while waiting for {command}"));
        let m = chatd::irc::wire::Message::parse(&line).unwrap();
        let done = m.command == command;
        got.push(m);
        if done {
            return got;
        }
    }
}

/// An IRC client logged in with PASS as `user` (an existing account), past its 001.
async fn irc_login(d: &Daemon, user: &str) -> (LineConn, Vec<chatd::irc::wire::Message>) {
    let config = client_config(&Trust::CaFile(d.ca_file.clone())).unwrap();
    let mut c = LineConn::connect_tls(&d.irc_addr, "localhost", config).await.unwrap();
    c.send(&format!("PASS {user}:password-{user}")).await.unwrap();
    c.send(&format!("NICK {user}")).await.unwrap();
    c.send(&format!("USER {user} 0 * :{user}")).await.unwrap();
    let burst = irc_until(&mut c, "001").await;
    (c, burst)
}

#[tokio::test]
async fn sighup_changes_the_irc_motd_for_everyone_and_keeps_irc_clients() {
    let d = Daemon::start_with("[irc]\nmotd = \"before the reload\"").await;
    drop(d.login("alice").await);
    drop(d.login("bob").await);
    let (mut alice, _) = irc_login(&d, "alice").await;
    let motd = irc_until(&mut alice, "376").await;
    assert!(motd.iter().any(|m| m.params.last().is_some_and(|p| p.contains("before the reload"))), "{motd:?}");

    std::fs::write(d.config_path(), merged_config("[irc]\nmotd = \"after the reload\\nsecond line\"")).unwrap();
    hangup(&d);
    let applied = log_line(&d, "configuration reloaded", 1).await;
    assert!(applied.contains("irc.motd"), "{applied}");

    // A new IRC client gets the new MOTD in its welcome; the one connected before asks for it.
    let (mut bob, _) = irc_login(&d, "bob").await;
    let motd = irc_until(&mut bob, "376").await;
    let text: Vec<&str> =
        motd.iter().filter(|m| m.command == "372").filter_map(|m| m.params.last()).map(String::as_str).collect();
    assert_eq!(text, ["- after the reload", "- second line"]);
    alice.send("MOTD").await.unwrap();
    let motd = irc_until(&mut alice, "376").await;
    assert!(motd.iter().any(|m| m.params.last().is_some_and(|p| p.contains("after the reload"))), "{motd:?}");
    alice.send("JOIN #general").await.unwrap();
    irc_until(&mut alice, "366").await;
}

#[tokio::test]
async fn sighup_adds_a_bot_and_changes_the_line_limits() {
    let d = Daemon::start().await;
    let mut before = d.member("alice", "general").await;
    let long_text = "x".repeat(300);
    assert_eq!(call(&mut before, &format!("MSG general {long_text}")).await.fin.code, 200);

    // A second bot account, and shorter lines and messages.
    let reloaded = "[[bots]]\nname = \"stockbot\"\npassword_file = \"data/stockbot.secret\"\n\
                    [[bots]]\nname = \"weatherbot\"\npassword_file = \"data/weatherbot.secret\"\n\
                    [limits]\nmax_line_bytes = 200\nmax_message_bytes = 100\n";
    std::fs::write(d.config_path(), merged_config(reloaded)).unwrap();
    hangup(&d);
    let applied = log_line(&d, "configuration reloaded", 1).await;
    for key in ["bots", "limits.max_line_bytes", "limits.max_message_bytes"] {
        assert!(applied.contains(&format!("\"{key}\"")), "{key} not applied: {applied}");
    }
    assert!(!d.log().contains("take effect only after a restart"), "{}", d.log());

    // The new bot logs in with the password chatd wrote for it, and may serve a command.
    let secret = std::fs::read_to_string(d.dir.join("data/weatherbot.secret")).expect("the new bot's password file");
    let mut weather = connect(&d.addr, Trust::CaFile(d.ca_file.clone())).await.unwrap();
    assert_eq!(call(&mut weather, &format!("LOGIN weatherbot {}", secret.trim())).await.fin.code, 200);
    assert_eq!(call(&mut weather, "SERVE weather").await.fin.code, 200);
    // Nobody can register the bot's name; an ordinary user still may not serve.
    let mut carol = connect(&d.addr, Trust::CaFile(d.ca_file.clone())).await.unwrap();
    assert_eq!(call(&mut carol, "REGISTER weatherbot password-w").await.fin.code, 410);
    assert_eq!(call(&mut carol, "REGISTER carol password-carol").await.fin.code, 200);
    assert_eq!(call(&mut carol, "SERVE weather").await.fin.code, 403);

    // New connections get the new limits: a 150-byte message is too long, a 250-byte line too.
    assert_eq!(call(&mut carol, "JOIN general").await.fin.code, 200);
    assert_eq!(call(&mut carol, &format!("MSG general {}", "y".repeat(150))).await.fin.code, 417);
    assert_eq!(call(&mut carol, &format!("MSG general {}", "z".repeat(250))).await.fin.code, 413);
    assert_eq!(call(&mut carol, "MSG general short enough").await.fin.code, 200);
    // A connection opened before keeps the limits it was opened with.
    assert_eq!(call(&mut before, &format!("MSG general {long_text}")).await.fin.code, 200);

    // The bot removed again: a new login is an ordinary user's, who may not serve.
    std::fs::write(d.config_path(), merged_config("")).unwrap();
    hangup(&d);
    log_line(&d, "configuration reloaded", 2).await;
    let mut again = connect(&d.addr, Trust::CaFile(d.ca_file.clone())).await.unwrap();
    assert_eq!(call(&mut again, &format!("LOGIN weatherbot {}", secret.trim())).await.fin.code, 200);
    assert_eq!(call(&mut again, "SERVE weather").await.fin.code, 403);
}
