//! The HTTP quote sources: stooq (CSV, no key) and, with the user's own API key, Finnhub or
//! Alpha Vantage (JSON). One is the primary; another may be the fallback, asked when the primary
//! fails (refused, malformed, HTTP error, timeout, unreachable; not for an unknown symbol, which is
//! an answer). Every call is bounded by one timeout covering connect, headers and body, and bodies
//! are capped in size.

use std::fmt;
use std::time::Duration;

use crate::command::url_encode;
use crate::error::QuoteError;
use crate::json::{parse_alpha_vantage, parse_finnhub, ticker_for};
use crate::quote::{parse_stooq_csv, Quote};

/// The largest answer body read; a bigger one is treated as malformed.
pub const MAX_BODY: usize = 256 * 1024;

/// The stooq URL; `{code}` is replaced by the (URL-encoded, lower-case) code.
pub const STOOQ_URL: &str = "https://stooq.com/q/l/?s={code}&f=sd2t2ohlcv&h&e=csv";
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
    /// A URL template with `{code}`.
    Stooq { url_template: String },
    /// `{base_url}/api/v1/quote?symbol=AAPL&token=KEY`.
    Finnhub { base_url: String, key: ApiKey },
    /// `{base_url}/query?function=GLOBAL_QUOTE&symbol=IBM&apikey=KEY`.
    AlphaVantage { base_url: String, key: ApiKey },
}

impl Source {
    pub fn name(&self) -> &'static str {
        match self {
            Source::Stooq { .. } => "stooq",
            Source::Finnhub { .. } => "finnhub",
            Source::AlphaVantage { .. } => "alphavantage",
        }
    }

    /// The request URL for a valid code (may contain the key: do not log it).
    pub fn url(&self, code: &str) -> String {
        match self {
            Source::Stooq { url_template } => url_template.replace("{code}", &url_encode(code)),
            Source::Finnhub { base_url, key } => format!(
                "{}/api/v1/quote?symbol={}&token={}",
                base_url.trim_end_matches('/'),
                url_encode(&ticker_for(code)),
                query_encode(&key.0)
            ),
            Source::AlphaVantage { base_url, key } => format!(
                "{}/query?function=GLOBAL_QUOTE&symbol={}&apikey={}",
                base_url.trim_end_matches('/'),
                url_encode(&ticker_for(code)),
                query_encode(&key.0)
            ),
        }
    }

    fn parse(&self, body: &str, code: &str) -> Result<Quote, QuoteError> {
        match self {
            Source::Stooq { .. } => parse_stooq_csv(body, code),
            Source::Finnhub { .. } => parse_finnhub(body, code),
            Source::AlphaVantage { .. } => parse_alpha_vantage(body, code),
        }
    }
}

fn query_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The configured sources and the HTTP client they share.
pub struct Sources {
    client: reqwest::Client,
    primary: Source,
    fallback: Option<Source>,
    timeout: Duration,
}

impl Sources {
    pub fn new(primary: Source, fallback: Option<Source>, timeout: Duration) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("chatd-bot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sources { client, primary, fallback, timeout })
    }

    /// A quote for a valid lower-case code, from the primary source or, if it fails, the fallback.
    pub async fn quote(&self, code: &str) -> Result<Quote, QuoteError> {
        let first = self.fetch(&self.primary, code).await;
        let (Err(err), Some(fallback)) = (&first, &self.fallback) else {
            return first;
        };
        if !err.wants_fallback() {
            return first;
        }
        tracing::info!(code, primary = self.primary.name(), fallback = fallback.name(), error = %err, "asking the fallback source");
        match self.fetch(fallback, code).await {
            // The fallback not knowing a code (stooq codes such as ^spx mean nothing to it) says
            // less than why the primary failed.
            Err(QuoteError::UnknownSymbol(_)) => first,
            other => other,
        }
    }

    /// One bounded request to one source.
    pub async fn fetch(&self, source: &Source, code: &str) -> Result<Quote, QuoteError> {
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(self.timeout, self.fetch_unbounded(source, code)).await {
            Ok(r) => r,
            Err(_) => Err(QuoteError::Timeout(self.timeout)),
        };
        match &result {
            Ok(q) => tracing::debug!(source = source.name(), code, price = %q.price, elapsed = ?started.elapsed(), "quote"),
            Err(e) => tracing::warn!(source = source.name(), code, error = %e, elapsed = ?started.elapsed(), "quote failed"),
        }
        result
    }

    async fn fetch_unbounded(&self, source: &Source, code: &str) -> Result<Quote, QuoteError> {
        let response = self.client.get(source.url(code)).send().await.map_err(|e| self.classify(e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(QuoteError::Http(status.as_u16()));
        }
        let body = read_capped(response).await.map_err(|e| match e {
            ReadError::Http(e) => self.classify(e),
            ReadError::TooLarge => QuoteError::Malformed(format!("answer larger than {MAX_BODY} bytes")),
        })?;
        // A binary body is no CSV or JSON answer.
        let body = String::from_utf8(body).map_err(|_| QuoteError::Refused)?;
        source.parse(&body, code)
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

async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Http)? {
        if body.len() + chunk.len() > MAX_BODY {
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
        let s = Source::Stooq { url_template: STOOQ_URL.into() };
        assert_eq!(s.url("^spx"), "https://stooq.com/q/l/?s=%5Espx&f=sd2t2ohlcv&h&e=csv");
        let f = Source::Finnhub { base_url: "http://127.0.0.1:9/".into(), key: ApiKey("k&y".into()) };
        assert_eq!(f.url("aapl.us"), "http://127.0.0.1:9/api/v1/quote?symbol=AAPL&token=k%26y");
        let a = Source::AlphaVantage { base_url: ALPHA_VANTAGE_URL.into(), key: ApiKey("demo".into()) };
        assert_eq!(a.url("ibm"), "https://www.alphavantage.co/query?function=GLOBAL_QUOTE&symbol=IBM&apikey=demo");
        assert_eq!(format!("{:?}", f), "Finnhub { base_url: \"http://127.0.0.1:9/\", key: ApiKey(***) }");
    }
}
