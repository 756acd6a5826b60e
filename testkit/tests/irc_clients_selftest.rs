//! Proof that the irssi and WeeChat drivers work, against a real IRC server: ngIRCd from Debian,
//! in the foreground on loopback with TLS and a throwaway CA (as bench/compare.sh runs it).
//! ngIRCd has no SASL, so SASL is proven by the generated config and by each client trying it.
//!
//! Ignored by default (CI has no ngIRCd). To run:
//!   apt-get install -y ngircd irssi weechat-headless tmux openssl
//!   cargo test -p testkit --test irc_clients_selftest -- --ignored

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::irc_clients::{irssi_config, weechat_config, IrcClientOptions, IrcLineClient, Irssi, WeeChat};

const WAIT: Duration = Duration::from_secs(15);

/// ngIRCd on free loopback ports, with a CA and a localhost certificate made by openssl.
struct Ngircd {
    dir: tempfile::TempDir,
    child: Child,
    tls_port: u16,
}

impl Ngircd {
    fn ca(&self) -> PathBuf {
        self.dir.path().join("irc-ca.pem")
    }

    fn tls_addr(&self) -> String {
        format!("127.0.0.1:{}", self.tls_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ngircd.log")).unwrap_or_default()
    }
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`<name>.pem`, `<name>-key.pem`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    let (key, pem) = (format!("{name}-key.pem"), format!("{name}.pem"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=irc-selftest-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
            "-keyout",
            &key,
            "-out",
            &pem,
        ],
    );
}

fn start_ngircd() -> Ngircd {
    assert!(Path::new("/usr/sbin/ngircd").exists(), "ngIRCd is missing: apt-get install -y ngircd");
    let dir = tempfile::Builder::new().prefix("ngircd-selftest").tempdir().unwrap();
    let d = dir.path();
    make_ca(d, "irc-ca");
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "irc-key.pem",
            "-out",
            "irc.csr",
        ],
    );
    std::fs::write(
        d.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "irc.csr",
            "-CA",
            "irc-ca.pem",
            "-CAkey",
            "irc-ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "irc-cert.pem",
        ],
    );
    // Started as root, ngIRCd drops to nobody (the bench config says so) and then reads the key.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["irc-cert.pem", "irc-key.pem"] {
        std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let (plain_port, tls_port) = (free_port(), free_port());
    let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/configs/ngircd.conf"))
        .expect("bench/configs/ngircd.conf");
    let conf = template
        .replace("@DIR@", &d.to_string_lossy())
        .replace("@PLAIN_PORT@", &plain_port.to_string())
        .replace("@TLS_PORT@", &tls_port.to_string());
    std::fs::write(d.join("ngircd.conf"), conf).unwrap();
    let log = std::fs::File::create(d.join("ngircd.log")).unwrap();
    let child = Command::new("/usr/sbin/ngircd")
        .arg("--nodaemon")
        .arg("--config")
        .arg(d.join("ngircd.conf"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn ngircd");
    let server = Ngircd { dir, child, tls_port };
    for _ in 0..100 {
        if std::net::TcpStream::connect(server.tls_addr()).is_ok() {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("ngIRCd did not listen on {}; its log:\n{}", server.tls_addr(), server.log());
}

/// A raw client of the test, registered as `nick` and joined to #general.
async fn raw_member(server: &Ngircd, nick: &str) -> IrcLineClient {
    let mut c = IrcLineClient::connect_tls(&server.tls_addr(), "localhost", &server.ca()).await.unwrap();
    c.register(nick, WAIT).await.unwrap();
    c.send("JOIN #general").await.unwrap();
    c.wait_for(" 366 ", WAIT).await.unwrap();
    c
}

fn options(server: &Ngircd, nick: &str) -> IrcClientOptions {
    IrcClientOptions::new(nick, server.tls_port).ca_file(server.ca())
}

#[tokio::test]
#[ignore = "needs ngIRCd, irssi and tmux: cargo test -p testkit -- --ignored"]
async fn irssi_over_verified_tls_joins_says_and_sees_others() {
    let server = start_ngircd();
    let mut irssi = Irssi::start(options(&server, "alice")).await.unwrap();
    // Verified against the CA (and the name localhost), then registered.
    irssi.wait_for("Connection to localhost established", WAIT).await.unwrap();
    irssi.wait_for("Welcome to the Internet Relay Network alice", WAIT).await.unwrap();
    irssi.command("/join #general").await.unwrap();
    irssi.wait_for("alice [~alice@127.0.0.1] has joined #general", WAIT).await.unwrap();

    let mut bob = raw_member(&server, "bob").await;
    irssi.wait_for("bob [~bob@127.0.0.1] has joined #general", WAIT).await.unwrap();

    irssi.say("#general", "hi from irssi, with 'quotes' and $dollars").await.unwrap();
    let line = bob.wait_for("PRIVMSG #general :", WAIT).await.unwrap();
    assert!(line.ends_with("PRIVMSG #general :hi from irssi, with 'quotes' and $dollars"), "{line}");
    let own = irssi.wait_for("hi from irssi", WAIT).await.unwrap();
    assert!(own.contains("#general: <@alice> hi from irssi"), "{own}");

    bob.send("PRIVMSG #general :hello alice").await.unwrap();
    let seen = irssi.wait_for("hello alice", WAIT).await.unwrap();
    assert!(seen.contains("#general: < bob> hello alice"), "{seen}");

    // A private message and a raw command typed in irssi.
    bob.send("PRIVMSG alice :just you").await.unwrap();
    irssi.wait_for("<bob> just you", WAIT).await.unwrap();
    irssi.command("/quote PRIVMSG bob :raw line").await.unwrap();
    bob.wait_for("PRIVMSG bob :raw line", WAIT).await.unwrap();

    let t = irssi.transcript();
    assert!(!t.contains("Unknown settings"), "irssi rejected a generated setting:\n{t}");
    assert!(!irssi.screen().contains("Remove unknown settings"), "{}", irssi.screen());
}

#[tokio::test]
#[ignore = "needs ngIRCd and weechat-headless: cargo test -p testkit -- --ignored"]
async fn weechat_over_verified_tls_joins_says_and_sees_others() {
    let server = start_ngircd();
    let mut weechat = WeeChat::start(options(&server, "walice")).await.unwrap();
    weechat.wait_for("peer's certificate is trusted", WAIT).await.unwrap();
    weechat.wait_for("Welcome to the Internet Relay Network walice", WAIT).await.unwrap();
    weechat.command("/join #general").await.unwrap();
    weechat.wait_for("walice (~walice@127.0.0.1) has joined #general", WAIT).await.unwrap();

    let mut bob = raw_member(&server, "bob").await;
    weechat.wait_for("bob (~bob@127.0.0.1) has joined #general", WAIT).await.unwrap();

    weechat.say("#general", "/stock=aapl.us with 'quotes' and $dollars").await.unwrap();
    let line = bob.wait_for("PRIVMSG #general :", WAIT).await.unwrap();
    assert!(line.ends_with("PRIVMSG #general :/stock=aapl.us with 'quotes' and $dollars"), "{line}");

    bob.send("PRIVMSG #general :hello walice").await.unwrap();
    let seen = weechat.wait_for("hello walice", WAIT).await.unwrap();
    assert!(seen.contains("#general: bob hello walice"), "{seen}");

    bob.send("PRIVMSG walice :just you").await.unwrap();
    let private = weechat.wait_for("just you", WAIT).await.unwrap();
    assert!(private.contains("bob: bob just you"), "{private}");
    weechat.command("/quote PRIVMSG bob :raw line").await.unwrap();
    bob.wait_for("PRIVMSG bob :raw line", WAIT).await.unwrap();

    let t = weechat.transcript();
    assert!(!t.contains("=!="), "WeeChat reported an error:\n{t}");
}

#[tokio::test]
#[ignore = "needs ngIRCd, irssi, tmux and weechat-headless: cargo test -p testkit -- --ignored"]
async fn irssi_and_weechat_talk_to_each_other() {
    let server = start_ngircd();
    let mut irssi = Irssi::start(options(&server, "ia")).await.unwrap();
    let mut weechat = WeeChat::start(options(&server, "wb")).await.unwrap();
    irssi.wait_for("Welcome to the Internet Relay Network ia", WAIT).await.unwrap();
    weechat.wait_for("Welcome to the Internet Relay Network wb", WAIT).await.unwrap();
    irssi.command("/join #general").await.unwrap();
    irssi.wait_for("has joined #general", WAIT).await.unwrap();
    weechat.command("/join #general").await.unwrap();
    irssi.wait_for("wb [~wb@127.0.0.1] has joined #general", WAIT).await.unwrap();
    weechat.wait_for("wb (~wb@127.0.0.1) has joined #general", WAIT).await.unwrap();
    for i in 1..=3 {
        irssi.say("#general", &format!("from irssi {i}")).await.unwrap();
        weechat.say("#general", &format!("from weechat {i}")).await.unwrap();
    }
    for i in 1..=3 {
        weechat.wait_for(&format!("ia from irssi {i}"), WAIT).await.unwrap();
        irssi.wait_for(&format!("wb> from weechat {i}"), WAIT).await.unwrap();
    }
}

/// The CA check is really on: a certificate from another CA is refused by both clients.
#[tokio::test]
#[ignore = "needs ngIRCd, irssi, tmux and weechat-headless: cargo test -p testkit -- --ignored"]
async fn both_refuse_a_certificate_from_another_ca() {
    let server = start_ngircd();
    let other = tempfile::tempdir().unwrap();
    make_ca(other.path(), "other");
    let opts = IrcClientOptions::new("mallory", server.tls_port).ca_file(other.path().join("other.pem"));
    let mut irssi = Irssi::start(opts.clone()).await.unwrap();
    let mut weechat = WeeChat::start(opts).await.unwrap();
    irssi.wait_for("Could not verify TLS servers certificate", WAIT).await.unwrap();
    weechat.wait_for("peer's certificate is NOT trusted", WAIT).await.unwrap();
    assert!(!irssi.transcript().contains("Welcome"), "{}", irssi.transcript());
    assert!(!weechat.transcript().contains("Welcome"), "{}", weechat.transcript());
}

/// SASL PLAIN and PASS reach the config files in the shape each client reads, and each client
/// tries SASL (ngIRCd offers none, so each says so and does not go on unauthenticated).
#[tokio::test]
#[ignore = "needs ngIRCd, irssi, tmux and weechat-headless: cargo test -p testkit -- --ignored"]
async fn sasl_plain_and_pass_are_configured_and_tried() {
    let opts = IrcClientOptions::new("alice", 6697).ca_file("/ca.pem").sasl("alice", "s3cret \"q\"").password("pw");
    let irssi = irssi_config(&opts, Path::new("/home/irssi.log"));
    for want in [
        "sasl_mechanism = \"PLAIN\";",
        "sasl_username = \"alice\";",
        "sasl_password = \"s3cret \\\"q\\\"\";",
        "password = \"pw\";",
        "use_tls = \"yes\";",
        "tls_verify = \"yes\";",
        "tls_cafile = \"/ca.pem\";",
        "channels = ( );",
    ] {
        assert!(irssi.contains(want), "irssi config lacks {want:?}:\n{irssi}");
    }
    let files = weechat_config(&opts, Path::new("/w"));
    let irc = &files.iter().find(|(n, _)| *n == "irc.conf").unwrap().1;
    for want in [
        "chatd.sasl_mechanism = plain",
        "chatd.sasl_username = \"alice\"",
        "chatd.sasl_password = \"s3cret \"q\"\"",
        "chatd.sasl_fail = disconnect",
        "chatd.password = \"pw\"",
        "chatd.ssl = on",
        "chatd.ssl_verify = on",
        "chatd.autojoin = \"\"",
    ] {
        assert!(irc.contains(want), "irc.conf lacks {want:?}:\n{irc}");
    }
    let weechat_conf = &files.iter().find(|(n, _)| *n == "weechat.conf").unwrap().1;
    assert!(weechat_conf.contains("gnutls_ca_user = \"/ca.pem\""), "{weechat_conf}");

    let server = start_ngircd();
    let opts = options(&server, "alice").sasl("alice", "p\"w");
    let mut irssi = Irssi::start(opts.clone()).await.unwrap();
    let mut weechat = WeeChat::start(opts).await.unwrap();
    irssi.wait_for("Cannot authenticate via SASL (The server did not offer SASL)", WAIT).await.unwrap();
    irssi.wait_for("Connection lost to localhost", WAIT).await.unwrap();
    weechat.wait_for("irc: client capability: SASL not supported", WAIT).await.unwrap();
    weechat.wait_for("irc: disconnected from server", WAIT).await.unwrap();
    // WeeChat read the password with the quote inside as it was written.
    weechat.command("/set irc.server.chatd.sasl_password").await.unwrap();
    let line = weechat.wait_for("irc.server.chatd.sasl_password", WAIT).await.unwrap();
    assert!(line.contains("irc.server.chatd.sasl_password = \"p\"w\"  ("), "{line}");
    assert!(!irssi.transcript().contains("Unknown settings"), "{}", irssi.transcript());
}

/// Dropping a driver leaves no process behind.
#[tokio::test]
#[ignore = "needs irssi, tmux and weechat-headless: cargo test -p testkit -- --ignored"]
async fn drop_leaves_no_process() {
    let opts = IrcClientOptions::new("nobody", free_port());
    let irssi = Irssi::start(opts.clone()).await.unwrap();
    let weechat = WeeChat::start(opts).await.unwrap();
    let (ih, wh) = (irssi.home().to_path_buf(), weechat.home().to_path_buf());
    drop(irssi);
    drop(weechat);
    std::thread::sleep(Duration::from_millis(300));
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    for home in [ih, wh] {
        let h = home.to_string_lossy();
        assert!(!ps.lines().any(|l| l.contains(&*h)), "a process of {h} is left:\n{ps}");
        assert!(!home.exists(), "{h} is left");
    }
}
