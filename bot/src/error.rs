//! Everything that can go wrong with one quote request, and the one place where each failure is
//! turned into the sentence the bot posts in the room.
//!
//! Sources (`source.rs`) and parsers (`quote.rs`, `json.rs`) return a [`QuoteError`]; only
//! [`QuoteError::reply`] decides what the user reads, so the wording stays consistent whatever
//! the source.

use std::time::Duration;

/// Why no quote could be given for a code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// The service knows no such symbol (stooq: every field `N/D`; Finnhub: all zeros;
    /// Alpha Vantage: an empty `Global Quote`). Carries the symbol to show.
    #[error("unknown symbol {0}")]
    UnknownSymbol(String),
    /// The body was not a quote at all: an HTML page, "Exceeded the daily hits limit", an API-key
    /// notice, an error object.
    #[error("the quote service refused the request")]
    Refused,
    /// A zero-length body.
    #[error("empty answer")]
    Empty,
    /// A well-formed answer without any row (CSV header only).
    #[error("no data row")]
    NoData,
    /// The right kind of answer, but not readable (missing column, bad price, bad symbol).
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The service answered with an HTTP error status.
    #[error("HTTP status {0}")]
    Http(u16),
    /// No complete answer within the bound.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Could not connect at all (refused, DNS, TLS).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// Connected, but the exchange broke off (connection closed mid-answer and the like).
    #[error("transport error: {0}")]
    Transport(String),
    /// Too many requests already waiting in the bot itself.
    #[error("bot busy")]
    Busy,
    /// The source needs an API key and none was configured.
    #[error("no API key configured")]
    NoApiKey,
}

impl QuoteError {
    /// Whether a fallback source should be asked after this failure. An unknown symbol is an
    /// answer, not a failure of the service, so it is not retried elsewhere.
    pub fn wants_fallback(&self) -> bool {
        !matches!(self, QuoteError::UnknownSymbol(_) | QuoteError::Busy)
    }

    /// The line posted in the room for a failed request for `code` (as the user typed it).
    pub fn reply(&self, code: &str) -> String {
        let shown = code.to_ascii_uppercase();
        match self {
            QuoteError::UnknownSymbol(sym) => {
                format!("No quote for {sym}: unknown symbol (check the code, e.g. aapl.us)")
            }
            QuoteError::Refused => {
                format!("No quote for {shown}: the quote service refused the request, try again later")
            }
            QuoteError::Empty => format!("No quote for {shown}: the quote service sent an empty answer"),
            QuoteError::NoData => format!("No quote for {shown}: the quote service sent no data"),
            QuoteError::Malformed(_) => {
                format!("No quote for {shown}: the quote service sent an answer I could not read")
            }
            QuoteError::Http(status) => {
                format!("No quote for {shown}: the quote service answered with HTTP error {status}")
            }
            QuoteError::Timeout(d) => {
                format!("No quote for {shown}: the quote service did not answer within {}", human_duration(*d))
            }
            QuoteError::Unreachable(_) => {
                format!("No quote for {shown}: the quote service is unreachable, try again later")
            }
            QuoteError::Transport(_) => {
                format!("No quote for {shown}: the connection to the quote service failed, try again later")
            }
            QuoteError::Busy => format!("No quote for {shown}: too many requests right now, try again in a moment"),
            QuoteError::NoApiKey => format!("No quote for {shown}: the quote service is not configured"),
        }
    }
}

/// `5 s`, `1.5 s`, `250 ms`.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_reply_says_so() {
        let r = QuoteError::Refused.reply("aapl.us");
        assert!(r.contains("AAPL.US"), "{r}");
        assert!(r.contains("the quote service refused the request"), "{r}");
    }

    #[test]
    fn every_reply_names_the_code_and_is_one_line() {
        let all = [
            QuoteError::UnknownSymbol("ZZZZ.US".into()),
            QuoteError::Refused,
            QuoteError::Empty,
            QuoteError::NoData,
            QuoteError::Malformed("x".into()),
            QuoteError::Http(404),
            QuoteError::Timeout(Duration::from_secs(5)),
            QuoteError::Unreachable("x".into()),
            QuoteError::Transport("x".into()),
            QuoteError::Busy,
            QuoteError::NoApiKey,
        ];
        for e in all {
            let r = e.reply("zzzz.us");
            assert!(r.contains("ZZZZ.US"), "{r}");
            assert!(!r.chars().any(|c| c.is_control()), "{r:?}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5 s");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(human_duration(Duration::from_millis(300)), "300 ms");
        assert!(QuoteError::Timeout(Duration::from_secs(5)).reply("x").contains("within 5 s"));
    }

    #[test]
    fn fallback_policy() {
        assert!(!QuoteError::UnknownSymbol("X".into()).wants_fallback());
        assert!(QuoteError::Refused.wants_fallback());
        assert!(QuoteError::Timeout(Duration::from_secs(1)).wants_fallback());
        assert!(QuoteError::Http(404).wants_fallback());
    }
}
