//! Direct messages and room topics over real TLS sockets to a real daemon (PROTOCOL.md 5a, TOPIC).

use chatd_proto::line::ServerLine;
use testkit::{call, expect_line, Daemon};

fn is_event(line: &ServerLine, name: &str) -> bool {
    matches!(line, ServerLine::Event(e) if e.name == name)
}

fn event(line: ServerLine) -> chatd_proto::Event {
    match line {
        ServerLine::Event(e) => e,
        other => panic!("not an event: {other:?}"),
    }
}

#[tokio::test]
async fn a_direct_message_reaches_both_users_everywhere_and_nobody_else() {
    let d = Daemon::start().await;
    let mut alice = d.login("alice").await;
    let mut alice_phone = d.login("alice").await;
    let mut bob = d.login("bob").await;
    let mut carol = d.login("carol").await;

    let sent = call(&mut alice, "@d1 DM Bob hi bob, just us").await;
    assert_eq!((sent.fin.code, sent.fin.verb.as_str()), (200, "DM"), "{:?}", sent.fin);
    assert_eq!(sent.fin.label.as_deref(), Some("d1"));
    assert_eq!(sent.fin.fields[0], "bob");
    let id = sent.fin.fields[1].clone();

    for (who, conn) in [("bob", &mut bob), ("alice's phone", &mut alice_phone)] {
        let e = event(expect_line(conn, "the DM", |l| is_event(l, "DM")).await);
        assert_eq!(e.fields[0], id, "{who}: {e:?}");
        assert_eq!(e.fields[2..], ["alice", "bob"], "{who}: {e:?}");
        assert_eq!(e.text.as_deref(), Some("hi bob, just us"), "{who}");
    }
    // bob answers; alice's two connections both see it.
    assert_eq!(call(&mut bob, "DM alice hello alice").await.fin.code, 200);
    for conn in [&mut alice, &mut alice_phone] {
        let e = event(expect_line(conn, "bob's answer", |l| is_event(l, "DM")).await);
        assert_eq!(e.fields[2..], ["bob", "alice"]);
    }
    // carol saw nothing, and has no conversation with them.
    let r = call(&mut carol, "HISTORY @alice").await;
    assert_eq!((r.fin.code, r.data.len()), (200, 0), "{:?}", r.data);
    assert!(!r.events.iter().any(|e| e.name == "DM"), "carol got a DM event: {:?}", r.events);
    // Both find the conversation in history, oldest first, under the other's name.
    let h = call(&mut bob, "HISTORY @alice").await;
    let texts: Vec<_> = h.data.iter().map(|r| (r.fields[0].clone(), r.text.clone().unwrap())).collect();
    assert_eq!(
        texts,
        [("@alice".to_string(), "hi bob, just us".to_string()), ("@alice".to_string(), "hello alice".to_string())]
    );
    assert_eq!(h.fin.fields, ["@alice", "2"]);
    let older = call(&mut alice, &format!("HISTORY @bob BEFORE {}", h.data[1].fields[1])).await;
    assert_eq!(older.data.len(), 1);
    // A user that does not exist.
    let r = call(&mut alice, "DM nosuchuser hello?").await;
    assert_eq!((r.fin.code, r.fin.fields.as_slice()), (423, ["nosuchuser".to_string()].as_slice()));
}

#[tokio::test]
async fn direct_messages_are_durable_and_found_after_a_restart() {
    let mut d = Daemon::start().await;
    let _bob = d.login("bob").await;
    let mut alice = d.login("alice").await;
    for i in 0..5 {
        assert_eq!(call(&mut alice, &format!("DM bob note {i}")).await.fin.code, 200);
    }
    d.restart().await;
    let mut bob = d.login("bob").await;
    let h = call(&mut bob, "HISTORY @alice LIMIT 3").await;
    let texts: Vec<_> = h.data.iter().map(|r| r.text.clone().unwrap()).collect();
    assert_eq!(texts, ["note 2", "note 3", "note 4"]);
}

#[tokio::test]
async fn a_topic_is_set_by_a_member_shown_to_members_and_kept() {
    let mut d = Daemon::start().await;
    let mut alice = d.member("alice", "general").await;
    let mut bob = d.member("bob", "general").await;
    let mut carol = d.login("carol").await;

    let none = call(&mut alice, "TOPIC general").await;
    assert_eq!((none.fin.code, none.fin.text.as_deref()), (200, Some("no topic is set")));
    let set = call(&mut alice, "TOPIC general  Stocks: /stock=aapl.us ").await;
    assert_eq!(set.fin.code, 200, "{:?}", set.fin);
    assert_eq!(set.fin.fields[..2], ["general", "alice"]);
    assert_eq!(set.fin.text.as_deref(), Some(" Stocks: /stock=aapl.us "));
    let e = event(expect_line(&mut bob, "the topic", |l| is_event(l, "TOPIC")).await);
    assert_eq!(e.fields[..2], ["general", "alice"]);
    assert_eq!(e.text.as_deref(), Some(" Stocks: /stock=aapl.us "));

    assert_eq!(call(&mut carol, "TOPIC general").await.fin.code, 403, "non-members do not read it");
    assert_eq!(call(&mut carol, "TOPIC general let me in").await.fin.code, 403, "nor set it");
    let long = format!("TOPIC general {}", "x".repeat(391));
    assert_eq!(call(&mut alice, &long).await.fin.code, 422);

    d.restart().await;
    let mut bob = d.member("bob", "general").await;
    let shown = call(&mut bob, "TOPIC general").await;
    assert_eq!(shown.fin.fields[..2], ["general", "alice"]);
    assert_eq!(shown.fin.text.as_deref(), Some(" Stocks: /stock=aapl.us "));
}
