//! The web listener's pages: the web client (the files of `web/`, built into the binary: no CDN,
//! nothing fetched at run time), a small `config.json` the client reads at start, and `/ws`, where
//! the WebSocket handshake chooses the front end that serves the connection: the native protocol
//! (subprotocol `chatd.native`, or none) or IRC (`text.ircv3.net`). After the handshake the
//! WebSocket's messages are the front end's lines (`net::connection::Transport`); the session is
//! the same as on the TLS listeners.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::config::Config;
use crate::net::connection::BoxStream;
use crate::net::http::{self, Answer, Reply};
use crate::net::websocket;
use crate::shutdown::Shutdown;

/// The native protocol's WebSocket subprotocol name.
pub const NATIVE_SUBPROTOCOL: &str = "chatd.native";
/// IRCv3's name for IRC lines in text messages.
pub const IRC_SUBPROTOCOL: &str = "text.ircv3.net";
/// In the order `websocket::accept` indexes them.
const SUBPROTOCOLS: [&str; 2] = [NATIVE_SUBPROTOCOL, IRC_SUBPROTOCOL];

/// Which front end a WebSocket speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontEnd {
    Native,
    Irc,
}

/// The files of `web/`, by path.
const FILES: &[(&str, &str, &[u8])] = &[
    ("/", "text/html; charset=utf-8", include_bytes!("../web/index.html")),
    ("/index.html", "text/html; charset=utf-8", include_bytes!("../web/index.html")),
    ("/style.css", "text/css; charset=utf-8", include_bytes!("../web/style.css")),
    ("/app.js", "text/javascript; charset=utf-8", include_bytes!("../web/app.js")),
    ("/protocol.js", "text/javascript; charset=utf-8", include_bytes!("../web/protocol.js")),
    ("/favicon.svg", "image/svg+xml", include_bytes!("../web/favicon.svg")),
];

/// The page may load only its own files and speak only to its own server; nothing may frame it.
const PAGE_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
];

/// What the web listener serves.
pub struct Site {
    hosts: Vec<String>,
    config_json: Bytes,
    header_timeout: Duration,
}

impl Site {
    pub fn new(config: &Config) -> Site {
        // `{:?}` quotes as JSON does for what goes in here: bot names follow the user-name rules
        // (ASCII letters, digits, `_`, `-`) and the version is semver.
        let bots: Vec<String> = config.bots.iter().map(|b| format!("{:?}", b.name.to_lowercase())).collect();
        let config_json = format!(
            "{{\"version\":{:?},\"subprotocol\":{NATIVE_SUBPROTOCOL:?},\"bots\":[{}],\"max_message_bytes\":{}}}\n",
            env!("CARGO_PKG_VERSION"),
            bots.join(","),
            config.limits.max_message_bytes
        );
        Site {
            hosts: config.web.hosts.clone(),
            config_json: Bytes::from(config_json),
            header_timeout: Duration::from_secs(config.limits.handshake_timeout_secs),
        }
    }

    /// Serves HTTP on one admitted connection until it closes, or until a request to `/ws` is
    /// switched to WebSocket: then the stream and the front end it chose.
    pub async fn serve(self: Arc<Self>, stream: BoxStream, shutdown: &Shutdown) -> Option<(BoxStream, FrontEnd)> {
        let site = self.clone();
        let handle = move |request| {
            let answer = site.answer(&request);
            async move { answer }
        };
        http::serve_connection(stream, handle, self.header_timeout, shutdown.recv()).await
    }

    fn answer(&self, request: &hyper::Request<()>) -> Answer<FrontEnd> {
        let path = request.uri().path();
        if path == "/ws" {
            return match websocket::accept(request, &SUBPROTOCOLS, &self.hosts) {
                Ok((response, chosen)) => {
                    let front_end = if chosen == Some(1) { FrontEnd::Irc } else { FrontEnd::Native };
                    Answer::Upgrade(response, front_end)
                }
                Err(refused) => Answer::Reply(Reply::text(refused.status, format!("{}\n", refused.reason))),
            };
        }
        if request.method() != hyper::Method::GET && request.method() != hyper::Method::HEAD {
            return Answer::Reply(Reply::text(405, "only GET\n"));
        }
        if path == "/config.json" {
            return Answer::Reply(Reply {
                status: 200,
                content_type: "application/json",
                body: self.config_json.clone(),
                headers: PAGE_HEADERS,
            });
        }
        match FILES.iter().find(|(p, _, _)| *p == path) {
            Some((_, content_type, body)) => Answer::Reply(Reply {
                status: 200,
                content_type,
                body: Bytes::from_static(body),
                headers: PAGE_HEADERS,
            }),
            None => Answer::Reply(Reply::not_found()),
        }
    }
}
