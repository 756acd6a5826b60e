//! The WebSocket opening handshake on an HTTP request (RFC 6455 section 4.2), decided from the
//! request's head: is it an upgrade to WebSocket, from an allowed origin, for which subprotocol.
//! The accept key comes from tungstenite, the framing afterwards from tokio-tungstenite; this
//! module only decides. It knows no chat: the caller names the subprotocols it speaks and the host
//! names pages may come from.

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::connection::{BoxStream, WebSocket};

/// Why a request was not switched to WebSocket; `status` and `reason` make its HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub reason: String,
}

fn refused(status: u16, reason: impl Into<String>) -> Refused {
    Refused { status, reason: reason.into() }
}

/// Accepts a WebSocket handshake: the `101` response and the index in `subprotocols` of the one
/// chosen (the client's first choice among those; `None` when it asked for none).
///
/// `hosts` are the host names a page may come from: a request with an `Origin` whose host is not
/// one of them is refused with 403 (a page elsewhere, or behind a DNS rebinding, must not speak
/// for the user's browser). A request without `Origin` comes from a program, not a browser, and is
/// let in: the `Origin` check protects browsers, and a program can send any header it likes.
pub fn accept(
    request: &Request<()>,
    subprotocols: &[&'static str],
    hosts: &[String],
) -> Result<(Response<()>, Option<usize>), Refused> {
    let headers = request.headers();
    if request.method() != Method::GET {
        return Err(refused(405, "a WebSocket handshake is a GET"));
    }
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(refused(426, "this endpoint speaks WebSocket only (Upgrade: websocket)"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
        return Err(refused(426, "WebSocket version 13 only"));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(refused(400, "Sec-WebSocket-Key is missing"));
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !origin_allowed(origin, hosts) {
            return Err(refused(403, format!("origin {origin} is not one of this server's host names")));
        }
    }
    let chosen = choose(headers, subprotocols)?;
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let out = response.headers_mut();
    out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = derive_accept_key(key.as_bytes());
    out.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept).expect("base64 is a valid header"));
    if let Some(i) = chosen {
        out.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(subprotocols[i]));
    }
    Ok((response, chosen))
}

/// The client's first offered subprotocol that is one of ours. Offering only others is refused:
/// the client expects one of them, and would misread whatever we spoke.
fn choose(headers: &HeaderMap, ours: &[&str]) -> Result<Option<usize>, Refused> {
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if offered.is_empty() {
        return Ok(None);
    }
    for name in &offered {
        if let Some(i) = ours.iter().position(|o| o.eq_ignore_ascii_case(name)) {
            return Ok(Some(i));
        }
    }
    Err(refused(400, format!("no supported subprotocol offered (this server speaks: {})", ours.join(", "))))
}

/// Whether an `Origin` (`scheme://host[:port]`) names one of `hosts`, over http or https.
pub fn origin_allowed(origin: &str, hosts: &[String]) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return false;
    }
    let host = match rest.strip_prefix('[') {
        // [v6]:port
        Some(v6) => match v6.split_once(']') {
            Some((addr, _)) => addr,
            None => return false,
        },
        None => rest
            .rsplit_once(':')
            .map_or(rest, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { rest }),
    };
    hosts.iter().any(|h| h.trim_start_matches('[').trim_end_matches(']').eq_ignore_ascii_case(host))
}

/// The WebSocket over an upgraded stream, with messages limited to `max_message` bytes (the line
/// limit) and a small read buffer (an idle connection keeps it).
pub async fn server(stream: BoxStream, max_message: usize) -> WebSocket {
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message));
    WebSocketStream::from_raw_socket(stream, Role::Server, Some(config)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into(), "chat.example.org".into()]
    }

    fn handshake(extra: &[(&str, &str)]) -> Request<()> {
        let mut r = Request::builder()
            .method("GET")
            .uri("/ws")
            .header("Upgrade", "websocket")
            .header("Connection", "keep-alive, Upgrade")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        r.body(()).unwrap()
    }

    #[test]
    fn origins_are_checked_against_the_host_names() {
        for ok in ["https://localhost:8443", "http://127.0.0.1:8080", "https://[::1]:8443", "https://chat.example.org"]
        {
            assert!(origin_allowed(ok, &hosts()), "{ok}");
        }
        for bad in ["https://evil.example", "null", "https://localhost.evil.example", "file://localhost", ""] {
            assert!(!origin_allowed(bad, &hosts()), "{bad}");
        }
    }

    #[test]
    fn a_handshake_chooses_the_clients_first_subprotocol_we_speak() {
        let ours = ["chatd.native", "text.ircv3.net"];
        let (response, chosen) = accept(&handshake(&[]), &ours, &hosts()).unwrap();
        assert_eq!(response.status(), 101);
        // RFC 6455's own example key.
        assert_eq!(response.headers()["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(chosen, None);
        let offer = [("Sec-WebSocket-Protocol", "binary.ircv3.net, text.ircv3.net, chatd.native")];
        let (response, chosen) = accept(&handshake(&offer), &ours, &hosts()).unwrap();
        assert_eq!(chosen, Some(1));
        assert_eq!(response.headers()["sec-websocket-protocol"], "text.ircv3.net");
        let only_others = [("Sec-WebSocket-Protocol", "binary.ircv3.net")];
        assert_eq!(accept(&handshake(&only_others), &ours, &hosts()).unwrap_err().status, 400);
        let evil = [("Origin", "https://evil.example")];
        assert_eq!(accept(&handshake(&evil), &ours, &hosts()).unwrap_err().status, 403);
        let plain = Request::builder().uri("/ws").body(()).unwrap();
        assert_eq!(accept(&plain, &ours, &hosts()).unwrap_err().status, 426);
    }
}
