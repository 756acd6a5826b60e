//! chatd on PostgreSQL (`storage.backend = "postgres"`, docs/cluster.md): the real binary, over
//! TLS, on a throwaway PostgreSQL server the test starts (testkit::postgres). The same guarantees
//! as on SQLite: conversations, history and the last 50 on JOIN, direct messages, topics,
//! moderation, accounts and roles across restarts, and no acknowledged message lost to `kill -9`.
//! PostgreSQL missing fails these tests (scripts/test.sh installs it); they never skip.

use std::collections::{HashMap, HashSet};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use chatd_proto::line::{Reply, ServerLine};
use testkit::postgres::PgServer;
use testkit::{call, code, expect_line, post, Daemon, PATIENCE};

/// A daemon on `pg`'s database `db` (created here), with `extra` TOML merged in. `extra` follows
/// the `[storage]` keys: lines before its first table header are more `[storage]` keys.
async fn daemon_on(pg: &PgServer, db: &str, extra: &str) -> Daemon {
    pg.create_database(db);
    Daemon::start_with(&format!("[storage]\nbackend = \"postgres\"\npostgres_url = \"{}\"\n{extra}", pg.url_for(db)))
        .await
}

/// The (id, sender, text) of `130` lines.
fn stored(lines: &[Reply]) -> Vec<(u64, String, String)> {
    lines
        .iter()
        .filter(|r| r.code == 130)
        .map(|r| (r.fields[1].parse().unwrap(), r.fields[3].clone(), r.text.clone().unwrap_or_default()))
        .collect()
}

fn ids(lines: &[Reply]) -> Vec<u64> {
    stored(lines).into_iter().map(|(id, _, _)| id).collect()
}

#[tokio::test]
async fn a_conversation_on_postgres_history_dms_and_topics_survive_a_restart() {
    let pg = PgServer::start();
    let mut d = daemon_on(&pg, "conversation", "").await;
    let mut alice = d.member("alice", "lounge").await;
    let mut bob = d.member("bob", "lounge").await;

    // Messages reach members live and are stored in order.
    let mut sent = Vec::new();
    for i in 0..60 {
        sent.push(post(&mut alice, "lounge", &format!("note {i}")).await);
    }
    assert!(sent.windows(2).all(|w| w[0] < w[1]), "ids increase: {sent:?}");
    let live = expect_line(
        &mut bob,
        "alice's last note",
        |l| matches!(l, ServerLine::Event(e) if e.name == "MSG" && e.text.as_deref() == Some("note 59")),
    )
    .await;
    assert!(matches!(live, ServerLine::Event(e) if e.fields[1] == sent[59].to_string()));
    let history = testkit::whole_history(&d, "lounge").await;
    assert_eq!(ids(&history), sent, "HISTORY pages back through all 60, oldest first");

    // A joiner gets the last 50.
    let mut carol = d.login("carol").await;
    let replay = call(&mut carol, "JOIN lounge").await;
    assert_eq!(ids(&replay.data), sent[10..], "the last 50 on JOIN");

    // A direct message and a topic.
    assert_eq!(code(&mut alice, "DM bob just us").await, 200);
    assert_eq!(code(&mut alice, "TOPIC lounge quiet please").await, 200);

    d.restart().await;

    // Accounts (passwords), rooms, history, the replay, DMs and the topic are all there.
    assert_eq!(ids(&testkit::whole_history(&d, "lounge").await), sent, "the same history after a restart");
    let mut dave = d.login("dave").await;
    let replay = call(&mut dave, "JOIN lounge").await;
    assert_eq!(ids(&replay.data), sent[10..], "the last 50 on JOIN, read back from PostgreSQL");
    let mut bob = d.login("bob").await;
    let dm = call(&mut bob, "HISTORY @alice").await;
    assert_eq!(stored(&dm.data), [(stored(&dm.data)[0].0, "alice".to_string(), "just us".to_string())]);
    let topic = call(&mut dave, "TOPIC lounge").await;
    assert_eq!(
        (topic.fin.fields[..2].to_vec(), topic.fin.text.as_deref()),
        (vec!["lounge".to_string(), "alice".to_string()], Some("quiet please"))
    );
    let rooms = call(&mut dave, "ROOMS").await;
    assert!(rooms.data.iter().any(|r| r.fields[0] == "lounge"), "{:?}", rooms.data);

    // Ids go on increasing after the restart.
    let mut alice = d.member("alice", "lounge").await;
    let next = post(&mut alice, "lounge", "after the restart").await;
    assert!(next > *sent.last().unwrap());

    // The rows are in PostgreSQL, where the schema version says what chatd made.
    assert_eq!(pg.psql("conversation", "SELECT COUNT(*) FROM messages"), "62");
    assert_eq!(pg.psql("conversation", "SELECT version FROM chatd_schema"), "2");
}

#[tokio::test]
async fn moderation_on_postgres_roles_bans_deletions_and_disabled_accounts_survive_a_restart() {
    let pg = PgServer::start();
    let mut d = daemon_on(&pg, "moderation", "[admin]\nusers = [\"root\"]\n").await;
    let mut root = d.login("root").await;
    let mut alice = d.member("alice", "lounge").await;
    d.login("bob").await;
    d.login("carol").await;
    d.login("dave").await;
    let first = post(&mut alice, "lounge", "one").await;
    let spam = post(&mut alice, "lounge", "buy cheap stuff").await;
    let last = post(&mut alice, "lounge", "three").await;
    assert_eq!(code(&mut alice, "OP lounge bob").await, 200);
    assert_eq!(code(&mut alice, "BAN lounge carol rude").await, 200);
    assert_eq!(code(&mut alice, &format!("DELETE lounge {spam}")).await, 200);
    assert_eq!(code(&mut root, "DISABLE dave testing").await, 200);

    d.restart().await;
    let mut bob = d.member("bob", "lounge").await;
    let names = call(&mut bob, "NAMES lounge").await;
    let shown: Vec<Vec<String>> = names.data.iter().map(|r| r.fields.clone()).collect();
    assert!(shown.contains(&vec!["lounge".into(), "bob".into(), "op".into()]), "{shown:?}");
    assert_eq!(ids(&call(&mut bob, "HISTORY lounge").await.data), [first, last], "the deleted one stays deleted");
    let mut carol = d.login("carol").await;
    assert_eq!(code(&mut carol, "JOIN lounge").await, 430, "still banned");
    let mut dave = d.client().await;
    assert_eq!(code(&mut dave, "LOGIN dave password-dave").await, 431, "still disabled");
    assert_eq!(code(&mut bob, "UNBAN lounge carol").await, 200, "bob is still an operator");
    assert_eq!(code(&mut carol, "JOIN lounge").await, 200);

    let mut root = d.login("root").await;
    let audit = call(&mut root, "AUDIT").await;
    let actions: Vec<&str> = audit.data.iter().map(|r| r.fields[2].as_str()).collect();
    assert_eq!(actions, ["unban", "disable", "delete", "ban", "op"], "newest first");
    assert_eq!(code(&mut root, "ENABLE dave").await, 200);
    assert_eq!(code(&mut dave, "LOGIN dave password-dave").await, 200);
}

/// Several clients pipeline posts; chatd is `kill -9`ed mid-burst and started again on the same
/// database, twice: every acknowledged message is in HISTORY, once, in order, under its id (the
/// approach of tests/durability.rs, on PostgreSQL).
#[tokio::test]
async fn every_acknowledged_message_survives_kill_9_on_postgres() {
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 300;
    const MAX_IN_FLIGHT: usize = 64;
    let pg = PgServer::start();
    let mut d = daemon_on(&pg, "durability", "").await;
    let mut all_acked: Vec<(u64, String, String)> = Vec::new();
    for (round, kill_after) in [150usize, 20].into_iter().enumerate() {
        let acked = testkit::burst_and_kill(&mut d, CLIENTS, PER_CLIENT, round, kill_after).await;
        d.start_again().await;
        let history = stored(&testkit::whole_history(&d, "dur").await);
        assert!(history.windows(2).all(|w| w[0].0 < w[1].0), "round {round}: history out of order");
        let mut texts = HashSet::new();
        assert!(history.iter().all(|m| texts.insert(m.2.clone())), "round {round}: a message stored twice");
        for (c, list) in acked.iter().enumerate() {
            assert!(list.windows(2).all(|w| w[0].0 < w[1].0), "acks in order");
            all_acked.extend(list.iter().map(|(id, text)| (*id, format!("w{c}"), text.clone())));
        }
        let by_text: HashMap<&str, &(u64, String, String)> = history.iter().map(|m| (m.2.as_str(), m)).collect();
        for (id, sender, text) in &all_acked {
            let m = by_text.get(text.as_str()).unwrap_or_else(|| panic!("round {round}: acknowledged {text:?} lost"));
            assert_eq!((m.0, &m.1), (*id, sender), "{text}");
        }
        // Of this round's lines each client has a prefix stored: never a gap.
        for (c, list) in acked.iter().enumerate() {
            let prefix = format!("r{round} c{c} m");
            let kept: Vec<usize> =
                history.iter().filter_map(|m| m.2.strip_prefix(&prefix)).map(|i| i.parse().unwrap()).collect();
            let n = list.len();
            assert!(
                kept == (0..kept.len()).collect::<Vec<_>>() && (n..=n + MAX_IN_FLIGHT).contains(&kept.len()),
                "round {round} client {c}: {n} acknowledged, stored {kept:?}"
            );
        }
        eprintln!("round {round}: {} acknowledged in all, {} stored", all_acked.len(), history.len());
    }
    let mut c = d.member("after", "dur").await;
    assert_eq!(code(&mut c, "MSG dur still here").await, 200);
}

/// The configuration is checked (`--check-config`), one chatd holds a database (a second one is
/// refused, saying why), and `chatd backup` points to pg_dump.
#[tokio::test]
async fn a_postgres_store_is_checked_held_by_one_chatd_and_backed_up_with_pg_dump() {
    let pg = PgServer::start();
    let d = daemon_on(&pg, "held", "").await;
    let chatd = |args: &[&str]| {
        std::process::Command::new(testkit::bin_path("chatd"))
            .arg("--config")
            .arg(d.config_path())
            .args(args)
            .current_dir(&d.dir)
            .output()
            .unwrap()
    };
    let ok = chatd(&["--check-config"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    // A second chatd on the same database (other ports) refuses to start.
    let second = chatd(&["--listen", "127.0.0.1:0", "--irc-listen", ""]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(err.contains("another chatd is using this database"), "{err}");
    assert!(!err.contains("postgres@"), "the URL is not echoed: {err}");

    let backup = chatd(&["backup", "copy.db"]);
    let err = String::from_utf8_lossy(&backup.stderr);
    assert!(!backup.status.success() && err.contains("pg_dump"), "{err}");

    // A bad URL is caught by --check-config, before anything connects.
    let bad = d.dir.join("bad.toml");
    std::fs::write(&bad, "[storage]\nbackend = \"postgres\"\npostgres_url = \"host=127.0.0.1 port=nope\"\n").unwrap();
    let out = std::process::Command::new(testkit::bin_path("chatd"))
        .arg("--config")
        .arg(&bad)
        .arg("--check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("storage.postgres_url"), "{err}");
}

/// `GET /health` on the metrics listener: (status, body).
async fn health(d: &Daemon) -> (u16, String) {
    let addr = d.metrics_addr.clone().expect("a metrics listener");
    let fetch = async {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect to the metrics listener");
        let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        tcp.read_to_string(&mut raw).await.unwrap();
        raw
    };
    let raw = tokio::time::timeout(PATIENCE, fetch).await.expect("HTTP response in time");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    (head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status"), body.to_string())
}

/// PostgreSQL going away: posts get `500` (nothing stored), the health check says 503 with the
/// reason, reads of what needs no store go on; once it is back, chatd reconnects (taking its lock
/// again) and everything works, with nothing lost that was acknowledged.
#[tokio::test]
async fn postgres_going_away_fails_writes_with_500_and_503_and_chatd_recovers_when_it_is_back() {
    let pg = PgServer::start();
    let d = daemon_on(&pg, "outage", "[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    assert_eq!(health(&d).await, (200, "ok: the store is writable\n".to_string()));
    let mut alice = d.member("alice", "lounge").await;
    let before = post(&mut alice, "lounge", "before the outage").await;

    pg.stop();
    assert_eq!(code(&mut alice, "MSG lounge during the outage").await, 500);
    let (status, body) = health(&d).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("unhealthy: the store cannot write"), "{body}");
    assert_eq!(code(&mut alice, "PING alive").await, 200, "still serving what needs no write");

    pg.start_again();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while health(&d).await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "chatd never wrote again; log:\n{}", d.log());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let after = post(&mut alice, "lounge", "after the outage").await;
    let history = stored(&call(&mut alice, "HISTORY lounge").await.data);
    let texts: Vec<(u64, &str)> = history.iter().map(|(id, _, text)| (*id, text.as_str())).collect();
    assert_eq!(texts, [(before, "before the outage"), (after, "after the outage")]);
    assert!(d.log().contains("storage commit failed"), "the failure is logged");
}

/// Another session locking the messages table (a DBA's `LOCK TABLE`): posts wait at most
/// `storage.busy_timeout_ms`, then get `500` (nothing stored); reads go on; once the lock is
/// released posts work again. The same as SQLite's busy timeout (tests/faults.rs).
#[tokio::test]
async fn a_locked_table_fails_posts_with_500_after_the_busy_timeout_and_recovers() {
    use std::io::{BufRead, Write};
    let pg = PgServer::start();
    let d = daemon_on(&pg, "locked", "busy_timeout_ms = 300\n").await;
    let mut alice = d.member("alice", "lounge").await;
    let first = post(&mut alice, "lounge", "before the lock").await;

    let mut dba = pg
        .psql_session("locked")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut sql = dba.stdin.take().unwrap();
    writeln!(sql, "BEGIN; LOCK TABLE messages IN EXCLUSIVE MODE; SELECT 'locked';").unwrap();
    let mut out = std::io::BufReader::new(dba.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "locked");

    assert_eq!(code(&mut alice, "MSG lounge while locked").await, 500);
    let history = call(&mut alice, "HISTORY lounge").await;
    assert_eq!((history.fin.code, ids(&history.data)), (200, vec![first]), "reads go on");

    writeln!(sql, "COMMIT;").unwrap();
    drop(sql);
    dba.wait().unwrap();
    let next = post(&mut alice, "lounge", "after the lock").await;
    let texts: Vec<String> = stored(&call(&mut alice, "HISTORY lounge").await.data).into_iter().map(|m| m.2).collect();
    assert_eq!(texts, ["before the lock", "after the lock"]);
    assert!(next > first);
    assert!(d.log().contains("lock timeout"), "PostgreSQL's reason is logged");
}
