//! The `chat` binary in scripted mode (stdin not a terminal) against a real daemon: logging in,
//! joining, sending and receiving, bot command lines and bot replies marked, history paging, and
//! reconnecting after a daemon restart with the missed messages shown exactly once, and a lost
//! connection told in words.

mod common;

use chatd_proto::LineConn;
use common::{is_msg, signal, Scripted};
use testkit::expect_line;

async fn say(conn: &mut LineConn, room: &str, text: &str) {
    let r = conn.call(&format!("MSG {room} {text}")).await.unwrap();
    assert_eq!(r.fin.code, 200, "MSG {room} {text}: {:?}", r.fin);
}

async fn join(conn: &mut LineConn, room: &str) {
    let r = conn.call(&format!("JOIN {room}")).await.unwrap();
    assert_eq!(r.fin.code, 200, "JOIN {room}: {:?}", r.fin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_end_to_end() {
    let daemon = testkit::Daemon::start().await;
    let home = tempfile::tempdir().unwrap();
    let mut bob = daemon.login("bob").await;
    join(&mut bob, "general").await;
    say(&mut bob, "general", "said before alice came").await;

    let mut alice = Scripted::user(&daemon, "alice", &[], home.path());
    alice.wait_for("-- logged in as alice").await;

    // Joining shows the room's last messages.
    alice.send("/join #General").await;
    alice.wait_for("-- joined #general").await;
    alice.wait("bob's earlier message", |l| is_msg(l, "general", "bob", "said before alice came")).await;

    // Plain text goes to the current room; the other member gets it.
    alice.send("hello   from alice ").await;
    alice.wait("alice's own line", |l| is_msg(l, "general", "alice", "hello   from alice ")).await;
    expect_line(&mut bob, "alice's message", |l| {
        l.as_message().is_some_and(|m| m.sender == "alice" && m.text == "hello   from alice ")
    })
    .await;

    // A live message from someone else.
    say(&mut bob, "general", "hi alice").await;
    alice.wait("bob's live message", |l| is_msg(l, "general", "bob", "hi alice")).await;

    // A bot command line: posted to the room as it is (for the bots), shown marked [cmd] to the
    // sender and to the room; the bot's answer (a sender whose name ends in "bot") is marked [bot].
    let mut stockbot = daemon.client().await;
    let r = testkit::call(&mut stockbot, &format!("LOGIN stockbot {}", daemon.bot_password())).await;
    assert_eq!(r.fin.code, 200, "{:?}", r.fin);
    assert_eq!(testkit::call(&mut stockbot, "SERVE stock").await.fin.code, 200);
    alice.send("/stock=aapl.us").await;
    alice.wait("alice's command line", |l| is_msg(l, "general", "alice", "[cmd] /stock=aapl.us")).await;
    expect_line(&mut bob, "the command line", |l| {
        l.as_message().is_some_and(|m| m.is_command && m.sender == "alice" && m.text == "/stock=aapl.us")
    })
    .await;
    expect_line(&mut stockbot, "the command line", |l| l.as_message().is_some_and(|m| m.is_command)).await;
    say(&mut stockbot, "general", "AAPL.US quote is $93.42 per share").await;
    alice
        .wait("the bot's reply", |l| is_msg(l, "general", "stockbot", "[bot] AAPL.US quote is $93.42 per share"))
        .await;
    // A command no bot serves: the room still sees it, the sender is told.
    alice.send("/weather=paris").await;
    alice.wait("alice's unserved command line", |l| is_msg(l, "general", "alice", "[cmd] /weather=paris")).await;
    alice.wait_for("!! no bot answers /weather").await;
    // Someone else's command line, seen live, is marked the same way.
    bob.send("MSG general /stock=msft.us").await.unwrap();
    alice.wait("bob's command line", |l| is_msg(l, "general", "bob", "[cmd] /stock=msft.us")).await;

    // Client commands.
    alice.send("/who").await;
    alice.wait("the member list", |l| l.starts_with("-- #general: ") && l.contains("alice") && l.contains("bob")).await;
    alice.send("/rooms").await;
    alice.wait("the room list", |l| l.starts_with("-- rooms: ") && l.contains("#general")).await;
    alice.send("/join random").await;
    alice.wait_for("-- joined #random").await;
    alice.send("in random").await;
    alice.wait("a line in random", |l| is_msg(l, "random", "alice", "in random")).await;
    alice.send("/switch general").await;
    alice.wait_for("-- now talking in #general").await;
    alice.send("back in general").await;
    alice.wait("a line in general", |l| is_msg(l, "general", "alice", "back in general")).await;
    alice.send("/part random").await;
    alice.wait_for("-- left #random").await;
    alice.send("/switch random").await;
    alice.wait_for("!! not in #random").await;
    // Only members see who is in a room: said in words, as is a room that does not exist.
    alice.send("/who random").await;
    alice.wait_for("!! who #random: only members see who is in a room (/join random first)").await;
    alice.send("/who nosuchroom").await;
    alice.wait_for("!! who #nosuchroom: there is no such room").await;

    // Nothing shown twice.
    for text in ["said before alice came", "hello   from alice ", "hi alice", "back in general"] {
        assert_eq!(
            alice.count(|l| l.ends_with(&format!("> {text}"))),
            1,
            "{text:?} shown once:\n{}",
            alice.snapshot().join("\n")
        );
    }

    alice.send("/quit").await;
    assert_eq!(alice.exit_code().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_back() {
    let daemon = testkit::Daemon::start().await;
    let home = tempfile::tempdir().unwrap();
    let mut bob = daemon.login("bob").await;
    join(&mut bob, "paging").await;
    // 60 messages: the join shows the last 50 (10..59); /history pages before the oldest shown.
    for i in 0..60 {
        say(&mut bob, "paging", &format!("line {i:02}")).await;
    }
    let mut alice = Scripted::user(&daemon, "alice", &["--join", "paging"], home.path());
    alice.wait_for("-- joined #paging").await;
    alice.wait("the newest line", |l| is_msg(l, "paging", "bob", "line 59")).await;
    assert_eq!(alice.count(|l| l.contains("<bob> line ")), 50);
    assert_eq!(alice.count(|l| l.contains("<bob> line 09")), 0);

    alice.send("/history 4").await;
    let at = alice.wait_for("-- #paging: 4 older messages").await;
    alice.wait_from(at, "line 06", |l| is_msg(l, "paging", "bob", "line 06")).await;
    alice.wait_from(at, "line 09", |l| is_msg(l, "paging", "bob", "line 09")).await;
    alice.send("/more").await;
    let at = alice.wait_for("-- #paging: 4 older messages (/more").await;
    let at2 = alice.wait_from(at + 1, "the second page", |l| l.starts_with("-- #paging: 4 older")).await;
    alice.wait_from(at2, "line 02", |l| is_msg(l, "paging", "bob", "line 02")).await;
    alice.wait_from(at2, "line 05", |l| is_msg(l, "paging", "bob", "line 05")).await;
    alice.send("/history 10").await;
    let at3 = alice.wait_for("-- #paging: 2 older messages").await;
    alice.wait_from(at3, "line 00", |l| is_msg(l, "paging", "bob", "line 00")).await;
    alice.send("/more").await;
    alice.wait_for("-- #paging: no older messages").await;
    for i in 0..60 {
        assert_eq!(alice.count(|l| l.ends_with(&format!("<bob> line {i:02}"))), 1, "line {i:02}");
    }

    // End of input: chat quits by itself after its grace period.
    alice.close_stdin();
    assert_eq!(alice.exit_code().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_shows_missed_messages_once() {
    let mut daemon = testkit::Daemon::start().await;
    let home = tempfile::tempdir().unwrap();
    let mut bob = daemon.login("bob").await;
    join(&mut bob, "general").await;
    say(&mut bob, "general", "old news").await;

    let mut alice = Scripted::user(&daemon, "alice", &["--join", "general"], home.path());
    alice.wait("the replayed message", |l| is_msg(l, "general", "bob", "old news")).await;
    say(&mut bob, "general", "seen live").await;
    alice.wait("the live message", |l| is_msg(l, "general", "bob", "seen live")).await;
    alice.send("mine before").await;
    alice.wait("alice's own message", |l| is_msg(l, "general", "alice", "mine before")).await;

    // Freeze the client so the messages posted after the restart are certainly missed, not seen
    // live: it notices the dropped connection only once it runs again.
    let pid = alice.child.id().unwrap();
    signal(pid, "STOP");
    daemon.restart().await;
    let mut bob = daemon.login("bob").await;
    join(&mut bob, "general").await;
    say(&mut bob, "general", "missed one").await;
    say(&mut bob, "general", "missed two").await;
    signal(pid, "CONT");

    let at = alice.wait_for("-- rejoined #general: 2 missed messages").await;
    alice.wait_from(at, "the first missed message", |l| is_msg(l, "general", "bob", "missed one")).await;
    alice.wait_from(at, "the second missed message", |l| is_msg(l, "general", "bob", "missed two")).await;

    // Live again, both ways.
    say(&mut bob, "general", "after the restart").await;
    alice.wait("a live message after reconnecting", |l| is_msg(l, "general", "bob", "after the restart")).await;
    alice.send("mine after").await;
    expect_line(&mut bob, "alice's message after reconnecting", |l| {
        l.as_message().is_some_and(|m| m.sender == "alice" && m.text == "mine after")
    })
    .await;
    alice.wait("alice's own message after", |l| is_msg(l, "general", "alice", "mine after")).await;

    let all = alice.snapshot().join("\n");
    for (sender, text) in [
        ("bob", "old news"),
        ("bob", "seen live"),
        ("alice", "mine before"),
        ("bob", "missed one"),
        ("bob", "missed two"),
        ("bob", "after the restart"),
        ("alice", "mine after"),
    ] {
        assert_eq!(alice.count(|l| is_msg(l, "general", sender, text)), 1, "{text:?} exactly once:\n{all}");
    }
    assert!(alice.count(|l| l.starts_with("!! disconnected")) >= 1, "{all}");

    alice.send("/quit").await;
    assert_eq!(alice.exit_code().await, 0);
}

/// True when `line` shows a library's raw error text rather than words.
fn raw_error_text(line: &str) -> bool {
    ["close_notify", "docs.rs", "os error", "rustls", "["].iter().any(|raw| line.contains(raw))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_server_is_told_in_words() {
    let mut daemon = testkit::Daemon::start().await;
    let home = tempfile::tempdir().unwrap();
    let fast = ["--join", "general", "--max-backoff", "0.5"];
    let mut alice = Scripted::user(&daemon, "alice", &fast, home.path());
    alice.wait_for("-- joined #general (1 member)").await;
    let mut bob = Scripted::user(&daemon, "bob", &[&fast[..], &["--verbose"]].concat(), home.path());
    bob.wait_for("-- joined #general (2 members)").await;

    // The daemon dies without a word (no TLS close_notify): said in words; the library's text
    // only with --verbose.
    daemon.kill9().await;
    let at = alice.wait_for("!! disconnected: ").await;
    assert_eq!(alice.snapshot()[at], "!! disconnected: the server closed the connection");
    let at = bob.wait_for("!! disconnected: ").await;
    let line = bob.snapshot()[at].clone();
    assert!(line.starts_with("!! disconnected: the server closed the connection [") && line.ends_with(']'), "{line}");
    // Nobody listens any more: refused, in words.
    alice.wait_for("-- reconnect failed: the connection was refused").await;
    let at = bob.wait_for("-- reconnect failed: the connection was refused").await;
    assert!(bob.snapshot()[at].contains("os error"), "{}", bob.snapshot()[at]);

    // Back, then a graceful stop: the server's reason, in words.
    daemon.start_again().await;
    alice.wait_for("-- rejoined #general").await;
    bob.wait_for("-- rejoined #general").await;
    assert!(daemon.stop().await, "chatd stops cleanly");
    alice.wait_for("!! disconnected: the server closed the connection (server shutting down)").await;

    let all = alice.snapshot().join("\n");
    assert_eq!(alice.count(raw_error_text), 0, "raw library text without --verbose:\n{all}");
    assert!(!alice.stderr().contains("close_notify"), "{}", alice.stderr());
    for c in [&mut alice, &mut bob] {
        c.send("/quit").await;
        assert_eq!(c.exit_code().await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_on_first_use_and_changed_certificate() {
    let daemon = testkit::Daemon::start().await;
    let home = tempfile::tempdir().unwrap();
    let known = home.path().join("chatd").join("known_hosts");
    let base = [daemon.addr.as_str(), "--user", "alice", "--register", "--eof-grace", "0"];

    // Unknown certificate, no terminal to ask on: refused, with the fingerprint and what to do.
    let mut c = Scripted::start(&base, Some("password-alice"), home.path());
    c.close_stdin();
    assert_ne!(c.exit_code().await, 0);
    let fp = daemon.fingerprint.to_uppercase();
    assert!(c.stderr().contains(&fp) && c.stderr().contains("--fingerprint"), "{}", c.stderr());
    assert!(!known.exists());

    // --trust-new accepts it and remembers it.
    let mut c = Scripted::start(&[&base[..], &["--trust-new"]].concat(), Some("password-alice"), home.path());
    c.wait_for("-- logged in as alice").await;
    c.close_stdin();
    assert_eq!(c.exit_code().await, 0);
    let text = std::fs::read_to_string(&known).unwrap();
    assert!(text.contains(&daemon.addr) && text.to_uppercase().contains(&fp), "{text}");

    // Next time it is pinned: no flag needed.
    let mut c = Scripted::start(&base, Some("password-alice"), home.path());
    c.wait_for("-- logged in as alice").await;
    c.send("/quit").await;
    assert_eq!(c.exit_code().await, 0);

    // A different certificate for the same address is refused loudly.
    let other = "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF";
    std::fs::write(&known, format!("{} {other}\n", daemon.addr)).unwrap();
    let mut c = Scripted::start(&base, Some("password-alice"), home.path());
    c.close_stdin();
    assert_ne!(c.exit_code().await, 0);
    assert!(c.stderr().contains("HAS CHANGED") && c.stderr().contains(&fp), "{}", c.stderr());
    assert_eq!(c.count(|l| l.contains("logged in")), 0);

    // A fingerprint given on the command line, as chatd prints it.
    let mut c = Scripted::start(
        &[&base[..], &["--fingerprint", &daemon.fingerprint]].concat(),
        Some("password-alice"),
        home.path(),
    );
    c.wait_for("-- logged in as alice").await;
    c.send("/quit").await;
    assert_eq!(c.exit_code().await, 0);

    // No password: refused without prompting.
    let ca = daemon.ca_file.to_str().unwrap();
    let mut c = Scripted::start(&[&base[..], &["--ca", ca]].concat(), None, home.path());
    assert_ne!(c.exit_code().await, 0);
    assert!(c.stderr().contains("CHAT_PASSWORD"), "{}", c.stderr());

    // --password-file works, and a wrong password is refused.
    let pwfile = home.path().join("pw");
    std::fs::write(&pwfile, "password-alice\n").unwrap();
    let mut c = Scripted::start(
        &[&base[..], &["--ca", ca, "--password-file", pwfile.to_str().unwrap()]].concat(),
        None,
        home.path(),
    );
    c.wait_for("-- logged in as alice").await;
    c.send("/quit").await;
    assert_eq!(c.exit_code().await, 0);
    let mut c =
        Scripted::start(&[daemon.addr.as_str(), "--ca", ca, "--user", "alice"], Some("wrong-password"), home.path());
    assert_ne!(c.exit_code().await, 0);
    assert!(c.stderr().contains("wrong user name or password"), "{}", c.stderr());
}
