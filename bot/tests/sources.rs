//! The HTTP sources against a local stand-in for stooq and Finnhub (no daemon needed): every
//! answer shape, HTTP errors, a closed connection, a timeout, an unreachable service, the fallback,
//! and the shared calls of the bot's answer path; stooq's daily-history endpoint with an API key.

mod support;

use std::time::Duration;

use chatd_bot::error::QuoteError;
use chatd_bot::source::{ApiKey, Endpoint, Source, Sources};
use chatd_bot::stooq::Refusal;
use support::{Behavior, StubHttp};

fn stooq(stub: &StubHttp) -> Source {
    Source::stooq(stub.stooq_template())
}

fn sources(stub: &StubHttp) -> Sources {
    Sources::new(stooq(stub), None, Duration::from_secs(2)).unwrap()
}

#[tokio::test]
async fn known_quotes() {
    let stub = StubHttp::start().await;
    stub.fixture("aapl.us", "known_aapl_us.csv");
    stub.fixture("msft.us", "known_msft_us.csv");
    stub.fixture("trim.us", "known_aapl_us_trimmed_zero.csv");
    let s = sources(&stub);
    assert_eq!(s.quote("aapl.us").await.unwrap().reply(), "AAPL.US quote is $125.28 per share");
    assert_eq!(s.quote("msft.us").await.unwrap().reply(), "MSFT.US quote is $247.18 per share");
    assert_eq!(s.quote("trim.us").await.unwrap().price, "149.70");
}

#[tokio::test]
async fn caret_codes_are_url_encoded() {
    let stub = StubHttp::start().await;
    stub.body("^spx", "Symbol,Date,Time,Open,High,Low,Close,Volume\r\n^SPX,2021-05-27,22:00:18,1,2,3,4200.88,5\r\n");
    let q = sources(&stub).quote("^spx").await.unwrap();
    assert_eq!(q.reply(), "^SPX quote is $4200.88 per share");
    assert_eq!(stub.hits("^spx"), 1);
}

#[tokio::test]
async fn failures_from_the_body() {
    let stub = StubHttp::start().await;
    stub.fixture("zzzz.us", "unknown_zzzz_us_nd.csv");
    stub.fixture("empty.us", "empty_body.csv");
    stub.fixture("header.us", "header_only.csv");
    stub.fixture("limit.us", "exceeded_daily_hits_limit.txt");
    stub.fixture("html.us", "html_page_does_not_exist.html");
    stub.body("bad.us", "Symbol,Close\r\nBAD.US,twelve\r\n");
    let s = sources(&stub);
    assert_eq!(s.quote("zzzz.us").await, Err(QuoteError::UnknownSymbol("ZZZZ.US".into())));
    assert_eq!(s.quote("empty.us").await, Err(QuoteError::Empty));
    assert_eq!(s.quote("header.us").await, Err(QuoteError::NoData));
    assert_eq!(s.quote("limit.us").await, Err(QuoteError::Refused));
    assert_eq!(s.quote("html.us").await, Err(QuoteError::Refused));
    assert!(matches!(s.quote("bad.us").await, Err(QuoteError::Malformed(_))));
    // Not configured: the stand-in answers N/D like stooq.
    assert_eq!(s.quote("nope.us").await, Err(QuoteError::UnknownSymbol("NOPE.US".into())));
}

#[tokio::test]
async fn transport_failures() {
    let stub = StubHttp::start().await;
    stub.set("gone.us", Behavior::Status(404, support::fixture("html_page_does_not_exist.html")));
    stub.set("oops.us", Behavior::Status(503, String::new()));
    stub.set("close.us", Behavior::Close);
    stub.set("hang.us", Behavior::Hang);
    let s = Sources::new(stooq(&stub), None, Duration::from_millis(300)).unwrap();
    assert_eq!(s.quote("gone.us").await, Err(QuoteError::Http(404)));
    assert_eq!(s.quote("oops.us").await, Err(QuoteError::Http(503)));
    assert!(matches!(s.quote("close.us").await, Err(QuoteError::Transport(_))), "{:?}", s.quote("close.us").await);
    assert_eq!(s.quote("hang.us").await, Err(QuoteError::Timeout(Duration::from_millis(300))));
    let reply = QuoteError::Timeout(Duration::from_millis(300)).reply("hang.us");
    assert!(reply.contains("did not answer within 300 ms"), "{reply}");
}

#[tokio::test]
async fn unreachable_service() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let source = Source::stooq(format!("http://127.0.0.1:{port}/q/l/?s={{code}}"));
    let s = Sources::new(source, None, Duration::from_secs(2)).unwrap();
    let r = s.quote("aapl.us").await;
    assert!(matches!(r, Err(QuoteError::Unreachable(_))), "{r:?}");
}

#[tokio::test]
async fn fallback_when_the_primary_fails() {
    let stub = StubHttp::start().await;
    stub.fixture("aapl.us", "exceeded_daily_hits_limit.txt");
    stub.body(
        "fh:aapl",
        r#"{"c":261.74,"d":0.83,"dp":0.318,"h":263.31,"l":260.68,"o":261.07,"pc":260.91,"t":1700000000}"#,
    );
    stub.fixture("zzzz.us", "unknown_zzzz_us_nd.csv");
    stub.set("ibm", Behavior::Status(500, String::new()));
    stub.body("fh:ibm", r#"{"c":0,"d":null,"dp":null,"h":0,"l":0,"o":0,"pc":0,"t":0}"#);
    let finnhub = Source::Finnhub { base_url: stub.base_url(), key: ApiKey("test-key".into()) };
    let s = Sources::new(stooq(&stub), Some(finnhub), Duration::from_secs(2)).unwrap();

    assert_eq!(s.quote("aapl.us").await.unwrap().reply(), "AAPL.US quote is $261.74 per share");
    assert_eq!((stub.hits("aapl.us"), stub.hits("fh:aapl")), (1, 1));

    // An unknown symbol is an answer: no fallback.
    assert_eq!(s.quote("zzzz.us").await, Err(QuoteError::UnknownSymbol("ZZZZ.US".into())));
    assert_eq!(stub.hits("fh:zzzz"), 0);

    // Both fail: the fallback not knowing the code says less than the primary's failure.
    assert_eq!(s.quote("ibm").await, Err(QuoteError::Http(500)));
    assert_eq!(stub.hits("fh:ibm"), 1);
}

#[tokio::test]
async fn finnhub_as_primary() {
    let stub = StubHttp::start().await;
    stub.body("fh:msft", r#"{"c":210,"t":1700000000}"#);
    let finnhub = Source::Finnhub { base_url: stub.base_url(), key: ApiKey("k".into()) };
    let s = Sources::new(finnhub, None, Duration::from_secs(2)).unwrap();
    assert_eq!(s.quote("msft.us").await.unwrap().reply(), "MSFT.US quote is $210.00 per share");
    assert_eq!(stub.hits("msft.us"), 0);
}

/// A fresh fake key for one test (never a real one).
fn fake_key() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    format!("test-{}", Alphanumeric.sample_string(&mut rand::thread_rng(), 24))
}

fn stooq_with_key(stub: &StubHttp, key: &str) -> Source {
    Source::Stooq {
        url_template: stub.stooq_template(),
        daily_template: stub.daily_template(),
        key: Some(ApiKey(key.into())),
    }
}

const API_KEY_PAGE: &str =
    "<!DOCTYPE html><html><body>CSV downloads need an API key: get your apikey on stooq.com</body></html>";

#[tokio::test]
async fn with_a_key_the_daily_endpoint_answers_when_the_quote_endpoint_refuses() {
    let stub = StubHttp::start().await;
    let key = fake_key();
    stub.body("aapl.us", API_KEY_PAGE);
    stub.fixture("d:aapl.us", "daily_aapl_us.csv");
    let s = Sources::new(stooq_with_key(&stub, &key), None, Duration::from_secs(2)).unwrap();
    let trace = s.trace("aapl.us").await;
    assert_eq!(trace.result.clone().unwrap().reply(), "AAPL.US quote is $277.90 per share");

    // Both endpoints got the key; the recorded attempts show it hidden.
    let targets = stub.targets();
    assert_eq!(targets.len(), 2, "{targets:?}");
    assert!(
        targets[0].starts_with("/q/l/?s=aapl.us&") && targets[0].ends_with(&format!("&apikey={key}")),
        "{targets:?}"
    );
    assert!(targets[1].starts_with("/q/d/l/?s=aapl.us&i=d&d1=") && targets[1].ends_with(&format!("&apikey={key}")));
    assert_eq!(trace.attempts.len(), 2);
    let (quote, daily) = (&trace.attempts[0], &trace.attempts[1]);
    assert_eq!(quote.status, Some(200));
    assert_eq!(quote.refusal, Some(Refusal::ApiKeyNotice));
    assert_eq!(quote.result, Err(QuoteError::Refused));
    assert!(quote.head.as_deref().unwrap().starts_with("<!DOCTYPE html>"));
    assert!(daily.url.ends_with("&apikey=***"), "{}", daily.url);
    assert!(format!("{:?}", trace).find(&key).is_none(), "no attempt holds the key");

    // Without a key only the quote endpoint is asked.
    let stub = StubHttp::start().await;
    stub.body("aapl.us", API_KEY_PAGE);
    stub.fixture("d:aapl.us", "daily_aapl_us.csv");
    let s = Sources::new(Source::stooq(stub.stooq_template()), None, Duration::from_secs(2)).unwrap();
    assert_eq!(s.quote("aapl.us").await, Err(QuoteError::Refused));
    assert_eq!((stub.hits("aapl.us"), stub.hits("d:aapl.us")), (1, 0));
    assert!(!stub.targets()[0].contains("apikey"));
}

#[tokio::test]
async fn daily_endpoint_failures_and_then_the_fallback() {
    let stub = StubHttp::start().await;
    let key = fake_key();
    let lf_daily = support::fixture("daily_aapl_us.csv").replace("\r\n", "\n");
    for code in ["zzzz.us", "empty.us", "header.us", "limit.us", "html.us", "gone.us", "lf.us"] {
        stub.body(code, API_KEY_PAGE);
    }
    stub.fixture("d:zzzz.us", "unknown_zzzz_us_nd.csv");
    stub.fixture("d:empty.us", "empty_body.csv");
    stub.body("d:header.us", "Date,Open,High,Low,Close,Volume\r\n");
    stub.fixture("d:limit.us", "exceeded_daily_hits_limit.txt");
    stub.fixture("d:html.us", "html_page_does_not_exist.html");
    stub.set("d:gone.us", Behavior::Status(404, support::fixture("html_page_does_not_exist.html")));
    stub.body("d:lf.us", lf_daily);
    let s = Sources::new(stooq_with_key(&stub, &key), None, Duration::from_secs(2)).unwrap();
    assert_eq!(s.quote("zzzz.us").await, Err(QuoteError::UnknownSymbol("ZZZZ.US".into())));
    assert_eq!(s.quote("empty.us").await, Err(QuoteError::Empty));
    assert_eq!(s.quote("header.us").await, Err(QuoteError::NoData));
    assert_eq!(s.quote("limit.us").await, Err(QuoteError::Refused));
    assert_eq!(s.quote("html.us").await, Err(QuoteError::Refused));
    assert_eq!(s.quote("gone.us").await, Err(QuoteError::Http(404)));
    assert_eq!(s.quote("lf.us").await.unwrap().reply(), "LF.US quote is $277.90 per share");

    // Both stooq endpoints fail: the fallback is asked next.
    stub.body("fh:limit", r#"{"c":261.74,"t":1700000000}"#);
    let finnhub = Source::Finnhub { base_url: stub.base_url(), key: ApiKey(fake_key()) };
    let s = Sources::new(stooq_with_key(&stub, &key), Some(finnhub), Duration::from_secs(2)).unwrap();
    let trace = s.trace("limit.us").await;
    assert_eq!(trace.result.unwrap().reply(), "LIMIT.US quote is $261.74 per share");
    let asked: Vec<_> = trace.attempts.iter().map(|a| a.endpoint).collect();
    assert_eq!(asked, [Endpoint::StooqQuote, Endpoint::StooqDaily, Endpoint::Finnhub]);
    assert_eq!(trace.attempts[1].refusal, Some(Refusal::Quota));
}
