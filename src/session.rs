//! One connection's loop, the same for every front end: it reads lines and hands them to the
//! front end's `Protocol`, writes what the front end renders (replies, the events the client's
//! rooms push, acknowledgements once committed), and enforces the per-connection limits: flood
//! control, idle PING, login timeout, write timeout and slow-reader disconnect. Only parsing and
//! rendering differ between front ends, and those are the `Protocol`'s.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{sleep_until, Instant, Sleep};

use crate::chat::client::{Client, Settled};
use crate::chat::model::{ConnId, Event};
use crate::chat::outbox::{self, Inbox};
use crate::chat::Chat;
use crate::config::Limits;
use crate::limits::TokenBucket;
use crate::metrics::{metrics, Dropped};
use crate::net::connection::{Connection, Frame, Transport};
use crate::shutdown::Shutdown;

/// Most events written in one batch before the socket is flushed.
const EVENTS_PER_FLUSH: usize = 512;

/// Whether the connection goes on after a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close,
}

/// Why the server ends a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    LoginTimeout,
    PingTimeout,
    ExcessFlood,
    SlowReader,
    WriteTimeout,
    Shutdown,
}

impl Disconnect {
    pub fn reason(self) -> &'static str {
        match self {
            Disconnect::LoginTimeout => "login timeout",
            Disconnect::PingTimeout => "ping timeout",
            Disconnect::ExcessFlood => "excess flood",
            Disconnect::SlowReader => "send queue full (slow reader)",
            Disconnect::WriteTimeout => "write timeout (not reading)",
            Disconnect::Shutdown => "server shutting down",
        }
    }
}

/// A front end: how lines are parsed and applied, and how everything sent is rendered. Every
/// method appends to `out`, the connection's unwritten bytes.
pub trait Protocol: Send {
    /// What the front end attaches to a post, to render its acknowledgement.
    type Tag: Send;
    fn greet(&mut self, out: &mut Vec<u8>);
    /// Parses and applies one line.
    fn line(
        &mut self,
        client: &mut Client<Self::Tag>,
        line: Bytes,
        out: &mut Vec<u8>,
    ) -> impl Future<Output = Flow> + Send;
    /// A line longer than `max` bytes was discarded.
    fn line_too_long(&mut self, max: usize, out: &mut Vec<u8>);
    fn event(&mut self, event: &Event, to: ConnId, out: &mut Vec<u8>);
    fn settled(&mut self, settled: Settled<Self::Tag>, out: &mut Vec<u8>);
    fn ping(&mut self, token: &str, out: &mut Vec<u8>);
    /// Said once, when flood control first holds a line back.
    fn flood_notice(&mut self, out: &mut Vec<u8>);
    fn bye(&mut self, why: Disconnect, out: &mut Vec<u8>);
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Serves one connection with `protocol` until it ends.
pub async fn serve<P: Protocol>(
    stream: Transport,
    peer: SocketAddr,
    chat: Arc<Chat>,
    limits: Arc<Limits>,
    flood_exempt: bool,
    shutdown: Shutdown,
    protocol: P,
) {
    let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    let (outbox, inbox) = outbox::outbox(id, limits.send_queue_lines, limits.send_queue_bytes);
    tracing::debug!(conn = id, %peer, "connected");
    let guests = &chat.guests;
    let guest_flood = (!flood_exempt).then(|| TokenBucket::new(guests.flood_burst, guests.flood_rate_per_sec));
    // `run` borrows the session: an async fn keeps an argument taken by value twice (the argument
    // and its local), and this future is kept for as long as the connection is open.
    let mut session = Session {
        conn: Connection::new(stream, limits.max_line_bytes),
        client: Client::new(id, peer.ip(), outbox, chat),
        inbox,
        protocol,
        held: VecDeque::new(),
        flood: (!flood_exempt).then(|| TokenBucket::new(limits.flood_burst, limits.flood_rate_per_sec)),
        guest_flood,
        warned_flood: false,
        limits,
        shutdown,
    };
    session.run().await;
    tracing::debug!(conn = id, "disconnected");
}

/// What one of a session's quiet waits brought.
enum Quiet {
    Read(std::io::Result<Option<Frame>>),
    Idle,
    Shutdown,
}

/// The waker a session polls its quiet waits with: it notes that one of them may be ready, then
/// wakes the session's task.
struct QuietWaker {
    stirred: AtomicBool,
    task: Waker,
}

impl QuietWaker {
    fn new(task: &Waker) -> (Arc<QuietWaker>, Waker) {
        let q = Arc::new(QuietWaker { stirred: AtomicBool::new(false), task: task.clone() });
        (q.clone(), Waker::from(q))
    }
}

impl Wake for QuietWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.stirred.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// How many messages an event carries to connection `to` (for the delivered count).
fn messages_in(event: &Event, to: ConnId) -> u64 {
    match event {
        Event::Message(_) | Event::Direct(_) => 1,
        Event::Messages(batch) => batch.for_member(to).count() as u64,
        _ => 0,
    }
}

struct Session<P: Protocol> {
    conn: Connection,
    client: Client<P::Tag>,
    inbox: Inbox,
    protocol: P,
    /// Lines read but held back by flood control.
    held: VecDeque<Frame>,
    /// `None`: exempt (loopback when configured so); bots are exempt once logged in.
    flood: Option<TokenBucket>,
    /// The bucket while the connection is a guest (`[guests]`: usually slower).
    guest_flood: Option<TokenBucket>,
    warned_flood: bool,
    limits: Arc<Limits>,
    shutdown: Shutdown,
}

impl<P: Protocol> Session<P> {
    async fn run(&mut self) {
        let why = self.serve().await;
        let dropped = match why {
            Some(Disconnect::LoginTimeout) => Some(Dropped::LoginTimeout),
            Some(Disconnect::PingTimeout) => Some(Dropped::PingTimeout),
            Some(Disconnect::ExcessFlood) => Some(Dropped::ExcessFlood),
            Some(Disconnect::SlowReader) => Some(Dropped::SlowReader),
            Some(Disconnect::WriteTimeout) => Some(Dropped::WriteTimeout),
            Some(Disconnect::Shutdown) | None => None,
        };
        if let Some(dropped) = dropped {
            metrics().dropped(dropped);
        }
        if let Some(why) = why {
            // Messages already accepted are committed; their senders hear so before the goodbye.
            // Boxed, as the leaving below: rare, and large; the idle connection's task does not
            // carry room for them.
            let _ = tokio::time::timeout(Duration::from_secs(5), Box::pin(self.write_all_settled())).await;
            self.protocol.bye(why, &mut self.conn.out);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.flush()).await;
        Box::pin(self.client.disconnect()).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.shutdown()).await;
    }

    /// The connection's main loop. Returns why the server ends it, if it does.
    ///
    /// It runs once per wake-up, and most wake-ups are one delivery: the waits that rarely end
    /// (idle timer, flood timer, shutdown) are made once and kept across turns; reading, the idle
    /// timer and shutdown are polled only when their own waker says one of them may be ready; and
    /// a write that completes at once takes no timer. So a delivery polls the inbox, renders and
    /// writes, and costs no timer or waiter registration.
    async fn serve(&mut self) -> Option<Disconnect> {
        self.protocol.greet(&mut self.conn.out);
        let limits = &self.limits;
        let login_deadline = Instant::now() + Duration::from_secs(limits.login_timeout_secs);
        let ping_after = Duration::from_secs(limits.ping_after_secs);
        let ping_timeout = Duration::from_secs(limits.ping_timeout_secs);
        let write_timeout = Duration::from_secs(limits.write_timeout_secs);
        let max_held = limits.flood_max_backlog as usize;
        let mut last_heard = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let shutdown = self.shutdown.signalled();
        tokio::pin!(shutdown);
        // Re-armed only when the deadline comes closer; when it fires early (the peer spoke since),
        // it is moved to the real deadline. Hearing a line therefore costs no timer update.
        let idle = sleep_until(login_deadline.min(last_heard + ping_after));
        tokio::pin!(idle);
        // Made when flood control first holds a line back, then kept (boxed: most connections
        // never need it).
        let mut flood_timer: Option<Pin<Box<Sleep>>> = None;
        // The quiet waits (reading, the idle timer, shutdown) are polled with a waker of their own
        // and, once all three are registered, only again when it woke the task: a wake-up for a
        // delivery then polls the inbox alone.
        let mut quiet: Option<(Arc<QuietWaker>, Waker)> = None;
        let mut quiet_armed = false;
        loop {
            if self.conn.has_unwritten() {
                if let Err(why) = self.write_out(write_timeout).await {
                    return why;
                }
            }
            let mut deadline = match ping_sent {
                None => last_heard + ping_after,
                Some(t) => t + ping_timeout,
            };
            if !self.client.is_logged_in() {
                deadline = deadline.min(login_deadline);
            }
            if deadline < idle.deadline() {
                idle.as_mut().reset(deadline);
                quiet_armed = false;
            }
            let flood_ready = self.next_held_at();
            match (flood_ready, flood_timer.as_mut()) {
                (Some(at), Some(timer)) if timer.deadline() != at => timer.as_mut().reset(at),
                (Some(at), None) => flood_timer = Some(Box::pin(sleep_until(at))),
                _ => {}
            }
            let may_read = self.held.len() <= max_held;
            if !may_read {
                quiet_armed = false; // reading is not registered: poll the others every time
            }
            let owes = self.client.owes();
            tokio::select! {
                biased;
                Some(event) = self.inbox.recv() => {
                    if self.inbox.has_overflowed() {
                        return Some(Disconnect::SlowReader);
                    }
                    let mut delivered = 0;
                    let mut closed = self.deliver(&event, &mut delivered);
                    for _ in 0..EVENTS_PER_FLUSH {
                        if closed {
                            break;
                        }
                        match self.inbox.try_recv() {
                            Some(event) => closed = self.deliver(&event, &mut delivered),
                            None => break,
                        }
                    }
                    if delivered > 0 {
                        metrics().messages_delivered.inc_by(delivered);
                    }
                    if closed {
                        // An admin closed the connection; the front end said why.
                        return None;
                    }
                }
                () = self.client.wait_settled(), if owes => {
                    // The oldest is settled; those committed in the same group go out in the same
                    // write.
                    while let Some(settled) = self.client.settled_now().await {
                        self.protocol.settled(settled, &mut self.conn.out);
                    }
                }
                _ = poll_fn(|cx| flood_timer.as_mut().map_or(Poll::Pending, |t| t.as_mut().poll(cx))),
                    if flood_ready.is_some() => {
                    if self.run_held().await == Flow::Close {
                        return None;
                    }
                }
                quiet_event = poll_fn(|cx| {
                    let (q, waker) = quiet.get_or_insert_with(|| QuietWaker::new(cx.waker()));
                    // Checked on every poll, not as the branch's precondition: that is fixed for
                    // the whole wait, and the wake-up that matters comes during it.
                    if quiet_armed && !q.stirred.swap(false, Ordering::AcqRel) {
                        return Poll::Pending;
                    }
                    let mut cx = Context::from_waker(waker);
                    if may_read {
                        if let Poll::Ready(frame) = pin!(self.conn.read_frame()).poll(&mut cx) {
                            return Poll::Ready(Quiet::Read(frame));
                        }
                    }
                    if idle.as_mut().poll(&mut cx).is_ready() {
                        return Poll::Ready(Quiet::Idle);
                    }
                    if shutdown.as_mut().poll(&mut cx).is_ready() {
                        return Poll::Ready(Quiet::Shutdown);
                    }
                    quiet_armed = may_read;
                    Poll::Pending
                }) => {
                    quiet_armed = false;
                    match quiet_event {
                        Quiet::Read(frame) => {
                            let frame = match frame {
                                Ok(Some(frame)) => frame,
                                Ok(None) | Err(_) => return None,
                            };
                            last_heard = Instant::now();
                            ping_sent = None;
                            self.held.push_back(frame);
                            if self.held.len() > max_held {
                                return Some(Disconnect::ExcessFlood);
                            }
                            if self.run_held().await == Flow::Close {
                                return None;
                            }
                            if !self.held.is_empty() {
                                // The line just read waits behind flood control.
                                metrics().flood_delays.inc();
                            }
                        }
                        Quiet::Idle => {
                            let now = Instant::now();
                            if now < deadline {
                                idle.as_mut().reset(deadline);
                                continue;
                            }
                            if !self.client.is_logged_in() && now >= login_deadline {
                                return Some(Disconnect::LoginTimeout);
                            }
                            if ping_sent.is_some() {
                                return Some(Disconnect::PingTimeout);
                            }
                            self.protocol.ping(&self.client.conn().to_string(), &mut self.conn.out);
                            ping_sent = Some(now);
                            idle.as_mut().reset(now + ping_timeout);
                        }
                        Quiet::Shutdown => return Some(Disconnect::Shutdown),
                    }
                }
            }
        }
    }

    /// Renders one pushed event (after the client followed it); `true` when it closes the
    /// connection.
    fn deliver(&mut self, event: &Event, delivered: &mut u64) -> bool {
        let to = self.client.conn();
        self.client.on_event(event);
        *delivered += messages_in(event, to);
        self.protocol.event(event, to, &mut self.conn.out);
        matches!(event, Event::Close(_))
    }

    /// Writes what was collected. Most writes complete at once (the socket has room) and cost no
    /// timer; one that blocks (a peer that stops reading) waits until it completes, the write
    /// timeout passes, or the connection's queue overflows meanwhile. `Err(None)`: the
    /// connection broke.
    async fn write_out(&mut self, write_timeout: Duration) -> Result<(), Option<Disconnect>> {
        let mut flush = std::pin::pin!(self.conn.flush());
        if let Poll::Ready(r) = poll_fn(|cx| Poll::Ready(flush.as_mut().poll(cx))).await {
            return r.map_err(|_| None);
        }
        let watch = self.inbox.overflow_watch();
        // Boxed: the waits are large, and rare; the idle connection's task keeps no room for them.
        Box::pin(async move {
            tokio::select! {
                biased;
                r = tokio::time::timeout(write_timeout, flush) => match r {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(_)) => Err(None),
                    Err(_) => Err(Some(Disconnect::WriteTimeout)),
                },
                _ = watch.overflowed() => Err(Some(Disconnect::SlowReader)),
            }
        })
        .await
    }

    /// The flood bucket that applies now: the guests' for a guest, none for a bot, the
    /// connection's otherwise. The client's identity decides, line by line, so a guest that logs
    /// in gets the members' rate from its next line on.
    fn flood(&mut self) -> Option<&mut TokenBucket> {
        if self.client.is_bot() {
            return None;
        }
        if self.client.is_guest() {
            return self.guest_flood.as_mut();
        }
        self.flood.as_mut()
    }

    /// When the next held-back line may run, if one is waiting on flood control.
    fn next_held_at(&mut self) -> Option<Instant> {
        if self.held.is_empty() {
            return None;
        }
        let now = Instant::now();
        Some(self.flood().map_or(now, |b| b.ready_at(now.into_std()).into()))
    }

    /// Runs held-back lines while flood control allows.
    async fn run_held(&mut self) -> Flow {
        while !self.held.is_empty() {
            if let Some(bucket) = self.flood() {
                if bucket.take(Instant::now().into_std()).is_err() {
                    if !self.warned_flood {
                        self.warned_flood = true;
                        self.protocol.flood_notice(&mut self.conn.out);
                    }
                    return Flow::Continue;
                }
            }
            let frame = self.held.pop_front().expect("front exists");
            if self.handle_frame(frame).await == Flow::Close {
                return Flow::Close;
            }
        }
        Flow::Continue
    }

    async fn handle_frame(&mut self, frame: Frame) -> Flow {
        match frame {
            Frame::TooLong => {
                self.protocol.line_too_long(self.limits.max_line_bytes, &mut self.conn.out);
                Flow::Continue
            }
            Frame::Line(line) if line.iter().all(|b| *b == b' ') => Flow::Continue,
            // Boxed: a command's state (a login, a commit) is large and brief; the idle
            // connection's task does not carry room for it.
            Frame::Line(line) => Box::pin(self.protocol.line(&mut self.client, line, &mut self.conn.out)).await,
        }
    }

    /// Writes every owed acknowledgement, in order.
    async fn write_all_settled(&mut self) {
        for settled in self.client.settle_all().await {
            self.protocol.settled(settled, &mut self.conn.out);
        }
    }
}
