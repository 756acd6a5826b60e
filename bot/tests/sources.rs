//! The HTTP sources against a local stand-in for stooq and Finnhub (no daemon needed): every
//! answer shape, HTTP errors, a closed connection, a timeout, an unreachable service, the fallback,
//! and the shared calls of the bot's answer path.

mod support;

use std::time::Duration;

use chatd_bot::error::QuoteError;
use chatd_bot::source::{ApiKey, Source, Sources};
use support::{Behavior, StubHttp};

fn stooq(stub: &StubHttp) -> Source {
    Source::Stooq { url_template: stub.stooq_template() }
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
    let source = Source::Stooq { url_template: format!("http://127.0.0.1:{port}/q/l/?s={{code}}") };
    let s = Sources::new(source, None, Duration::from_secs(2)).unwrap();
    let r = s.quote("aapl.us").await;
    assert!(matches!(r, Err(QuoteError::Unreachable(_))), "{r:?}");
}

#[tokio::test]
async fn fallback_when_the_primary_fails() {
    let stub = StubHttp::start().await;
    stub.fixture("aapl.us", "exceeded_daily_hits_limit.txt");
    stub.body("fh:aapl", r#"{"c":261.74,"d":0.83,"dp":0.318,"h":263.31,"l":260.68,"o":261.07,"pc":260.91,"t":1700000000}"#);
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
