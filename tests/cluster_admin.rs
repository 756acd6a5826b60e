//! What is not a room's but the server's, across the nodes of a cluster (docs/cluster.md): the
//! login throttle, an admin's DISABLE and ANNOUNCE, and direct messages, each done on one node and
//! felt on another. Real chatd processes on a throwaway PostgreSQL and NATS (testkit::cluster).

use chatd_proto::line::ServerLine;
use testkit::cluster::Cluster;
use testkit::{call, code, expect_line};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_throttle_admins_and_direct_messages_reach_across_nodes() {
    let c = Cluster::start_with(2, "[admin]\nusers = [\"root\"]\n").await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);

    // Three wrong passwords on n1: the fourth try, on n2 and with the right password, waits.
    let mut victim = n2.client().await;
    assert_eq!(code(&mut victim, "REGISTER victim victim-password").await, 200);
    let mut guesser = n1.client().await;
    for _ in 0..3 {
        assert_eq!(code(&mut guesser, "LOGIN victim not-the-password").await, 409);
    }
    let mut late = n2.client().await;
    assert_eq!(code(&mut late, "LOGIN victim victim-password").await, 412, "throttled on n2 by n1's failures");

    // A direct message from n1 reaches the other user on n2, stored once under the acknowledged id.
    let mut alice = n1.login("alice").await;
    let mut carol = n2.login("carol").await;
    let sent = call(&mut alice, "DM carol hello across nodes").await;
    assert_eq!(sent.fin.code, 200, "{:?}", sent.fin);
    let id = sent.fin.fields[1].clone();
    let dm = expect_line(&mut carol, "the DM", |l| l.is_event("DM")).await;
    let ServerLine::Event(dm) = dm else { unreachable!() };
    assert_eq!((dm.fields[0].as_str(), dm.text.as_deref()), (id.as_str(), Some("hello across nodes")));
    let stored = call(&mut carol, "HISTORY @alice").await;
    assert_eq!(stored.data.iter().filter(|r| r.code == 130).count(), 1);

    // An admin on n1: ANNOUNCE reaches carol on n2; DISABLE closes carol's connection on n2.
    let mut root = n1.login("root").await;
    assert_eq!(code(&mut root, "ANNOUNCE maintenance at noon").await, 200);
    let notice = expect_line(&mut carol, "the notice", |l| l.is_event("NOTICE")).await;
    let ServerLine::Event(notice) = notice else { unreachable!() };
    assert_eq!((notice.fields.join(" "), notice.text.as_deref()), ("root".to_string(), Some("maintenance at noon")));
    assert_eq!(code(&mut root, "DISABLE carol spamming").await, 200);
    let bye = expect_line(&mut carol, "the BYE", |l| l.is_event("BYE")).await;
    let ServerLine::Event(bye) = bye else { unreachable!() };
    assert!(bye.text.as_deref().is_some_and(|t| t.contains("spamming")), "{bye:?}");
    // (The guesser's failures throttle this address for a few seconds, on every node: wait them out.)
    let mut again = n2.client().await;
    let mut answer = code(&mut again, "LOGIN carol password-carol").await;
    for _ in 0..30 {
        if answer != 412 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        answer = code(&mut again, "LOGIN carol password-carol").await;
    }
    assert_eq!(answer, 431, "disabled on every node");
}
