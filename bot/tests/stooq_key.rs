//! stooq with an API key, end to end: the real daemon, the real `chatd-bot` binary and a local
//! stand-in for both stooq endpoints. The key reaches stooq on every request and nowhere else; the
//! daily-history endpoint answers when the quote endpoint refuses; each of its failures gets its
//! sentence; the operator's warning about a refusal is logged once a while, not per request.

mod support;

use chatd_bot::error::QuoteError;
use support::bot::{ask, history, next_bot_message, BotProcess};
use support::{Behavior, StubHttp};
use testkit::Daemon;

const API_KEY_PAGE: &str =
    "<!DOCTYPE html><html><body>CSV downloads need an API key: get your apikey on stooq.com</body></html>";
const FIX: &str =
    "stooq asks for an API key: get one on stooq's site and set STOOQ_API_KEY, or configure a fallback source";

/// A fresh fake key for one test (never a real one).
fn fake_key() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!("test-{}", Alphanumeric.sample_string(&mut rand::thread_rng(), 24))
}

#[tokio::test]
async fn key_reaches_both_endpoints_and_never_a_log_or_the_room() {
    let daemon = Daemon::start().await;
    let stub = StubHttp::start().await;
    let key = fake_key();
    stub.body("aapl.us", API_KEY_PAGE);
    stub.fixture("d:aapl.us", "daily_aapl_us.csv");
    // Failures whose texts could carry the key: a refusal page echoing it, a dropped connection.
    stub.body("echo.us", format!("<html>invalid apikey {key}</html>"));
    stub.body("d:echo.us", format!("<html>apikey {key} is not valid</html>"));
    stub.set("close.us", Behavior::Close);
    stub.set("d:close.us", Behavior::Close);
    let daily = stub.daily_template();
    let mut bot =
        BotProcess::start(&daemon, &stub.stooq_template(), &[("--daily-url", &daily)], &[("STOOQ_API_KEY", &key)])
            .await;
    bot.wait_serving(1).await;
    let mut alice = daemon.member("alice", "general").await;
    let mut bob = daemon.member("bob", "general").await;

    // The quote endpoint refuses with an API-key page; the daily endpoint's last close answers.
    ask(&mut alice, "general", "/stock=aapl.us").await;
    assert_eq!(next_bot_message(&mut bob).await.text, "AAPL.US quote is $277.90 per share");
    ask(&mut alice, "general", "/stock=echo.us").await;
    assert_eq!(next_bot_message(&mut bob).await.text, QuoteError::Refused.reply("echo.us"));
    ask(&mut alice, "general", "/stock=close.us").await;
    assert_eq!(next_bot_message(&mut bob).await.text, QuoteError::Transport(String::new()).reply("close.us"));

    let targets = stub.targets();
    for (endpoint, code) in
        [("/q/l/", "aapl.us"), ("/q/d/l/", "aapl.us"), ("/q/l/", "close.us"), ("/q/d/l/", "close.us")]
    {
        let prefix = format!("{endpoint}?s={code}&");
        let target = targets.iter().find(|t| t.starts_with(&prefix)).unwrap_or_else(|| panic!("{prefix}: {targets:?}"));
        assert!(target.contains(&format!("&apikey={key}")), "{target}");
    }

    let hist = history(&mut bob, "general").await;
    assert_eq!(hist.len(), 3, "{hist:?}");
    assert!(hist.iter().all(|(_, text)| !text.contains(&key)), "{hist:?}");
    let log = bot.stop_and_read_log().await;
    assert!(log.iter().any(|l| l.contains("quote failed") && l.contains("close.us")), "errors were logged");
    assert!(log.iter().all(|l| !l.contains(&key)), "the key is in the log:\n{}", log.join("\n"));
}

#[tokio::test]
async fn every_daily_endpoint_failure_gets_its_sentence() {
    let daemon = Daemon::start().await;
    let stub = StubHttp::start().await;
    let key_file = daemon.dir.join("stooq.key");
    std::fs::write(&key_file, format!("{}\n", fake_key())).unwrap();
    let codes = ["zzzz.us", "empty.us", "header.us", "nodata.us", "limit.us", "html.us", "bad.us", "gone.us", "lf.us"];
    for code in codes {
        stub.body(code, API_KEY_PAGE);
    }
    stub.fixture("d:zzzz.us", "unknown_zzzz_us_nd.csv");
    stub.fixture("d:empty.us", "empty_body.csv");
    stub.body("d:header.us", "Date,Open,High,Low,Close,Volume\r\n");
    stub.body("d:nodata.us", "No data");
    stub.fixture("d:limit.us", "exceeded_daily_hits_limit.txt");
    stub.fixture("d:html.us", "html_page_does_not_exist.html");
    stub.body("d:bad.us", "Date,Open,High,Low,Close,Volume\n2026-11-25,1,2,3,lots,5\n");
    stub.set("d:gone.us", Behavior::Status(404, support::fixture("html_page_does_not_exist.html")));
    stub.body("d:lf.us", "Date,Open,High,Low,Close,Volume\n2026-11-24,1,2,3,274.1,5\n2026-11-25,1,2,3,275.2,5\n");
    let (daily, key) = (stub.daily_template(), key_file.display().to_string());
    let mut bot =
        BotProcess::start(&daemon, &stub.stooq_template(), &[("--daily-url", &daily), ("--stooq-key-file", &key)], &[])
            .await;
    bot.wait_serving(1).await;
    let mut alice = daemon.member("alice", "general").await;
    let mut bob = daemon.member("bob", "general").await;

    let want = [
        QuoteError::UnknownSymbol("ZZZZ.US".into()).reply("zzzz.us"),
        QuoteError::Empty.reply("empty.us"),
        QuoteError::NoData.reply("header.us"),
        QuoteError::NoData.reply("nodata.us"),
        QuoteError::Refused.reply("limit.us"),
        QuoteError::Refused.reply("html.us"),
        QuoteError::Malformed(String::new()).reply("bad.us"),
        QuoteError::Http(404).reply("gone.us"),
        "LF.US quote is $275.20 per share".to_string(),
    ];
    for code in codes {
        ask(&mut alice, "general", &format!("/stock={code}")).await;
    }
    let mut got = Vec::new();
    for _ in codes {
        got.push(next_bot_message(&mut bob).await.text);
    }
    let mut want = want.to_vec();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    for code in codes {
        assert_eq!((stub.hits(code), stub.hits(&format!("d:{code}"))), (1, 1), "{code}");
    }
    // The quota text tells the operator the key's quota is used up (once), not the room.
    let log = bot.stop_and_read_log().await;
    let quota: Vec<_> = log.iter().filter(|l| l.contains("daily quota is used up")).collect();
    assert_eq!(quota.len(), 1, "{quota:?}");
    assert!(quota[0].contains("WARN"), "{}", quota[0]);
}

#[tokio::test]
async fn refusal_warning_is_logged_once_a_while_not_per_request() {
    let daemon = Daemon::start().await;
    let stub = StubHttp::start().await;
    const N: usize = 20;
    for i in 0..N {
        stub.body(&format!("c{i}.us"), API_KEY_PAGE);
    }
    // No key: the operator is told to get one.
    let mut bot = BotProcess::start(&daemon, &stub.stooq_template(), &[("--cache-ttl", "0")], &[]).await;
    bot.wait_serving(1).await;
    let mut alice = daemon.member("alice", "general").await;
    let mut bob = daemon.member("bob", "general").await;
    for i in 0..N {
        ask(&mut alice, "general", &format!("/stock=c{i}.us")).await;
    }
    for _ in 0..N {
        let text = next_bot_message(&mut bob).await.text;
        assert!(text.ends_with(": the quote service refused the request, try again later"), "{text}");
        assert!(!text.contains("API key"), "the room keeps its short sentence: {text}");
    }
    let log = bot.stop_and_read_log().await;
    let refused = log.iter().filter(|l| l.contains("quote failed")).count();
    assert_eq!(refused, N, "every request was refused upstream:\n{}", log.join("\n"));
    let warnings: Vec<_> = log.iter().filter(|l| l.contains(" WARN ")).collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains(FIX), "{}", warnings[0]);
}
