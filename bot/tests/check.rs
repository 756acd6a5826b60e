//! `chatd-bot --check`: the real binary against a local stand-in for stooq (and Finnhub), no
//! daemon. For each case the report names what was asked (key hidden), what came back and what it
//! was recognised as, and the exit status says whether a price came back.

mod support;

use support::bot::{run_check, CheckRun};
use support::{Behavior, StubHttp};

const API_KEY_PAGE: &str =
    "<!DOCTYPE html><html><body>CSV downloads need an API key: get your apikey on stooq.com</body></html>";

fn fake_key() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!("test-{}", Alphanumeric.sample_string(&mut rand::thread_rng(), 24))
}

/// `--check <code>` against the stand-in, with `key` in $STOOQ_API_KEY if given.
async fn check(stub: &StubHttp, code: &str, key: Option<&str>, extra: &[&str]) -> CheckRun {
    let (quote, daily) = (stub.stooq_template(), stub.daily_template());
    let mut args = vec!["--quote-url", &quote, "--daily-url", &daily, "--timeout", "2"];
    args.extend_from_slice(extra);
    let env: Vec<(&str, &str)> = key.map(|k| ("STOOQ_API_KEY", k)).into_iter().collect();
    let run = run_check(code, &args, &env).await;
    if let Some(key) = key {
        assert!(!run.stdout.contains(key) && !run.stderr.contains(key), "the key is shown:\n{}", run.stdout);
    }
    run
}

fn assert_lines(run: &CheckRun, wanted: &[&str]) {
    for w in wanted {
        assert!(run.stdout.contains(w), "missing {w:?} in:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    }
}

#[tokio::test]
async fn a_working_quote_endpoint() {
    let stub = StubHttp::start().await;
    stub.fixture("aapl.us", "known_aapl_us.csv");
    let run = check(&stub, "aapl.us", None, &[]).await;
    assert!(run.success, "{}", run.stdout);
    let url = format!("[1] stooq: GET http://{}/q/l/?s=aapl.us&f=sd2t2ohlcv&h&e=csv\n", stub.addr);
    assert_lines(
        &run,
        &[
            "sources: stooq (no API key: quote endpoint only)",
            &url,
            "answer: HTTP 200, ",
            "starting \"Symbol,Date,Time,Open,High,Low,Close,Volume\\r\\nAAPL.US,",
            "recognised as: a price: AAPL.US 125.28",
            "reply: AAPL.US quote is $125.28 per share",
            "result: OK, a price came back",
        ],
    );
    assert!(!run.stdout.contains("[2]"), "one request only:\n{}", run.stdout);
}

#[tokio::test]
async fn no_key_and_an_api_key_page() {
    let stub = StubHttp::start().await;
    stub.body("aapl.us", API_KEY_PAGE);
    let run = check(&stub, "aapl.us", None, &[]).await;
    assert!(!run.success && run.code == Some(1), "{}", run.stdout);
    assert_lines(
        &run,
        &[
            "starting \"<!DOCTYPE html>",
            "recognised as: a refusal (an API-key notice)",
            "what to do: stooq asks for an API key: get one on stooq's site and set STOOQ_API_KEY, or configure a \
             fallback source",
            "reply: No quote for AAPL.US: the quote service refused the request, try again later",
            "result: FAILED, no price came back",
        ],
    );
    assert_eq!(stub.hits("d:aapl.us"), 0);
}

#[tokio::test]
async fn a_key_and_the_daily_endpoint_answering() {
    let stub = StubHttp::start().await;
    let key = fake_key();
    stub.body("aapl.us", API_KEY_PAGE);
    stub.fixture("d:aapl.us", "daily_aapl_us.csv");
    let run = check(&stub, "AAPL.US", Some(&key), &[]).await;
    assert!(run.success, "{}", run.stdout);
    assert_lines(
        &run,
        &[
            "sources: stooq (API key set: quote endpoint, then daily history)",
            "/q/l/?s=aapl.us&f=sd2t2ohlcv&h&e=csv&apikey=***\n",
            "[2] stooq daily: GET ",
            "/q/d/l/?s=aapl.us&i=d&d1=",
            "&apikey=***\n",
            "starting \"Date,Open,High,Low,Close,Volume\\r\\n",
            "recognised as: a price: AAPL.US 277.90",
            "reply: AAPL.US quote is $277.90 per share",
            "result: OK, a price came back",
        ],
    );
    // The key did reach stooq, on both endpoints.
    let targets = stub.targets();
    assert_eq!(targets.iter().filter(|t| t.ends_with(&format!("&apikey={key}"))).count(), 2, "{targets:?}");
}

#[tokio::test]
async fn each_daily_endpoint_failure_is_diagnosed() {
    let stub = StubHttp::start().await;
    let key = fake_key();
    let cases: Vec<(&str, Behavior, &str, &str)> = vec![
        (
            "zzzz.us",
            Behavior::Body(support::fixture("unknown_zzzz_us_nd.csv")),
            "an unknown symbol (ZZZZ.US: N/D)",
            "No quote for ZZZZ.US: unknown symbol",
        ),
        ("empty.us", Behavior::Body(String::new()), "an empty answer", "the quote service sent an empty answer"),
        (
            "header.us",
            Behavior::Body("Date,Open,High,Low,Close,Volume\r\n".into()),
            "no data (a header without rows)",
            "the quote service sent no data",
        ),
        (
            "limit.us",
            Behavior::Body(support::fixture("exceeded_daily_hits_limit.txt")),
            "a refusal (the daily quota text",
            "the quote service refused the request",
        ),
        (
            "html.us",
            Behavior::Body(support::fixture("html_page_does_not_exist.html")),
            "a refusal (a page that is not a quote)",
            "the quote service refused the request",
        ),
        (
            "echo.us",
            Behavior::Body(format!("<html>apikey {key} is not valid</html>")),
            "a refusal (an API-key notice)",
            "the quote service refused the request",
        ),
        (
            "gone.us",
            Behavior::Status(404, support::fixture("html_page_does_not_exist.html")),
            "an HTTP error 404",
            "the quote service answered with HTTP error 404",
        ),
        ("close.us", Behavior::Close, "the connection failed", "the connection to the quote service failed"),
    ];
    for (code, behavior, _, _) in &cases {
        stub.body(code, API_KEY_PAGE);
        stub.set(&format!("d:{code}"), behavior.clone());
    }
    for (code, _, recognised, reply) in &cases {
        let run = check(&stub, code, Some(&key), &[]).await;
        assert!(!run.success && run.code == Some(1), "{code}:\n{}", run.stdout);
        let recognised = format!("recognised as: {recognised}");
        assert_lines(&run, &["[2] stooq daily: GET ", &recognised, reply, "result: FAILED, no price came back"]);
    }
    // The quota text gets its advice, and the echoed key is hidden in the body shown.
    let run = check(&stub, "limit.us", Some(&key), &[]).await;
    assert_lines(&run, &["what to do: the stooq API key's daily quota is used up"]);
    let run = check(&stub, "echo.us", Some(&key), &[]).await;
    assert_lines(&run, &["starting \"<html>apikey *** is not valid</html>\""]);
}

#[tokio::test]
async fn unreachable_stooq_and_a_fallback() {
    let stub = StubHttp::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead = format!("http://127.0.0.1:{port}/q/l/?s={{code}}");
    let run = run_check("aapl.us", &["--quote-url", &dead], &[]).await;
    assert!(!run.success, "{}", run.stdout);
    assert!(run.stdout.contains("answer: none") && run.stdout.contains("recognised as: unreachable"), "{}", run.stdout);
    assert!(run.stdout.contains("reply: No quote for AAPL.US: the quote service is unreachable"), "{}", run.stdout);

    // A fallback that answers turns the check green, and its key is hidden as well.
    stub.body("fh:aapl", r#"{"c":261.74,"t":1700000000}"#);
    let fh_key = fake_key();
    let base = stub.base_url();
    let run = run_check(
        "aapl.us",
        &["--quote-url", &dead, "--fallback", "finnhub", "--finnhub-url", &base],
        &[("FINNHUB_API_KEY", &fh_key)],
    )
    .await;
    assert!(run.success, "{}", run.stdout);
    assert!(run.stdout.contains("[2] finnhub: GET http://") && run.stdout.contains("&token=***"), "{}", run.stdout);
    assert!(run.stdout.contains("reply: AAPL.US quote is $261.74 per share"), "{}", run.stdout);
    assert!(!run.stdout.contains(&fh_key));
}
