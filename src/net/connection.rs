//! Bytes to lines and back. A `Connection` owns the stream: it turns what arrives into lines,
//! never buffering more than the line limit (a longer line becomes one `TooLong` frame and is
//! discarded up to its newline), and collects outgoing lines to write them with one syscall per
//! batch. One task owns a connection and never reads and writes at once, so the stream is not
//! split (a split stream takes a lock on every read and write).

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}
pub type BoxStream = Box<dyn Stream>;

#[derive(Debug, PartialEq)]
pub enum Frame {
    /// One line, without its LF (and without a CR before it).
    Line(Bytes),
    /// A line longer than the limit; its bytes were dropped.
    TooLong,
}

pub struct Connection {
    stream: BoxStream,
    buf: BytesMut,
    max_line: usize,
    discarding: bool,
    /// Lines waiting to be written by the next `flush`.
    pub out: Vec<u8>,
}

impl Connection {
    pub fn new(stream: BoxStream, max_line: usize) -> Connection {
        Connection { stream, buf: BytesMut::new(), max_line, discarding: false, out: Vec::new() }
    }

    /// The next frame, or `None` when the peer closed (a partial last line is dropped).
    /// Cancel-safe: what was read stays in the buffer.
    pub async fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            if let Some(frame) = self.parse_frame() {
                return Ok(Some(frame));
            }
            // Read into a chunk on the stack of one poll and keep only what came: a buffer reserved
            // before waiting would be held by every idle connection for its idle hours.
            let read = poll_fn(|cx| {
                let mut chunk = [MaybeUninit::<u8>::uninit(); 1024];
                let mut chunk = ReadBuf::uninit(&mut chunk);
                ready!(Pin::new(&mut self.stream).poll_read(cx, &mut chunk))?;
                self.buf.extend_from_slice(chunk.filled());
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
        self.stream.write_all(&self.out).await?;
        self.stream.flush().await?;
        self.out.clear();
        if self.out.capacity() > 4096 {
            // A burst's buffer is not kept for the connection's idle hours.
            self.out = Vec::new();
        }
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn frames(input: &[u8], max: usize) -> Vec<Frame> {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut r = Connection::new(Box::new(server), max);
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
}
