//! One connection's task: reads frames, parses them into commands, applies each command (the one
//! `apply`), writes replies and the events its rooms push, and enforces the per-connection limits
//! (flood control, idle PING, login timeout, slow-reader disconnect).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot::error::TryRecvError;
use tokio::time::{sleep_until, Instant};

use crate::command::{Command, Request, Verb, ALL_VERBS};
use crate::connection::{Connection, Frame};
use crate::error::ChatError;
use crate::model::format_time;
use crate::names::{CommandWord, Label, RoomName, UserName};
use crate::outbox::{ConnId, Inbox, Outbox};
use crate::parse::{parse_line, HISTORY_PAGE};
use crate::reply::{self, Replies};
use crate::room::{Accepted, HistoryPage, RoomHandle};
use crate::server::Shared;
use crate::shutdown::Shutdown;
use crate::store::StoreError;
use crate::limits::TokenBucket;

/// Most events written in one batch before the socket is flushed.
const EVENTS_PER_FLUSH: usize = 512;

/// Most of one connection's messages waiting for their commit at once. Posts are pipelined: the
/// next line is read while earlier messages commit, so a fast sender fills the group commit.
const MAX_POSTS_IN_FLIGHT: usize = 64;

/// A message accepted by its room, whose `200 MSG` waits for the commit.
struct PendingAck {
    label: Option<Label>,
    handle: RoomHandle,
    accepted: Accepted,
}

pub struct Session {
    id: ConnId,
    peer: IpAddr,
    conn: Connection,
    inbox: Inbox,
    outbox: Outbox,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    /// Lines read but held back by flood control.
    pending: VecDeque<Frame>,
    flood: Option<TokenBucket>,
    warned_flood: bool,
    user: Option<UserName>,
    is_bot: bool,
    serving: bool,
    /// The rooms this connection joined (at most `rooms_per_connection`; a Vec is smaller than a
    /// map for the few rooms a connection is in).
    joined: Vec<RoomHandle>,
    /// Acknowledgements owed, oldest first. Every other reply waits until these are written, so
    /// replies stay in the order of the commands.
    pending_acks: VecDeque<PendingAck>,
}

/// Whether the connection goes on after a command.
#[derive(PartialEq)]
enum Flow {
    Continue,
    Close,
}

impl Session {
    pub fn new(
        id: ConnId,
        peer: IpAddr,
        conn: Connection,
        inbox: Inbox,
        outbox: Outbox,
        shared: Arc<Shared>,
        shutdown: Shutdown,
    ) -> Session {
        let limits = &shared.config.limits;
        let flood = (!shared.gate.exempt(peer)).then(|| TokenBucket::new(limits.flood_burst, limits.flood_rate_per_sec));
        Session {
            id,
            peer,
            conn,
            inbox,
            outbox,
            shared,
            shutdown,
            pending: VecDeque::new(),
            flood,
            warned_flood: false,
            user: None,
            is_bot: false,
            serving: false,
            joined: Vec::new(),
            pending_acks: VecDeque::new(),
        }
    }

    pub async fn run(mut self) {
        let reason = self.serve().await;
        if reason.is_some() {
            // Messages already accepted are committed; their senders hear so before the BYE.
            let _ = tokio::time::timeout(Duration::from_secs(5), self.finish_acks()).await;
        }
        if let Some(reason) = reason {
            reply::server_event(&mut self.conn.out, "BYE", &[], Some(reason));
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.flush()).await;
        self.leave_everything().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.conn.shutdown()).await;
    }

    /// The connection's main loop. Returns the reason to send with `* BYE`, if any.
    ///
    /// It runs once per wake-up, and most wake-ups are one delivery: the waits that rarely end
    /// (idle timer, shutdown, overflow) are made once and kept across turns, and polled after the
    /// inbox, so a delivery costs no timer or waiter registration.
    async fn serve(&mut self) -> Option<&'static str> {
        let limits = self.shared.config.limits.clone();
        reply::server_event(
            &mut self.conn.out,
            "HELLO",
            &["chatd", env!("CARGO_PKG_VERSION")],
            Some("Welcome to chatd. Type HELP for the commands."),
        );
        let login_deadline = Instant::now() + Duration::from_secs(limits.login_timeout_secs);
        let ping_after = Duration::from_secs(limits.ping_after_secs);
        let ping_timeout = Duration::from_secs(limits.ping_timeout_secs);
        let write_timeout = Duration::from_secs(limits.write_timeout_secs);
        let mut last_heard = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let watch = self.inbox.overflow_watch();
        let overflowed = watch.overflowed();
        tokio::pin!(overflowed);
        let shutdown = self.shutdown.signalled();
        tokio::pin!(shutdown);
        // Re-armed only when the deadline comes closer; when it fires early (the peer spoke since),
        // it is moved to the real deadline. Hearing a line therefore costs no timer update.
        let idle = sleep_until(login_deadline.min(last_heard + ping_after));
        tokio::pin!(idle);
        loop {
            if self.conn.has_pending() {
                // A peer that stops reading blocks this write; its queue overflowing, or the write
                // timeout, ends the wait.
                tokio::select! {
                    biased;
                    r = tokio::time::timeout(write_timeout, self.conn.flush()) => match r {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => return None,
                        Err(_) => return Some("write timeout (not reading)"),
                    },
                    _ = &mut overflowed => return Some("send queue full (slow reader)"),
                }
            }
            let mut deadline = match ping_sent {
                None => last_heard + ping_after,
                Some(t) => t + ping_timeout,
            };
            if self.user.is_none() {
                deadline = deadline.min(login_deadline);
            }
            if deadline < idle.deadline() {
                idle.as_mut().reset(deadline);
            }
            let flood_ready = self.next_pending_at();
            let may_read = self.pending.len() <= limits.flood_max_backlog as usize;
            tokio::select! {
                biased;
                Some(event) = self.inbox.recv() => {
                    if self.inbox.has_overflowed() {
                        return Some("send queue full (slow reader)");
                    }
                    reply::event(&mut self.conn.out, &event, self.id);
                    for _ in 0..EVENTS_PER_FLUSH {
                        match self.inbox.try_recv() {
                            Some(event) => reply::event(&mut self.conn.out, &event, self.id),
                            None => break,
                        }
                    }
                }
                committed = async {
                    match self.pending_acks.front_mut() {
                        Some(ack) => (&mut ack.accepted.committed).await,
                        None => std::future::pending().await,
                    }
                }, if !self.pending_acks.is_empty() => {
                    let ack = self.pending_acks.pop_front().expect("front exists");
                    self.acknowledge(ack, committed.ok()).await;
                    // Those committed in the same group go out in the same write.
                    while let Some(ack) = self.pending_acks.front_mut() {
                        let committed = match ack.accepted.committed.try_recv() {
                            Err(TryRecvError::Empty) => break,
                            Ok(result) => Some(result),
                            Err(TryRecvError::Closed) => None,
                        };
                        let ack = self.pending_acks.pop_front().expect("front exists");
                        self.acknowledge(ack, committed).await;
                    }
                }
                _ = sleep_until(flood_ready.unwrap_or(deadline)), if flood_ready.is_some() => {
                    if self.process_pending().await == Flow::Close {
                        return None;
                    }
                }
                frame = self.conn.read_frame(), if may_read => {
                    let frame = match frame {
                        Ok(Some(frame)) => frame,
                        Ok(None) | Err(_) => return None,
                    };
                    last_heard = Instant::now();
                    ping_sent = None;
                    self.pending.push_back(frame);
                    if self.pending.len() > limits.flood_max_backlog as usize {
                        return Some("excess flood");
                    }
                    if self.process_pending().await == Flow::Close {
                        return None;
                    }
                }
                _ = &mut idle => {
                    let now = Instant::now();
                    if now < deadline {
                        idle.as_mut().reset(deadline);
                        continue;
                    }
                    if self.user.is_none() && now >= login_deadline {
                        return Some("login timeout");
                    }
                    if ping_sent.is_some() {
                        return Some("ping timeout");
                    }
                    let token = format!("{}", self.id);
                    reply::server_event(&mut self.conn.out, "PING", &[&token], None);
                    ping_sent = Some(now);
                    idle.as_mut().reset(now + ping_timeout);
                }
                _ = &mut overflowed => return Some("send queue full (slow reader)"),
                _ = &mut shutdown => return Some("server shutting down"),
            }
        }
    }

    /// When the next held-back line may run, if one is waiting on flood control.
    fn next_pending_at(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        let now = Instant::now();
        Some(self.flood.as_ref().map_or(now, |b| b.ready_at(now.into_std()).into()))
    }

    /// Runs held-back lines while flood control allows.
    async fn process_pending(&mut self) -> Flow {
        while !self.pending.is_empty() {
            if let Some(bucket) = self.flood.as_mut() {
                if bucket.take(Instant::now().into_std()).is_err() {
                    if !self.warned_flood {
                        self.warned_flood = true;
                        reply::server_event(&mut self.conn.out, "NOTICE", &[], Some("slow down: you are sending too fast, your lines are being delayed"));
                    }
                    return Flow::Continue;
                }
            }
            let frame = self.pending.pop_front().expect("front exists");
            if self.handle_frame(frame).await == Flow::Close {
                return Flow::Close;
            }
        }
        Flow::Continue
    }

    async fn handle_frame(&mut self, frame: Frame) -> Flow {
        let max_line = self.shared.config.limits.max_line_bytes;
        let max_message = self.shared.config.limits.max_message_bytes;
        let line = match frame {
            Frame::TooLong => {
                let mut out = String::new();
                Replies { out: &mut out, label: None, verb: "*" }.error(&ChatError::LineTooLong(max_line));
                self.conn.out.extend_from_slice(out.as_bytes());
                return Flow::Continue;
            }
            Frame::Line(line) => line,
        };
        if line.iter().all(|b| *b == b' ') {
            return Flow::Continue;
        }
        let mut out = String::new();
        let flow = match parse_line(&line, max_message) {
            Err(rejected) => {
                Replies { out: &mut out, label: rejected.label.as_ref(), verb: &rejected.verb }.error(&rejected.error);
                Flow::Continue
            }
            // Boxed: a command's state (a login, a commit) is large and brief; the idle
            // connection's task does not carry room for it.
            Ok(request) => Box::pin(self.apply(request, &mut out)).await,
        };
        self.conn.out.extend_from_slice(out.as_bytes());
        flow
    }

    /// Applies one command and writes its replies.
    async fn apply(&mut self, request: Request, out: &mut String) -> Flow {
        let Request { label, command } = request;
        let verb = command.verb();
        let mut r = Replies { out, label: label.as_ref(), verb: verb.as_str() };
        let pipelined = matches!(&command, Command::Msg { text, .. } if CommandWord::of_bot_line(text).is_none());
        if !pipelined {
            self.finish_acks().await;
        }
        let started = std::time::Instant::now();
        let result = if self.user.is_none() && !verb.allowed_anonymous() {
            Err(ChatError::NotLoggedIn)
        } else {
            self.execute(command, &mut r).await
        };
        // Server-side time of each command, for benchmarks (`--log chatd::timing=trace`).
        tracing::trace!(target: "chatd::timing", verb = verb.as_str(), micros = started.elapsed().as_micros() as u64);
        match result {
            Ok(flow) => flow,
            Err(e) => {
                if pipelined {
                    // The error must not overtake the acknowledgements owed before it.
                    self.finish_acks().await;
                }
                r.error(&e);
                Flow::Continue
            }
        }
    }

    async fn execute(&mut self, command: Command, r: &mut Replies<'_>) -> Result<Flow, ChatError> {
        let limits = &self.shared.config.limits;
        match command {
            Command::Help(topic) => {
                let verbs: Vec<Verb> = topic.map_or(ALL_VERBS.to_vec(), |v| vec![v]);
                for v in verbs {
                    r.line(100, &[], Some(&format!("{:<44} {}", v.usage(), v.summary())));
                }
                r.ok(&[], Some("end of help; the full protocol is in PROTOCOL.md"));
            }
            Command::Register { user, password } => {
                if self.user.is_some() {
                    return Err(ChatError::AlreadyLoggedIn);
                }
                let who = self.shared.accounts.register(&user, &password, self.peer).await?;
                r.ok(&[who.user.as_str()], Some(&format!("account created, logged in as {}", who.user)));
                self.user = Some(who.user);
            }
            Command::Login { user, password } => {
                if self.user.is_some() {
                    return Err(ChatError::AlreadyLoggedIn);
                }
                let who = self.shared.accounts.login(&user, &password, self.peer).await?;
                tracing::debug!(conn = self.id, user = %who.user, "logged in");
                r.ok(&[who.user.as_str()], Some(&format!("logged in as {}", who.user)));
                self.user = Some(who.user);
                self.is_bot = who.is_bot;
                if who.is_bot {
                    self.flood = None;
                }
            }
            Command::Logout => {
                self.leave_everything().await;
                self.user = None;
                self.is_bot = false;
                r.ok(&[], Some("logged out"));
            }
            Command::Quit(_) => {
                r.ok(&[], Some("bye"));
                return Ok(Flow::Close);
            }
            Command::Rooms => {
                let rooms = self.shared.rooms.list().await;
                for (name, users) in &rooms {
                    r.line(110, &[name.as_str(), &users.to_string()], None);
                }
                r.ok(&[&rooms.len().to_string()], Some("rooms listed"));
            }
            Command::Join(room) => {
                if self.joined(&room).is_none() && self.joined.len() >= limits.rooms_per_connection {
                    return Err(ChatError::LimitReached(room, "you are in too many rooms"));
                }
                let handle = self.shared.rooms.get(&room, self.shared.config.rooms.auto_create).await?;
                let joined = handle.join(self.id, self.user()?, self.outbox.clone()).await?;
                for posted in &joined.history {
                    r.message(&posted.msg);
                }
                r.ok(&[room.as_str(), &joined.users.to_string()], Some(&format!("joined {room}")));
                if self.joined(&room).is_none() {
                    self.joined.push(handle);
                }
            }
            Command::Part(room) => {
                let i = self.joined.iter().position(|h| h.name == room).ok_or_else(|| ChatError::NotMember(room.clone()))?;
                let handle = self.joined.swap_remove(i);
                handle.part(self.id).await;
                r.ok(&[room.as_str()], Some(&format!("left {room}")));
            }
            Command::Names(room) => {
                let handle = match self.joined(&room) {
                    Some(h) => h.clone(),
                    None => self.shared.rooms.get(&room, false).await?,
                };
                let names = handle.names().await?;
                for name in &names {
                    r.line(120, &[room.as_str(), name.as_str()], None);
                }
                r.ok(&[room.as_str(), &names.len().to_string()], Some("users listed"));
            }
            Command::Msg { room, text } => return self.post(room, text, r).await.map(|()| Flow::Continue),
            Command::History { room, before, limit } => {
                let handle = self.joined(&room).ok_or_else(|| ChatError::NotMember(room.clone()))?;
                let limit = limit.unwrap_or(HISTORY_PAGE);
                let messages = match handle.history(self.id, before, limit).await? {
                    HistoryPage::Cached(page) => page.iter().map(|p| p.msg.clone()).collect(),
                    HistoryPage::FromStore { room_id } => self
                        .shared
                        .store
                        .history(room_id, room.clone(), before, limit)
                        .await
                        .map_err(|e| ChatError::Storage(e.to_string()))?,
                };
                for m in &messages {
                    r.message(m);
                }
                let n = messages.len().to_string();
                r.ok(&[room.as_str(), &n], Some(&format!("{n} messages")));
            }
            Command::Ping(token) => match token {
                Some(t) => r.ok(&[t.as_str()], None),
                None => r.ok(&[], None),
            },
            Command::Pong(_) => {}
            Command::Serve(word) => {
                if !self.is_bot {
                    return Err(ChatError::NotABot);
                }
                self.shared.bots.serve(word.clone(), self.outbox.clone());
                self.serving = true;
                r.ok(&[word.as_str()], Some(&format!("serving /{word}")));
            }
        }
        Ok(Flow::Continue)
    }

    fn joined(&self, room: &RoomName) -> Option<&RoomHandle> {
        self.joined.iter().find(|h| h.name == *room)
    }

    fn user(&self) -> Result<UserName, ChatError> {
        self.user.clone().ok_or(ChatError::NotLoggedIn)
    }

    /// MSG: a bot command line is relayed; anything else is stored, and acknowledged once durable.
    async fn post(&mut self, room: RoomName, text: String, r: &mut Replies<'_>) -> Result<(), ChatError> {
        let user = self.user()?;
        let handle = match self.joined(&room) {
            Some(h) => h.clone(),
            None if self.serving => self.shared.rooms.get(&room, false).await?,
            None => return Err(ChatError::NotMember(room)),
        };
        if let Some(word) = CommandWord::of_bot_line(&text) {
            let (time, bots) = handle.bot_command(self.id, user, text, word.clone(), self.serving).await?;
            if bots == 0 {
                return Err(ChatError::NoBot(room, word));
            }
            r.ok(&[room.as_str(), "-", &format_time(time)], Some(&format!("relayed to {bots} bot(s)")));
            return Ok(());
        }
        let accepted = handle.post(self.id, user, text, self.serving).await?;
        if self.pending_acks.len() >= MAX_POSTS_IN_FLIGHT {
            let mut oldest = self.pending_acks.pop_front().expect("not empty");
            let committed = (&mut oldest.accepted.committed).await.ok();
            self.acknowledge(oldest, committed).await;
        }
        self.pending_acks.push_back(PendingAck { label: r.label.cloned(), handle, accepted });
        Ok(())
    }

    /// Waits for every owed acknowledgement and writes them, in order.
    async fn finish_acks(&mut self) {
        while let Some(mut ack) = self.pending_acks.pop_front() {
            let committed = (&mut ack.accepted.committed).await.ok();
            self.acknowledge(ack, committed).await;
        }
    }

    /// Writes `200 MSG` for a committed message, or `500` (and takes the message out of the room's
    /// cache) for one the store could not keep. `None`: the store went away before answering.
    async fn acknowledge(&mut self, ack: PendingAck, committed: Option<Result<(), StoreError>>) {
        let m = &ack.accepted.posted.msg;
        let mut out = String::new();
        let mut r = Replies { out: &mut out, label: ack.label.as_ref(), verb: "MSG" };
        match committed {
            Some(Ok(())) => r.ok(&[m.room.as_str(), &m.id.to_string(), &format_time(m.time)], None),
            failed => {
                ack.handle.retract(m.id).await;
                let why = match failed {
                    Some(Err(e)) => e.to_string(),
                    _ => "storage stopped".to_string(),
                };
                r.error(&ChatError::Storage(why));
            }
        }
        self.conn.out.extend_from_slice(out.as_bytes());
    }

    /// Leaves every room and stops serving bot commands (LOGOUT, QUIT, disconnect).
    async fn leave_everything(&mut self) {
        for handle in std::mem::take(&mut self.joined) {
            handle.part(self.id).await;
        }
        if self.serving {
            self.shared.bots.forget(self.id);
            self.serving = false;
        }
    }
}
