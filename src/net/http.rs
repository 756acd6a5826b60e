//! A small HTTP/1.1 server (hyper) for what chatd serves over HTTP: the metrics and health
//! endpoints (`serve`, with its own listener), and the web client with its WebSocket upgrade
//! (`serve_connection`, one connection the chat listeners accepted and admitted). It knows no
//! chat: the caller hands it a handler from a request's method, path and headers to an answer.
//! Bounded like the chat listeners: a cap on open connections, a timeout to read a request's
//! head, and a graceful stop on the shutdown signal.

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use super::connection::BoxStream;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Most HTTP connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send a request's head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a handler answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
    /// More headers (name, value).
    pub headers: &'static [(&'static str, &'static str)],
}

/// A handler's answer on a connection that may switch protocols.
pub enum Answer<U> {
    Reply(Reply),
    /// Switch protocols (HTTP upgrade): `response` (101 and its headers) accepts the switch, and
    /// `serve_connection` returns the stream with `U`, what the caller needs to go on with it.
    Upgrade(Response<()>, U),
}

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply { status, content_type: "text/plain; charset=utf-8", body: Bytes::from(body.into()), headers: &[] }
    }

    pub fn not_found() -> Reply {
        Reply::text(404, "not found\n")
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if let Ok(value) = self.content_type.parse() {
            response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
        }
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) =
                (hyper::header::HeaderName::from_bytes(name.as_bytes()), hyper::header::HeaderValue::from_str(value))
            {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

/// Serves HTTP/1.1 on one connection until the peer closes it, `stop` resolves (a graceful close),
/// or a request is answered with `Answer::Upgrade`: then the stream, now the other protocol's, is
/// returned with what the handler attached. `header_timeout` bounds the wait for each request's
/// head, the first one and those of a kept-alive connection.
pub async fn serve_connection<H, F, U>(
    io: BoxStream,
    handle: H,
    header_timeout: Duration,
    stop: impl Future<Output = ()>,
) -> Option<(BoxStream, U)>
where
    H: Fn(Request<()>) -> F + Send + Sync + 'static,
    F: Future<Output = Answer<U>> + Send + 'static,
    U: Send + 'static,
{
    let upgrade: Arc<Mutex<Option<(OnUpgrade, U)>>> = Arc::new(Mutex::new(None));
    let slot = upgrade.clone();
    let handle = Arc::new(handle);
    let service = service_fn(move |mut req: Request<Incoming>| {
        let on_upgrade = req.extensions_mut().remove::<OnUpgrade>();
        let (head, _body) = req.into_parts();
        let answer = handle(Request::from_parts(head, ()));
        let slot = slot.clone();
        async move {
            let response = match answer.await {
                Answer::Reply(reply) => reply.into_response(),
                Answer::Upgrade(response, attached) => match on_upgrade {
                    Some(on_upgrade) => {
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((on_upgrade, attached));
                        response.map(|()| Full::new(Bytes::new()))
                    }
                    None => Reply::text(400, "cannot switch protocols here\n").into_response(),
                },
            };
            Ok::<_, Infallible>(response)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::pin!(stop);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = &mut stop => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "http connection ended with an error");
    }
    let (on_upgrade, attached) = upgrade.lock().unwrap_or_else(|p| p.into_inner()).take()?;
    match on_upgrade.await {
        Ok(upgraded) => Some((Box::new(TokioIo::new(upgraded)), attached)),
        Err(e) => {
            tracing::debug!(error = %e, "http upgrade failed");
            None
        }
    }
}

/// Serves HTTP on `listener` until `stop` is cancelled. `handle` answers each request from its
/// head (method, URI, headers); bodies are not read (the endpoints take none).
pub async fn serve<H, F>(listener: TcpListener, handle: H, stop: CancellationToken)
where
    H: Fn(Request<()>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "http accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (handle, stop) = (handle.clone(), stop.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let (head, _body) = req.into_parts();
                let answer = handle(Request::from_parts(head, ()));
                async move { Ok::<_, Infallible>(answer.await.into_response()) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "http connection ended with an error");
            }
            drop(slot);
        });
    }
}
