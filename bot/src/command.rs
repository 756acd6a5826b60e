//! The bot command line as users type it: `/stock=<code>`, and which codes are accepted.
//!
//! Per PROTOCOL.md section 5 the command word is what follows the `/` up to the first `=`, space or
//! end of text, compared case-insensitively (`/STOCK=AAPL.US` is fine). The bot then wants exactly
//! `=` and a code:
//!
//! - a code is 1 to 20 characters of ASCII letters, digits, `.`, `^`, `-` and `_`, with at least one
//!   letter or digit (`aapl.us`, `msft.us`, `^spx`, `eurusd`, `brk-b.us`, `btc_usd`);
//! - spaces around the code are ignored (`/stock= aapl.us `), spaces inside it are not
//!   (`/stock=a b`);
//! - codes are case-insensitive and handled in lower case;
//! - anything else for our word (`/stock`, `/stock=`, `/stock aapl.us`, `/stock=<script>`, a code
//!   of 21 characters) gets the usage message.

/// The longest accepted code.
pub const MAX_CODE_LEN: usize = 20;

/// What a bot command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A quote for this code (valid, lower case).
    Quote(String),
    /// Our command word, but not a usable request: answer with [`usage`].
    Usage,
}

/// The command word of a bot command line (lower case), or `None` if the text is not one.
pub fn command_word(text: &str) -> Option<String> {
    let rest = text.strip_prefix('/')?;
    let end = rest.find(['=', ' ']).unwrap_or(rest.len());
    Some(rest[..end].to_ascii_lowercase())
}

/// Reads a command line for command word `word`. `None` when the line is not for us (another
/// command word, or not a command line at all): the bot then stays silent.
pub fn parse(text: &str, word: &str) -> Option<Request> {
    let rest = text.strip_prefix('/')?;
    let end = rest.find(['=', ' ']).unwrap_or(rest.len());
    if !rest[..end].eq_ignore_ascii_case(word) {
        return None;
    }
    let Some(code) = rest[end..].strip_prefix('=') else {
        return Some(Request::Usage);
    };
    let code = code.trim();
    if is_valid_code(code) {
        Some(Request::Quote(code.to_ascii_lowercase()))
    } else {
        Some(Request::Usage)
    }
}

/// The code rules above.
pub fn is_valid_code(code: &str) -> bool {
    (1..=MAX_CODE_LEN).contains(&code.len())
        && code.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'^' | b'-' | b'_'))
        && code.bytes().any(|b| b.is_ascii_alphanumeric())
}

/// The reply to a malformed request.
pub fn usage(word: &str) -> String {
    format!(
        "Usage: /{word}=<code>, for example /{word}=aapl.us, /{word}=msft.us or /{word}=^spx \
         (1 to {MAX_CODE_LEN} letters, digits, '.', '^', '-' or '_')"
    )
}

/// Percent-encodes a valid code for a URL query (`^` becomes `%5E`; the other allowed characters
/// are safe as they are).
pub fn url_encode(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    for b in code.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Option<Request> {
        Some(Request::Quote(s.to_string()))
    }

    #[test]
    fn valid_requests() {
        assert_eq!(parse("/stock=aapl.us", "stock"), q("aapl.us"));
        assert_eq!(parse("/STOCK=AAPL.US", "stock"), q("aapl.us"));
        assert_eq!(parse("/Stock=msft.us", "stock"), q("msft.us"));
        assert_eq!(parse("/stock=^spx", "stock"), q("^spx"));
        assert_eq!(parse("/stock=eurusd", "stock"), q("eurusd"));
        assert_eq!(parse("/stock=brk-b.us", "stock"), q("brk-b.us"));
        assert_eq!(parse("/stock=btc_usd", "stock"), q("btc_usd"));
        assert_eq!(parse("/stock= aapl.us  ", "stock"), q("aapl.us"));
        assert_eq!(parse("/stock=abcdefghij0123456789", "stock"), q("abcdefghij0123456789"));
    }

    #[test]
    fn usage_requests() {
        for bad in [
            "/stock",
            "/STOCK",
            "/stock=",
            "/stock=   ",
            "/stock=a b",
            "/stock=<script>",
            "/stock=<script>alert(1)</script>",
            "/stock aapl.us",
            "/stock =aapl.us",
            "/stock=aapl.us,msft.us",
            "/stock=abcdefghij0123456789x",
            "/stock=...",
            "/stock=^",
            "/stock=aapl.us=x",
            "/stock=ａａｐｌ",
            "/stock=a%20b",
            "/stock=a&f=x",
        ] {
            assert_eq!(parse(bad, "stock"), Some(Request::Usage), "{bad}");
        }
    }

    #[test]
    fn not_for_us() {
        assert_eq!(parse("hello", "stock"), None);
        assert_eq!(parse("/stocks=aapl.us", "stock"), None);
        assert_eq!(parse("/weather=paris", "stock"), None);
        assert_eq!(parse(" /stock=aapl.us", "stock"), None);
        assert_eq!(parse("/", "stock"), None);
    }

    #[test]
    fn words() {
        assert_eq!(command_word("/STOCK=aapl.us").as_deref(), Some("stock"));
        assert_eq!(command_word("/stock aapl").as_deref(), Some("stock"));
        assert_eq!(command_word("/stock").as_deref(), Some("stock"));
        assert_eq!(command_word("stock"), None);
    }

    #[test]
    fn encoding() {
        assert_eq!(url_encode("^spx"), "%5Espx");
        assert_eq!(url_encode("aapl.us"), "aapl.us");
        assert_eq!(url_encode("brk-b_x"), "brk-b_x");
    }

    #[test]
    fn usage_text() {
        let u = usage("stock");
        assert!(u.starts_with("Usage: /stock=<code>"), "{u}");
        assert!(!u.contains('\n'));
    }
}
