//! chatd: a chat daemon with an IRC-style line protocol over TLS. See PROTOCOL.md.
//!
//! The layers, each depending only on those below it:
//! - `native`: the native front end (parse, apply, render).
//! - `irc`: the IRC front end (IRC.md), beside `native`, over the same core.
//! - `web`: the web listener's pages (the web client) and its WebSocket, which hands lines to
//!   `native` or `irc`.
//! - `session`: one connection's loop, shared by the front ends (timers, flood control, writes).
//! - `chat`: the core (accounts, rooms, bots, a connection's client state); no wire, no SQL.
//! - `store`: the store of record (SQLite or PostgreSQL), the only place with SQL.
//! - `net`: listeners, the connection gate, TLS, bytes to lines; no chat, no protocol words.
//! - `config`, `limits` (rate-limit primitives), `shutdown`.
//!
//! This file only wires them together.

pub mod chat;
pub mod cluster;
pub mod config;
pub mod irc;
pub mod limits;
pub mod metrics;
pub mod native;
pub mod net;
pub mod reload;
pub mod session;
pub mod shutdown;
pub mod store;
pub mod web;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::chat::Chat;
use crate::config::Config;
use crate::native::Native;
use crate::net::admission::ConnectionGate;
use crate::net::listener::{bind, Listener};

/// What chatd is listening on, reported once it is ready.
pub struct Listening {
    pub tls: SocketAddr,
    pub plain: Option<SocketAddr>,
    /// The IRC front end's TLS and plaintext listeners, when configured.
    pub irc: Option<SocketAddr>,
    pub irc_plain: Option<SocketAddr>,
    /// The HTTP listener for metrics and health, when configured.
    pub metrics: Option<SocketAddr>,
    /// The web client's HTTPS and plain HTTP listeners, when configured.
    pub web: Option<SocketAddr>,
    pub web_plain: Option<SocketAddr>,
    pub fingerprint: String,
    pub ca_file: std::path::PathBuf,
}

/// Runs the daemon until `stop` resolves, then shuts down gracefully: clients are told, accepted
/// messages are committed. SIGHUP reloads `config_path` (the file `config` came from; see
/// `reload`).
pub async fn run(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    ready: impl FnOnce(&Listening),
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    raise_fd_limit();
    let tls = net::tls::load_or_create(&config.tls)?;
    let (store, committed) = match config.cluster.enabled() {
        true => {
            let (sink, committed) = tokio::sync::mpsc::channel(1024);
            (store::Store::open_clustered(&config.storage, sink).await?, Some(committed))
        }
        false => (store::Store::open(&config.storage).await?, None),
    };
    let chat = Arc::new(Chat::start(&config, store.clone()).await?);
    if let (Some(cluster), Some(committed)) = (chat.cluster.clone(), committed) {
        cluster::spawn(chat.clone(), cluster, committed);
    }
    let l = &config.limits;
    let gate = Arc::new(ConnectionGate::new(
        l.max_connections,
        l.max_connections_per_address,
        l.new_connections_per_address_per_minute,
        l.exempt_loopback,
    ));

    let backlog = config.server.listen_backlog;
    let tls_listener =
        bind(config.listen_addr()?, backlog).with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let plain_listener = match config.plain_listen_addr()? {
        Some(addr) => Some(bind(addr, backlog).with_context(|| format!("cannot listen on {addr}"))?),
        None => None,
    };
    let bind_optional = |addr: Option<SocketAddr>| -> anyhow::Result<Option<TcpListener>> {
        match addr {
            Some(addr) => Ok(Some(bind(addr, backlog).with_context(|| format!("cannot listen on {addr}"))?)),
            None => Ok(None),
        }
    };
    let irc_listener = bind_optional(config.irc_listen_addr()?)?;
    let irc_plain_listener = bind_optional(config.irc_plain_listen_addr()?)?;
    let metrics_listener = bind_optional(config.metrics_listen_addr()?)?;
    let web_listener = bind_optional(config.web_listen_addr()?)?;
    let web_plain_listener = bind_optional(config.web_plain_listen_addr()?)?;
    let local = |l: &Option<TcpListener>| l.as_ref().map(|l| l.local_addr()).transpose();
    let listening = Listening {
        tls: tls_listener.local_addr()?,
        plain: local(&plain_listener)?,
        irc: local(&irc_listener)?,
        irc_plain: local(&irc_plain_listener)?,
        metrics: local(&metrics_listener)?,
        web: local(&web_listener)?,
        web_plain: local(&web_plain_listener)?,
        fingerprint: tls.fingerprint.clone(),
        ca_file: config.tls.cert.parent().unwrap_or(std::path::Path::new(".")).join("ca.pem"),
    };

    let signal = CancellationToken::new();
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let listener = Listener {
        tls: Some(tokio_rustls::TlsAcceptor::from(tls.config.clone())),
        gate: gate.clone(),
        handshake_timeout: Duration::from_secs(config.limits.handshake_timeout_secs),
        plaintext_hint: native::PLAINTEXT_HINT,
    };
    let native_limits: reload::SharedLimits = Arc::new(RwLock::new(Arc::new(config.limits.clone())));
    let native = NativeFrontEnd { chat: chat.clone(), limits: native_limits.clone(), gate: gate.clone() };
    let start = |listener: Listener, socket: TcpListener| {
        let serve = native.clone();
        let open = metrics::metrics().connections("native", listener.tls.is_some());
        let serve = move |stream: net::connection::BoxStream, peer, shutdown| {
            let serve = serve.clone();
            counted(&open, move || serve.serve(stream.into(), peer, shutdown))
        };
        tokio::spawn(listener.accept_loop(socket, serve, signal.clone(), done_tx.clone()));
    };
    start(listener.clone(), tls_listener);
    if let Some(plain) = plain_listener {
        start(Listener { tls: None, ..listener.clone() }, plain);
    }
    let irc_limits: reload::SharedLimits = Arc::new(RwLock::new(Arc::new(irc::session_limits(&config.limits))));
    let irc_settings = Arc::new(irc::Settings::new(&config, chat.clone(), gate.clone()));
    let irc = IrcFrontEnd {
        chat: chat.clone(),
        limits: irc_limits.clone(),
        gate: gate.clone(),
        settings: irc_settings.clone(),
    };
    let start_irc = |listener: Listener, socket: TcpListener| {
        let serve = irc.clone();
        let open = metrics::metrics().connections("irc", listener.tls.is_some());
        let serve = move |stream: net::connection::BoxStream, peer, shutdown| {
            let serve = serve.clone();
            counted(&open, move || serve.serve(stream.into(), peer, shutdown))
        };
        tokio::spawn(listener.accept_loop(socket, serve, signal.clone(), done_tx.clone()));
    };
    let web = WebFrontEnd { site: Arc::new(web::Site::new(&config)), native: native.clone(), irc: irc.clone() };
    let start_web = |listener: Listener, socket: TcpListener| {
        let serve = web.clone();
        let tls = listener.tls.is_some();
        let serve = move |stream, peer, shutdown| serve.clone().serve(stream, peer, shutdown, tls);
        tokio::spawn(listener.accept_loop(socket, serve, signal.clone(), done_tx.clone()));
    };
    if let Some(socket) = web_listener {
        start_web(Listener { plaintext_hint: b"", ..listener.clone() }, socket);
    }
    if let Some(socket) = web_plain_listener {
        start_web(Listener { tls: None, ..listener.clone() }, socket);
    }
    let irc_listener_kind = Listener { plaintext_hint: irc::PLAINTEXT_HINT, ..listener };
    if let Some(socket) = irc_listener {
        start_irc(irc_listener_kind.clone(), socket);
    }
    if let Some(socket) = irc_plain_listener {
        start_irc(Listener { tls: None, ..irc_listener_kind }, socket);
    }
    if let Some(socket) = metrics_listener {
        let store = store.clone();
        let handle = move |request| observe(store.clone(), request);
        tokio::spawn(net::http::serve(socket, handle, signal.clone()));
    }
    drop(done_tx);
    let reloader = reload::Reloader::new(
        config_path,
        chat.clone(),
        gate.clone(),
        native_limits,
        irc_limits,
        irc_settings,
        tls.current.clone(),
    );
    // An admin's RELOAD (native) or REHASH (IRC) reaches the same reload as SIGHUP through this
    // channel: the core holds the sender, this loop runs the reload.
    let (reload_tx, mut reload_rx) = mpsc::channel::<chat::moderation::ReloadRequest>(8);
    chat.set_reload(reload_tx);
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    ready(&listening);

    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(()) = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                reloader.reload_and_log().await;
            }
            Some(request) = reload_rx.recv() => {
                tracing::info!("an admin asked for a reload");
                reloader.answer(request).await;
            }
        }
    }
    tracing::info!(open = gate.open_connections(), "shutting down");
    signal.cancel();
    if tokio::time::timeout(Duration::from_secs(10), done_rx.recv()).await.is_err() {
        tracing::warn!("some connections did not close in 10 s");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// How long the health check waits for the store's writer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(3);

/// The HTTP endpoints: `GET /metrics` (the exposition, OpenMetrics when the scraper asks for it,
/// else Prometheus' classic text format) and `GET /health` (200 when the store takes a write, 503
/// with the reason otherwise).
async fn observe(store: Arc<store::Store>, request: hyper::Request<()>) -> net::http::Reply {
    use net::http::Reply;
    if request.method() != hyper::Method::GET {
        return Reply::text(405, "only GET\n");
    }
    match request.uri().path() {
        "/metrics" => {
            let accept = request.headers().get(hyper::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
            let format = metrics::Format::negotiate(accept);
            Reply {
                status: 200,
                content_type: format.content_type(),
                body: metrics::metrics().render(format).into(),
                headers: &[],
            }
        }
        "/health" => match tokio::time::timeout(HEALTH_TIMEOUT, store.probe()).await {
            Ok(Ok(())) => Reply::text(200, "ok: the store is writable\n"),
            Ok(Err(e)) => Reply::text(503, format!("unhealthy: the store cannot write: {e}\n")),
            Err(_) => Reply::text(
                503,
                format!("unhealthy: the store did not answer a write within {} s\n", HEALTH_TIMEOUT.as_secs()),
            ),
        },
        _ => Reply::not_found(),
    }
}

/// Runs a connection's future, counted in `open` while it runs.
///
/// The future is made inside (from `serve`), not passed in: an async block that awaits a future
/// it captured keeps room for it twice (the captured value and the awaited one), and this one is
/// a connection's whole session, kept for as long as the connection is open.
fn counted<F: std::future::Future<Output = ()>>(
    open: &metrics::OpenConnections,
    serve: impl FnOnce() -> F,
) -> impl std::future::Future<Output = ()> {
    let guard = open.open();
    async move {
        serve().await;
        drop(guard);
    }
}

/// What the native listeners need to serve a connection.
#[derive(Clone)]
struct NativeFrontEnd {
    chat: Arc<Chat>,
    /// The limits for new connections (a reload replaces them).
    limits: reload::SharedLimits,
    gate: Arc<ConnectionGate>,
}

impl NativeFrontEnd {
    async fn serve(self, stream: net::connection::Transport, peer: SocketAddr, shutdown: shutdown::Shutdown) {
        let flood_exempt = self.gate.exempt(peer.ip());
        let limits = reload::current(&self.limits);
        let protocol = Native::new(limits.max_message_bytes);
        session::serve(stream, peer, self.chat, limits, flood_exempt, shutdown, protocol).await;
    }
}

/// What the IRC listeners need to serve a connection.
#[derive(Clone)]
struct IrcFrontEnd {
    chat: Arc<Chat>,
    /// The shared limits, with the IRC line length (512 bytes plus the tag allowance).
    limits: reload::SharedLimits,
    gate: Arc<ConnectionGate>,
    settings: Arc<irc::Settings>,
}

impl IrcFrontEnd {
    async fn serve(self, stream: net::connection::Transport, peer: SocketAddr, shutdown: shutdown::Shutdown) {
        let flood_exempt = self.gate.exempt(peer.ip());
        let protocol = irc::Irc::new(self.settings.clone());
        let limits = reload::current(&self.limits);
        session::serve(stream, peer, self.chat, limits, flood_exempt, shutdown, protocol).await;
    }
}

/// What the web listeners need: the pages, and the front ends their WebSockets speak to.
#[derive(Clone)]
struct WebFrontEnd {
    site: Arc<web::Site>,
    native: NativeFrontEnd,
    irc: IrcFrontEnd,
}

impl WebFrontEnd {
    /// Serves the pages until a request switches to WebSocket, then the chosen front end's session
    /// over it, with the front end's line limit as the message limit.
    async fn serve(
        self,
        stream: net::connection::BoxStream,
        peer: SocketAddr,
        shutdown: shutdown::Shutdown,
        tls: bool,
    ) {
        let Some((stream, front_end)) = self.site.clone().serve(stream, &shutdown).await else { return };
        let transport = if tls { "wss" } else { "ws" };
        match front_end {
            web::FrontEnd::Native => {
                let max_line = reload::current(&self.native.limits).max_line_bytes;
                let ws = net::websocket::server(stream, max_line - 1).await;
                let open = metrics::metrics().connections_on("native", transport);
                let (front_end, lines) = (self.native, net::connection::Transport::WebSocket(Box::new(ws)));
                counted(&open, move || front_end.serve(lines, peer, shutdown)).await;
            }
            web::FrontEnd::Irc => {
                let max_line = reload::current(&self.irc.limits).max_line_bytes;
                let ws = net::websocket::server(stream, max_line - 1).await;
                let open = metrics::metrics().connections_on("irc", transport);
                let (front_end, lines) = (self.irc, net::connection::Transport::WebSocket(Box::new(ws)));
                counted(&open, move || front_end.serve(lines, peer, shutdown)).await;
            }
        }
    }
}

/// A daemon holding thousands of sockets needs more than the usual 1024 descriptors.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `make` returns (never called: only its type matters).
    fn future_size<F>(_make: impl FnOnce() -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An open connection keeps its session's future for as long as it lives; at 19,000 idle
    /// connections every byte of it counts. (It was 5.6 KiB: an async block awaiting a future it
    /// captured kept it twice, and `Session::run` kept its `self` twice.)
    #[test]
    #[allow(unreachable_code, clippy::diverging_sub_expression)]
    fn a_connections_future_stays_small() {
        let native = future_size(|| {
            let (front_end, open): (NativeFrontEnd, metrics::OpenConnections) = todo!();
            counted(&open, move || front_end.serve(todo!(), todo!(), todo!()))
        });
        let irc = future_size(|| {
            let (front_end, open): (IrcFrontEnd, metrics::OpenConnections) = todo!();
            counted(&open, move || front_end.serve(todo!(), todo!(), todo!()))
        });
        assert!(native <= 2048, "native connection future: {native} bytes");
        assert!(irc <= 2560, "IRC connection future: {irc} bytes");
    }
}
