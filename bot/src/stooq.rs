//! What is particular to stooq: its two CSV endpoints with the operator's API key, what its refusal
//! pages say, and the warnings that tell the operator what to do about them.
//!
//! - The quote endpoint (`/q/l/?s=<code>&f=sd2t2ohlcv&h&e=csv`) and the daily-history endpoint
//!   (`/q/d/l/?s=<code>&i=d`) both get `apikey=<key>` when a key is configured. The daily request
//!   also asks only for the last couple of weeks (`d1`, `d2`), so its answer stays small.
//! - A refusal (a body that is no CSV answer) is recognised as an API-key notice, a browser check,
//!   the daily quota text or something else. The room only ever reads "the quote service refused
//!   the request"; the operator gets one warning per kind a while ([`WARN_EVERY`]) naming the fix.
//! - Keys never reach a log line or an error text: [`Redactor`] replaces them, and
//!   [`redact_query`] hides `apikey=`/`token=` values in a URL (also those typed into a template).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The daily-history endpoint; `{code}` is replaced by the (URL-encoded, lower-case) code.
pub const STOOQ_DAILY_URL: &str = "https://stooq.com/q/d/l/?s={code}&i=d";
/// The environment variable with the stooq API key (used when no key file is given).
pub const STOOQ_KEY_ENV: &str = "STOOQ_API_KEY";
/// How often at most the same operator warning is logged.
pub const WARN_EVERY: Duration = Duration::from_secs(600);
/// How far back the daily request reaches: enough to span long weekends and holidays.
pub const DAILY_WINDOW_DAYS: i64 = 14;

/// What a refusal page says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// A page asking for an API key.
    ApiKeyNotice,
    /// A page checking for a browser (CAPTCHA, JavaScript challenge).
    BrowserCheck,
    /// "Exceeded the daily hits limit": the key's (or the address's) daily quota is used up.
    Quota,
    /// Anything else that is not a quote (an error page, an unexpected text).
    Other,
}

impl Refusal {
    /// How `--check` names it.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::ApiKeyNotice => "an API-key notice",
            Refusal::BrowserCheck => "a browser check",
            Refusal::Quota => "the daily quota text (\"Exceeded the daily hits limit\")",
            Refusal::Other => "a page that is not a quote",
        }
    }

    /// What the operator should do, or `None` when there is nothing specific to say.
    pub fn advice(self, key_set: bool) -> Option<&'static str> {
        match (self, key_set) {
            (Refusal::ApiKeyNotice | Refusal::BrowserCheck, false) => Some(
                "stooq asks for an API key: get one on stooq's site and set STOOQ_API_KEY, or configure a fallback \
                 source",
            ),
            (Refusal::ApiKeyNotice | Refusal::BrowserCheck, true) => Some(
                "stooq refused the request although an API key is set: check the key (STOOQ_API_KEY or \
                 --stooq-key-file) with chatd-bot --check, or configure a fallback source",
            ),
            (Refusal::Quota, true) => Some(
                "the stooq API key's daily quota is used up: stooq refuses requests until it resets; configure a \
                 fallback source to keep answering",
            ),
            (Refusal::Quota, false) => Some(
                "stooq's daily hits limit is reached: get an API key on stooq's site and set STOOQ_API_KEY, or \
                 configure a fallback source",
            ),
            (Refusal::Other, _) => None,
        }
    }
}

/// Recognises a refusal from its body (decided from the text: stooq answers 200 or 404 for all).
pub fn recognise(body: &str) -> Refusal {
    let lower = body.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if has(&["daily hits limit"]) {
        Refusal::Quota
    } else if has(&["apikey", "api key", "api_key", "api-key"]) {
        Refusal::ApiKeyNotice
    } else if has(&["captcha", "browser", "javascript", "challenge", "are you a robot", "not a robot"]) {
        Refusal::BrowserCheck
    } else {
        Refusal::Other
    }
}

/// Operator warnings, each kind logged at most once per [`WARN_EVERY`].
pub struct Warnings {
    every: Duration,
    last: Mutex<HashMap<Refusal, Instant>>,
}

impl Warnings {
    pub fn new(every: Duration) -> Self {
        Warnings { every, last: Mutex::new(HashMap::new()) }
    }

    /// The advice to log for `refusal` now, or `None` if there is none or it was logged less than
    /// `every` ago.
    pub fn due(&self, refusal: Refusal, key_set: bool, now: Instant) -> Option<&'static str> {
        let advice = refusal.advice(key_set)?;
        let mut last = self.last.lock().unwrap();
        match last.get(&refusal) {
            Some(at) if now.duration_since(*at) < self.every => None,
            _ => {
                last.insert(refusal, now);
                Some(advice)
            }
        }
    }
}

/// Appends `name=value` to a URL's query (`value` percent-encoded).
pub fn with_param(url: &str, name: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{name}={}", query_encode(value))
}

/// `&d1=YYYYMMDD&d2=YYYYMMDD`: from [`DAILY_WINDOW_DAYS`] before `now` to the day after (stooq's
/// dates are Warsaw's, ahead of UTC).
pub fn daily_window(now: SystemTime) -> String {
    let today = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0) as i64;
    format!("&d1={}&d2={}", yyyymmdd(today - DAILY_WINDOW_DAYS), yyyymmdd(today + 1))
}

/// The civil date of a day number since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn yyyymmdd(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}")
}

/// Percent-encodes a query value (keys may hold any character).
pub fn query_encode(s: &str) -> String {
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

/// Replaces the value of every secret-looking query parameter with `***`.
pub fn redact_query(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((name, _)) if ["apikey", "api_key", "token", "key"].contains(&name.to_ascii_lowercase().as_str()) => {
                format!("{name}=***")
            }
            _ => kv.to_string(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

/// Replaces known secrets (as they are and as they appear in a URL) with `***` in any text.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets = Vec::new();
        for key in keys.into_iter().filter(|k| !k.is_empty()) {
            secrets.push(key.to_string());
            secrets.push(query_encode(key));
        }
        // Longest first, so a key that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/stooq/").to_string() + name;
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn refusals_recognised() {
        assert_eq!(recognise(&fixture("exceeded_daily_hits_limit.txt")), Refusal::Quota);
        assert_eq!(recognise(&fixture("html_page_does_not_exist.html")), Refusal::Other);
        assert_eq!(
            recognise(
                "<html><body>Access to CSV downloads needs an <b>API key</b>: get your apikey here</body></html>"
            ),
            Refusal::ApiKeyNotice
        );
        assert_eq!(recognise("<html>Checking your browser before accessing stooq.com</html>"), Refusal::BrowserCheck);
        assert_eq!(recognise("<html><div class=\"g-recaptcha\"></div></html>"), Refusal::BrowserCheck);
    }

    #[test]
    fn advice_names_the_fix() {
        assert_eq!(
            Refusal::ApiKeyNotice.advice(false),
            Some("stooq asks for an API key: get one on stooq's site and set STOOQ_API_KEY, or configure a fallback source")
        );
        assert!(Refusal::Quota.advice(true).unwrap().contains("daily quota is used up"));
        assert_eq!(Refusal::Other.advice(false), None);
    }

    #[test]
    fn warnings_are_rate_limited_per_kind() {
        let w = Warnings::new(Duration::from_secs(600));
        let t0 = Instant::now();
        assert!(w.due(Refusal::ApiKeyNotice, false, t0).is_some());
        for i in 1..20 {
            assert_eq!(w.due(Refusal::ApiKeyNotice, false, t0 + Duration::from_secs(i)), None);
        }
        assert!(w.due(Refusal::Quota, true, t0).is_some(), "another kind has its own clock");
        assert!(w.due(Refusal::ApiKeyNotice, false, t0 + Duration::from_secs(600)).is_some());
        assert_eq!(w.due(Refusal::Other, false, t0), None);
    }

    #[test]
    fn dates() {
        assert_eq!(yyyymmdd(0), "19700101");
        assert_eq!(yyyymmdd(-1), "19691231");
        assert_eq!(yyyymmdd(20_000), "20241004");
        assert_eq!(yyyymmdd(19_782), "20240229");
        let now = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 3600);
        assert_eq!(daily_window(now), "&d1=20240920&d2=20241005");
    }

    #[test]
    fn params_and_redaction() {
        assert_eq!(with_param("http://x/q/l/?s=a", "apikey", "k&y"), "http://x/q/l/?s=a&apikey=k%26y");
        assert_eq!(with_param("http://x/", "apikey", "k"), "http://x/?apikey=k");
        assert_eq!(
            redact_query("http://x/q/l/?s=a&apikey=SECRET&e=csv&token=T"),
            "http://x/q/l/?s=a&apikey=***&e=csv&token=***"
        );
        assert_eq!(redact_query("http://x/"), "http://x/");
        let r = Redactor::new(["k&y", "abc"]);
        assert_eq!(r.redact("a k&y b k%26y c abc"), "a *** b *** c ***");
        assert_eq!(Redactor::new([""]).redact("text"), "text");
    }
}
