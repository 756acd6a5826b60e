//! chatd: a chat daemon with an IRC-style line protocol over TLS. See PROTOCOL.md.
//!
//! Modules, by concern: `config`; `tls`; `server` (listeners, admission, shutdown); `connection`
//! (bytes to frames); `parse` and `command` (frames to typed commands); `session` (one connection,
//! the one `apply`); `reply` (typed results to wire lines); `error`; the core, which knows nothing
//! of the wire: `names`, `model`, `room` (actor), `rooms` (registry), `bots`, `outbox`, `accounts`,
//! `limits`, `store` (SQLite, group commit).

pub mod accounts;
pub mod bots;
pub mod command;
pub mod config;
pub mod connection;
pub mod error;
pub mod hasher;
pub mod limits;
pub mod model;
pub mod names;
pub mod outbox;
pub mod parse;
pub mod reply;
pub mod room;
pub mod rooms;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::names::RoomName;

/// What chatd is listening on, reported once it is ready.
pub struct Listening {
    pub tls: SocketAddr,
    pub plain: Option<SocketAddr>,
    pub fingerprint: String,
    pub ca_file: std::path::PathBuf,
}

/// Runs the daemon until `stop` resolves, then shuts down gracefully: clients are told, accepted
/// messages are committed.
pub async fn run(
    config: Config,
    ready: impl FnOnce(&Listening),
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    raise_fd_limit();
    let tls = tls::load_or_create(&config.tls)?;
    let store = store::Store::open(&config.storage)?;
    let accounts =
        accounts::Accounts::new(store.clone(), &config.limits, config.accounts.open_registration, &config.bots).await;
    accounts.provision_bots(&config.bots).await?;
    let bots = Arc::new(bots::Bots::default());
    let initial: Vec<RoomName> = config
        .rooms
        .initial
        .iter()
        .map(|r| RoomName::parse(r).with_context(|| format!("rooms.initial: {r:?} is not a valid room name")))
        .collect::<Result<_, _>>()?;
    let settings = room::RoomSettings {
        cache_messages: config.rooms.cache_messages.max(parse::HISTORY_PAGE),
        members_per_room: config.limits.members_per_room,
        batch_bytes: (config.limits.send_queue_bytes / 8).max(1),
    };
    let rooms = rooms::Rooms::load(store.clone(), bots.clone(), settings, config.limits.max_rooms, &initial).await?;
    let l = &config.limits;
    let gate = limits::ConnectionGate::new(
        l.max_connections,
        l.max_connections_per_address,
        l.new_connections_per_address_per_minute,
        l.exempt_loopback,
    );

    let backlog = config.server.listen_backlog;
    let tls_listener = server::bind(config.listen_addr(), backlog)
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let plain_listener = match config.plain_listen_addr()? {
        Some(addr) => Some(server::bind(addr, backlog).with_context(|| format!("cannot listen on {addr}"))?),
        None => None,
    };
    let listening = Listening {
        tls: tls_listener.local_addr()?,
        plain: plain_listener.as_ref().map(|l| l.local_addr()).transpose()?,
        fingerprint: tls.fingerprint.clone(),
        ca_file: config.tls.cert.parent().unwrap_or(std::path::Path::new(".")).join("ca.pem"),
    };

    let shared = Arc::new(server::Shared { config, rooms, accounts, bots, store: store.clone(), gate });
    let signal = CancellationToken::new();
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
    tokio::spawn(server::accept_loop(tls_listener, Some(acceptor), shared.clone(), signal.clone(), done_tx.clone()));
    if let Some(plain) = plain_listener {
        tokio::spawn(server::accept_loop(plain, None, shared.clone(), signal.clone(), done_tx.clone()));
    }
    drop(done_tx);
    ready(&listening);

    stop.await;
    tracing::info!(open = shared.gate.open_connections(), "shutting down");
    signal.cancel();
    if tokio::time::timeout(Duration::from_secs(10), done_rx.recv()).await.is_err() {
        tracing::warn!("some connections did not close in 10 s");
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
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
