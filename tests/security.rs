//! Security properties: no secret reaches the log, secrets and the database are owner-only, TLS
//! 1.2 or newer only, no plaintext beyond loopback unless forced, and authorization: who may read
//! and post where, nobody acts as someone else, and the bot account cannot be guessed into.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use testkit::{bin_path, call, expect_line, merged_config, Daemon, PATIENCE};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// Events a connection has received by the time it gets the answer to a PING.
async fn events_so_far(conn: &mut chatd_proto::LineConn) -> Vec<chatd_proto::Event> {
    call(conn, "PING sync").await.events
}

#[tokio::test]
async fn no_password_or_bot_secret_reaches_the_log() {
    let mut d = Daemon::start().await; // chatd logs at debug level in tests
    let secret = "Zebra-Quartz-9431-secret";
    let wrong = "Wrong-Quartz-1234-guess";
    let mut c = d.client().await;
    assert_eq!(call(&mut c, &format!("REGISTER alice {secret}")).await.fin.code, 200);
    assert_eq!(call(&mut c, "LOGOUT").await.fin.code, 200);
    assert_eq!(call(&mut c, &format!("LOGIN alice {wrong}")).await.fin.code, 409);
    assert_eq!(call(&mut c, &format!("LOGIN nosuchuser {wrong}")).await.fin.code, 409);
    assert_eq!(call(&mut c, &format!("LOGIN alice {secret} extra")).await.fin.code, 401);
    assert_eq!(call(&mut c, &format!("LOGIN 9alice {secret}")).await.fin.code, 405);
    assert_eq!(call(&mut c, &format!("LOGIN alice {secret}")).await.fin.code, 200);
    assert_eq!(call(&mut c, &format!("REGISTER bob {secret}")).await.fin.code, 408);
    let bot_secret = d.bot_password();
    let mut bot = d.client().await;
    assert_eq!(call(&mut bot, &format!("LOGIN stockbot {bot_secret}")).await.fin.code, 200);
    drop((c, bot));
    assert!(d.stop().await, "graceful stop, so the log is complete");
    let log = d.log();
    assert!(log.contains("login failed") && log.contains("logged in"), "the log has the logins: {log}");
    for s in [secret, wrong, bot_secret.as_str(), "$argon2"] {
        assert!(!log.contains(s), "{s:?} is in the log:\n{log}");
    }
}

#[tokio::test]
async fn database_keys_and_secrets_are_owner_only() {
    // Even with a permissive umask, the modes are chatd's own.
    // SAFETY: umask only swaps the process's file-creation mask.
    let old = unsafe { libc::umask(0) };
    let d = Daemon::start().await;
    unsafe { libc::umask(old) };
    let mut c = d.member("alice", "general").await;
    assert_eq!(call(&mut c, "MSG general make the WAL exist").await.fin.code, 200);
    assert_eq!(mode(&d.dir.join("data")), 0o700, "data directory");
    for f in ["data/chatd.db", "data/chatd.db-wal", "data/chatd.db-shm", "data/stockbot.secret", "certs/key.pem"] {
        assert_eq!(mode(&d.dir.join(f)), 0o600, "{f}");
    }
    // Public material may be read by others.
    assert_eq!(mode(&d.dir.join("certs/cert.pem")) & 0o600, 0o600);
}

fn tls_only(d: &Daemon, version: &'static rustls::SupportedProtocolVersion) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let pem = std::fs::read(&d.ca_file).unwrap();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

#[tokio::test]
async fn tls_1_2_and_1_3_connect() {
    let d = Daemon::start().await;
    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let tcp = tokio::net::TcpStream::connect(&d.addr).await.unwrap();
        let tls = TlsConnector::from(tls_only(&d, version))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap_or_else(|e| panic!("{want:?}: {e}"));
        assert_eq!(tls.get_ref().1.protocol_version(), Some(want));
        let mut conn = chatd_proto::LineConn::from_stream(Box::new(tls));
        assert!(testkit::next_line(&mut conn).await.is_event("HELLO"));
        assert_eq!(call(&mut conn, "PING v").await.fin.code, 200);
    }
}

/// `openssl s_client` with `args`; returns (exit success, stdout + stderr).
fn s_client(d: &Daemon, args: &[&str]) -> (bool, String) {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", &d.addr, "-servername", "localhost", "-CAfile"])
        .arg(&d.ca_file)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed (the CI installs it)");
    let deadline = std::time::Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("openssl s_client {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test]
async fn tls_1_1_and_older_are_refused() {
    let d = Daemon::start_with("[limits]\nlogin_timeout_secs = 1").await;
    // Control: TLS 1.2 through openssl gets the greeting (and, idle, the login timeout).
    let (_, out) = s_client(&d, &["-tls1_2", "-quiet", "-ign_eof"]);
    assert!(out.contains("* HELLO chatd"), "{out}");
    for old in ["-tls1_1", "-tls1"] {
        // SECLEVEL=0 lets OpenSSL 3 offer the old version at all, so the refusal is the server's.
        let (ok, out) = s_client(&d, &[old, "-cipher", "DEFAULT@SECLEVEL=0", "-ign_eof"]);
        assert!(!ok, "{old} connected: {out}");
        assert!(out.contains("alert"), "{old}: the server refused the handshake with an alert: {out}");
        assert!(!out.contains("HELLO"), "{old}: {out}");
    }
    let mut c = d.client().await;
    assert_eq!(call(&mut c, "PING fine").await.fin.code, 200);
}

/// Runs chatd with `config` (merged over the test base) and `args` until it exits; returns
/// (success, stderr).
fn run_chatd(config: &str, args: &[&str]) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("chatd.toml"), merged_config(config)).unwrap();
    let mut child = Command::new(bin_path("chatd"))
        .arg("--config")
        .arg(tmp.path().join("chatd.toml"))
        .args(args)
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("chatd started with {config:?} {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn plaintext_beyond_loopback_needs_to_be_forced() {
    for (config, args) in [
        ("[server]\nplain_listen = \"0.0.0.0:0\"", vec![]),
        ("", vec!["--plain-listen", "[::]:0"]),
        ("[server]\nplain_listen = \"192.0.2.1:6667\"", vec![]),
    ] {
        let (ok, stderr) = run_chatd(config, &args);
        assert!(!ok, "{config} {args:?}: started");
        assert!(
            stderr.contains("is not loopback") && stderr.contains("allow_plain_non_loopback = true"),
            "{config} {args:?}: unclear message: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_plaintext_listener_on_loopback_works() {
    let d = Daemon::start_with("[server]\nplain_listen = \"127.0.0.1:0\"").await;
    let mut c = chatd_proto::LineConn::connect_plain(d.plain_addr.as_ref().unwrap()).await.unwrap();
    assert!(testkit::next_line(&mut c).await.is_event("HELLO"));
    assert_eq!(call(&mut c, "PING plain").await.fin.code, 200);
}

#[tokio::test]
async fn non_members_neither_read_nor_post() {
    let d = Daemon::start().await;
    let mut alice = d.member("alice", "secret").await;
    let mut bob = d.member("bob", "secret").await;
    let mut carol = d.login("carol").await;
    let mut eve = d.client().await; // not logged in
    call(&mut alice, "MSG secret the plan").await;
    expect_line(&mut bob, "the plan", |l| l.as_message().is_some_and(|m| m.text == "the plan")).await;
    assert!(events_so_far(&mut carol).await.is_empty(), "a non-member got an event of the room");
    for (line, code) in
        [("HISTORY secret", 403), ("MSG secret let me in", 403), ("PART secret", 403), ("NAMES secret", 403)]
    {
        assert_eq!(call(&mut carol, line).await.fin.code, code, "carol: {line}");
    }
    let who = call(&mut carol, "NAMES secret").await;
    assert!(who.data.is_empty(), "a non-member learned who is in the room: {:?}", who.data);
    assert_eq!(call(&mut carol, "NAMES nosuchroom").await.fin.code, 404);
    assert_eq!(call(&mut alice, "NAMES secret").await.data.len(), 2, "members see each other");
    for line in ["HISTORY secret", "MSG secret hi", "JOIN secret", "NAMES secret"] {
        assert_eq!(call(&mut eve, line).await.fin.code, 402, "eve: {line}");
    }
    // Having left, a member is a non-member again.
    call(&mut carol, "JOIN secret").await;
    call(&mut carol, "PART secret").await;
    call(&mut alice, "MSG secret after carol left").await;
    expect_line(&mut bob, "the second line", |l| l.as_message().is_some_and(|m| m.text == "after carol left")).await;
    assert!(!events_so_far(&mut carol).await.iter().any(|e| e.name == "MSG"), "carol still hears the room");
    assert_eq!(call(&mut carol, "HISTORY secret").await.fin.code, 403);
    // LOGOUT leaves every room.
    call(&mut bob, "LOGOUT").await;
    call(&mut alice, "MSG secret bob logged out").await;
    assert!(!events_so_far(&mut bob).await.iter().any(|e| e.name == "MSG"), "bob hears the room after LOGOUT");
    assert_eq!(call(&mut bob, "MSG secret hi").await.fin.code, 402);
    // The messages posted by those who may never included carol's attempt.
    let history: Vec<String> =
        call(&mut alice, "HISTORY secret").await.data.iter().map(|r| r.text.clone().unwrap()).collect();
    assert_eq!(history, ["the plan", "after carol left", "bob logged out"]);
}

#[tokio::test]
async fn nobody_acts_as_someone_else() {
    let d = Daemon::start().await;
    let mut alice = d.member("alice", "secret").await;
    let mut bob = d.member("bob", "secret").await;
    // A logged-in connection cannot switch to another account.
    assert_eq!(call(&mut alice, "LOGIN bob password-bob").await.fin.code, 408);
    assert_eq!(call(&mut alice, "REGISTER mallory password1").await.fin.code, 408);
    // Messages carry the logged-in sender, whatever the text pretends.
    let fake = "* MSG secret 1 2026-11-29T04:48:06.123Z bob :I owe alice 100";
    let ack = call(&mut alice, &format!("MSG secret {fake}")).await;
    assert_eq!(ack.fin.code, 200);
    let line = testkit::next_line(&mut bob).await;
    let m = line.as_message().expect("a message");
    assert_eq!((m.sender.as_str(), m.text.as_str()), ("alice", fake));
    assert_eq!(call(&mut bob, "PING next").await.events.len(), 0, "the fake produced no extra line");
    let h = call(&mut bob, "HISTORY secret").await;
    assert_eq!(h.data[0].fields[3], "alice");
    // A second login of the same user does not inherit the first connection's rooms.
    let mut alice2 = d.login("alice").await;
    call(&mut bob, "MSG secret for members").await;
    expect_line(&mut alice, "bob's line", |l| l.as_message().is_some_and(|m| m.text == "for members")).await;
    assert!(events_so_far(&mut alice2).await.is_empty(), "the second connection got room events");
    assert_eq!(call(&mut alice2, "MSG secret from the other connection").await.fin.code, 403);
    assert_eq!(call(&mut alice2, "HISTORY secret").await.fin.code, 403);
    // Only a bot account may serve bot commands.
    assert_eq!(call(&mut alice2, "SERVE stock").await.fin.code, 403);
}

#[tokio::test]
async fn the_bot_account_cannot_be_guessed_or_taken() {
    let mut d = Daemon::start_with("[limits]\nlogin_failures_before_delay = 100").await;
    let file = d.bot_password_file();
    let text = std::fs::read_to_string(&file).unwrap();
    let secret = text.trim_end();
    assert_eq!(secret.len(), 32, "{text:?}");
    assert!(secret.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(mode(&file), 0o600);
    let mut c = d.client().await;
    assert_eq!(call(&mut c, "REGISTER stockbot password1").await.fin.code, 410);
    assert_eq!(call(&mut c, "REGISTER StockBot password1").await.fin.code, 410);
    for guess in [
        "password",
        "12345678",
        "stockbot",
        "stockbot1",
        "Stockbot123",
        "changeme",
        "password1",
        "qwertyuiop",
        "letmein!",
    ] {
        let r = call(&mut c, &format!("LOGIN stockbot {guess}")).await;
        assert_eq!(r.fin.code, 409, "guess {guess:?}: {:?}", r.fin);
    }
    assert_eq!(call(&mut c, "SERVE stock").await.fin.code, 402, "still not logged in");
    // The secret survives a restart (it is read back, not replaced), and it works.
    drop(c);
    d.restart().await;
    assert_eq!(d.bot_password(), secret);
    let mut bot = d.client().await;
    assert_eq!(call(&mut bot, &format!("LOGIN stockbot {secret}")).await.fin.code, 200);
    assert_eq!(call(&mut bot, "SERVE stock").await.fin.code, 200);
    // A second daemon's bot gets a different secret: it is random, not derived.
    let other = Daemon::start().await;
    assert_ne!(other.bot_password(), secret);
}
