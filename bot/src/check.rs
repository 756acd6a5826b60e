//! `chatd-bot --check [code]`: one quote through the configured sources, every request shown. The
//! first thing an operator runs after setting a key: for each endpoint asked, what was asked (keys
//! hidden), what came back (status, the first bytes, what it was recognised as), what to do about
//! a refusal, then the reply a user would read. Success means a price came back.

use std::fmt::Write;

use crate::error::{human_duration, QuoteError};
use crate::source::{Attempt, Source, Sources, Trace};

/// The code `--check` asks for when none is given.
pub const DEFAULT_CODE: &str = "aapl.us";

/// Asks for `code` (valid, lower case) and returns the report and whether a price came back.
pub async fn check(sources: &Sources, code: &str) -> (String, bool) {
    let trace = sources.trace(code).await;
    let report = render(sources, code, &trace);
    (report, trace.result.is_ok())
}

/// The report for a finished trace.
pub fn render(sources: &Sources, code: &str, trace: &Trace) -> String {
    let key_set = sources.sources().any(|s| matches!(s, Source::Stooq { key: Some(_), .. }));
    let mut out = String::new();
    let _ = writeln!(out, "chatd-bot --check {code}");
    let chain: Vec<String> = sources.sources().map(describe_source).collect();
    let _ = writeln!(out, "sources: {}", chain.join(", then "));
    for (i, attempt) in trace.attempts.iter().enumerate() {
        render_attempt(&mut out, i + 1, attempt, sources, key_set);
    }
    let reply = match &trace.result {
        Ok(quote) => quote.reply(),
        Err(e) => e.reply(code),
    };
    let _ = writeln!(out, "reply: {reply}");
    let verdict = if trace.result.is_ok() { "OK, a price came back" } else { "FAILED, no price came back" };
    let _ = writeln!(out, "result: {verdict}");
    out
}

fn describe_source(source: &Source) -> String {
    match source {
        Source::Stooq { key: Some(_), .. } => "stooq (API key set: quote endpoint, then daily history)".into(),
        Source::Stooq { key: None, .. } => "stooq (no API key: quote endpoint only)".into(),
        other => format!("{} (API key set)", other.name()),
    }
}

fn render_attempt(out: &mut String, n: usize, a: &Attempt, sources: &Sources, key_set: bool) {
    let _ = writeln!(out, "[{n}] {}: GET {}", a.endpoint.name(), a.url);
    match (a.status, &a.head) {
        (Some(status), Some(head)) => {
            let _ = writeln!(out, "    answer: HTTP {status}, {} bytes, starting {head:?}", a.body_len);
        }
        (Some(status), None) => {
            let _ = writeln!(out, "    answer: HTTP {status}, body not read");
        }
        (None, _) => {
            let _ = writeln!(out, "    answer: none");
        }
    }
    let _ = writeln!(out, "    recognised as: {}", sources.redact(&recognised(a)));
    if let Some(advice) = a.refusal.and_then(|r| r.advice(key_set)) {
        let _ = writeln!(out, "    what to do: {advice}");
    }
}

/// What the answer was taken for, in words.
fn recognised(a: &Attempt) -> String {
    let refusal = a.refusal.map(|r| format!(" ({})", r.describe())).unwrap_or_default();
    match &a.result {
        Ok(q) => format!("a price: {} {}", q.symbol, q.price),
        Err(QuoteError::UnknownSymbol(s)) => format!("an unknown symbol ({s}: N/D)"),
        Err(QuoteError::Refused) => format!("a refusal{refusal}"),
        Err(QuoteError::Empty) => "an empty answer".into(),
        Err(QuoteError::NoData) => "no data (a header without rows)".into(),
        Err(QuoteError::Malformed(m)) => format!("an answer that could not be read: {m}"),
        Err(QuoteError::Http(status)) => format!("an HTTP error {status}{refusal}"),
        Err(QuoteError::Timeout(d)) => format!("no complete answer within {}", human_duration(*d)),
        Err(QuoteError::Unreachable(e)) => format!("unreachable: {e}"),
        Err(QuoteError::Transport(e)) => format!("the connection failed: {e}"),
        Err(e @ (QuoteError::Busy | QuoteError::NoApiKey)) => e.to_string(),
    }
}
