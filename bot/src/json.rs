//! The JSON answers of the second quote sources, read into the same [`Quote`] as stooq's CSV.
//!
//! - Alpha Vantage `GLOBAL_QUOTE`: `{"Global Quote": {"01. symbol": "IBM", "05. price": "123.4500"}}`;
//!   an unknown symbol gives an empty `"Global Quote": {}`; a quota or key problem gives an object
//!   with `Note`, `Information` or `Error Message` instead.
//! - Finnhub `/api/v1/quote`: `{"c": 261.74, "d": ..., "t": 1700000000}`; an unknown symbol gives all
//!   zeros (`"c": 0, "t": 0`); a key problem gives `{"error": "..."}` (usually with HTTP 401/403).
//!
//! Neither echoes the code in the stooq spelling, so the quote shows the code the user asked for,
//! in upper case (`/stock=aapl.us` reads `AAPL.US quote is ...` whichever source answered). Prices
//! are shown like stooq's: padding zeros dropped, at least two decimals.

use serde_json::Value;

use crate::error::QuoteError;
use crate::quote::{trim_padding, Quote};

/// The ticker to ask a US-centric JSON source for: the stooq market suffix `.us` is dropped and the
/// rest upper-cased (`aapl.us` -> `AAPL`, `ibm` -> `IBM`).
pub fn ticker_for(code: &str) -> String {
    let upper = code.to_ascii_uppercase();
    upper.strip_suffix(".US").map(str::to_string).unwrap_or(upper)
}

fn parse_json(body: &str) -> Result<Value, QuoteError> {
    if body.trim().is_empty() {
        return Err(QuoteError::Empty);
    }
    let value: Value = serde_json::from_str(body).map_err(|_| QuoteError::Refused)?;
    if !value.is_object() {
        return Err(QuoteError::Refused);
    }
    Ok(value)
}

/// Reads an Alpha Vantage `GLOBAL_QUOTE` answer for `code` (as the user asked it).
pub fn parse_alpha_vantage(body: &str, code: &str) -> Result<Quote, QuoteError> {
    let value = parse_json(body)?;
    let shown = code.to_ascii_uppercase();
    let Some(quote) = value.get("Global Quote") else {
        // {"Note": ...}, {"Information": ...}, {"Error Message": ...} or anything else.
        return Err(QuoteError::Refused);
    };
    let quote = quote.as_object().ok_or_else(|| QuoteError::Malformed("Global Quote is not an object".into()))?;
    if quote.is_empty() {
        return Err(QuoteError::UnknownSymbol(shown));
    }
    let price = quote
        .get("05. price")
        .and_then(Value::as_str)
        .ok_or_else(|| QuoteError::Malformed("no \"05. price\"".into()))?;
    let q = Quote::new(&shown, price)?;
    Ok(Quote { price: trim_padding(&q.price), ..q })
}

/// Reads a Finnhub `/api/v1/quote` answer for `code` (as the user asked it).
pub fn parse_finnhub(body: &str, code: &str) -> Result<Quote, QuoteError> {
    let value = parse_json(body)?;
    let shown = code.to_ascii_uppercase();
    if value.get("error").is_some() {
        return Err(QuoteError::Refused);
    }
    let Some(c) = value.get("c") else {
        return Err(QuoteError::Refused);
    };
    let time = value.get("t").and_then(Value::as_f64).unwrap_or(0.0);
    let price = match c {
        Value::Null => return Err(QuoteError::UnknownSymbol(shown)),
        Value::Number(n) => n.as_f64().ok_or_else(|| QuoteError::Malformed("bad c".into()))?,
        _ => return Err(QuoteError::Malformed("c is not a number".into())),
    };
    if price == 0.0 && time == 0.0 {
        return Err(QuoteError::UnknownSymbol(shown));
    }
    // f64's Display is the shortest text that reads back as the same number: 261.74, 210, 0.5.
    let q = Quote::new(&shown, &format!("{price}"))?;
    Ok(Quote { price: trim_padding(&q.price), ..q })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickers() {
        assert_eq!(ticker_for("aapl.us"), "AAPL");
        assert_eq!(ticker_for("ibm"), "IBM");
        assert_eq!(ticker_for("^spx"), "^SPX");
        assert_eq!(ticker_for("vod.uk"), "VOD.UK");
    }

    #[test]
    fn alpha_vantage_quote() {
        let body = r#"{"Global Quote": {"01. symbol": "IBM", "02. open": "121.0000", "05. price": "123.4500",
            "07. latest trading day": "2024-05-10", "10. change percent": "0.5%"}}"#;
        assert_eq!(parse_alpha_vantage(body, "ibm").unwrap().reply(), "IBM quote is $123.45 per share");
        let body = r#"{"Global Quote": {"01. symbol": "AAPL", "05. price": "210.0000"}}"#;
        assert_eq!(parse_alpha_vantage(body, "aapl.us").unwrap().reply(), "AAPL.US quote is $210.00 per share");
        let body = r#"{"Global Quote": {"01. symbol": "X", "05. price": "0.1234"}}"#;
        assert_eq!(parse_alpha_vantage(body, "x").unwrap().price, "0.1234");
    }

    #[test]
    fn alpha_vantage_errors() {
        assert_eq!(
            parse_alpha_vantage(r#"{"Global Quote": {}}"#, "zzzz"),
            Err(QuoteError::UnknownSymbol("ZZZZ".into()))
        );
        for refused in [
            r#"{"Note": "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute"}"#,
            r#"{"Information": "The **demo** API key is for demo purposes only."}"#,
            r#"{"Error Message": "Invalid API call."}"#,
            "<html>nope</html>",
            "Exceeded the daily hits limit",
            "[1,2]",
        ] {
            assert_eq!(parse_alpha_vantage(refused, "ibm"), Err(QuoteError::Refused), "{refused}");
        }
        assert_eq!(parse_alpha_vantage("", "ibm"), Err(QuoteError::Empty));
        assert!(matches!(
            parse_alpha_vantage(r#"{"Global Quote": {"01. symbol": "IBM"}}"#, "ibm"),
            Err(QuoteError::Malformed(_))
        ));
        assert!(matches!(
            parse_alpha_vantage(r#"{"Global Quote": {"05. price": "lots"}}"#, "ibm"),
            Err(QuoteError::Malformed(_))
        ));
    }

    #[test]
    fn finnhub_quote() {
        let body = r#"{"c":261.74,"d":0.83,"dp":0.318,"h":263.31,"l":260.68,"o":261.07,"pc":260.91,"t":1700000000}"#;
        assert_eq!(parse_finnhub(body, "aapl.us").unwrap().reply(), "AAPL.US quote is $261.74 per share");
        assert_eq!(parse_finnhub(r#"{"c":210,"t":1}"#, "aapl").unwrap().price, "210.00");
        assert_eq!(parse_finnhub(r#"{"c":149.7,"t":1}"#, "aapl").unwrap().price, "149.70");
        assert_eq!(parse_finnhub(r#"{"c":123.4567,"t":1}"#, "aapl").unwrap().price, "123.4567");
    }

    #[test]
    fn finnhub_errors() {
        assert_eq!(
            parse_finnhub(r#"{"c":0,"d":null,"dp":null,"h":0,"l":0,"o":0,"pc":0,"t":0}"#, "zzzz.us"),
            Err(QuoteError::UnknownSymbol("ZZZZ.US".into()))
        );
        assert_eq!(parse_finnhub(r#"{"c":null}"#, "x"), Err(QuoteError::UnknownSymbol("X".into())));
        assert_eq!(parse_finnhub(r#"{"error":"Invalid API key"}"#, "x"), Err(QuoteError::Refused));
        assert_eq!(parse_finnhub("You don't have access to this resource.", "x"), Err(QuoteError::Refused));
        assert_eq!(parse_finnhub(r#"{"s":"no_data"}"#, "x"), Err(QuoteError::Refused));
        assert_eq!(parse_finnhub(" ", "x"), Err(QuoteError::Empty));
        assert!(matches!(parse_finnhub(r#"{"c":"1.5","t":1}"#, "x"), Err(QuoteError::Malformed(_))));
    }
}
