//! The HTTP quote sources: stooq (CSV; with the operator's API key also its daily-history endpoint)
//! and, with the user's own API key, Finnhub or Alpha Vantage (JSON). One is the primary; another
//! may be the fallback. A source is asked through its endpoints in order ([`Endpoint`]): stooq's
//! quote endpoint, then (with a key) its daily-history endpoint, then the fallback's. The next one
//! is asked when the previous one fails (refused, malformed, HTTP error, timeout, unreachable), not
//! for an unknown symbol, which is an answer. Every call is bounded by one timeout covering
//! connect, headers and body, and bodies are capped in size.
//!
//! Each call is recorded as an [`Attempt`] (URL with the key hidden, status, first bytes, what the
//! body was recognised as): `--check` prints them, and a request that ends without a price gives
//! the operator a rate-limited warning about what stooq's refusal asks for (`stooq.rs`).

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use crate::command::url_encode;
use crate::error::QuoteError;
use crate::json::{parse_alpha_vantage, parse_finnhub, ticker_for};
use crate::quote::{parse_stooq_csv, parse_stooq_daily, Quote};
use crate::stooq::{
    self, daily_window, query_encode, recognise, redact_query, with_param, Redactor, Refusal, Warnings,
};

/// The largest answer body read; a bigger one is treated as malformed.
pub const MAX_BODY: usize = 256 * 1024;
/// The largest daily-history body: should stooq ignore the date window, a full history still fits.
pub const MAX_DAILY_BODY: usize = 2 * 1024 * 1024;
/// How many bytes of a body an [`Attempt`] keeps, for `--check`.
pub const HEAD_BYTES: usize = 160;

/// The stooq URL; `{code}` is replaced by the (URL-encoded, lower-case) code.
pub const STOOQ_URL: &str = "https://stooq.com/q/l/?s={code}&f=sd2t2ohlcv&h&e=csv";
pub use crate::stooq::STOOQ_DAILY_URL;
pub const FINNHUB_URL: &str = "https://finnhub.io";
pub const ALPHA_VANTAGE_URL: &str = "https://www.alphavantage.co";

/// An API key; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(pub String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Which service to ask, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// URL templates with `{code}` for the quote and the daily-history endpoints; with a key,
    /// every request carries `apikey=KEY` and the daily endpoint is asked when the quote endpoint
    /// fails.
    Stooq { url_template: String, daily_template: String, key: Option<ApiKey> },
    /// `{base_url}/api/v1/quote?symbol=AAPL&token=KEY`.
    Finnhub { base_url: String, key: ApiKey },
    /// `{base_url}/query?function=GLOBAL_QUOTE&symbol=IBM&apikey=KEY`.
    AlphaVantage { base_url: String, key: ApiKey },
}

/// One kind of request a source makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    StooqQuote,
    StooqDaily,
    Finnhub,
    AlphaVantage,
}

impl Endpoint {
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::StooqQuote => "stooq",
            Endpoint::StooqDaily => "stooq daily",
            Endpoint::Finnhub => "finnhub",
            Endpoint::AlphaVantage => "alphavantage",
        }
    }

    fn parse(self, body: &str, code: &str) -> Result<Quote, QuoteError> {
        match self {
            Endpoint::StooqQuote => parse_stooq_csv(body, code),
            Endpoint::StooqDaily => parse_stooq_daily(body, code),
            Endpoint::Finnhub => parse_finnhub(body, code),
            Endpoint::AlphaVantage => parse_alpha_vantage(body, code),
        }
    }

    fn max_body(self) -> usize {
        match self {
            Endpoint::StooqDaily => MAX_DAILY_BODY,
            _ => MAX_BODY,
        }
    }

    fn is_stooq(self) -> bool {
        matches!(self, Endpoint::StooqQuote | Endpoint::StooqDaily)
    }
}

impl Source {
    /// stooq at this quote URL template, without a key (the daily endpoint at its default).
    pub fn stooq(url_template: impl Into<String>) -> Source {
        Source::Stooq { url_template: url_template.into(), daily_template: STOOQ_DAILY_URL.into(), key: None }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Source::Stooq { .. } => "stooq",
            Source::Finnhub { .. } => "finnhub",
            Source::AlphaVantage { .. } => "alphavantage",
        }
    }

    /// The endpoints asked, in order.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        match self {
            Source::Stooq { key: Some(_), .. } => vec![Endpoint::StooqQuote, Endpoint::StooqDaily],
            Source::Stooq { key: None, .. } => vec![Endpoint::StooqQuote],
            Source::Finnhub { .. } => vec![Endpoint::Finnhub],
            Source::AlphaVantage { .. } => vec![Endpoint::AlphaVantage],
        }
    }

    pub fn key(&self) -> Option<&ApiKey> {
        match self {
            Source::Stooq { key, .. } => key.as_ref(),
            Source::Finnhub { key, .. } | Source::AlphaVantage { key, .. } => Some(key),
        }
    }

    /// The quote-endpoint URL for a valid code (may contain the key: do not log it).
    pub fn url(&self, code: &str) -> String {
        let endpoint = self.endpoints()[0];
        self.endpoint_url(endpoint, code, SystemTime::now())
    }

    /// The URL of one of this source's endpoints for a valid code at time `now` (may contain the
    /// key: do not log it).
    pub fn endpoint_url(&self, endpoint: Endpoint, code: &str, now: SystemTime) -> String {
        match (self, endpoint) {
            (Source::Stooq { url_template, key, .. }, Endpoint::StooqQuote) => {
                with_key(url_template.replace("{code}", &url_encode(code)), key.as_ref())
            }
            (Source::Stooq { daily_template, key, .. }, _) => {
                let url = daily_template.replace("{code}", &url_encode(code)) + &daily_window(now);
                with_key(url, key.as_ref())
            }
            (Source::Finnhub { base_url, key }, _) => format!(
                "{}/api/v1/quote?symbol={}&token={}",
                base_url.trim_end_matches('/'),
                url_encode(&ticker_for(code)),
                query_encode(&key.0)
            ),
            (Source::AlphaVantage { base_url, key }, _) => format!(
                "{}/query?function=GLOBAL_QUOTE&symbol={}&apikey={}",
                base_url.trim_end_matches('/'),
                url_encode(&ticker_for(code)),
                query_encode(&key.0)
            ),
        }
    }
}

fn with_key(url: String, key: Option<&ApiKey>) -> String {
    match key {
        Some(key) => with_param(&url, "apikey", &key.0),
        None => url,
    }
}

/// One request to one endpoint, as `--check` shows it. Holds no secret.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub endpoint: Endpoint,
    /// The URL asked, keys replaced by `***`.
    pub url: String,
    /// The HTTP status, if an answer came.
    pub status: Option<u16>,
    /// The body's length and its first [`HEAD_BYTES`] bytes (lossy UTF-8, keys replaced).
    pub body_len: usize,
    pub head: Option<String>,
    /// What a refusal (or an HTTP error page) was recognised as.
    pub refusal: Option<Refusal>,
    pub result: Result<Quote, QuoteError>,
}

/// Every attempt for one code and the outcome.
#[derive(Debug, Clone)]
pub struct Trace {
    pub attempts: Vec<Attempt>,
    pub result: Result<Quote, QuoteError>,
}

/// The configured sources and the HTTP client they share.
pub struct Sources {
    client: reqwest::Client,
    primary: Source,
    fallback: Option<Source>,
    timeout: Duration,
    redactor: Redactor,
    warnings: Warnings,
}

impl Sources {
    pub fn new(primary: Source, fallback: Option<Source>, timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("chatd-bot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let keys = [Some(&primary), fallback.as_ref()].into_iter().flatten().filter_map(Source::key);
        let redactor = Redactor::new(keys.map(|k| k.0.as_str()));
        Ok(Sources { client, primary, fallback, timeout, redactor, warnings: Warnings::new(stooq::WARN_EVERY) })
    }

    /// `text` with every configured key replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// The sources in the order they are asked.
    pub fn sources(&self) -> impl Iterator<Item = &Source> {
        std::iter::once(&self.primary).chain(self.fallback.as_ref())
    }

    /// A quote for a valid lower-case code, from the first endpoint that gives one.
    pub async fn quote(&self, code: &str) -> Result<Quote, QuoteError> {
        self.trace(code).await.result
    }

    /// Asks the endpoints in order until one gives a price or an answer that ends the search (an
    /// unknown symbol), recording every attempt.
    pub async fn trace(&self, code: &str) -> Trace {
        let mut attempts: Vec<Attempt> = Vec::new();
        let mut result: Option<Result<Quote, QuoteError>> = None;
        'sources: for source in self.sources() {
            for endpoint in source.endpoints() {
                if let Some(Err(previous)) = &result {
                    let error = self.redactor.redact(&previous.to_string());
                    tracing::info!(code, next = endpoint.name(), %error, "asking the next source");
                }
                let attempt = self.attempt(source, endpoint, code).await;
                let outcome = attempt.result.clone();
                attempts.push(attempt);
                match outcome {
                    Ok(quote) => {
                        result = Some(Ok(quote));
                        break 'sources;
                    }
                    // Another service not knowing a code (stooq codes such as ^spx mean nothing
                    // to Finnhub) says less than why stooq failed.
                    Err(QuoteError::UnknownSymbol(_)) if !endpoint.is_stooq() && result.is_some() => break 'sources,
                    Err(e) => {
                        let stop = !e.wants_fallback();
                        result = Some(Err(e));
                        if stop {
                            break 'sources;
                        }
                    }
                }
            }
        }
        let result = result.expect("there is always a primary endpoint");
        if result.is_err() {
            self.warn_operator(&attempts);
        }
        Trace { attempts, result }
    }

    /// For a request that got no price: one warning a while per kind of stooq refusal, naming
    /// the fix. (Refusals followed by a price need no action, so they only show in the debug log.)
    fn warn_operator(&self, attempts: &[Attempt]) {
        let key_set = self.sources().any(|s| matches!(s, Source::Stooq { key: Some(_), .. }));
        let now = Instant::now();
        for attempt in attempts.iter().filter(|a| a.endpoint.is_stooq()) {
            if let Some(advice) = attempt.refusal.and_then(|r| self.warnings.due(r, key_set, now)) {
                tracing::warn!(endpoint = attempt.endpoint.name(), "{advice}");
            }
        }
    }

    /// One bounded request to one endpoint.
    async fn attempt(&self, source: &Source, endpoint: Endpoint, code: &str) -> Attempt {
        let url = source.endpoint_url(endpoint, code, SystemTime::now());
        let mut attempt = Attempt {
            endpoint,
            url: self.redactor.redact(&redact_query(&url)),
            status: None,
            body_len: 0,
            head: None,
            refusal: None,
            // Stays so if the bound expires before the exchange decides otherwise.
            result: Err(QuoteError::Timeout(self.timeout)),
        };
        let started = Instant::now();
        let _ = tokio::time::timeout(self.timeout, self.exchange(&url, endpoint, code, &mut attempt)).await;
        let elapsed = started.elapsed();
        match &attempt.result {
            Ok(q) => {
                tracing::debug!(endpoint = endpoint.name(), code, price = %q.price, ?elapsed, "quote")
            }
            Err(e) => {
                let error = self.redactor.redact(&e.to_string());
                let refusal = attempt.refusal.map(Refusal::describe);
                tracing::info!(endpoint = endpoint.name(), code, %error, refusal, ?elapsed, "quote failed");
            }
        }
        attempt
    }

    /// Sends the request and fills in `attempt` as the answer arrives.
    async fn exchange(&self, url: &str, endpoint: Endpoint, code: &str, attempt: &mut Attempt) {
        let response = match self.client.get(url).send().await {
            Ok(r) => r,
            Err(e) => {
                attempt.result = Err(self.classify(e));
                return;
            }
        };
        let status = response.status();
        attempt.status = Some(status.as_u16());
        if !status.is_success() {
            // Decided; the body (read within the same bound) only tells the operator more.
            attempt.result = Err(QuoteError::Http(status.as_u16()));
        }
        let body = match read_capped(response, endpoint.max_body()).await {
            Ok(body) => body,
            Err(_) if !status.is_success() => return,
            Err(ReadError::Http(e)) => {
                attempt.result = Err(self.classify(e));
                return;
            }
            Err(ReadError::TooLarge) => {
                let limit = endpoint.max_body();
                attempt.result = Err(QuoteError::Malformed(format!("answer larger than {limit} bytes")));
                return;
            }
        };
        let text = String::from_utf8_lossy(&body);
        attempt.body_len = body.len();
        attempt.head = Some(self.head(&text));
        if !status.is_success() {
            attempt.refusal = Some(recognise(&text)).filter(|r| *r != Refusal::Other);
            return;
        }
        // A binary body is no CSV or JSON answer.
        attempt.result = match std::str::from_utf8(&body) {
            Ok(text) => endpoint.parse(text, code),
            Err(_) => Err(QuoteError::Refused),
        };
        if attempt.result == Err(QuoteError::Refused) {
            attempt.refusal = Some(recognise(&text));
        }
    }

    /// The first bytes of a body, keys hidden (a refusal page may echo the key it was given).
    fn head(&self, text: &str) -> String {
        let redacted = self.redactor.redact(text);
        let mut end = HEAD_BYTES.min(redacted.len());
        while !redacted.is_char_boundary(end) {
            end -= 1;
        }
        redacted[..end].to_string()
    }

    fn classify(&self, e: reqwest::Error) -> QuoteError {
        if e.is_timeout() {
            QuoteError::Timeout(self.timeout)
        } else if e.is_connect() {
            QuoteError::Unreachable(error_chain(e))
        } else {
            QuoteError::Transport(error_chain(e))
        }
    }
}

enum ReadError {
    Http(reqwest::Error),
    TooLarge,
}

async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Http)? {
        if body.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The error and its causes, without the URL (which may hold an API key).
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let s = Source::stooq(STOOQ_URL);
        assert_eq!(s.url("^spx"), "https://stooq.com/q/l/?s=%5Espx&f=sd2t2ohlcv&h&e=csv");
        let f = Source::Finnhub { base_url: "http://127.0.0.1:9/".into(), key: ApiKey("k&y".into()) };
        assert_eq!(f.url("aapl.us"), "http://127.0.0.1:9/api/v1/quote?symbol=AAPL&token=k%26y");
        let a = Source::AlphaVantage { base_url: ALPHA_VANTAGE_URL.into(), key: ApiKey("demo".into()) };
        assert_eq!(a.url("ibm"), "https://www.alphavantage.co/query?function=GLOBAL_QUOTE&symbol=IBM&apikey=demo");
        assert_eq!(format!("{:?}", f), "Finnhub { base_url: \"http://127.0.0.1:9/\", key: ApiKey(***) }");
    }

    #[test]
    fn stooq_urls_carry_the_key() {
        let s = Source::Stooq {
            url_template: STOOQ_URL.into(),
            daily_template: STOOQ_DAILY_URL.into(),
            key: Some(ApiKey("k/y".into())),
        };
        assert_eq!(s.endpoints(), [Endpoint::StooqQuote, Endpoint::StooqDaily]);
        assert_eq!(s.url("aapl.us"), "https://stooq.com/q/l/?s=aapl.us&f=sd2t2ohlcv&h&e=csv&apikey=k%2Fy");
        let day = std::time::UNIX_EPOCH + Duration::from_secs(20_000 * 86_400);
        assert_eq!(
            s.endpoint_url(Endpoint::StooqDaily, "aapl.us", day),
            "https://stooq.com/q/d/l/?s=aapl.us&i=d&d1=20240920&d2=20241005&apikey=k%2Fy"
        );
        assert!(!format!("{s:?}").contains("k/y"));
        assert_eq!(Source::stooq(STOOQ_URL).endpoints(), [Endpoint::StooqQuote], "no key, no daily endpoint");
    }
}
