//! `chatd backup`: a copy of the live database taken while clients post (SQLite's online backup
//! API), opened by a fresh chatd, holds every message acknowledged before the backup started.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use testkit::{bin_path, call, Daemon};

const WRITERS: usize = 3;

/// Every message text of `room`, oldest first, paged back with HISTORY BEFORE.
async fn history_texts(d: &Daemon, room: &str) -> Vec<String> {
    testkit::whole_history(d, room).await.into_iter().map(|r| r.text.unwrap()).collect()
}

#[tokio::test]
async fn backup_while_clients_post_holds_every_acknowledged_message() {
    let mut d = Daemon::start().await;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let mut conn = d.member(&format!("poster{w}"), "backed").await;
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let text = format!("w{w} m{i}");
                let r = call(&mut conn, &format!("MSG backed {text}")).await;
                assert_eq!(r.fin.code, 200, "{r:?}");
                acked.lock().unwrap().push(text);
                i += 1;
            }
            i
        }));
    }
    // Let some messages be stored, then back up while the writers keep going.
    while acked.lock().unwrap().len() < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before_backup: Vec<String> = acked.lock().unwrap().clone();
    let dest = d.dir.join("backup").join("chatd-backup.db");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let out = tokio::process::Command::new(bin_path("chatd"))
        .arg("--config")
        .arg(d.config_path())
        .arg("backup")
        .arg(&dest)
        .output()
        .await
        .expect("run chatd backup");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "chatd backup failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    let after_backup = acked.lock().unwrap().len();
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in writers {
        total += w.await.expect("writer");
    }
    assert!(after_backup > before_backup.len(), "the clients kept posting during the backup");
    assert!(stdout.starts_with("chatd backup ") && stdout.contains(" messages, "), "{stdout}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777, 0o600, "backup is owner-only");

    // The daemon served throughout and still does.
    let mut late = d.member("late", "backed").await;
    assert_eq!(call(&mut late, "MSG backed after the backup").await.fin.code, 200);
    assert!(d.stop().await, "chatd stops cleanly; log:\n{}", d.log());

    // A fresh chatd on the copy has every message acknowledged before the backup started, each
    // once, and nothing acknowledged after the backup ended.
    let copy = Daemon::start_with(&format!("[storage]\ndb = {:?}\n", dest.display().to_string())).await;
    let texts = history_texts(&copy, "backed").await;
    let stored: HashSet<&str> = texts.iter().map(String::as_str).collect();
    assert_eq!(stored.len(), texts.len(), "no message twice");
    for text in &before_backup {
        assert!(stored.contains(text.as_str()), "acknowledged before the backup, missing from it: {text}");
    }
    assert!(!stored.contains("after the backup"));
    assert!(texts.len() <= total, "the copy holds only posted messages");
    assert!(stdout.contains(&format!(": {} messages, ", texts.len())), "summary {stdout:?} vs {} stored", texts.len());
}

#[tokio::test]
async fn backup_refuses_a_file_that_is_not_chatds() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("other.db");
    std::fs::write(&foreign, b"").unwrap();
    let out = std::process::Command::new(bin_path("chatd"))
        .arg("--db")
        .arg(&foreign)
        .arg("backup")
        .arg(dir.path().join("copy.db"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("not a chatd database"), "{stderr}");
    assert!(!dir.path().join("copy.db").exists());
}
