//! The listeners: accept TCP connections, admit them (connection limits), finish the TLS handshake
//! within its timeout, and run a `Session` for each. Also the graceful shutdown sequence.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_rustls::TlsAcceptor;

use crate::accounts::Accounts;
use crate::bots::Bots;
use crate::config::Config;
use crate::connection::{BoxStream, Connection};
use crate::limits::ConnectionGate;
use crate::outbox;
use crate::rooms::Rooms;
use crate::session::Session;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// What every connection shares.
pub struct Shared {
    pub config: Config,
    pub rooms: Rooms,
    pub accounts: Accounts,
    pub bots: Arc<Bots>,
    pub store: Arc<Store>,
    pub gate: ConnectionGate,
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// The second of the last logged refusal, and how many were not logged since.
static REFUSALS_LOGGED_AT: AtomicU64 = AtomicU64::new(0);
static REFUSALS_UNLOGGED: AtomicU64 = AtomicU64::new(0);

/// Logs a refused connection, at most one line a second: a flood of connections must not become
/// a flood of log lines. The line says how many refusals it stands for.
fn log_refusal(peer: SocketAddr, refusal: crate::limits::Refusal) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let last = REFUSALS_LOGGED_AT.load(Ordering::Relaxed);
    if now > last && REFUSALS_LOGGED_AT.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
        let also = REFUSALS_UNLOGGED.swap(0, Ordering::Relaxed);
        tracing::info!(%peer, reason = refusal.reason(), also_refused_since_last_line = also, "connection refused");
    } else {
        REFUSALS_UNLOGGED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Binds a listener with an explicit accept backlog (tokio's default of 128 drops connections in a
/// connect burst).
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Accepts connections until the shutdown signal.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    signal: CancellationToken,
    done: mpsc::Sender<()>,
) {
    let shutdown = Shutdown::new(&signal);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.recv() => return,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let tls = tls.clone();
        let shutdown = Shutdown::new(&signal);
        let done = done.clone();
        tokio::spawn(async move {
            handle(tcp, peer, tls, shared, shutdown).await;
            drop(done);
        });
    }
}

/// Writes a one-line explanation to a client that sent plaintext to the TLS port, then closes
/// gently: reading what it sent first, so the close is not a reset that destroys the explanation.
async fn tell_plaintext_client(mut tcp: TcpStream) {
    use tokio::io::AsyncReadExt;
    let bye = b"* BYE :this port speaks TLS; use: openssl s_client -quiet -connect HOST:PORT\r\n";
    if tcp.write_all(bye).await.is_err() || tcp.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut total = 0;
        while total < 64 * 1024 {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

async fn handle(tcp: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>, shared: Arc<Shared>, shutdown: Shutdown) {
    let admission = match shared.gate.admit(peer.ip()) {
        Ok(a) => a,
        Err(refusal) => {
            log_refusal(peer, refusal);
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let limits = &shared.config.limits;
    let handshake = Duration::from_secs(limits.handshake_timeout_secs);
    let stream: BoxStream = match tls {
        None => Box::new(tcp),
        Some(acceptor) => {
            let mut first = [0u8; 1];
            match tokio::time::timeout(handshake, tcp.peek(&mut first)).await {
                Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {}
                Ok(Ok(1)) => {
                    // Someone typed into a plain TCP client: say what this port is, then close.
                    tell_plaintext_client(tcp).await;
                    return;
                }
                _ => return,
            }
            // Boxed: the handshake's state is large and only needed once; the connection's task
            // stays small for the hours it may sit idle.
            match Box::pin(tokio::time::timeout(handshake, acceptor.accept(tcp))).await {
                Ok(Ok(stream)) => Box::new(stream),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let connection = Connection::new(stream, limits.max_line_bytes);
    let (outbox, inbox) = outbox::outbox(id, limits.send_queue_lines, limits.send_queue_bytes);
    tracing::debug!(conn = id, %peer, "connected");
    Session::new(id, peer.ip(), connection, inbox, outbox, shared.clone(), shutdown).run().await;
    tracing::debug!(conn = id, "disconnected");
    drop(admission);
}
