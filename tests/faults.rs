//! Storage faults: while the database is locked by another process, or full, a post gets `500`
//! and a log line, nothing of it is stored, everyone else keeps being served, and posting works
//! again once the fault clears. A damaged or foreign database file at start is a clear error and
//! a non-zero exit, never a silent reset.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rusqlite::Connection;
use testkit::{bin_path, call, expect_line, merged_config, Daemon};

fn texts(r: &chatd_proto::client::Response) -> Vec<String> {
    r.data.iter().map(|l| l.text.clone().unwrap()).collect()
}

#[tokio::test]
async fn a_locked_database_fails_posts_with_500_and_recovers_when_released() {
    let mut d = Daemon::start_with("[storage]\nbusy_timeout_ms = 200").await;
    let mut alice = d.member("alice", "general").await;
    let mut bob = d.member("bob", "general").await;
    assert_eq!(call(&mut alice, "MSG general before").await.fin.code, 200);

    // Another process takes the write lock and keeps it.
    let db = Connection::open(d.dir.join("data/chatd.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db.execute_batch("BEGIN EXCLUSIVE").unwrap();

    let r = call(&mut alice, "@x MSG general while locked").await;
    assert_eq!((r.fin.code, r.fin.verb.as_str(), r.fin.label.as_deref()), (500, "MSG", Some("x")), "{:?}", r.fin);
    assert!(r.fin.text.as_deref().unwrap().contains("locked"), "says why: {:?}", r.fin.text);
    assert!(d.log().contains("storage commit failed"), "a log line");
    // Creating a room or an account needs the database too: 500, and nothing half-made.
    assert_eq!(call(&mut bob, "JOIN newroom").await.fin.code, 500);
    let mut carol = d.client().await;
    assert_eq!(call(&mut carol, "REGISTER carol password1").await.fin.code, 500);
    // Everything that does not write goes on.
    assert_eq!(call(&mut bob, "PING alive").await.fin.code, 200);
    let h = call(&mut bob, "HISTORY general").await;
    assert_eq!(texts(&h), ["before"], "the failed message was taken back");
    assert!(!call(&mut bob, "ROOMS").await.data.iter().any(|r| r.fields[0] == "newroom"));

    db.execute_batch("COMMIT").unwrap();
    drop(db);
    assert_eq!(call(&mut alice, "MSG general after").await.fin.code, 200);
    expect_line(&mut bob, "the message after", |l| l.as_message().is_some_and(|m| m.text == "after")).await;
    assert_eq!(call(&mut bob, "JOIN newroom").await.fin.code, 200);
    assert_eq!(call(&mut carol, "REGISTER carol password1").await.fin.code, 200);
    // And the database agrees: restart and read it back.
    drop((alice, bob, carol));
    d.restart().await;
    let mut check = d.member("dave", "general").await;
    assert_eq!(texts(&call(&mut check, "HISTORY general").await), ["before", "after"]);
}

#[tokio::test]
async fn a_full_database_fails_posts_with_500_and_keeps_serving() {
    let mut d = Daemon::start_with("[storage]\nmax_pages = 40").await;
    let mut alice = d.member("alice", "general").await;
    let mut bob = d.member("bob", "general").await;
    let big = "x".repeat(1900);
    let mut stored = Vec::new();
    let failed = loop {
        let i = stored.len();
        assert!(i < 1000, "the database never filled up");
        let r = call(&mut alice, &format!("MSG general {i} {big}")).await;
        match r.fin.code {
            200 => stored.push(format!("{i} {big}")),
            500 => break format!("{i} {big}"),
            other => panic!("unexpected {other}: {:?}", r.fin),
        }
    };
    assert!(stored.len() >= 5, "some messages fit");
    assert!(d.log().contains("storage commit failed"));
    assert!(d.log().contains("full"), "the log says the database is full");
    // Reading, chatting about it and joining existing rooms still work.
    assert_eq!(call(&mut bob, "PING alive").await.fin.code, 200);
    let h = call(&mut bob, "HISTORY general LIMIT 5").await;
    assert_eq!(texts(&h), stored[stored.len() - 5..].to_vec(), "the failed message is not in history");
    assert_eq!(call(&mut bob, "JOIN random").await.fin.code, 200);
    assert_eq!(call(&mut alice, &format!("MSG general again {big}")).await.fin.code, 500, "still full");

    // Room to grow (the operator freed space): posting works again, nothing was lost or half-made.
    drop((alice, bob));
    let config = std::fs::read_to_string(d.config_path()).unwrap().replace("max_pages = 40", "max_pages = 0");
    std::fs::write(d.config_path(), config).unwrap();
    d.restart().await;
    let mut alice = d.member("alice", "general").await;
    assert_eq!(call(&mut alice, "MSG general there is room now").await.fin.code, 200);
    let mut all = Vec::new();
    let mut before = None::<String>;
    loop {
        let cmd = before.as_ref().map_or("HISTORY general".to_string(), |b| format!("HISTORY general BEFORE {b}"));
        let page = call(&mut alice, &cmd).await;
        if page.data.is_empty() {
            break;
        }
        before = Some(page.data[0].fields[1].clone());
        let mut t = texts(&page);
        t.append(&mut all);
        all = t;
    }
    let mut want = stored.clone();
    want.push("there is room now".into());
    assert_eq!(all.len(), want.len());
    assert!(all == want, "history after the fault is exactly the acknowledged messages");
    assert!(!all.contains(&failed));
}

/// Runs chatd on `db` until it exits (it must, promptly); returns (success, stderr).
fn run_on(db: &Path) -> (bool, String) {
    let dir = db.parent().unwrap();
    let config = merged_config(&format!("[storage]\ndb = {:?}", db.to_str().unwrap()));
    std::fs::write(dir.join("chatd.toml"), config).unwrap();
    let mut child = Command::new(bin_path("chatd"))
        .arg("--config")
        .arg(dir.join("chatd.toml"))
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + testkit::PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("chatd kept running on a bad database {}", db.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_refused(db: &Path, why: &str) {
    let before = std::fs::read(db).unwrap();
    let (ok, stderr) = run_on(db);
    assert!(!ok, "chatd started on {why}");
    assert!(stderr.contains("is not a chatd database") && stderr.contains("refusing to touch it"), "{why}: {stderr}");
    assert!(stderr.contains(db.to_str().unwrap()), "names the file: {stderr}");
    assert_eq!(std::fs::read(db).unwrap(), before, "{why}: the file was changed");
}

#[test]
fn a_file_of_random_bytes_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("chatd.db");
    let noise: Vec<u8> = (0..64 * 1024).map(|_| rand::random::<u8>()).collect();
    std::fs::write(&db, noise).unwrap();
    assert_refused(&db, "random bytes");
}

#[test]
fn another_programs_sqlite_database_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("notes.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');").unwrap();
    drop(conn);
    assert_refused(&db, "a foreign SQLite database");
    let conn = Connection::open(&db).unwrap();
    let body: String = conn.query_row("SELECT body FROM notes", [], |r| r.get(0)).unwrap();
    assert_eq!(body, "keep me");
}

#[tokio::test]
async fn a_damaged_chatd_database_is_refused() {
    let mut d = Daemon::start().await;
    {
        let mut alice = d.member("alice", "general").await;
        for i in 0..300 {
            call(&mut alice, &format!("MSG general message {i} {}", "y".repeat(200))).await;
        }
    }
    assert!(d.stop().await, "clean stop (the WAL is checkpointed into the file)");
    let db = d.dir.join("data/chatd.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 4096;
    assert!(bytes.len() > 10 * page);
    // Scribble over a few b-tree pages in the middle of the file.
    for p in [3, 5, 8] {
        bytes[p * page..(p + 1) * page].fill(0xA5);
    }
    std::fs::write(&db, &bytes).unwrap();
    let before = std::fs::read(&db).unwrap();
    let (ok, stderr) = run_on(&db);
    assert!(!ok, "chatd started on a damaged database");
    assert!(stderr.contains("chatd: error") && stderr.contains("is damaged"), "{stderr}");
    assert!(stderr.contains("restore it from a backup"), "{stderr}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "the damaged file was changed");
}
