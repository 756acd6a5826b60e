//! End to end: the real daemon (testkit), the real `chatd-bot` binary, a local stand-in for stooq,
//! users talking over TLS. Nothing leaves 127.0.0.1. Timeouts are failure guards only: ordering is
//! asserted with gates (an upstream answer that waits until the test opens it), never with clocks.

mod support;

use chatd_bot::command::usage;
use chatd_bot::error::QuoteError;
use support::bot::{ask, history, next_bot_message, BotProcess};
use support::{Behavior, StubHttp};
use testkit::{call, expect_line, Daemon, PATIENCE};

const AAPL: &str = "AAPL.US quote is $125.28 per share";
const MSFT: &str = "MSFT.US quote is $247.18 per share";

#[tokio::test]
async fn quote_is_posted_in_the_room_and_stored_but_the_command_is_not() {
    let daemon = Daemon::start().await;
    let stub = StubHttp::start().await;
    stub.fixture("aapl.us", "known_aapl_us.csv");
    stub.fixture("msft.us", "known_msft_us.csv");
    stub.fixture("trim.us", "known_aapl_us_trimmed_zero.csv");
    let mut bot = BotProcess::start(&daemon, &stub.stooq_template(), &[], &[]).await;
    bot.wait_serving(1).await;

    let mut alice = daemon.member("alice", "general").await;
    let mut bob = daemon.member("bob", "general").await;
    ask(&mut alice, "general", "/stock=aapl.us").await;

    // Members see the command line live, then the bot's answer, as an ordinary stored message.
    let cmd = expect_line(&mut bob, "the command line", |l| l.as_message().is_some_and(|m| m.is_command)).await;
    let cmd = cmd.as_message().unwrap();
    assert_eq!((cmd.room.as_str(), cmd.sender.as_str(), cmd.text.as_str()), ("general", "alice", "/stock=aapl.us"));
    let reply = next_bot_message(&mut bob).await;
    assert_eq!(reply.room, "general");
    assert_eq!(reply.text, AAPL);
    assert!(reply.id.is_some_and(|id| id > 0));

    let hist = history(&mut bob, "general").await;
    assert!(hist.contains(&("stockbot".to_string(), AAPL.to_string())), "{hist:?}");
    assert!(hist.iter().all(|(_, text)| !text.starts_with("/stock")), "commands are never stored: {hist:?}");

    // The command word is case-insensitive; prices get two decimals at least.
    ask(&mut alice, "general", "/STOCK=MSFT.US").await;
    assert_eq!(next_bot_message(&mut bob).await.text, MSFT);
    ask(&mut alice, "general", "/stock=trim.us").await;
    assert_eq!(next_bot_message(&mut bob).await.text, "AAPL.US quote is $149.70 per share");

    // A room created after the bot connected.
    let r = call(&mut bob, "JOIN later-room").await;
    assert_eq!(r.fin.code, 200, "{:?}", r.fin);
    ask(&mut alice, "general", "/stock=aapl.us").await; // keep bob's view ordered: general first
    assert_eq!(next_bot_message(&mut bob).await.text, AAPL);
    let r = call(&mut alice, "JOIN later-room").await;
    assert_eq!(r.fin.code, 200, "{:?}", r.fin);
    ask(&mut alice, "later-room", "/stock=msft.us").await;
    let m = next_bot_message(&mut bob).await;
    assert_eq!((m.room.as_str(), m.text.as_str()), ("later-room", MSFT));
}

#[tokio::test]
async fn every_failure_gets_a_clear_reply_and_the_bot_keeps_running() {
    let daemon = Daemon::start().await;
    let stub = StubHttp::start().await;
    stub.fixture("aapl.us", "known_aapl_us.csv");
    stub.fixture("zzzz.us", "unknown_zzzz_us_nd.csv");
    stub.fixture("appl.us", "unknown_appl_us_nd.csv");
    stub.fixture("empty.us", "empty_body.csv");
    stub.fixture("header.us", "header_only.csv");
    stub.fixture("limit.us", "exceeded_daily_hits_limit.txt");
    stub.fixture("html.us", "html_page_does_not_exist.html");
    stub.body("bad.us", "Symbol,Date,Time,Open,High,Low,Close,Volume\r\nBAD.US,2021-05-27,22:00:18,1,2,3,lots,5\r\n");
    stub.set("gone.us", Behavior::Status(404, support::fixture("html_page_does_not_exist.html")));
    stub.set("close.us", Behavior::Close);
    stub.set("hang.us", Behavior::Hang);
    let mut bot = BotProcess::start(&daemon, &stub.stooq_template(), &[("--timeout", "1")], &[]).await;
    bot.wait_serving(1).await;
    let mut alice = daemon.member("alice", "general").await;
    let mut bob = daemon.member("bob", "general").await;

    let cases: Vec<(&str, String)> = vec![
        ("/stock", usage("stock")),
        ("/stock=", usage("stock")),
        ("/stock=a b", usage("stock")),
        ("/stock=<script>", usage("stock")),
        ("/stock aapl.us", usage("stock")),
        ("/stock=zzzz.us", QuoteError::UnknownSymbol("ZZZZ.US".into()).reply("zzzz.us")),
        ("/stock=appl.us", QuoteError::UnknownSymbol("APPL.US".into()).reply("appl.us")),
        ("/stock=empty.us", QuoteError::Empty.reply("empty.us")),
        ("/stock=header.us", QuoteError::NoData.reply("header.us")),
        ("/stock=limit.us", QuoteError::Refused.reply("limit.us")),
        ("/stock=html.us", QuoteError::Refused.reply("html.us")),
        ("/stock=bad.us", QuoteError::Malformed(String::new()).reply("bad.us")),
        ("/stock=gone.us", QuoteError::Http(404).reply("gone.us")),
        ("/stock=close.us", QuoteError::Transport(String::new()).reply("close.us")),
        ("/stock=hang.us", QuoteError::Timeout(std::time::Duration::from_secs(1)).reply("hang.us")),
    ];
    for (text, _) in &cases {
        ask(&mut alice, "general", text).await;
    }
    let mut got = Vec::new();
    for _ in 0..cases.len() {
        got.push(next_bot_message(&mut bob).await.text);
    }
    let mut want: Vec<String> = cases.iter().map(|(_, r)| r.clone()).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // The wording users rely on.
    assert!(got.iter().any(|r| r == "No quote for LIMIT.US: the quote service refused the request, try again later"));
    assert!(got.iter().any(|r| r.contains("ZZZZ.US") && r.contains("unknown symbol")));
    assert!(got.iter().any(|r| r.contains("HTTP error 404")));
    assert!(got.iter().any(|r| r.contains("did not answer within 1 s")));
    assert!(got.iter().all(|r| !r.contains("<script>")));

    // Still running and answering.
    ask(&mut alice, "general", "/stock=aapl.us").await;
    assert_eq!(next_bot_message(&mut bob).await.text, AAPL);
}

#[tokio::test]
async fn unreachable_quote_service() {
    let daemon = Daemon::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/q/l/?s={{code}}&f=sd2t2ohlcv&h&e=csv");
    // No --ca either: the default trust is certs/ca.pem in the working directory (the daemon's).
    let mut bot = BotProcess::start(&daemon, &url, &[("--ca", "")], &[]).await;
    bot.wait_serving(1).await;
    let mut alice = daemon.member("alice", "general").await;
    let mut bob = daemon.member("bob", "general").await;
    ask(&mut alice, "general", "/stock=aapl.us").await;
    let text = next_bot_message(&mut bob).await.text;
    assert_eq!(text, "No quote for AAPL.US: the quote service is unreachable, try again later");
}

#[tokio::test]
async fn a_slow_quote_does_not_delay_another() {
    let daemon = Daemon::start().await;
    let stub = StubHttp::start().await;
    stub.fixture("aapl.us", "known_aapl_us.csv");
    let slow = stub.gate("slow.us", support::fixture("known_msft_us.csv"));
    let mut bot = BotProcess::start(&daemon, &stub.stooq_template(), &[], &[]).await;
    bot.wait_serving(1).await;
    let mut alice = daemon.member("alice", "general").await;
    let mut bob = daemon.member("bob", "general").await;

    ask(&mut alice, "general", "/stock=slow.us").await;
    // The slow request is waiting upstream (at its gate) before the fast one is asked: on a busy
    // machine the bot might otherwise reach stooq for the fast one first, proving nothing.
    let in_flight = async {
        while stub.hits("slow.us") == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PATIENCE, in_flight).await.expect("the slow request reaches stooq");
    ask(&mut alice, "general", "/stock=aapl.us").await;
    // The slow answer cannot come before its gate opens, so the first answer must be the fast one,
    // and it comes while the slow request is still waiting upstream.
    assert_eq!(next_bot_message(&mut bob).await.text, AAPL);
    assert_eq!(stub.hits("slow.us"), 1, "the slow request was in flight, asked once");
    slow.open();
    assert_eq!(next_bot_message(&mut bob).await.text, MSFT);
}

#[tokio::test]
async fn identical_requests_share_one_upstream_call() {
    let daemon = Daemon::start().await;
    let stub = StubHttp::start().await;
    let gate = stub.gate("msft.us", support::fixture("known_msft_us.csv"));
    let mut bot = BotProcess::start(&daemon, &stub.stooq_template(), &[("--cache-ttl", "600")], &[]).await;
    bot.wait_serving(1).await;
    let mut alice = daemon.member("alice", "general").await;
    let mut bob = daemon.member("bob", "general").await;
    let mut carol = daemon.member("carol", "general").await;

    ask(&mut alice, "general", "/stock=msft.us").await;
    ask(&mut bob, "general", "/stock=MSFT.US").await;
    ask(&mut alice, "general", "/stock=msft.us").await;
    bot.wait_requests(3).await;
    gate.open();
    for _ in 0..3 {
        assert_eq!(next_bot_message(&mut carol).await.text, MSFT);
    }
    assert_eq!(stub.hits("msft.us"), 1);
    // Shortly after: answered from the cache.
    ask(&mut bob, "general", "/stock=msft.us").await;
    assert_eq!(next_bot_message(&mut carol).await.text, MSFT);
    assert_eq!(stub.hits("msft.us"), 1);
}

#[tokio::test]
async fn per_user_rate_limit_answers_politely_once() {
    let daemon = Daemon::start().await;
    let stub = StubHttp::start().await;
    let mut bot =
        BotProcess::start(&daemon, &stub.stooq_template(), &[("--rate-limit", "2"), ("--rate-window", "600")], &[])
            .await;
    bot.wait_serving(1).await;
    let mut alice = daemon.member("alice", "general").await;
    let mut bob = daemon.member("bob", "general").await;
    let mut carol = daemon.member("carol", "general").await;

    // Usage replies are posted in arrival order, so the sequence carol sees is deterministic.
    for _ in 0..4 {
        ask(&mut alice, "general", "/stock").await;
    }
    ask(&mut bob, "general", "/stock").await;
    assert_eq!(next_bot_message(&mut carol).await.text, usage("stock"));
    assert_eq!(next_bot_message(&mut carol).await.text, usage("stock"));
    let warning = next_bot_message(&mut carol).await.text;
    assert_eq!(warning, "alice, please slow down: at most 2 /stock requests per 600 s. Try again in a moment.");
    // Alice's fourth request is ignored silently; the next answer is bob's.
    assert_eq!(next_bot_message(&mut carol).await.text, usage("stock"));
    let hist = history(&mut carol, "general").await;
    assert_eq!(hist.len(), 4, "{hist:?}");
}

#[tokio::test]
async fn bot_survives_daemon_restarts_and_answers_each_request_once() {
    let mut daemon = Daemon::start().await;
    let stub = StubHttp::start().await;
    stub.fixture("aapl.us", "known_aapl_us.csv");
    let slow = stub.gate("slow.us", support::fixture("known_msft_us.csv"));
    let mut bot = BotProcess::start(&daemon, &stub.stooq_template(), &[], &[]).await;
    bot.wait_serving(1).await;
    {
        let mut alice = daemon.member("alice", "general").await;
        let mut bob = daemon.member("bob", "general").await;
        ask(&mut alice, "general", "/stock=aapl.us").await;
        assert_eq!(next_bot_message(&mut bob).await.text, AAPL);
        // A request still waiting upstream while the daemon restarts.
        ask(&mut alice, "general", "/stock=slow.us").await;
        bot.wait_requests(2).await;
    }

    daemon.restart().await;
    bot.wait_serving(2).await;
    let mut alice = daemon.member("alice", "general").await;
    let mut bob = daemon.member("bob", "general").await;
    // The answer finished after the reconnection is posted, once.
    slow.open();
    assert_eq!(next_bot_message(&mut bob).await.text, MSFT);
    ask(&mut alice, "general", "/stock=aapl.us").await;
    assert_eq!(next_bot_message(&mut bob).await.text, AAPL);

    // A crash this time, once the answers so far are acknowledged (an unacknowledged message may be
    // lost in a crash, by design).
    bot.wait_stored(3).await;
    daemon.kill9().await;
    daemon.start_again().await;
    bot.wait_serving(3).await;
    let mut alice = daemon.member("alice", "general").await;
    let mut bob = daemon.member("bob", "general").await;
    ask(&mut alice, "general", "/stock=aapl.us").await;
    assert_eq!(next_bot_message(&mut bob).await.text, AAPL);
    bot.wait_stored(4).await;

    let hist = history(&mut bob, "general").await;
    let count = |t: &str| hist.iter().filter(|(s, text)| s == "stockbot" && text == t).count();
    assert_eq!(count(MSFT), 1, "{hist:?}");
    assert_eq!(count(AAPL), 3, "{hist:?}");
    assert_eq!(stub.hits("slow.us"), 1);
}

#[tokio::test]
async fn without_a_bot_the_sender_gets_419() {
    let daemon = Daemon::start().await;
    let stub = StubHttp::start().await;
    stub.fixture("aapl.us", "known_aapl_us.csv");
    let mut alice = daemon.member("alice", "general").await;
    let r = call(&mut alice, "MSG general /stock=aapl.us").await;
    assert_eq!(r.fin.code, 419, "{:?}", r.fin);
    assert_eq!(r.fin.fields, ["general", "stock"]);

    let mut bot = BotProcess::start(&daemon, &stub.stooq_template(), &[], &[]).await;
    bot.wait_serving(1).await;
    ask(&mut alice, "general", "/stock=aapl.us").await;
    assert_eq!(next_bot_message(&mut alice).await.text, AAPL);

    // Stopped bot: it says QUIT and exits; the daemon then has no bot for /stock again.
    assert!(bot.stop().await.success(), "chatd-bot exits cleanly on SIGTERM");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let r = call(&mut alice, "MSG general /stock=aapl.us").await;
        if r.fin.code == 419 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still relayed after the bot stopped: {:?}", r.fin);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn fallback_source_answers_when_stooq_refuses() {
    let daemon = Daemon::start().await;
    let stub = StubHttp::start().await;
    stub.fixture("aapl.us", "exceeded_daily_hits_limit.txt");
    stub.body(
        "fh:aapl",
        r#"{"c":261.74,"d":0.83,"dp":0.318,"h":263.31,"l":260.68,"o":261.07,"pc":260.91,"t":1700000000}"#,
    );
    let key_file = daemon.dir.join("finnhub.key");
    std::fs::write(&key_file, "test-key\n").unwrap();
    let base = stub.base_url();
    let key = key_file.display().to_string();
    let mut bot = BotProcess::start(
        &daemon,
        &stub.stooq_template(),
        &[("--fallback", "finnhub"), ("--finnhub-url", &base), ("--finnhub-key-file", &key)],
        &[],
    )
    .await;
    bot.wait_serving(1).await;
    let mut alice = daemon.member("alice", "general").await;
    let mut bob = daemon.member("bob", "general").await;
    ask(&mut alice, "general", "/stock=aapl.us").await;
    assert_eq!(next_bot_message(&mut bob).await.text, "AAPL.US quote is $261.74 per share");
    assert_eq!((stub.hits("aapl.us"), stub.hits("fh:aapl")), (1, 1));
    assert!(!bot.log_text().contains("test-key"), "the API key is never logged");
}

#[tokio::test]
async fn password_from_the_environment() {
    let daemon = Daemon::start().await;
    let stub = StubHttp::start().await;
    stub.fixture("aapl.us", "known_aapl_us.csv");
    let password = daemon.bot_password();
    // No --password-file: the password comes from CHATD_BOT_PASSWORD. And the daemon is trusted by
    // its pinned certificate fingerprint instead of its CA file.
    let mut bot = BotProcess::start(
        &daemon,
        &stub.stooq_template(),
        &[("--password-file", ""), ("--ca", ""), ("--fingerprint", &daemon.fingerprint)],
        &[("CHATD_BOT_PASSWORD", &password)],
    )
    .await;
    bot.wait_serving(1).await;
    let mut alice = daemon.member("alice", "general").await;
    let mut bob = daemon.member("bob", "general").await;
    ask(&mut alice, "general", "/stock=aapl.us").await;
    assert_eq!(next_bot_message(&mut bob).await.text, AAPL);
    assert!(!bot.log_text().contains(&password), "the password is never logged");
}

#[tokio::test]
async fn with_several_addresses_the_bot_moves_on_from_one_that_cannot_be_reached() {
    let daemon = Daemon::start().await;
    let stub = StubHttp::start().await;
    stub.fixture("aapl.us", "known_aapl_us.csv");
    // The first address is a closed port (a cluster node that is down): the bot goes on to the next.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let addrs = format!("{closed},{}", daemon.addr);
    let mut bot = BotProcess::start(&daemon, &stub.stooq_template(), &[("--addr", &addrs)], &[]).await;
    bot.wait_serving(1).await;
    let mut alice = daemon.member("alice", "general").await;
    let mut bob = daemon.member("bob", "general").await;
    ask(&mut alice, "general", "/stock=aapl.us").await;
    assert_eq!(next_bot_message(&mut bob).await.text, AAPL);
    assert!(bot.log_text().contains(&closed.to_string()), "the unreachable node is named in the log");
}
