//! Crash durability: several clients pipeline MSG lines, the daemon is `kill -9`ed mid-burst,
//! restarted on the same database, and every message whose `200 MSG` the client received must be
//! in HISTORY (paged back with BEFORE), in order, exactly once, under the same id. Repeated over
//! several kills on the same database, so recovery after a crash is itself crashed into.

use std::collections::{HashMap, HashSet};

use testkit::{call, Daemon};

const KILLS: usize = 4;
const CLIENTS: usize = 4;
const PER_CLIENT: usize = 300;
/// How many acknowledgements (all clients together) to wait for before each kill.
const KILL_AFTER: [usize; KILLS] = [40, 250, 5, 120];

/// One message as HISTORY shows it.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    id: u64,
    sender: String,
    text: String,
}

/// Every message of `room`, oldest first, paged back with HISTORY BEFORE.
async fn whole_history(d: &Daemon, room: &str) -> Vec<Stored> {
    let lines = testkit::whole_history(d, room).await;
    lines
        .iter()
        .map(|r| Stored {
            id: r.fields[1].parse().unwrap(),
            sender: r.fields[3].clone(),
            text: r.text.clone().unwrap(),
        })
        .collect()
}

/// Posts one connection may have waiting for their commit (the daemon's pipelining bound).
const MAX_IN_FLIGHT: usize = 64;

#[tokio::test]
async fn every_acknowledged_message_survives_kill_9_mid_burst() {
    let mut d = Daemon::start().await;
    let mut all_acked: Vec<(u64, String, String)> = Vec::new(); // id, sender, text
    for (round, kill_after) in KILL_AFTER.iter().enumerate() {
        let acked = testkit::burst_and_kill(&mut d, CLIENTS, PER_CLIENT, round, *kill_after).await;
        d.start_again().await;
        let history = whole_history(&d, "dur").await;

        // Order and uniqueness: ids strictly increase, no text twice.
        assert!(history.windows(2).all(|w| w[0].id < w[1].id), "round {round}: history out of order");
        let mut texts = HashSet::new();
        assert!(history.iter().all(|m| texts.insert(m.text.clone())), "round {round}: a message stored twice");

        // Every acknowledged message, of every round so far, is there once, under its id.
        for (c, list) in acked.iter().enumerate() {
            assert!(list.windows(2).all(|w| w[0].0 < w[1].0), "acks in order");
            all_acked.extend(list.iter().map(|(id, text)| (*id, format!("w{c}"), text.clone())));
        }
        let by_text: HashMap<&str, &Stored> = history.iter().map(|m| (m.text.as_str(), m)).collect();
        for (id, sender, text) in &all_acked {
            let m = by_text.get(text.as_str()).unwrap_or_else(|| panic!("round {round}: acknowledged {text:?} lost"));
            assert_eq!((m.id, &m.sender), (*id, sender), "{text}");
        }

        // Commits follow each connection's order, so of this round's lines a client has a prefix
        // stored: its acknowledged ones, plus at most the posts it had in flight (pipelined, up to
        // 64) whose acknowledgements the kill cut off. Never a gap, never a later line alone.
        for (c, list) in acked.iter().enumerate() {
            let prefix = format!("r{round} c{c} m");
            let stored: Vec<usize> =
                history.iter().filter_map(|m| m.text.strip_prefix(&prefix)).map(|i| i.parse().unwrap()).collect();
            let n = list.len();
            assert!(
                stored == (0..stored.len()).collect::<Vec<_>>() && (n..=n + MAX_IN_FLIGHT).contains(&stored.len()),
                "round {round} client {c}: {n} acknowledged, stored {stored:?}"
            );
        }
        eprintln!("round {round}: {} acknowledged in all, {} stored", all_acked.len(), history.len());
    }
    // After all that, the daemon works normally.
    let mut c = d.member("after", "dur").await;
    assert_eq!(call(&mut c, "MSG dur still here").await.fin.code, 200);
}
