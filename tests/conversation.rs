//! End-to-end conversations over real TLS sockets to a real daemon with a real SQLite database.
//! Each test reads like a transcript from PROTOCOL.md.

use chatd_proto::line::ServerLine;
use testkit::{call, expect_line, next_line, Daemon};

fn is_msg_from(line: &ServerLine, sender: &str, text: &str) -> bool {
    line.as_message().is_some_and(|m| m.sender == sender && m.text == text && !m.is_command)
}

#[tokio::test]
async fn two_users_see_each_others_messages_live() {
    let d = Daemon::start().await;
    let mut alice = d.member("alice", "general").await;
    let mut bob = d.login("bob").await;
    let joined = call(&mut bob, "JOIN #General").await;
    assert_eq!(joined.fin.code, 200);
    assert_eq!(joined.fin.fields, ["general", "2"]);
    expect_line(
        &mut alice,
        "* JOIN general bob",
        |l| matches!(l, ServerLine::Event(e) if e.name == "JOIN" && e.fields == ["general", "bob"]),
    )
    .await;

    let ack = call(&mut alice, "@m1 MSG general hi bob, how are you?").await;
    assert_eq!(ack.fin.label.as_deref(), Some("m1"));
    assert_eq!(ack.fin.code, 200);
    assert_eq!(ack.fin.fields.len(), 3, "room, id, time: {:?}", ack.fin);
    let got = expect_line(&mut bob, "alice's message", |l| is_msg_from(l, "alice", "hi bob, how are you?")).await;
    let m = got.as_message().unwrap();
    assert_eq!(m.room, "general");
    assert_eq!(m.id.unwrap().to_string(), ack.fin.fields[1]);
    assert_eq!(m.time, ack.fin.fields[2]);
    assert!(m.time.ends_with('Z') && m.time.len() == "2026-11-29T04:48:06.123Z".len(), "{}", m.time);

    call(&mut bob, "MSG general fine, thanks").await;
    expect_line(&mut alice, "bob's reply", |l| is_msg_from(l, "bob", "fine, thanks")).await;

    // The sender's other connection gets the message too; the sending connection does not.
    let mut alice2 = d.login("alice").await;
    call(&mut alice2, "JOIN general").await;
    call(&mut alice, "MSG general from my laptop").await;
    expect_line(&mut alice2, "own message on the other connection", |l| is_msg_from(l, "alice", "from my laptop"))
        .await;
    let ping = call(&mut alice, "PING check").await;
    assert!(ping.events.iter().all(|e| e.name != "MSG"), "the sender got its own message echoed: {:?}", ping.events);

    let names = call(&mut bob, "NAMES general").await;
    let users: Vec<_> = names.data.iter().map(|r| r.fields[1].as_str()).collect();
    assert_eq!(users, ["alice", "bob"]);

    call(&mut bob, "PART general").await;
    expect_line(
        &mut alice,
        "* PART general bob",
        |l| matches!(l, ServerLine::Event(e) if e.name == "PART" && e.fields == ["general", "bob"]),
    )
    .await;
}

#[tokio::test]
async fn history_returns_the_last_50_and_pages_back() {
    let d = Daemon::start().await;
    let mut alice = d.member("alice", "general").await;
    let mut ids = Vec::new();
    for i in 1..=60 {
        let ack = call(&mut alice, &format!("MSG general message {i}")).await;
        assert_eq!(ack.fin.code, 200);
        ids.push(ack.fin.fields[1].parse::<u64>().unwrap());
    }
    let page = call(&mut alice, "HISTORY general").await;
    assert_eq!(page.fin.fields, ["general", "50"]);
    let texts: Vec<String> = page.data.iter().map(|r| r.text.clone().unwrap()).collect();
    let want: Vec<String> = (11..=60).map(|i| format!("message {i}")).collect();
    assert_eq!(texts, want);
    let times: Vec<&String> = page.data.iter().map(|r| &r.fields[2]).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "history not in timestamp order");

    let oldest = &page.data[0].fields[1];
    let older = call(&mut alice, &format!("HISTORY general BEFORE {oldest}")).await;
    let texts: Vec<String> = older.data.iter().map(|r| r.text.clone().unwrap()).collect();
    let want: Vec<String> = (1..=10).map(|i| format!("message {i}")).collect();
    assert_eq!(texts, want);

    let two = call(&mut alice, &format!("HISTORY general BEFORE {} LIMIT 2", ids[5])).await;
    let texts: Vec<String> = two.data.iter().map(|r| r.text.clone().unwrap()).collect();
    assert_eq!(texts, ["message 4", "message 5"]);

    // A newcomer sees the same last 50 on JOIN.
    let mut carol = d.login("carol").await;
    let join = call(&mut carol, "JOIN general").await;
    assert_eq!(join.data.len(), 50);
    assert_eq!(join.data[0].text.as_deref(), Some("message 11"));
    assert_eq!(join.data[49].text.as_deref(), Some("message 60"));
}

#[tokio::test]
async fn history_pages_come_from_the_database_beyond_the_cache() {
    let d = Daemon::start_with("[rooms]\ncache_messages = 50").await;
    let mut alice = d.member("alice", "deep").await;
    for i in 1..=120 {
        call(&mut alice, &format!("MSG deep m{i}")).await;
    }
    let mut before = None::<String>;
    let mut seen = Vec::new();
    loop {
        let cmd = match &before {
            None => "HISTORY deep".to_string(),
            Some(id) => format!("HISTORY deep BEFORE {id}"),
        };
        let page = call(&mut alice, &cmd).await;
        if page.data.is_empty() {
            break;
        }
        before = Some(page.data[0].fields[1].clone());
        let mut texts: Vec<String> = page.data.iter().map(|r| r.text.clone().unwrap()).collect();
        texts.extend(seen);
        seen = texts;
    }
    let want: Vec<String> = (1..=120).map(|i| format!("m{i}")).collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn bot_command_lines_reach_members_but_are_never_stored() {
    let d = Daemon::start().await;
    let mut alice = d.member("alice", "general").await;
    let mut bob = d.member("bob", "general").await;
    let reply = call(&mut alice, "MSG general /stock=aapl.us").await;
    assert_eq!(reply.fin.code, 419, "no bot connected: {:?}", reply.fin);
    assert_eq!(reply.fin.fields, ["general", "stock"]);
    let cmd = expect_line(&mut bob, "* CMD", |l| l.is_event("CMD")).await;
    let m = cmd.as_message().unwrap();
    assert!(m.is_command && m.sender == "alice" && m.text == "/stock=aapl.us");

    // With a bot serving /stock, the command reaches it although it is in no room.
    let mut bot = d.client().await;
    let login = call(&mut bot, &format!("LOGIN stockbot {}", d.bot_password())).await;
    assert_eq!(login.fin.code, 200);
    assert_eq!(call(&mut bot, "SERVE stock").await.fin.code, 200);
    let relayed = call(&mut alice, "MSG general /STOCK=msft.us").await;
    assert_eq!(relayed.fin.code, 200);
    assert_eq!(relayed.fin.fields[1], "-");
    let got = expect_line(&mut bot, "the command at the bot", |l| l.is_event("CMD")).await;
    assert_eq!(got.as_message().unwrap().room, "general");
    let answer = call(&mut bot, "MSG general MSFT.US quote is $247.18 per share").await;
    assert_eq!(answer.fin.code, 200, "a serving bot may post into the room: {:?}", answer.fin);
    expect_line(&mut bob, "the bot's answer", |l| is_msg_from(l, "stockbot", "MSFT.US quote is $247.18 per share"))
        .await;

    let history = call(&mut bob, "HISTORY general").await;
    let texts: Vec<_> = history.data.iter().map(|r| r.text.clone().unwrap()).collect();
    assert_eq!(texts, ["MSFT.US quote is $247.18 per share"]);

    // Ordinary users may not serve.
    assert_eq!(call(&mut alice, "SERVE stock").await.fin.code, 403);
}

#[tokio::test]
async fn a_restart_keeps_accounts_rooms_and_history() {
    let mut d = Daemon::start().await;
    {
        let mut alice = d.member("alice", "books").await;
        for i in 1..=3 {
            call(&mut alice, &format!("MSG books chapter {i}")).await;
        }
    }
    d.restart().await;
    let mut alice = d.client().await;
    let wrong = call(&mut alice, "LOGIN alice not-the-password").await;
    assert_eq!(wrong.fin.code, 409);
    let ok = call(&mut alice, "LOGIN alice password-alice").await;
    assert_eq!(ok.fin.code, 200);
    let rooms = call(&mut alice, "ROOMS").await;
    let names: Vec<_> = rooms.data.iter().map(|r| r.fields[0].as_str()).collect();
    assert!(names.contains(&"books"), "{names:?}");
    let join = call(&mut alice, "JOIN books").await;
    let texts: Vec<_> = join.data.iter().map(|r| r.text.clone().unwrap()).collect();
    assert_eq!(texts, ["chapter 1", "chapter 2", "chapter 3"]);
    let ack = call(&mut alice, "MSG books chapter 4").await;
    let id: u64 = ack.fin.fields[1].parse().unwrap();
    let last: u64 = join.data[2].fields[1].parse().unwrap();
    assert!(id > last, "ids keep increasing across restarts");
}

#[tokio::test]
async fn a_slow_reader_is_dropped_without_stalling_the_room() {
    let d = Daemon::start_with("[limits]\nsend_queue_bytes = 16384").await;
    let mut slow = d.member("slow", "busy").await; // never reads until the end
    let mut fast = d.member("fast", "busy").await;
    let mut talker = d.member("talker", "busy").await;
    let text = "x".repeat(1900);
    // Keep talking until the room drops the slow reader: once the kernel's socket buffers are full,
    // its queue (16 KiB) fills. The fast reader gets every message meanwhile.
    let mut dropped = false;
    for i in 0..20_000 {
        let ack = call(&mut talker, &format!("MSG busy {i} {text}")).await;
        assert_eq!(ack.fin.code, 200);
        loop {
            let line = next_line(&mut fast).await;
            if matches!(&line, ServerLine::Event(e) if e.name == "PART" && e.fields == ["busy", "slow"]) {
                dropped = true;
                continue;
            }
            if let Some(m) = line.as_message() {
                assert!(m.text.starts_with(&format!("{i} ")), "fast reader got {} for {i}", &m.text[..8]);
                break;
            }
        }
        if dropped {
            break;
        }
    }
    assert!(dropped, "the slow reader was never dropped");
    // The slow reader finds its backlog, then the reason, then the end of the connection.
    let mut last = String::new();
    loop {
        match tokio::time::timeout(testkit::PATIENCE, slow.read_line()).await {
            Ok(Ok(Some(line))) => last = line,
            Ok(Ok(None)) | Ok(Err(_)) => break,
            Err(_) => panic!("the slow reader's connection was not closed; log:\n{}", d.log()),
        }
    }
    assert_eq!(last, "* BYE :send queue full (slow reader)");
    assert_eq!(call(&mut talker, "MSG busy still here").await.fin.code, 200);
    expect_line(&mut fast, "the room still works", |l| l.as_message().is_some_and(|m| m.text == "still here")).await;
}

#[tokio::test]
async fn pipelined_posts_are_acknowledged_in_order_with_their_labels() {
    let d = Daemon::start().await;
    let mut alice = d.member("alice", "general").await;
    let mut batch = String::new();
    for i in 0..200 {
        batch.push_str(&format!("@p{i} MSG general pipelined {i}\r\n"));
        if i == 100 {
            // An error and a non-MSG command in the middle keep their places.
            batch.push_str("@bad MSG random not joined\r\n@ping PING mid\r\n");
        }
    }
    alice.writer.send_raw(batch.as_bytes()).await.unwrap();
    let mut labels = Vec::new();
    let mut last_id = 0u64;
    while labels.len() < 202 {
        if let ServerLine::Reply(r) = next_line(&mut alice).await {
            if r.verb == "MSG" && r.code == 200 {
                let id: u64 = r.fields[1].parse().unwrap();
                assert!(id > last_id, "ids increase in acknowledgement order");
                last_id = id;
            }
            labels.push(r.label.unwrap());
        }
    }
    let mut want: Vec<String> = (0..=100).map(|i| format!("p{i}")).collect();
    want.extend(["bad".to_string(), "ping".to_string()]);
    want.extend((101..200).map(|i| format!("p{i}")));
    assert_eq!(labels, want);
    let history = call(&mut alice, "HISTORY general LIMIT 3").await;
    let texts: Vec<_> = history.data.iter().map(|r| r.text.clone().unwrap()).collect();
    assert_eq!(texts, ["pipelined 197", "pipelined 198", "pipelined 199"]);
}

#[tokio::test]
async fn sigterm_tells_clients_and_keeps_what_was_accepted() {
    let mut d = Daemon::start().await;
    let mut reader = d.member("reader", "general").await;
    let mut alice = d.member("alice", "general").await;
    // Pipelined posts, then the signal: every post read before the shutdown is acknowledged (and
    // stored), then the BYE comes.
    let lines: String = (0..50).map(|i| format!("@s{i} MSG general before shutdown {i}\r\n")).collect();
    alice.writer.send_raw(lines.as_bytes()).await.unwrap();
    expect_line(&mut reader, "the first post", |l| l.as_message().is_some()).await;
    assert!(d.stop().await, "chatd exits 0 on SIGTERM; log:\n{}", d.log());
    let mut acked = Vec::new();
    let mut bye = None;
    while let Ok(Ok(Some(line))) = tokio::time::timeout(testkit::PATIENCE, alice.next()).await {
        match line {
            ServerLine::Reply(r) if r.code == 200 => acked.push(r.fields[1].clone()),
            ServerLine::Reply(r) => panic!("unexpected reply {r:?}"),
            ServerLine::Event(e) if e.name == "BYE" => bye = e.text,
            ServerLine::Event(_) => {}
        }
    }
    assert_eq!(bye.as_deref(), Some("server shutting down"));
    assert!(!acked.is_empty());
    d.start_again().await;
    let mut check = d.member("check", "general").await;
    let history = call(&mut check, "HISTORY general").await;
    let stored: Vec<&String> = history.data.iter().map(|r| &r.fields[1]).collect();
    for id in &acked {
        assert!(stored.contains(&id), "acknowledged message {id} missing after a graceful stop");
    }
}

/// Reads from `conn` until it has `acks` acknowledgements and `messages` chat messages; returns the
/// messages as (id, sender, text), in the order they arrived.
async fn collect(conn: &mut chatd_proto::client::LineConn, acks: usize, messages: usize) -> Vec<(u64, String, String)> {
    let (mut acked, mut got) = (0, Vec::new());
    while acked < acks || got.len() < messages {
        let line = next_line(conn).await;
        match &line {
            ServerLine::Reply(r) if r.verb == "MSG" && r.code == 200 => acked += 1,
            ServerLine::Reply(r) => panic!("unexpected reply {r:?}"),
            ServerLine::Event(_) => {
                if let Some(m) = line.as_message() {
                    got.push((m.id.unwrap(), m.sender, m.text));
                }
            }
        }
    }
    got
}

#[tokio::test]
async fn concurrent_senders_reach_every_member_once_in_order_and_a_late_joiner_misses_nothing() {
    // Posts arriving together are fanned out in batches; this is the contract batches must keep.
    let d = Daemon::start().await;
    let mut reader = d.member("reader", "general").await;
    let senders = ["alice", "bob", "carol"];
    let per_sender = 150;
    let mut conns = Vec::new();
    for name in senders {
        conns.push((name, d.member(name, "general").await));
    }
    let mut tasks = Vec::new();
    for (name, mut conn) in conns {
        tasks.push(tokio::spawn(async move {
            let lines: String = (0..per_sender).map(|i| format!("MSG general {name} {i}\r\n")).collect();
            conn.writer.send_raw(lines.as_bytes()).await.unwrap();
            (name, collect(&mut conn, per_sender, per_sender * (senders.len() - 1)).await)
        }));
    }
    let total = per_sender * senders.len();
    let mut seen = collect(&mut reader, 0, 60).await;
    // Dave joins while the posts are still arriving.
    let mut dave = d.login("dave").await;
    let joined = call(&mut dave, "JOIN general").await;
    let mut dave_got: Vec<u64> =
        joined.data.iter().filter_map(|r| ServerLine::Reply(r.clone()).as_message()).map(|m| m.id.unwrap()).collect();
    seen.extend(collect(&mut reader, 0, total - seen.len()).await);

    let ids: Vec<u64> = seen.iter().map(|m| m.0).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "the reader got every message once, in id order");
    for name in senders {
        let texts: Vec<&str> = seen.iter().filter(|m| m.1 == name).map(|m| m.2.as_str()).collect();
        let want: Vec<String> = (0..per_sender).map(|i| format!("{name} {i}")).collect();
        assert_eq!(texts, want, "{name}'s messages, in the order sent");
    }
    for task in tasks {
        let (name, got) = task.await.unwrap();
        assert!(got.iter().all(|m| m.1 != name), "{name} got its own message echoed");
        let theirs: Vec<u64> = got.iter().map(|m| m.0).collect();
        let want: Vec<u64> = seen.iter().filter(|m| m.1 != name).map(|m| m.0).collect();
        assert_eq!(theirs, want, "{name} got everyone else's messages once, in order");
    }
    let last = *ids.last().unwrap();
    while dave_got.last() != Some(&last) {
        if let Some(m) = next_line(&mut dave).await.as_message() {
            dave_got.push(m.id.unwrap());
        }
    }
    let first = dave_got[0];
    let want: Vec<u64> = ids.iter().copied().filter(|id| *id >= first).collect();
    assert_eq!(dave_got, want, "history then live: no gap, no duplicate");
}
