//! Test support: a stand-in for stooq (and Finnhub) on 127.0.0.1, serving the shared fixtures.
//!
//! A tiny HTTP/1.1 server (one request per connection, `Connection: close`) that answers by
//! symbol: `/q/l/?s=<code>` (stooq, keyed by the lower-case code), `/q/d/l/?s=<code>` (stooq's
//! daily history, keyed `d:<code>`) and `/api/v1/quote?symbol=X` (Finnhub, keyed
//! `fh:<lower-case symbol>`). Every request target is recorded, so a test can see what was sent.
//! Each key can be given a body, an HTTP status, a gate (the answer waits until the test opens
//! it), a connection closed without an answer, or no answer at all. Unknown keys get stooq's `N/D`
//! row for the symbol, as the live service does.

#![allow(dead_code)]

pub mod bot;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The shared stooq fixtures: `shared/` sits next to the repository, and this crate is one level
/// below the repository root.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/stooq"))
}

pub fn fixture(name: &str) -> String {
    let path = fixtures_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[derive(Clone)]
pub enum Behavior {
    /// 200 with this body.
    Body(String),
    /// This status with this body.
    Status(u16, String),
    /// 200 with this body once the gate opens.
    Gated(watch::Receiver<bool>, String),
    /// Close the connection after reading the request, without answering.
    Close,
    /// Read the request and never answer (until the test ends).
    Hang,
}

#[derive(Default)]
struct State {
    behaviors: HashMap<String, Behavior>,
    hits: HashMap<String, usize>,
    targets: Vec<String>,
}

pub struct StubHttp {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

/// Opens a gated answer when dropped or when `open` is called.
pub struct Gate(watch::Sender<bool>);

impl Gate {
    pub fn open(&self) {
        let _ = self.0.send(true);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.open();
    }
}

impl StubHttp {
    pub async fn start() -> StubHttp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, st).await;
                });
            }
        });
        StubHttp { addr, state, task }
    }

    /// `http://127.0.0.1:PORT/q/l/?s={code}&f=sd2t2ohlcv&h&e=csv`
    pub fn stooq_template(&self) -> String {
        format!("http://{}/q/l/?s={{code}}&f=sd2t2ohlcv&h&e=csv", self.addr)
    }

    /// `http://127.0.0.1:PORT/q/d/l/?s={code}&i=d`
    pub fn daily_template(&self) -> String {
        format!("http://{}/q/d/l/?s={{code}}&i=d", self.addr)
    }

    /// Every request target (path and query) received so far, in arrival order.
    pub fn targets(&self) -> Vec<String> {
        self.state.lock().unwrap().targets.clone()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, key: &str, behavior: Behavior) {
        self.state.lock().unwrap().behaviors.insert(key.to_ascii_lowercase(), behavior);
    }

    pub fn body(&self, key: &str, body: impl Into<String>) {
        self.set(key, Behavior::Body(body.into()));
    }

    pub fn fixture(&self, key: &str, name: &str) {
        self.body(key, fixture(name));
    }

    /// The answer for `key` waits until the returned gate is opened (or dropped).
    pub fn gate(&self, key: &str, body: impl Into<String>) -> Gate {
        let (tx, rx) = watch::channel(false);
        self.set(key, Behavior::Gated(rx, body.into()));
        Gate(tx)
    }

    /// How many requests arrived for `key`.
    pub fn hits(&self, key: &str) -> usize {
        self.state.lock().unwrap().hits.get(&key.to_ascii_lowercase()).copied().unwrap_or(0)
    }
}

impl Drop for StubHttp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let param = |name: &str| {
        query.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')).map(percent_decode))
    };
    let key = match path {
        "/api/v1/quote" => format!("fh:{}", param("symbol").unwrap_or_default()),
        "/q/d/l/" => format!("d:{}", param("s").unwrap_or_default()),
        _ => param("s").unwrap_or_default(),
    }
    .to_ascii_lowercase();
    let behavior = {
        let mut st = state.lock().unwrap();
        *st.hits.entry(key.clone()).or_default() += 1;
        st.targets.push(target.clone());
        st.behaviors.get(&key).cloned()
    };
    let behavior = behavior.unwrap_or_else(|| {
        Behavior::Body(format!(
            "Symbol,Date,Time,Open,High,Low,Close,Volume\r\n{},N/D,N/D,N/D,N/D,N/D,N/D,N/D\r\n",
            key.trim_start_matches("d:").to_ascii_uppercase()
        ))
    });
    let (status, body) = match behavior {
        Behavior::Body(b) => (200, b),
        Behavior::Status(s, b) => (s, b),
        Behavior::Gated(mut gate, b) => {
            let _ = gate.wait_for(|open| *open).await;
            (200, b)
        }
        Behavior::Close => return Ok(()),
        Behavior::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
