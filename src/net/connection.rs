//! Bytes to lines and back. A `Connection` owns the stream: it turns what arrives into lines,
//! never buffering more than the line limit (a longer line becomes one `TooLong` frame and is
//! discarded up to its newline), and collects outgoing lines to write them with one syscall per
//! batch. One task owns a connection and never reads and writes at once, so the stream is not
//! split (a split stream takes a lock on every read and write).
//!
//! A connection's lines come from a byte stream (TCP or TLS), or from a WebSocket
//! (`Transport::WebSocket`), where one text message is one line in each direction (as in IRCv3's
//! WebSocket specification) and the line limit is the message size limit. The front ends see the
//! same lines either way.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}
pub type BoxStream = Box<dyn Stream>;

/// A WebSocket whose handshake is done, over whatever stream carried the HTTP upgrade.
pub type WebSocket = WebSocketStream<BoxStream>;

/// Where a connection's lines come from.
pub enum Transport {
    /// A byte stream (TCP or TLS): lines end with LF.
    Stream(BoxStream),
    /// A WebSocket: one text message is one line. Boxed: the idle byte-stream connection does not
    /// carry room for it.
    WebSocket(Box<WebSocket>),
}

impl From<BoxStream> for Transport {
    fn from(stream: BoxStream) -> Transport {
        Transport::Stream(stream)
    }
}

#[derive(Debug, PartialEq)]
pub enum Frame {
    /// One line, without its LF (and without a CR before it).
    Line(Bytes),
    /// A line longer than the limit; its bytes were dropped.
    TooLong,
}

pub struct Connection {
    transport: Transport,
    buf: BytesMut,
    max_line: usize,
    discarding: bool,
    /// A WebSocket that cannot go on (a message over the limit).
    ended: bool,
    /// Lines waiting to be written by the next `flush`.
    pub out: Vec<u8>,
}

impl Connection {
    pub fn new(transport: impl Into<Transport>, max_line: usize) -> Connection {
        let transport = transport.into();
        Connection { transport, buf: BytesMut::new(), max_line, discarding: false, ended: false, out: Vec::new() }
    }

    /// The next frame, or `None` when the peer closed (a partial last line is dropped).
    /// Cancel-safe: what was read stays in the buffer.
    pub async fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        if let Transport::WebSocket(ws) = &mut self.transport {
            return read_message(ws, &mut self.ended).await;
        }
        loop {
            if let Some(frame) = self.parse_frame() {
                return Ok(Some(frame));
            }
            let Transport::Stream(stream) = &mut self.transport else { return Ok(None) };
            // Read into a chunk on the stack of one poll and keep only what came: a buffer reserved
            // before waiting would be held by every idle connection for its idle hours.
            let buf = &mut self.buf;
            let read = poll_fn(|cx| {
                let mut chunk = [MaybeUninit::<u8>::uninit(); 1024];
                let mut chunk = ReadBuf::uninit(&mut chunk);
                ready!(Pin::new(&mut *stream).poll_read(cx, &mut chunk))?;
                buf.extend_from_slice(chunk.filled());
                Poll::Ready(io::Result::Ok(chunk.filled().len()))
            });
            if read.await? == 0 {
                return Ok(None);
            }
        }
    }

    fn parse_frame(&mut self) -> Option<Frame> {
        loop {
            let newline = self.buf.iter().position(|b| *b == b'\n');
            if self.discarding {
                match newline {
                    Some(i) => {
                        self.buf.advance(i + 1);
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        self.buf.clear();
                        return None;
                    }
                }
            }
            return match newline {
                Some(i) if i < self.max_line => {
                    let mut line = self.buf.split_to(i + 1).freeze();
                    line.truncate(i);
                    if line.last() == Some(&b'\r') {
                        line.truncate(i - 1);
                    }
                    if self.buf.is_empty() {
                        // Nothing pending: let the buffer go with the line just taken (which shares
                        // it) rather than keep it for as long as the connection then sits idle.
                        self.buf = BytesMut::new();
                    }
                    Some(Frame::Line(line))
                }
                Some(i) => {
                    self.buf.advance(i + 1);
                    Some(Frame::TooLong)
                }
                None if self.buf.len() >= self.max_line => {
                    self.buf.clear();
                    self.discarding = true;
                    Some(Frame::TooLong)
                }
                None => None,
            };
        }
    }

    /// Whether lines are waiting to be written.
    pub fn has_unwritten(&self) -> bool {
        !self.out.is_empty()
    }

    /// Writes everything collected so far.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        match &mut self.transport {
            Transport::Stream(stream) => {
                stream.write_all(&self.out).await?;
                stream.flush().await?;
            }
            Transport::WebSocket(ws) => {
                // Taken first: if this write is abandoned (the connection is ending), no line is
                // sent twice.
                let out = Bytes::from(std::mem::take(&mut self.out));
                write_messages(ws, out).await?;
            }
        }
        self.out.clear();
        if self.out.capacity() > 4096 {
            // A burst's buffer is not kept for the connection's idle hours.
            self.out = Vec::new();
        }
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        match &mut self.transport {
            Transport::Stream(stream) => {
                let _ = stream.shutdown().await;
            }
            // The closing handshake: a close frame, then what the peer still sends is read (and
            // dropped) until its close frame, so that the socket is not closed on unread data (a
            // reset, which can destroy the last lines before the peer reads them); then the
            // stream's own shutdown (TLS close_notify). The caller bounds the wait.
            Transport::WebSocket(ws) => {
                let _ = WebSocketStream::close(ws, None).await;
                while let Some(Ok(_)) = ws.next().await {}
                let _ = ws.get_mut().shutdown().await;
            }
        }
    }
}

/// The next line from a WebSocket: one text (or binary) message. The WebSocket's size limit is the
/// line limit: a longer message is refused before it is buffered, and as the WebSocket cannot go
/// on after that, it is answered like a long line (`TooLong`) and then ends (`discarding` marks
/// that). Ping and pong messages are answered by the WebSocket itself; a close ends the lines.
/// Cancel-safe: the WebSocket keeps what it has read of a message.
async fn read_message(ws: &mut WebSocket, ended: &mut bool) -> io::Result<Option<Frame>> {
    if *ended {
        return Ok(None);
    }
    loop {
        let message = match ws.next().await {
            None | Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                return Ok(None)
            }
            Some(Err(tungstenite::Error::Capacity(_))) => {
                *ended = true;
                return Ok(Some(Frame::TooLong));
            }
            Some(Err(tungstenite::Error::Io(e))) => return Err(e),
            Some(Err(e)) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            Some(Ok(message)) => message,
        };
        let mut line: Bytes = match message {
            Message::Text(text) => text.into(),
            Message::Binary(bytes) => bytes,
            Message::Close(_) => return Ok(None),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        };
        // A client that ends its message with a line ending as on a byte stream is understood;
        // a line ending inside the message is the front end's to refuse (a control character).
        if line.last() == Some(&b'\n') {
            line.truncate(line.len() - 1);
        }
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        return Ok(Some(Frame::Line(line)));
    }
}

/// Sends each CRLF-ended line of `out` as one text message, then flushes.
async fn write_messages(ws: &mut WebSocket, mut out: Bytes) -> io::Result<()> {
    let to_io = |e: tungstenite::Error| match e {
        tungstenite::Error::Io(e) => e,
        e => io::Error::new(io::ErrorKind::BrokenPipe, e),
    };
    while !out.is_empty() {
        let end = out.iter().position(|b| *b == b'\n').unwrap_or(out.len());
        let mut line = out.split_to(end);
        if !out.is_empty() {
            out.advance(1);
        }
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        // The front ends render UTF-8; a stray invalid byte must not break the WebSocket.
        let text = Utf8Bytes::try_from(line.clone())
            .unwrap_or_else(|_| Utf8Bytes::from(String::from_utf8_lossy(&line).into_owned()));
        ws.feed(Message::Text(text)).await.map_err(to_io)?;
    }
    ws.flush().await.map_err(to_io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn frames(input: &[u8], max: usize) -> Vec<Frame> {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut r = Connection::new(Box::new(server) as BoxStream, max);
        let mut client = client;
        client.write_all(input).await.unwrap();
        drop(client);
        let mut out = Vec::new();
        while let Some(f) = r.read_frame().await.unwrap() {
            out.push(f);
        }
        out
    }

    #[tokio::test]
    async fn lines_and_limits() {
        let line = |s: &str| Frame::Line(Bytes::copy_from_slice(s.as_bytes()));
        assert_eq!(frames(b"a\r\nb\n\nc", 16).await, vec![line("a"), line("b"), line("")]);
        // exactly the limit including LF is fine; one more byte is too long
        let ok = format!("{}\n", "x".repeat(15));
        assert_eq!(frames(ok.as_bytes(), 16).await, vec![line(&"x".repeat(15))]);
        let over = format!("{}\nok\n", "x".repeat(16));
        assert_eq!(frames(over.as_bytes(), 16).await, vec![Frame::TooLong, line("ok")]);
        let huge = format!("{}\nok\n", "y".repeat(100_000));
        assert_eq!(frames(huge.as_bytes(), 16).await, vec![Frame::TooLong, line("ok")]);
    }

    #[tokio::test]
    async fn a_websocket_message_is_a_line_both_ways() {
        use tokio_tungstenite::tungstenite::protocol::Role;
        let (client, server) = tokio::io::duplex(1 << 16);
        let server = crate::net::websocket::server(Box::new(server), 15).await;
        let mut conn = Connection::new(Transport::WebSocket(Box::new(server)), 16);
        let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        client.send(Message::text("MSG general hi")).await.unwrap();
        client.send(Message::text("PING 1\r\n")).await.unwrap();
        client.send(Message::Ping(Bytes::from_static(b"are you there"))).await.unwrap();
        client.send(Message::text("")).await.unwrap();
        let line = |s: &str| Frame::Line(Bytes::copy_from_slice(s.as_bytes()));
        assert_eq!(conn.read_frame().await.unwrap(), Some(line("MSG general hi")));
        assert_eq!(conn.read_frame().await.unwrap(), Some(line("PING 1")));
        assert_eq!(conn.read_frame().await.unwrap(), Some(line("")));
        conn.out.extend_from_slice(b"200 PONG 1\r\n* MSG general 1 t bob :x\r\n");
        conn.flush().await.unwrap();
        let mut got = Vec::new();
        while got.len() < 3 {
            match client.next().await.unwrap().unwrap() {
                Message::Text(t) => got.push(t.as_str().to_string()),
                Message::Pong(p) => got.push(format!("pong {}", String::from_utf8_lossy(&p))),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, ["pong are you there", "200 PONG 1", "* MSG general 1 t bob :x"]);
        // Over the limit: one TooLong, then the WebSocket is over.
        client.send(Message::text("x".repeat(16))).await.unwrap();
        assert_eq!(conn.read_frame().await.unwrap(), Some(Frame::TooLong));
        assert_eq!(conn.read_frame().await.unwrap(), None);
    }
}
