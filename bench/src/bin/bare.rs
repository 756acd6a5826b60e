//! chatd-bare: the physical limit of chatd's stack on this machine, as a column in
//! `bench/compare.sh`.
//!
//! A broadcast server with nothing but the stack chatd is built on: tokio (multi-threaded
//! runtime, one worker per core by default, as chatd) and rustls (ring provider, TLS 1.3 and 1.2,
//! as chatd), speaking just the IRC subset `chatd-bench --proto irc` needs:
//!
//! - `NICK` and `USER` are answered with `001` once both arrived;
//! - `JOIN #a,#b` makes the connection a member and answers `366` per channel (what the generator
//!   waits for; no `353` names list, no JOIN echo, nothing told to the other members);
//! - `PRIVMSG #chan :text` goes to every *other* member of the channel as
//!   `:nick!nick@bare PRIVMSG #chan :text` (the client's line behind a prefix: no parsing of it);
//! - `PING x` is answered with `PONG`; `QUIT` closes; everything else is ignored.
//!
//! No store, no accounts, no limits (no flood control, no connection limits, no nick uniqueness),
//! no error replies. The shape is the one chatd's sessions have, at its cheapest: one reader task
//! and one writer task per connection, a bounded queue (tokio mpsc) per connection, fan-out by
//! `try_send` of one shared `Bytes` per delivery to each member's queue, and a writer that drains
//! everything queued into one buffer and writes it with one `write_all` + `flush` (one TLS record
//! batch, one `write` per drain). A delivery that finds a member's queue full is dropped and counted
//! (the generator then reports it as lost; raise `--queue`).
//!
//! With `--write-loop` the writing side has the other shape, the one the C daemons have: no writer
//! task per connection, but one writer task per worker thread that owns its connections' write
//! halves. A fan-out pushes into each member's queue (a `VecDeque` under a mutex) and puts the
//! member on its writer's ready list; a writer is woken once for however many of its members a
//! fan-out reached, and writes each one's queue with one `write` in the same turn. A write that
//! cannot complete keeps its rest and is retried when the socket is writable again. It measures
//! what a per-worker write loop would take off the price of the shape (issue 12).
//!
//! Whatever chatd spends per delivery beyond this server is chatd's own (protocol, rooms, store,
//! limits, accounting); what this server spends is the price of the shape on tokio + rustls.
//! Loopback only: it refuses to listen anywhere else.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Poll, Waker};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// Stop adding queued messages to one write beyond this many bytes.
const WRITE_MAX: usize = 64 * 1024;
/// The read buffer's first size; it doubles for longer lines, up to `MAX_LINE`.
const READ_START: usize = 1024;
/// A line longer than this closes the connection (IRC lines are 512 bytes; the generator's ~100).
const MAX_LINE: usize = 64 * 1024;

#[derive(Parser)]
#[command(
    name = "chatd-bare",
    version,
    about = "Bare tokio + rustls IRC-subset broadcast server: the limit of chatd's stack"
)]
struct Args {
    /// TLS listener address (loopback), e.g. 127.0.0.1:46697; needs --cert and --key.
    #[arg(long)]
    tls_listen: Option<String>,
    /// Certificate chain (PEM) for the TLS listener.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Private key (PEM) for the TLS listener.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Plaintext listener address (loopback), e.g. 127.0.0.1:46667.
    #[arg(long)]
    plain_listen: Option<String>,
    /// Messages one connection's queue holds; a delivery to a full queue is dropped and counted.
    #[arg(long, default_value_t = 16384)]
    queue: usize,
    /// tokio worker threads (default: one per core, as chatd).
    #[arg(long)]
    threads: Option<usize>,
    /// One writer task per worker thread writes all of its connections (instead of one writer
    /// task per connection).
    #[arg(long)]
    write_loop: bool,
}

/// A channel: its members' queues. Channels are never removed (a benchmark's rooms are few).
#[derive(Default)]
struct Channel {
    members: RwLock<Vec<(u64, Sink)>>,
}

struct Server {
    channels: Mutex<HashMap<Vec<u8>, Arc<Channel>>>,
    next_id: AtomicU64,
    queue: usize,
    dropped: AtomicU64,
    /// `--write-loop`: the per-worker writers (connections are spread over them by id).
    writers: Vec<Arc<Writer>>,
}

impl Server {
    fn channel(&self, name: &[u8]) -> Arc<Channel> {
        let key = name.to_ascii_lowercase();
        self.channels.lock().unwrap().entry(key).or_default().clone()
    }

    fn note_drop(&self) {
        let n = self.dropped.fetch_add(1, Relaxed) + 1;
        if n.is_power_of_two() {
            eprintln!("chatd-bare: {n} deliveries dropped so far: a member's queue was full (raise --queue)");
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.tls_listen.is_none() && args.plain_listen.is_none() {
        bail!("nothing to listen on: give --tls-listen (with --cert and --key) and/or --plain-listen");
    }
    let tls = match &args.tls_listen {
        Some(_) => {
            let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
                bail!("--tls-listen needs --cert and --key (PEM files)");
            };
            Some(acceptor(cert, key)?)
        }
        None => None,
    };
    raise_nofile();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build().context("tokio runtime")?;
    rt.block_on(async move {
        let server = Arc::new(Server {
            channels: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            queue: args.queue.max(1),
            dropped: AtomicU64::new(0),
            writers: match args.write_loop {
                true => {
                    (0..tokio::runtime::Handle::current().metrics().num_workers()).map(|_| Writer::spawn()).collect()
                }
                false => Vec::new(),
            },
        });
        let mut ready = String::from("chatd-bare ready");
        let mut accepting = Vec::new();
        for (addr, tls) in [(&args.tls_listen, tls), (&args.plain_listen, None)] {
            let Some(addr) = addr else { continue };
            let listener = TcpListener::bind(addr).await.with_context(|| format!("listening on {addr}"))?;
            let local = listener.local_addr()?;
            if !local.ip().is_loopback() {
                bail!("{addr} is not a loopback address: chatd-bare has no limits and only listens on loopback");
            }
            ready += &format!(" {}={local}", if tls.is_some() { "tls" } else { "plain" });
            accepting.push(tokio::spawn(accept_loop(listener, tls, server.clone())));
        }
        println!("{ready}");
        for a in accepting {
            a.await??;
        }
        Ok(())
    })
}

fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut &std::fs::read(cert).with_context(|| cert.display().to_string())?[..])
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: not a PEM certificate", cert.display()))?;
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut &std::fs::read(key).with_context(|| key.display().to_string())?[..])
            .with_context(|| format!("{}: not a PEM key", key.display()))?
            .ok_or_else(|| anyhow!("{}: no private key", key.display()))?;
    // The same provider and versions as chatd (src/net/tls.rs).
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, server: Arc<Server>) -> Result<()> {
    loop {
        let (tcp, _peer): (_, SocketAddr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait a little rather than spin.
                eprintln!("chatd-bare: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let server = server.clone();
        match &tls {
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        let (r, w) = tokio::io::split(stream);
                        serve(server, r, w).await;
                    }
                });
            }
            None => {
                tokio::spawn(async move {
                    let (r, w) = tcp.into_split();
                    serve(server, r, w).await;
                });
            }
        }
    }
}

/// One connection: this task reads and fans out; a spawned writer task drains the queue (or, with
/// `--write-loop`, the connection's worker writer does).
async fn serve<R, W>(server: Arc<Server>, mut r: R, w: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let id = server.next_id.fetch_add(1, Relaxed);
    let (tx, writer) = match server.writers.is_empty() {
        true => {
            let (tx, rx) = mpsc::channel(server.queue);
            (Sink::Task(tx), Some(tokio::spawn(write_loop(w, rx))))
        }
        false => {
            let writer = server.writers[id as usize % server.writers.len()].clone();
            (Sink::Slot(Slot::new(writer, Box::new(w), server.queue)), None)
        }
    };
    let mut conn =
        Conn { id, server, tx, nick: Vec::new(), user: false, welcomed: false, prefix: Vec::new(), joined: Vec::new() };
    let mut buf = vec![0u8; READ_START];
    let mut filled = 0;
    'read: loop {
        if filled == buf.len() {
            if buf.len() >= MAX_LINE {
                break;
            }
            buf.resize(buf.len() * 2, 0);
        }
        let n = match r.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        filled += n;
        let mut start = 0;
        while let Some(i) = buf[start..filled].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + i];
            start += i + 1;
            if !conn.on_line(line).await {
                break 'read;
            }
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
    conn.leave();
    if let Sink::Slot(slot) = &conn.tx {
        slot.close();
    }
    drop(conn);
    if let Some(writer) = writer {
        let _ = writer.await;
    }
}

struct Conn {
    id: u64,
    server: Arc<Server>,
    tx: Sink,
    nick: Vec<u8>,
    user: bool,
    welcomed: bool,
    /// `:nick!nick@bare `, put before a relayed PRIVMSG line.
    prefix: Vec<u8>,
    /// Joined channels, by lower-case name.
    joined: Vec<(Vec<u8>, Arc<Channel>)>,
}

impl Conn {
    /// Handles one client line; false closes the connection.
    async fn on_line(&mut self, line: &[u8]) -> bool {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (cmd, rest) = split_word(line);
        if cmd.eq_ignore_ascii_case(b"PRIVMSG") {
            let (target, _) = split_word(rest);
            self.privmsg(target, line);
        } else if cmd.eq_ignore_ascii_case(b"PING") {
            let token = rest.strip_prefix(b":").unwrap_or(rest);
            return self.reply(&[b":bare PONG bare :", token]).await;
        } else if cmd.eq_ignore_ascii_case(b"NICK") {
            let (nick, _) = split_word(rest);
            let nick = nick.strip_prefix(b":").unwrap_or(nick);
            self.nick = nick.to_vec();
            self.prefix = [b":", nick, b"!", nick, b"@bare "].concat();
            return self.maybe_welcome().await;
        } else if cmd.eq_ignore_ascii_case(b"USER") {
            self.user = true;
            return self.maybe_welcome().await;
        } else if cmd.eq_ignore_ascii_case(b"JOIN") {
            let (chans, _) = split_word(rest);
            for chan in chans.split(|&b| b == b',').filter(|c| !c.is_empty()) {
                let key = chan.to_ascii_lowercase();
                if !self.joined.iter().any(|(k, _)| *k == key) {
                    let ch = self.server.channel(&key);
                    ch.members.write().unwrap().push((self.id, self.tx.clone()));
                    self.joined.push((key, ch));
                }
                let nick = if self.nick.is_empty() { &b"*"[..] } else { &self.nick };
                if !self.reply(&[b":bare 366 ", nick, b" ", chan, b" :End of /NAMES list."]).await {
                    return false;
                }
            }
        } else if cmd.eq_ignore_ascii_case(b"QUIT") {
            return false;
        }
        true
    }

    /// Fans `line` (the client's own `PRIVMSG #chan :text`) out to the channel's other members.
    fn privmsg(&self, target: &[u8], line: &[u8]) {
        let Some((_, ch)) = self.joined.iter().find(|(k, _)| k.eq_ignore_ascii_case(target)) else {
            return; // not a member (or not a channel): ignored
        };
        let mut out = Vec::with_capacity(self.prefix.len() + line.len() + 2);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        let out = Bytes::from(out);
        for (id, tx) in ch.members.read().unwrap().iter() {
            if *id != self.id && !tx.deliver(out.clone()) {
                self.server.note_drop();
            }
        }
    }

    async fn maybe_welcome(&mut self) -> bool {
        if self.welcomed || !self.user || self.nick.is_empty() {
            return true;
        }
        self.welcomed = true;
        let nick = self.nick.clone();
        self.reply(&[b":bare 001 ", &nick, b" :Welcome to chatd-bare ", &nick]).await
    }

    /// Queues a reply to this connection (waiting for room: replies are never dropped).
    async fn reply(&self, parts: &[&[u8]]) -> bool {
        let mut out = parts.concat();
        out.extend_from_slice(b"\r\n");
        match &self.tx {
            Sink::Task(tx) => tx.send(Bytes::from(out)).await.is_ok(),
            Sink::Slot(slot) => {
                slot.push(Bytes::from(out), usize::MAX);
                true
            }
        }
    }

    fn leave(&mut self) {
        for (_, ch) in self.joined.drain(..) {
            ch.members.write().unwrap().retain(|(id, _)| *id != self.id);
        }
    }
}

/// The first space-separated word and the rest after the spaces that follow it.
fn split_word(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => {
            let rest = &s[i + 1..];
            let skip = rest.iter().take_while(|&&b| b == b' ').count();
            (&s[..i], &rest[skip..])
        }
        None => (s, &[]),
    }
}

/// The writer task: waits for a message, takes everything else already queued (up to
/// `WRITE_MAX` bytes) into one buffer, writes it at once and flushes. Ends when every sender is
/// gone (the connection left all its channels and its reader ended) or a write fails.
async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Bytes>) {
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.extend_from_slice(&first);
        while buf.len() < WRITE_MAX {
            match rx.try_recv() {
                Ok(m) => buf.extend_from_slice(&m),
                Err(_) => break,
            }
        }
        if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
            return;
        }
        buf.clear();
    }
    let _ = w.shutdown().await;
}

/// Where a connection's lines go: its own writer task's queue, or its slot at a worker writer.
#[derive(Clone)]
enum Sink {
    Task(mpsc::Sender<Bytes>),
    Slot(Arc<Slot>),
}

impl Sink {
    /// Queues a delivery without waiting; false: the queue is full and it was dropped.
    fn deliver(&self, line: Bytes) -> bool {
        match self {
            Sink::Task(tx) => !matches!(tx.try_send(line), Err(mpsc::error::TrySendError::Full(_))),
            Sink::Slot(slot) => slot.push(line, slot.max),
        }
    }
}

/// One connection at a worker writer: its queue (pushed by fan-outs and its reader) and its write
/// half with what is left to write (touched by the writer task only).
struct Slot {
    queue: Mutex<SlotQueue>,
    /// On its writer's ready list (set by the push that put it there, cleared by the writer).
    scheduled: AtomicBool,
    writer: Arc<Writer>,
    max: usize,
    io: Mutex<SlotIo>,
}

struct SlotQueue {
    lines: VecDeque<Bytes>,
    closed: bool,
}

struct SlotIo {
    w: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    buf: Vec<u8>,
    written: usize,
}

impl Slot {
    fn new(writer: Arc<Writer>, w: Box<dyn AsyncWrite + Send + Unpin>, max: usize) -> Arc<Slot> {
        Arc::new(Slot {
            queue: Mutex::new(SlotQueue { lines: VecDeque::new(), closed: false }),
            scheduled: AtomicBool::new(false),
            writer,
            max,
            io: Mutex::new(SlotIo { w: Some(w), buf: Vec::new(), written: 0 }),
        })
    }

    /// Queues a line (unless `max` lines wait already) and puts the slot on its writer's list.
    fn push(self: &Arc<Self>, line: Bytes, max: usize) -> bool {
        {
            let mut queue = self.queue.lock().unwrap();
            if queue.closed {
                return true;
            }
            if queue.lines.len() >= max {
                return false;
            }
            queue.lines.push_back(line);
        }
        self.schedule();
        true
    }

    fn schedule(self: &Arc<Self>) {
        if !self.scheduled.swap(true, SeqCst) {
            self.writer.ready(self.clone());
        }
    }

    /// The reader ended: the writer writes what is queued, then shuts the write half down.
    fn close(self: &Arc<Self>) {
        self.queue.lock().unwrap().closed = true;
        self.schedule();
    }

    /// Writes what is queued (up to `WRITE_MAX` more bytes each time) until nothing is left or the
    /// socket is full (`Pending`: the writer is woken when it is writable again).
    fn poll_write_out(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let mut io = self.io.lock().unwrap();
        let io = &mut *io;
        loop {
            let Some(w) = io.w.as_mut() else { return Poll::Ready(()) };
            if io.written == io.buf.len() {
                io.buf.clear();
                io.written = 0;
                let closed = {
                    let mut queue = self.queue.lock().unwrap();
                    while io.buf.len() < WRITE_MAX {
                        let Some(line) = queue.lines.pop_front() else { break };
                        io.buf.extend_from_slice(&line);
                    }
                    queue.closed && queue.lines.is_empty()
                };
                if io.buf.is_empty() {
                    let done = match closed {
                        true => Pin::new(&mut *w).poll_shutdown(cx).map(|_| ()),
                        false => Pin::new(&mut *w).poll_flush(cx).map(|_| ()),
                    };
                    if closed && done.is_ready() {
                        io.w = None;
                    }
                    return done;
                }
            }
            match Pin::new(&mut *w).poll_write(cx, &io.buf[io.written..]) {
                Poll::Ready(Ok(n)) if n > 0 => io.written += n,
                Poll::Ready(_) => {
                    io.w = None; // a failed write ends the connection's output
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A worker writer: the slots with something to write, and the writer task's waker.
struct Writer {
    state: Mutex<WriterState>,
}

struct WriterState {
    ready: Vec<Arc<Slot>>,
    waker: Option<Waker>,
}

impl Writer {
    fn spawn() -> Arc<Writer> {
        let writer = Arc::new(Writer { state: Mutex::new(WriterState { ready: Vec::new(), waker: None }) });
        tokio::spawn(writer.clone().run());
        writer
    }

    /// Puts a slot on the list; only the push onto an empty list wakes the writer, so a fan-out
    /// to many of its connections wakes it once.
    fn ready(&self, slot: Arc<Slot>) {
        let waker = {
            let mut state = self.state.lock().unwrap();
            state.ready.push(slot);
            match state.ready.len() {
                1 => state.waker.take(),
                _ => None,
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    async fn run(self: Arc<Self>) {
        let mut batch: Vec<Arc<Slot>> = Vec::new();
        let mut blocked: Vec<Arc<Slot>> = Vec::new();
        poll_fn(|cx| loop {
            {
                let mut state = self.state.lock().unwrap();
                std::mem::swap(&mut batch, &mut state.ready);
                if batch.is_empty() {
                    match &state.waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => state.waker = Some(cx.waker().clone()),
                    }
                }
            }
            if batch.is_empty() {
                // Woken with nothing new: a blocked socket may be writable again.
                blocked.retain(|slot| slot.poll_write_out(cx).is_pending());
                return Poll::<()>::Pending;
            }
            for slot in batch.drain(..) {
                slot.scheduled.store(false, SeqCst);
                if slot.poll_write_out(cx).is_pending() && !blocked.iter().any(|b| Arc::ptr_eq(b, &slot)) {
                    blocked.push(slot);
                }
            }
        })
        .await
    }
}

/// Raises the soft descriptor limit to the hard one (thousands of connections in `idle`).
fn raise_nofile() {
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_word;

    #[test]
    fn words() {
        assert_eq!(split_word(b"PRIVMSG  #r :a b"), (&b"PRIVMSG"[..], &b"#r :a b"[..]));
        assert_eq!(split_word(b"QUIT"), (&b"QUIT"[..], &b""[..]));
    }
}
