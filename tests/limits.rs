//! Limits under abuse, with small numbers and loopback not exempt, so the real code paths run:
//! flood control, connection admission (per address, new per minute, global), registration and
//! failed-login throttles, a login storm beside live chat, rooms per connection, members per room,
//! rooms per server, message length. Timing is never asserted; timeouts only guard.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chatd_proto::line::ServerLine;
use common::*;
use testkit::{call, expect_line, next_line, Daemon, PATIENCE};

/// Reads until `n` final replies have arrived; returns every line read.
async fn read_replies(conn: &mut chatd_proto::LineConn, n: usize) -> Vec<ServerLine> {
    let mut lines = Vec::new();
    let mut finals = 0;
    while finals < n {
        let line = next_line(conn).await;
        if matches!(&line, ServerLine::Reply(r) if r.is_final()) {
            finals += 1;
        }
        lines.push(line);
    }
    lines
}

#[tokio::test]
async fn a_fast_sender_is_delayed_and_warned_once_and_a_flooder_is_disconnected() {
    let d = Daemon::start_with(
        "[limits]\nexempt_loopback = false\nflood_burst = 5\nflood_rate_per_sec = 20.0\nflood_max_backlog = 40",
    )
    .await;
    let mut fast = d.client().await; // PING needs no login, and the bucket is still full
                                     // 30 lines at once: the burst runs at once, the rest is delayed (not dropped), one NOTICE.
    let burst: String = (0..30).map(|i| format!("@p{i} PING t{i}\r\n")).collect();
    fast.writer.send_raw(burst.as_bytes()).await.unwrap();
    let lines = read_replies(&mut fast, 30).await;
    let notices: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_event("NOTICE") && event_text(l).is_some_and(|t| t.starts_with("slow down")))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(notices.len(), 1, "one slow-down notice: {lines:?}");
    assert!(notices[0] >= 5, "the burst of 5 ran before the notice: {lines:?}");
    assert!(notices[0] < lines.len() - 1, "some lines were delayed after the notice: {lines:?}");
    let labels: Vec<String> = lines
        .iter()
        .filter_map(|l| match l {
            ServerLine::Reply(r) => {
                assert_eq!(r.code, 200, "delayed lines still run: {r:?}");
                r.label.clone()
            }
            _ => None,
        })
        .collect();
    let want: Vec<String> = (0..30).map(|i| format!("p{i}")).collect();
    assert_eq!(labels, want, "every line answered, in order");
    // Warned once per connection: another burst brings no second notice.
    fast.writer.send_raw(burst.as_bytes()).await.unwrap();
    let again = read_replies(&mut fast, 30).await;
    assert!(!again.iter().any(|l| l.is_event("NOTICE")), "a second notice: {again:?}");

    // A flooder: far more lines than flood_max_backlog at once.
    let mut flooder = d.login("flooder").await;
    let flood: String = (0..500).map(|i| format!("PING f{i}\r\n")).collect();
    flooder.writer.send_raw(flood.as_bytes()).await.unwrap();
    let mut last = None;
    while let Ok(Some(line)) = tokio::time::timeout(PATIENCE, flooder.next()).await.expect("flooder still connected") {
        last = Some(line);
    }
    let last = last.expect("the flooder got lines");
    assert!(last.is_event("BYE") && event_text(&last) == Some("excess flood"), "ended with {last:?}");
    // Everyone else is fine.
    assert_eq!(call(&mut fast, "PING still").await.fin.code, 200);
}

#[tokio::test]
async fn a_client_opening_1000_connections_gets_only_its_share() {
    const OPEN: usize = 1000;
    const PER_ADDRESS: usize = 8;
    let limit = raise_nofile(4096);
    assert!(limit as usize > OPEN + 100, "the open-file limit {limit} is too low for this test");
    let d = Daemon::start_with(&format!(
        "[limits]\nexempt_loopback = false\nmax_connections_per_address = {PER_ADDRESS}\n\
         new_connections_per_address_per_minute = 100000\nmax_connections = 100000"
    ))
    .await;
    let config = tls_config(&d);
    // Open them all first (as fast as the loop goes), then try a TLS session on each, concurrently.
    let mut sockets = Vec::with_capacity(OPEN);
    for _ in 0..OPEN {
        sockets.push(tcp_from(&d, "127.0.0.1").await.expect("the kernel accepts the TCP connection"));
    }
    let mut attempts = tokio::task::JoinSet::new();
    for tcp in sockets {
        let config = config.clone();
        attempts.spawn(async move { session_on(tcp, config).await });
    }
    let mut sessions = Vec::new();
    while let Some(r) = attempts.join_next().await {
        if let Some(conn) = r.unwrap() {
            sessions.push(conn);
        }
    }
    assert_eq!(sessions.len(), PER_ADDRESS, "only the per-address share gets a TLS session");
    assert!(d.log().contains("too many connections from your address"));
    // The daemon still serves: another address at once, and this one once its connections close.
    let mut other = client_from(&d, "127.0.0.2").await;
    assert_eq!(call(&mut other, "PING ok").await.fin.code, 200);
    for s in &mut sessions {
        assert_eq!(call(s, "PING mine").await.fin.code, 200, "the admitted sessions work");
    }
    drop(sessions);
    let mut again = client_from_eventually(&d, "127.0.0.1").await;
    assert_eq!(call(&mut again, "REGISTER normal password1").await.fin.code, 200);
}

#[tokio::test]
async fn new_connections_per_address_per_minute() {
    let d = Daemon::start_with(
        "[limits]\nexempt_loopback = false\nmax_connections_per_address = 1000\n\
         new_connections_per_address_per_minute = 10",
    )
    .await;
    let config = tls_config(&d);
    // One after another, each closed before the next: only 10 new ones a minute from one address.
    let mut served = 0;
    for _ in 0..30 {
        let tcp = tcp_from(&d, "127.0.0.3").await.unwrap();
        if let Some(mut conn) = session_on(tcp, config.clone()).await {
            served += 1;
            let _ = conn.writer.shutdown().await;
        }
    }
    assert_eq!(served, 10, "new connections per address per minute");
    assert!(d.log().contains("too many new connections from your address"));
    client_from(&d, "127.0.0.4").await; // another address is not affected
}

#[tokio::test]
async fn the_global_connection_cap_holds_across_addresses() {
    let d = Daemon::start_with(
        "[limits]\nexempt_loopback = false\nmax_connections_per_address = 1000\n\
         new_connections_per_address_per_minute = 100000\nmax_connections = 12",
    )
    .await;
    let config = tls_config(&d);
    let mut held = Vec::new();
    for i in 0..20 {
        let tcp = tcp_from(&d, &format!("127.0.1.{}", i + 1)).await.unwrap();
        if let Some(conn) = session_on(tcp, config.clone()).await {
            held.push(conn);
        }
    }
    assert_eq!(held.len(), 12, "12 connections in all, whatever their addresses");
    assert!(d.log().contains("server full"));
    for c in &mut held {
        assert_eq!(call(c, "PING in").await.fin.code, 200);
    }
    held.truncate(11);
    let mut c = client_from_eventually(&d, "127.0.2.1").await;
    assert_eq!(call(&mut c, "PING ok").await.fin.code, 200, "a freed place is taken again");
}

#[tokio::test]
async fn registrations_are_limited_per_address_and_per_server() {
    let d = Daemon::start_with(
        "[limits]\nexempt_loopback = false\nregistrations_per_address_per_hour = 3\nregistrations_per_hour = 5",
    )
    .await;
    let mut a = client_from(&d, "127.0.0.5").await;
    for i in 1..=3 {
        assert_eq!(call(&mut a, &format!("REGISTER user{i} password1")).await.fin.code, 200);
        assert_eq!(call(&mut a, "LOGOUT").await.fin.code, 200);
    }
    let r = call(&mut a, "REGISTER user4 password1").await;
    assert_eq!(r.fin.code, 412, "{:?}", r.fin);
    let secs: u64 = r.fin.fields[0].parse().unwrap();
    assert!(secs > 60 && secs <= 3600, "the wait is what is left of the hour: {secs}");
    // Another address may register until the server-wide cap.
    let mut b = client_from(&d, "127.0.0.6").await;
    for i in 5..=6 {
        assert_eq!(call(&mut b, &format!("REGISTER user{i} password1")).await.fin.code, 200);
        assert_eq!(call(&mut b, "LOGOUT").await.fin.code, 200);
    }
    assert_eq!(call(&mut b, "REGISTER user7 password1").await.fin.code, 412, "server-wide cap");
    // Logging in is not registering.
    assert_eq!(call(&mut a, "LOGIN user1 password1").await.fin.code, 200);
    assert_eq!(call(&mut b, "LOGIN user5 password1").await.fin.code, 200);
}

#[tokio::test]
async fn failed_logins_back_off_per_account_and_per_address_with_a_growing_delay() {
    let d = Daemon::start_with("[limits]\nexempt_loopback = false\nlogin_failures_before_delay = 3").await;
    for user in ["alice", "bob"] {
        let mut c = client_from(&d, "127.0.0.7").await;
        assert_eq!(call(&mut c, &format!("REGISTER {user} password-{user}")).await.fin.code, 200);
    }
    let mut attacker = client_from(&d, "127.0.0.8").await;
    // An unknown user and a wrong password look the same.
    assert_eq!(call(&mut attacker, "LOGIN nosuchuser wrong-password").await.fin.code, 409);
    assert_eq!(call(&mut attacker, "LOGIN alice wrong-password").await.fin.code, 409);
    assert_eq!(call(&mut attacker, "LOGIN alice wrong-password").await.fin.code, 409);
    // Keep guessing: after each counted failure the next try is turned away with a wait that
    // doubles (1, 2, 4 s); a try while throttled is not counted and does no hashing.
    let mut waits = Vec::new();
    let mut last_failed = true;
    while waits.len() < 3 {
        let r = call(&mut attacker, "LOGIN alice wrong-password").await;
        match r.fin.code {
            409 => last_failed = true,
            412 => {
                let secs: u64 = r.fin.fields[0].parse().unwrap();
                if last_failed {
                    waits.push(secs);
                }
                last_failed = false;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("unexpected {other}: {:?}", r.fin),
        }
    }
    for (i, w) in waits.iter().enumerate() {
        assert!(*w >= 1 && *w <= 1 << i, "wait {i} is {w} s, at most {} s", 1 << i);
    }
    assert!(waits[2] > waits[0], "the delay grows: {waits:?}");
    // While throttled: the right password from elsewhere waits too (per account) ...
    let mut owner = client_from(&d, "127.0.0.9").await;
    let r = call(&mut owner, "LOGIN alice password-alice").await;
    assert_eq!(r.fin.code, 412, "the account is throttled: {:?}", r.fin);
    // ... and the guessing address waits for other accounts too (per address) ...
    assert_eq!(call(&mut attacker, "LOGIN bob password-bob").await.fin.code, 412);
    // ... but other accounts from other addresses do not.
    let mut bob = client_from(&d, "127.0.0.10").await;
    assert_eq!(call(&mut bob, "LOGIN bob password-bob").await.fin.code, 200);
    assert!(d.log().contains("login failed"));
    // Once the wait is over, the owner gets in.
    let secs: u64 = r.fin.fields[0].parse().unwrap();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = call(&mut owner, "LOGIN alice password-alice").await;
        if r.fin.code == 200 {
            break;
        }
        assert_eq!(r.fin.code, 412);
        assert!(tokio::time::Instant::now() < deadline, "never let in");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_login_storm_does_not_starve_chat() {
    let d = Arc::new(Daemon::start_with("[limits]\nargon2_workers = 1\nlogin_failures_before_delay = 1000000").await);
    let mut alice = d.member("alice", "general").await;
    let mut bob = d.member("bob", "general").await;
    for i in 0..30 {
        d.login(&format!("user{i}")).await;
    }
    // 30 connections hammering LOGIN (every try costs an argon2 hash on the single hashing thread).
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicUsize::new(0));
    let mut storm = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (d, stop, attempts) = (d.clone(), stop.clone(), attempts.clone());
        storm.spawn(async move {
            let mut c = d.client().await;
            while !stop.load(Ordering::Relaxed) {
                let r =
                    tokio::time::timeout(Duration::from_secs(120), c.call(&format!("LOGIN user{i} wrong-password")))
                        .await
                        .expect("a storm login got no answer")
                        .unwrap();
                assert_eq!(r.fin.code, 409);
                attempts.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    // Wait until the storm is on (some attempts answered), then talk.
    while attempts.load(Ordering::Relaxed) < 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..20 {
        let ack = call(&mut alice, &format!("MSG general ping {i}")).await;
        assert_eq!(ack.fin.code, 200);
        expect_line(&mut bob, "alice's line", |l| l.as_message().is_some_and(|m| m.text == format!("ping {i}"))).await;
        assert_eq!(call(&mut bob, &format!("MSG general pong {i}")).await.fin.code, 200);
        expect_line(&mut alice, "bob's line", |l| l.as_message().is_some_and(|m| m.text == format!("pong {i}"))).await;
    }
    // The chat finished while the storm was still running (its tasks loop until told to stop).
    assert!(storm.try_join_next().is_none(), "no storm task had finished");
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = storm.join_next().await {
        r.expect("storm task");
    }
    assert!(attempts.load(Ordering::Relaxed) >= 5);
}

#[tokio::test]
async fn ten_thousand_joins_on_one_connection() {
    let d = Daemon::start().await; // rooms_per_connection = 100, the default
    let conn = d.login("joiner").await;
    let (mut reader, mut writer) = conn.split();
    let writing = tokio::spawn(async move {
        let lines: String = (0..10_000).map(|i| format!("@j{i} JOIN r{i}\r\n")).collect();
        writer.send_raw(lines.as_bytes()).await.unwrap();
        writer
    });
    let mut ok = 0;
    for i in 0..10_000 {
        let line = tokio::time::timeout(PATIENCE, reader.next()).await.expect("a reply").unwrap().expect("open");
        let ServerLine::Reply(r) = line else { panic!("unexpected {line:?}") };
        assert_eq!(r.label.as_deref(), Some(format!("j{i}").as_str()), "replies in order");
        if i < 100 {
            assert_eq!(r.code, 200, "JOIN {i}: {r:?}");
            ok += 1;
        } else {
            assert_eq!((r.code, r.fields.as_slice()), (418, [format!("r{i}")].as_slice()), "JOIN {i}");
        }
    }
    assert_eq!(ok, 100);
    let writer = writing.await.unwrap();
    let mut conn = chatd_proto::LineConn { reader, writer };
    assert_eq!(call(&mut conn, "PART r0").await.fin.code, 200);
    assert_eq!(call(&mut conn, "JOIN r100").await.fin.code, 200, "a place freed by PART can be used");
    // The refused JOINs created nothing, and the daemon serves others as before.
    let mut other = d.login("other").await;
    let rooms = call(&mut other, "ROOMS").await;
    assert_eq!(rooms.data.len(), 2 + 101, "general, random and r0..r100");
    assert_eq!(call(&mut other, "JOIN r5").await.fin.fields, ["r5", "2"]);
}

#[tokio::test]
async fn members_per_room_rooms_per_server_and_message_length() {
    let d = Daemon::start_with("[limits]\nmembers_per_room = 3\nmax_rooms = 4\nmax_message_bytes = 100").await;
    let mut members = Vec::new();
    for u in ["a1", "a2", "a3"] {
        members.push(d.member(u, "tiny").await);
    }
    let mut fourth = d.login("a4").await;
    let r = call(&mut fourth, "JOIN tiny").await;
    assert_eq!((r.fin.code, r.fin.fields.as_slice()), (418, ["tiny".to_string()].as_slice()));
    call(&mut members[0], "PART tiny").await;
    assert_eq!(call(&mut fourth, "JOIN tiny").await.fin.code, 200);
    // general, random, tiny exist; one more may be created, then no more.
    assert_eq!(call(&mut fourth, "JOIN fourth").await.fin.code, 200);
    assert_eq!(call(&mut fourth, "JOIN fifth").await.fin.code, 418);
    assert_eq!(call(&mut fourth, "JOIN general").await.fin.code, 200, "existing rooms stay open");
    // The configured message length, to the byte (multi-byte characters count as bytes).
    let exact = format!("MSG tiny {}", "é".repeat(50));
    assert_eq!(call(&mut fourth, &exact).await.fin.code, 200);
    let over = format!("MSG tiny {}x", "é".repeat(50));
    assert_eq!(call(&mut fourth, &over).await.fin.code, 417);
}
