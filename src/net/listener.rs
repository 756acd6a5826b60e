//! The listeners: accept TCP connections, admit them (the connection gate), finish the TLS
//! handshake within its timeout, and hand each connection's stream to the front end that serves
//! the listener. A place at the gate is held until the front end is done with the connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::admission::{ConnectionGate, Refusal};
use super::connection::BoxStream;
use crate::metrics::Refused;
use crate::shutdown::Shutdown;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// How a listener treats its connections before its front end sees them.
#[derive(Clone)]
pub struct Listener {
    /// Terminate TLS (`None`: plaintext).
    pub tls: Option<TlsAcceptor>,
    pub gate: Arc<ConnectionGate>,
    pub handshake_timeout: Duration,
    /// Written to a client that sends plaintext to a TLS port, in the front end's own words.
    pub plaintext_hint: &'static [u8],
}

/// The second of the last logged refusal, and how many were not logged since.
static REFUSALS_LOGGED_AT: AtomicU64 = AtomicU64::new(0);
static REFUSALS_UNLOGGED: AtomicU64 = AtomicU64::new(0);

/// Logs a refused connection, at most one line a second: a flood of connections must not become
/// a flood of log lines. The line says how many refusals it stands for.
fn log_refusal(peer: SocketAddr, refusal: Refusal) {
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

impl Listener {
    /// Accepts connections until the shutdown signal; `serve` runs each admitted connection. Every
    /// connection's task holds a clone of `done`, so the caller knows when all have ended.
    pub async fn accept_loop<S, F>(
        self,
        listener: TcpListener,
        serve: S,
        signal: CancellationToken,
        done: mpsc::Sender<()>,
    ) where
        S: Fn(BoxStream, SocketAddr, Shutdown) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
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
            let (this, serve, shutdown, done) = (self.clone(), serve.clone(), Shutdown::new(&signal), done.clone());
            tokio::spawn(async move {
                this.handle(tcp, peer, serve, shutdown).await;
                drop(done);
            });
        }
    }

    async fn handle<S, F>(self, tcp: TcpStream, peer: SocketAddr, serve: S, shutdown: Shutdown)
    where
        S: Fn(BoxStream, SocketAddr, Shutdown) -> F,
        F: Future<Output = ()>,
    {
        let admission = match self.gate.admit(peer.ip()) {
            Ok(a) => a,
            Err(refusal) => {
                crate::metrics::metrics().refused(match refusal {
                    Refusal::ServerFull => Refused::ServerFull,
                    Refusal::TooManyFromAddress => Refused::TooManyFromAddress,
                    Refusal::TooManyNewFromAddress => Refused::TooManyNewFromAddress,
                });
                log_refusal(peer, refusal);
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Some(stream) = self.secure(tcp, peer).await else { return };
        serve(stream, peer, shutdown).await;
        drop(admission);
    }

    /// The stream the front end reads: TLS once the handshake is done, or the TCP stream itself.
    async fn secure(&self, tcp: TcpStream, peer: SocketAddr) -> Option<BoxStream> {
        let Some(acceptor) = &self.tls else { return Some(Box::new(tcp)) };
        let mut first = [0u8; 1];
        match tokio::time::timeout(self.handshake_timeout, tcp.peek(&mut first)).await {
            Ok(Ok(1)) if first[0] == TLS_HANDSHAKE => {}
            Ok(Ok(1)) => {
                // Someone typed into a plain TCP client: say what this port is, then close. Boxed:
                // its 4 KiB drain buffer would otherwise be part of every connection's task.
                Box::pin(tell_plaintext_client(tcp, self.plaintext_hint)).await;
                return None;
            }
            _ => return None,
        }
        // Boxed: the handshake's state is large and only needed once; the connection's task
        // stays small for the hours it may sit idle.
        match Box::pin(tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp))).await {
            Ok(Ok(stream)) => Some(Box::new(stream)),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                None
            }
        }
    }
}

/// Writes a one-line explanation to a client that sent plaintext to the TLS port, then closes
/// gently: reading what it sent first, so the close is not a reset that destroys the explanation.
async fn tell_plaintext_client(mut tcp: TcpStream, hint: &[u8]) {
    use tokio::io::AsyncReadExt;
    if tcp.write_all(hint).await.is_err() || tcp.shutdown().await.is_err() {
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
