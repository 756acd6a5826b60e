//! A line connection for clients: write a command line, read server lines back, over TLS or (for a
//! loopback plaintext listener) bare TCP. Reads are bounded so a broken server cannot make a client
//! buffer without limit.

use std::io;
use std::sync::Arc;

use rustls::ClientConfig;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::line::{Event, Reply, ServerLine};

/// The longest server line a client accepts (server lines are at most a 4 KiB client line plus a
/// short prefix).
pub const MAX_SERVER_LINE: usize = 64 * 1024;

pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}
type BoxStream = Box<dyn Stream>;

/// Reading half: server lines.
pub struct LineReader {
    inner: BufReader<ReadHalf<BoxStream>>,
    buf: Vec<u8>,
}

/// Writing half: command lines.
pub struct LineWriter {
    inner: WriteHalf<BoxStream>,
}

/// Both halves together, for simple request/response use.
pub struct LineConn {
    pub reader: LineReader,
    pub writer: LineWriter,
}

/// What a command got back: its 1xx data lines, its final reply, and the events that arrived
/// meanwhile.
#[derive(Debug, Clone)]
pub struct Response {
    pub data: Vec<Reply>,
    pub fin: Reply,
    pub events: Vec<Event>,
}

impl LineConn {
    /// Connects over TLS. `server_name` is checked against the certificate unless the trust is a
    /// pinned fingerprint.
    pub async fn connect_tls(addr: &str, server_name: &str, config: Arc<ClientConfig>) -> io::Result<Self> {
        let tls = crate::tls::connect(addr, server_name, config).await?;
        Ok(Self::from_stream(Box::new(tls)))
    }

    /// Connects over plain TCP (only for a plaintext listener on loopback).
    pub async fn connect_plain(addr: &str) -> io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Self::from_stream(Box::new(tcp)))
    }

    pub fn from_stream(stream: Box<dyn Stream>) -> Self {
        let (r, w) = tokio::io::split(stream);
        LineConn { reader: LineReader { inner: BufReader::new(r), buf: Vec::new() }, writer: LineWriter { inner: w } }
    }

    pub fn split(self) -> (LineReader, LineWriter) {
        (self.reader, self.writer)
    }

    pub async fn send(&mut self, line: &str) -> io::Result<()> {
        self.writer.send(line).await
    }

    pub async fn read_line(&mut self) -> io::Result<Option<String>> {
        self.reader.read_line().await
    }

    pub async fn next(&mut self) -> io::Result<Option<ServerLine>> {
        self.reader.next().await
    }

    /// Sends one command and reads until its final reply (code >= 200). Events that arrive in
    /// between are collected, not lost.
    pub async fn call(&mut self, line: &str) -> io::Result<Response> {
        self.send(line).await?;
        let mut data = Vec::new();
        let mut events = Vec::new();
        loop {
            match self.next().await? {
                None => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed")),
                Some(ServerLine::Event(e)) => events.push(e),
                Some(ServerLine::Reply(r)) if r.is_final() => return Ok(Response { data, fin: r, events }),
                Some(ServerLine::Reply(r)) => data.push(r),
            }
        }
    }
}

impl LineWriter {
    /// Writes one line; the CRLF is added here.
    pub async fn send(&mut self, line: &str) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.inner.write_all(&bytes).await?;
        self.inner.flush().await
    }

    /// Writes raw bytes as they are (for tests of bad input).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes).await?;
        self.inner.flush().await
    }

    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.inner.shutdown().await
    }
}

impl LineReader {
    /// The next line without its line ending, or `None` at end of stream. Cancel-safe: a partial
    /// line read before the future was dropped stays buffered for the next call.
    pub async fn read_line(&mut self) -> io::Result<Option<String>> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-line"))
                };
            }
            let (used, done) = match available.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.buf.extend_from_slice(&available[..i]);
                    (i + 1, true)
                }
                None => {
                    self.buf.extend_from_slice(available);
                    (available.len(), false)
                }
            };
            self.inner.consume(used);
            if self.buf.len() > MAX_SERVER_LINE {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "server line too long"));
            }
            if done {
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
                let line = String::from_utf8(std::mem::take(&mut self.buf))
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "server sent invalid UTF-8"))?;
                return Ok(Some(line));
            }
        }
    }

    /// The next parsed server line, or `None` at end of stream.
    pub async fn next(&mut self) -> io::Result<Option<ServerLine>> {
        match self.read_line().await? {
            None => Ok(None),
            Some(line) => ServerLine::parse(&line).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        }
    }
}
