//! The stock bot in a cluster (issue 15, docs/cluster.md): the real `chatd-bot`, connected to one
//! node of three (testkit::cluster: PostgreSQL, NATS, three chatd processes), answers `/stock=`
//! typed on the other nodes, and members on every node get its answer, stored once.

mod support;

use support::bot::{ask, history, next_bot_message, BotProcess};
use support::StubHttp;
use testkit::cluster::{Cluster, CLUSTER_PATIENCE};
use testkit::{call, expect_line};

const AAPL: &str = "AAPL.US quote is $125.28 per share";
const MSFT: &str = "MSFT.US quote is $247.18 per share";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bot_on_node_1_answers_stock_commands_typed_on_nodes_2_and_3() {
    let c = Cluster::start(3).await;
    let stub = StubHttp::start().await;
    stub.fixture("aapl.us", "known_aapl_us.csv");
    stub.fixture("msft.us", "known_msft_us.csv");
    // The bot logs in on n1 with the password every node provisioned from the same file.
    let mut bot = BotProcess::start(&c.nodes[0], &stub.stooq_template(), &[], &[]).await;
    bot.wait_serving(1).await;

    // n2 and n3 have heard of the bot (in another room, so its answers to the probes stay there).
    for n in [1, 2] {
        let mut prober = c.nodes[n].member(&format!("prober{}", n + 1), "lobby").await;
        wait_until_served(&mut prober, "lobby", &format!("n{}", n + 1)).await;
    }

    // A room created on n3 after the bot connected; members on n3, n2 and n1.
    let mut carol = c.nodes[2].member("carol", "markets").await;
    let mut dave = c.nodes[1].member("dave", "markets").await;
    let mut erin = c.nodes[0].member("erin", "markets").await;

    // Typed on n3: relayed to the bot on n1 (one bot); everyone sees the command, then the answer.
    ask(&mut carol, "markets", "/stock=aapl.us").await;
    for member in [&mut dave, &mut erin] {
        let cmd = expect_line(member, "the command line", |l| l.as_message().is_some_and(|m| m.is_command)).await;
        let cmd = cmd.as_message().unwrap();
        assert_eq!((cmd.room.as_str(), cmd.sender.as_str(), cmd.text.as_str()), ("markets", "carol", "/stock=aapl.us"));
    }
    for member in [&mut carol, &mut dave, &mut erin] {
        let answer = next_bot_message(member).await;
        assert_eq!((answer.room.as_str(), answer.text.as_str()), ("markets", AAPL));
    }

    // Typed on n2, too.
    ask(&mut dave, "markets", "/stock=msft.us").await;
    for member in [&mut carol, &mut dave, &mut erin] {
        assert_eq!(next_bot_message(member).await.text, MSFT);
    }
    bot.wait_stored(2).await;

    // Stored once each, the same from every node; the commands are not stored.
    let mut from_each = Vec::new();
    for n in 0..3 {
        let mut reader = c.nodes[n].member(&format!("reader{}", n + 1), "markets").await;
        from_each.push(history(&mut reader, "markets").await);
    }
    let want = vec![("stockbot".to_string(), AAPL.to_string()), ("stockbot".to_string(), MSFT.to_string())];
    for (n, h) in from_each.iter().enumerate() {
        assert_eq!(h, &want, "HISTORY markets on n{}", n + 1);
    }
    assert_eq!(stub.hits("aapl.us"), 1, "asked upstream once");
}

/// Waits until the node of `conn` has heard of a bot serving `/stock` (nodes tell each other which
/// command words their bots serve in heartbeats, docs/cluster.md): until then a command line is
/// answered `419` and goes nowhere (nothing is posted).
async fn wait_until_served(conn: &mut chatd_proto::LineConn, room: &str, node: &str) {
    let deadline = tokio::time::Instant::now() + CLUSTER_PATIENCE;
    loop {
        let r = call(conn, &format!("MSG {room} /stock=probe.us")).await;
        match r.fin.code {
            419 => {}
            200 => return,
            _ => panic!("MSG {room} /stock on {node}: {:?}", r.fin),
        }
        assert!(tokio::time::Instant::now() < deadline, "{node} never heard of the bot on n1");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
