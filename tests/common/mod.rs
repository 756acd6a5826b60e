//! Helpers shared by the hardening tests (limits, durability, faults, security): clients from other
//! loopback addresses (127.0.0.0/8 is all ours, so per-address limits can be tested on one
//! machine), raw TLS probes, and the reply fields the tests look at.
#![allow(dead_code)]

pub mod irc;

use std::net::SocketAddr;
use std::sync::Arc;

use chatd_proto::line::ServerLine;
use chatd_proto::tls::{client_config, Trust};
use chatd_proto::LineConn;
use testkit::{Daemon, PATIENCE};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

/// A TCP connection to the daemon from the loopback address `source` (e.g. "127.0.0.2").
pub async fn tcp_from(d: &Daemon, source: &str) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse().unwrap(), 0))?;
    socket.connect(d.addr.parse().unwrap()).await
}

pub fn tls_config(d: &Daemon) -> Arc<ClientConfig> {
    client_config(&Trust::CaFile(d.ca_file.clone())).expect("client config")
}

/// Finishes a TLS handshake on `tcp` and reads the greeting: `Some` only for a real session.
pub async fn session_on(tcp: TcpStream, config: Arc<ClientConfig>) -> Option<LineConn> {
    let attempt = async {
        let tls = TlsConnector::from(config).connect(ServerName::try_from("localhost").unwrap(), tcp).await.ok()?;
        let mut conn = LineConn::from_stream(Box::new(tls));
        let hello = conn.next().await.ok()??;
        hello.is_event("HELLO").then_some(conn)
    };
    tokio::time::timeout(PATIENCE, attempt).await.expect("a TLS attempt neither finished nor failed")
}

/// A TLS client from `source` that got `* HELLO`; panics when the daemon turned it away.
pub async fn client_from(d: &Daemon, source: &str) -> LineConn {
    let tcp = tcp_from(d, source).await.expect("tcp connect");
    session_on(tcp, tls_config(d)).await.unwrap_or_else(|| panic!("no session from {source}; log:\n{}", d.log()))
}

/// Retries `client_from` until the daemon has freed a place (closing is asynchronous).
pub async fn client_from_eventually(d: &Daemon, source: &str) -> LineConn {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(tcp) = tcp_from(d, source).await {
            if let Some(conn) = session_on(tcp, tls_config(d)).await {
                return conn;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "the daemon never served {source} again; log:\n{}", d.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Raises this process's open-file limit (a test holding 1,000 sockets needs more than 1,024
/// descriptors); returns the new soft limit.
pub fn raise_nofile(want: u64) -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        lim.rlim_cur
    }
}

/// Whether a server line is the final reply with `code`.
pub fn is_reply(line: &ServerLine, code: u16) -> bool {
    matches!(line, ServerLine::Reply(r) if r.code == code)
}

/// The text of a `* <name>` event.
pub fn event_text(line: &ServerLine) -> Option<&str> {
    match line {
        ServerLine::Event(e) => e.text.as_deref(),
        _ => None,
    }
}
