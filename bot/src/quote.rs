//! A quote and how it is written in the room, and the stooq CSV answers it is read from (the quote
//! endpoint below; the daily-history endpoint in [`parse_stooq_daily`]).
//!
//! stooq answers `GET /q/l/?s=<code>&f=sd2t2ohlcv&h&e=csv` with a header row and one row per
//! symbol, always with HTTP 200, errors included, so everything is decided from the body:
//!
//! | body | result |
//! |---|---|
//! | header + row with a `Close` price | [`Quote`] |
//! | row whose `Close` is `N/D` | [`QuoteError::UnknownSymbol`] |
//! | zero bytes / only whitespace | [`QuoteError::Empty`] |
//! | header, no row | [`QuoteError::NoData`] |
//! | no `Symbol` and `Close` columns (HTML page, "Exceeded the daily hits limit", ...) | [`QuoteError::Refused`] |
//! | CSV with the columns but a broken row, a bad price or symbol | [`QuoteError::Malformed`] |
//!
//! Columns are found by header name (`Symbol`, `Close`, compared case-insensitively), not by
//! position.

use crate::error::QuoteError;

/// A price for a symbol, ready to be shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Upper case, as the source spells it (stooq echoes the symbol in upper case).
    pub symbol: String,
    /// Decimal text with at least two decimals (see [`format_price`]).
    pub price: String,
}

impl Quote {
    /// Builds a quote from raw texts, checking both. `price` is a plain decimal number.
    pub fn new(symbol: &str, price: &str) -> Result<Quote, QuoteError> {
        if !is_valid_symbol(symbol) {
            return Err(QuoteError::Malformed(format!("bad symbol {symbol:?}")));
        }
        let price = format_price(price).ok_or_else(|| QuoteError::Malformed(format!("bad price {price:?}")))?;
        Ok(Quote { symbol: symbol.to_ascii_uppercase(), price })
    }

    /// The line the bot posts: `AAPL.US quote is $93.42 per share`.
    pub fn reply(&self) -> String {
        format!("{} quote is ${} per share", self.symbol, self.price)
    }
}

/// A symbol as a source sends it back: 1 to 32 printable ASCII characters without spaces (so it
/// can never break the line protocol).
pub fn is_valid_symbol(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

/// The price as the source printed it, with at least two decimals: `149.7` -> `149.70`,
/// `210` -> `210.00`, `123.4567` stays. `None` if the text is not a plain decimal number
/// (`-?digits[.digits]`).
pub fn format_price(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let unsigned = raw.strip_prefix('-').unwrap_or(raw);
    let (int, frac) = match unsigned.split_once('.') {
        Some((i, f)) => (i, f),
        None => (unsigned, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || (unsigned.contains('.') && frac.is_empty()) {
        return None;
    }
    if int.len() + frac.len() > 30 {
        return None;
    }
    let sign = if raw.starts_with('-') { "-" } else { "" };
    let mut frac = frac.to_string();
    while frac.len() < 2 {
        frac.push('0');
    }
    Some(format!("{sign}{int}.{frac}"))
}

/// Drops trailing zeros after the second decimal (`123.4500` -> `123.45`, `1.23000` -> `1.23`),
/// for sources that pad prices (Alpha Vantage prints four decimals), so that every source reads
/// like stooq.
pub fn trim_padding(price: &str) -> String {
    match price.split_once('.') {
        Some((int, frac)) => {
            let mut frac = frac.trim_end_matches('0').to_string();
            while frac.len() < 2 {
                frac.push('0');
            }
            format!("{int}.{frac}")
        }
        None => price.to_string(),
    }
}

/// The body of a CSV answer without its byte-order mark; an empty body or an HTML page (a
/// refusal, whatever its status) is an error.
fn csv_body(body: &str) -> Result<&str, QuoteError> {
    let body = body.strip_prefix('\u{feff}').unwrap_or(body);
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return Err(QuoteError::Empty);
    }
    if trimmed.starts_with('<') {
        return Err(QuoteError::Refused);
    }
    Ok(body)
}

/// Reads a stooq CSV answer for `code` (the code that was asked, to pick its row when there are
/// several).
pub fn parse_stooq_csv(body: &str, code: &str) -> Result<Quote, QuoteError> {
    let body = csv_body(body)?;
    let mut reader = csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::All).from_reader(body.as_bytes());
    let headers = reader.headers().map_err(|_| QuoteError::Refused)?.clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(symbol_col), Some(close_col)) = (column("Symbol"), column("Close")) else {
        return Err(QuoteError::Refused);
    };

    let mut chosen = None;
    for record in reader.records() {
        let record = record.map_err(|e| QuoteError::Malformed(e.to_string()))?;
        if record.iter().all(str::is_empty) {
            continue;
        }
        let symbol = record.get(symbol_col).unwrap_or_default();
        let exact = symbol.eq_ignore_ascii_case(code);
        if exact || chosen.is_none() {
            chosen = Some(record);
        }
        if exact {
            break;
        }
    }
    let record = chosen.ok_or(QuoteError::NoData)?;
    let symbol = record.get(symbol_col).unwrap_or_default();
    let close = record.get(close_col).ok_or_else(|| QuoteError::Malformed("row without a Close field".into()))?;
    if close.eq_ignore_ascii_case("N/D") {
        let shown = if is_valid_symbol(symbol) { symbol.to_ascii_uppercase() } else { code.to_ascii_uppercase() };
        return Err(QuoteError::UnknownSymbol(shown));
    }
    Quote::new(symbol, close)
}

/// Reads stooq's daily history (`/q/d/l/?s=<code>&i=d`): a header (`Date,Open,High,Low,Close,Volume`)
/// and one row per day, oldest first. The quote is the close of the last row. The answer names no
/// symbol, so the quote shows the code as asked, in upper case. CRLF and LF are both accepted.
/// Failures read as for the quote endpoint: `N/D` is an unknown symbol, an empty body is empty, a
/// header without rows (or stooq's `No data`) is no data, anything without a `Close` column (HTML,
/// the quota text) is a refusal.
pub fn parse_stooq_daily(body: &str, code: &str) -> Result<Quote, QuoteError> {
    let body = csv_body(body)?;
    if body.trim().eq_ignore_ascii_case("No data") {
        return Err(QuoteError::NoData);
    }
    let mut reader =
        csv::ReaderBuilder::new().has_headers(true).trim(csv::Trim::All).flexible(true).from_reader(body.as_bytes());
    let headers = reader.headers().map_err(|_| QuoteError::Refused)?.clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let Some(close_col) = column("Close") else {
        return Err(QuoteError::Refused);
    };
    let symbol_col = column("Symbol");
    let mut last = None;
    for record in reader.records() {
        let record = record.map_err(|e| QuoteError::Malformed(e.to_string()))?;
        if !record.iter().all(str::is_empty) {
            last = Some(record);
        }
    }
    let record = last.ok_or(QuoteError::NoData)?;
    let shown = symbol_col
        .and_then(|c| record.get(c))
        .filter(|s| is_valid_symbol(s))
        .map(str::to_ascii_uppercase)
        .unwrap_or_else(|| code.to_ascii_uppercase());
    let close = record.get(close_col).ok_or_else(|| QuoteError::Malformed("row without a Close field".into()))?;
    if close.eq_ignore_ascii_case("N/D") {
        return Err(QuoteError::UnknownSymbol(shown));
    }
    Quote::new(&shown, close)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The shared fixtures: /work/shared next to the repository /work/main, and `../shared` next
    /// to CI's clone; the crate is one level below the repository root.
    fn fixture(name: &str) -> String {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/stooq"));
        let path = dir.join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn known_quotes_from_fixtures() {
        let q = parse_stooq_csv(&fixture("known_aapl_us.csv"), "aapl.us").unwrap();
        assert_eq!(q.reply(), "AAPL.US quote is $125.28 per share");
        let q = parse_stooq_csv(&fixture("known_aapl_us_2021-05-11.csv"), "aapl.us").unwrap();
        assert_eq!(q.reply(), "AAPL.US quote is $125.91 per share");
        let q = parse_stooq_csv(&fixture("known_aapl_us_trimmed_zero.csv"), "aapl.us").unwrap();
        assert_eq!(q.reply(), "AAPL.US quote is $149.70 per share");
        let q = parse_stooq_csv(&fixture("known_msft_us.csv"), "msft.us").unwrap();
        assert_eq!(q.reply(), "MSFT.US quote is $247.18 per share");
    }

    #[test]
    fn unknown_symbols_from_fixtures() {
        assert_eq!(
            parse_stooq_csv(&fixture("unknown_zzzz_us_nd.csv"), "zzzz.us"),
            Err(QuoteError::UnknownSymbol("ZZZZ.US".into()))
        );
        assert_eq!(
            parse_stooq_csv(&fixture("unknown_appl_us_nd.csv"), "appl.us"),
            Err(QuoteError::UnknownSymbol("APPL.US".into()))
        );
    }

    #[test]
    fn defensive_fixtures() {
        assert_eq!(parse_stooq_csv(&fixture("empty_body.csv"), "aapl.us"), Err(QuoteError::Empty));
        assert_eq!(parse_stooq_csv(&fixture("header_only.csv"), "aapl.us"), Err(QuoteError::NoData));
        assert_eq!(parse_stooq_csv(&fixture("exceeded_daily_hits_limit.txt"), "aapl.us"), Err(QuoteError::Refused));
        assert_eq!(parse_stooq_csv(&fixture("html_page_does_not_exist.html"), "aapl.us"), Err(QuoteError::Refused));
    }

    #[test]
    fn every_fixture_is_covered() {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/stooq"));
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name == "README.md" {
                continue;
            }
            // Whatever the shape, parsing gives an answer and never panics; known_* give a quote.
            let r = parse_stooq_csv(&fixture(&name), "aapl.us");
            assert_eq!(r.is_ok(), name.starts_with("known_"), "{name}: {r:?}");
            n += 1;
        }
        assert!(n >= 10, "fixtures missing from {}", dir.display());
    }

    #[test]
    fn columns_by_name_not_position() {
        let body = "Close,Volume,Symbol\r\n93.42,100,AAPL.US\r\n";
        assert_eq!(parse_stooq_csv(body, "aapl.us").unwrap().reply(), "AAPL.US quote is $93.42 per share");
        let lower = "symbol,close\naapl.us,210\n";
        assert_eq!(parse_stooq_csv(lower, "aapl.us").unwrap().reply(), "AAPL.US quote is $210.00 per share");
    }

    #[test]
    fn several_rows_pick_the_asked_one() {
        let body = "Symbol,Date,Time,Open,High,Low,Close,Volume\r\n\
                    AAPL.US,2021-05-27,22:00:18,126.44,127.64,125.08,125.28,94503056\r\n\
                    MSFT.US,2021-05-10,22:00:01,250.87,251.73,247.12,247.18,29299881\r\n";
        assert_eq!(parse_stooq_csv(body, "msft.us").unwrap().symbol, "MSFT.US");
        assert_eq!(parse_stooq_csv(body, "aapl.us").unwrap().symbol, "AAPL.US");
        assert_eq!(parse_stooq_csv(body, "other").unwrap().symbol, "AAPL.US");
    }

    #[test]
    fn malformed_bodies() {
        let bad_price = "Symbol,Close\r\nAAPL.US,abc\r\n";
        assert!(matches!(parse_stooq_csv(bad_price, "aapl.us"), Err(QuoteError::Malformed(_))));
        let empty_price = "Symbol,Close\r\nAAPL.US,\r\n";
        assert!(matches!(parse_stooq_csv(empty_price, "aapl.us"), Err(QuoteError::Malformed(_))));
        let short_row = "Symbol,Date,Close\r\nAAPL.US,2021-05-27\r\n";
        assert!(matches!(parse_stooq_csv(short_row, "aapl.us"), Err(QuoteError::Malformed(_))));
        let bad_symbol = "Symbol,Close\r\n\"AAPL US\",1.5\r\n";
        assert!(matches!(parse_stooq_csv(bad_symbol, "aapl.us"), Err(QuoteError::Malformed(_))));
        let no_close = "Symbol,Date\r\nAAPL.US,2021-05-27\r\n";
        assert_eq!(parse_stooq_csv(no_close, "aapl.us"), Err(QuoteError::Refused));
        assert_eq!(parse_stooq_csv("   \r\n", "aapl.us"), Err(QuoteError::Empty));
        assert_eq!(parse_stooq_csv("<html><body>Browser check</body></html>", "x"), Err(QuoteError::Refused));
        assert_eq!(parse_stooq_csv("Symbol,Close\r\n\r\n", "x"), Err(QuoteError::NoData));
        let bom = "\u{feff}Symbol,Close\r\nAAPL.US,1\r\n";
        assert_eq!(parse_stooq_csv(bom, "aapl.us").unwrap().price, "1.00");
    }

    #[test]
    fn daily_history_last_close() {
        let q = parse_stooq_daily(&fixture("daily_aapl_us.csv"), "aapl.us").unwrap();
        assert_eq!(q.reply(), "AAPL.US quote is $277.90 per share");
        let lf = fixture("daily_aapl_us.csv").replace("\r\n", "\n");
        assert_eq!(parse_stooq_daily(&lf, "aapl.us").unwrap().price, "277.90");
        let no_trailing = "Date,Open,High,Low,Close,Volume\n2026-11-24,1,2,3,275.2,5\n2026-11-25,1,2,3,210,5";
        assert_eq!(parse_stooq_daily(no_trailing, "aapl.us").unwrap().price, "210.00");
    }

    #[test]
    fn daily_history_failures() {
        assert_eq!(
            parse_stooq_daily(&fixture("unknown_zzzz_us_nd.csv"), "zzzz.us"),
            Err(QuoteError::UnknownSymbol("ZZZZ.US".into()))
        );
        let nd = "Date,Open,High,Low,Close,Volume\r\nN/D,N/D,N/D,N/D,N/D,N/D\r\n";
        assert_eq!(parse_stooq_daily(nd, "zzzz.us"), Err(QuoteError::UnknownSymbol("ZZZZ.US".into())));
        assert_eq!(parse_stooq_daily(&fixture("empty_body.csv"), "aapl.us"), Err(QuoteError::Empty));
        assert_eq!(parse_stooq_daily(&fixture("header_only.csv"), "aapl.us"), Err(QuoteError::NoData));
        assert_eq!(parse_stooq_daily("Date,Open,High,Low,Close,Volume\r\n", "aapl.us"), Err(QuoteError::NoData));
        assert_eq!(parse_stooq_daily("No data", "aapl.us"), Err(QuoteError::NoData));
        assert_eq!(parse_stooq_daily(&fixture("exceeded_daily_hits_limit.txt"), "aapl.us"), Err(QuoteError::Refused));
        assert_eq!(parse_stooq_daily(&fixture("html_page_does_not_exist.html"), "aapl.us"), Err(QuoteError::Refused));
        let bad = "Date,Open,High,Low,Close,Volume\n2026-11-25,1,2,3,lots,5\n";
        assert!(matches!(parse_stooq_daily(bad, "aapl.us"), Err(QuoteError::Malformed(_))));
    }

    #[test]
    fn price_formatting() {
        assert_eq!(format_price("149.7").as_deref(), Some("149.70"));
        assert_eq!(format_price("210").as_deref(), Some("210.00"));
        assert_eq!(format_price("123.4567").as_deref(), Some("123.4567"));
        assert_eq!(format_price("93.42").as_deref(), Some("93.42"));
        assert_eq!(format_price("0.5").as_deref(), Some("0.50"));
        assert_eq!(format_price("-37.63").as_deref(), Some("-37.63"));
        assert_eq!(format_price(" 125.28 ").as_deref(), Some("125.28"));
        for bad in ["", "N/D", "abc", "1.", ".5", "1.2.3", "1e5", "+1", "-", "1,5", "12 3", "NaN", "inf"] {
            assert_eq!(format_price(bad), None, "{bad}");
        }
        assert_eq!(format_price(&"9".repeat(40)), None);
    }

    #[test]
    fn padding_trimmed() {
        assert_eq!(trim_padding("123.4500"), "123.45");
        assert_eq!(trim_padding("1.23000"), "1.23");
        assert_eq!(trim_padding("261.7"), "261.70");
        assert_eq!(trim_padding("100.0000"), "100.00");
        assert_eq!(trim_padding("123.4567"), "123.4567");
        assert_eq!(trim_padding("7"), "7");
    }

    #[test]
    fn symbols() {
        assert!(is_valid_symbol("AAPL.US"));
        assert!(is_valid_symbol("^SPX"));
        assert!(!is_valid_symbol(""));
        assert!(!is_valid_symbol("A B"));
        assert!(!is_valid_symbol("A\r\nQUIT"));
        assert!(!is_valid_symbol(&"A".repeat(33)));
        assert_eq!(Quote::new("aapl.us", "1").unwrap().symbol, "AAPL.US");
    }
}
