//! A WebSocket client for chatd's web listener (`/ws`), for tests and chatd-bench: it opens the
//! WebSocket over a stream the caller connected (TCP or TLS) and hands back a byte stream of
//! lines, so `LineConn` reads and writes it as it does a TLS connection. Each line written becomes
//! one text message; each message received becomes one CRLF-ended line. A task carries the lines
//! between the two.

use std::io;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::client::Stream;

/// What to ask for in the handshake.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    /// `host[:port]` for the request (the Host header).
    pub host: String,
    /// `Sec-WebSocket-Protocol`, e.g. `chatd.native` or `text.ircv3.net`; `None`: none.
    pub subprotocol: Option<String>,
    /// `Origin`, as a browser would send it; `None`: none (a program).
    pub origin: Option<String>,
}

/// An error from the handshake: the HTTP status when the server refused (e.g. 403), with its body.
fn refused(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Http(response) => {
            let body = response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("HTTP {}: {}", response.status().as_u16(), body.trim()),
            )
        }
        Error::Io(e) => e,
        e => io::Error::other(e),
    }
}

/// Opens the WebSocket at `/ws` over `stream` and returns the lines' byte stream, with the
/// subprotocol the server chose.
pub async fn connect(stream: Box<dyn Stream>, handshake: &Handshake) -> io::Result<(Box<dyn Stream>, Option<String>)> {
    let mut request = format!("ws://{}/ws", handshake.host).into_client_request().map_err(io::Error::other)?;
    let headers = request.headers_mut();
    if let Some(p) = &handshake.subprotocol {
        headers.insert("sec-websocket-protocol", HeaderValue::from_str(p).map_err(io::Error::other)?);
    }
    if let Some(o) = &handshake.origin {
        headers.insert("origin", HeaderValue::from_str(o).map_err(io::Error::other)?);
    }
    let (ws, response) = tokio_tungstenite::client_async(request, stream).await.map_err(refused)?;
    let chosen = response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(str::to_string);
    let (mine, theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(bridge(ws, theirs));
    Ok((Box::new(mine), chosen))
}

/// Carries lines between the WebSocket and the byte stream until either side ends.
async fn bridge<S>(ws: tokio_tungstenite::WebSocketStream<S>, lines: tokio::io::DuplexStream)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut source) = ws.split();
    let (read, mut write) = tokio::io::split(lines);
    let mut read = BufReader::new(read).lines();
    loop {
        tokio::select! {
            line = read.next_line() => match line {
                Ok(Some(line)) => {
                    if sink.send(Message::text(line.trim_end_matches('\r'))).await.is_err() {
                        break;
                    }
                }
                _ => {
                    let _ = sink.close().await;
                    break;
                }
            },
            message = source.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let mut line = text.as_bytes().to_vec();
                    line.extend_from_slice(b"\r\n");
                    if write.write_all(&line).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Binary(bytes))) => {
                    let mut line = bytes.to_vec();
                    line.extend_from_slice(b"\r\n");
                    if write.write_all(&line).await.is_err() {
                        break;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    let _ = write.shutdown().await;
}
