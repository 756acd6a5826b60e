//! The client's loop: serve a logged-in connection (typed lines in, server lines out), and when it
//! drops, say why, reconnect with backoff, log in again, rejoin and send what was typed meanwhile.
//! What a typed line or a reply means is decided here, step by step; what the client knows lives
//! in `state`, how it talks to the daemon in `connection`, and how it says things in `view`.

use std::io;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use chatd_proto::command::Command;
use chatd_proto::names::{RoomName, Token};
use chatd_proto::parse::parse_line;
use chatd_proto::{ChatMessage, Event, LineConn, Reply, ServerLine};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::args::Config;
use crate::command::Action;
use crate::connection::{Answer, Connection, Lost};
use crate::login::{self, Credentials, LoginError};
use crate::render::Output;
use crate::state::State;
use crate::trust::{self, ConnectError, TrustChoice};
use crate::view::{explain_io, refusal, View};

/// Dropped (or sent on) when the command that came from this input line is finished, so the input
/// side knows it may read the next line (and show the right prompt).
pub type Done = Option<SyncSender<()>>;

/// What the input side hands the session.
#[derive(Debug)]
pub enum Input {
    Line(String, Done),
    /// End of input (Ctrl-D, Ctrl-C, or stdin closed and its grace over).
    Quit,
}

/// How long a connection may stay silent before the client pings it, and before it gives it up.
const PING_AFTER: Duration = Duration::from_secs(30);
const DEAD_AFTER: Duration = Duration::from_secs(75);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// How long `/quit` waits for the server's goodbye.
const QUIT_WAIT: Duration = Duration::from_secs(3);
/// The longest line the daemon accepts, as the bound for a `/raw` line's text.
const MAX_LINE: usize = 4096;

/// A command waiting for its final reply, and the input line it came from.
struct Pending {
    what: What,
    done: Done,
}

enum What {
    Join { room: RoomName, rejoin: bool, make_current: bool, lines: Vec<ChatMessage> },
    Part { room: RoomName },
    Rooms { rooms: Vec<(String, String)> },
    Names { room: RoomName, users: Vec<String> },
    Msg { room: RoomName, text: String },
    History { room: RoomName, lines: Vec<ChatMessage> },
    Raw,
    Quit,
    Ping,
}

type Conn = Connection<Pending>;

/// How serving a connection ended.
enum End {
    Quit,
    Lost(Lost),
}

/// What to do after an input line.
enum Flow {
    Continue,
    Quit(Option<String>),
}

pub struct Session {
    cfg: Config,
    trust: TrustChoice,
    creds: Credentials,
    state: State,
    view: View,
}

impl Session {
    pub fn new(
        cfg: Config,
        trust: TrustChoice,
        creds: Credentials,
        me: String,
        out: Arc<Output>,
        prompt: Arc<Mutex<String>>,
    ) -> Session {
        let view = View::new(cfg.clone(), out, prompt);
        let s = Session { cfg, trust, creds, state: State::new(me), view };
        s.update_prompt();
        s
    }

    /// Serves `conn` (already logged in), reconnecting whenever it drops, until the user quits.
    /// Returns an error only for what retrying cannot fix (a refused certificate or login).
    pub async fn run(mut self, conn: LineConn, mut input: mpsc::Receiver<Input>) -> Result<()> {
        let mut conn = Some(conn);
        let mut first = true;
        let mut backoff = FIRST_BACKOFF;
        loop {
            if let Some(c) = conn.take() {
                let started = Instant::now();
                let mut c = Connection::new(c);
                match self.serve(&mut c, &mut input, first).await {
                    End::Quit => return Ok(()),
                    End::Lost(why) => self.lost(&why, c.take_pending()),
                }
                first = false;
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = FIRST_BACKOFF;
                }
            }
            if self.wait_offline(backoff, &mut input).await {
                return Ok(());
            }
            backoff = (backoff * 2).min(self.cfg.max_backoff);
            match self.reconnect().await? {
                Ok(c) => conn = Some(c),
                Err(Some(wait)) => backoff = wait,
                Err(None) => {}
            }
        }
    }

    /// Waits `backoff` before reconnecting, handling what is typed meanwhile. True when the user
    /// quits.
    async fn wait_offline(&mut self, backoff: Duration, input: &mut mpsc::Receiver<Input>) -> bool {
        self.view.info(&format!("reconnecting in {}", human(backoff)));
        let deadline = Instant::now() + backoff;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return false,
                i = input.recv() => match i {
                    None | Some(Input::Quit) => return true,
                    Some(Input::Line(line, _done)) => {
                        if let Flow::Quit(_) = self.offline_line(line) {
                            return true;
                        }
                    }
                }
            }
        }
    }

    /// One attempt to connect and log in again. `Ok(Err(Some(wait)))`: the server asks to wait
    /// that long; an error: retrying cannot help.
    async fn reconnect(&mut self) -> Result<Result<LineConn, Option<Duration>>> {
        let verbose = self.cfg.verbose;
        let mut c = match trust::connect(&self.cfg, &self.trust).await {
            Ok(c) => c,
            Err(ConnectError::Io(e)) => {
                self.view.info(&format!("reconnect failed: {}", explain_io(&e, verbose)));
                return Ok(Err(None));
            }
            Err(ConnectError::Cert(e)) => return Err(e),
        };
        match login::authenticate(&mut c, &self.creds, false).await {
            Ok(me) => {
                self.state.me = me;
                Ok(Ok(c))
            }
            Err(LoginError::Io(e)) => {
                self.view.info(&format!("reconnect failed: {}", explain_io(&e, verbose)));
                Ok(Err(None))
            }
            Err(LoginError::Throttled(secs)) => {
                self.view.info(&format!("login throttled by the server, waiting {secs}s"));
                Ok(Err(Some(Duration::from_secs(secs.max(1)))))
            }
            Err(e) => Err(anyhow!("logging in again as {} failed: {e}", self.creds.user)),
        }
    }

    /// Serves one logged-in connection until it drops or the user quits.
    async fn serve(&mut self, conn: &mut Conn, input: &mut mpsc::Receiver<Input>, first: bool) -> End {
        if let Err(e) = self.start(conn, first).await {
            return End::Lost(Lost::Failed(e));
        }
        let mut last_rx = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            let step = tokio::select! {
                line = conn.next() => match line {
                    Ok(line) => {
                        last_rx = Instant::now();
                        self.on_server_line(conn, line).await.map(|()| Flow::Continue)
                    }
                    Err(why) => return End::Lost(why),
                },
                i = input.recv() => match i {
                    None | Some(Input::Quit) => Ok(Flow::Quit(None)),
                    Some(Input::Line(line, done)) => self.on_input(conn, line, done).await,
                },
                _ = tick.tick() => {
                    if last_rx.elapsed() > DEAD_AFTER {
                        return End::Lost(Lost::Silent);
                    }
                    self.keepalive(conn, last_rx).await.map(|()| Flow::Continue)
                }
            };
            match step {
                Ok(Flow::Continue) => {}
                Ok(Flow::Quit(reason)) => {
                    self.quit(conn, reason).await;
                    return End::Quit;
                }
                Err(e) => return End::Lost(Lost::Failed(e)),
            }
        }
    }

    /// Pings a connection that has been silent for a while (once at a time).
    async fn keepalive(&mut self, conn: &mut Conn, last_rx: Instant) -> io::Result<()> {
        if last_rx.elapsed() <= PING_AFTER || conn.pending().any(|p| matches!(p.what, What::Ping)) {
            return Ok(());
        }
        conn.request(Command::Ping(Token::parse("keepalive")), Pending { what: What::Ping, done: None }).await
    }

    /// After logging in: join the rooms (again), then send what was typed while disconnected.
    async fn start(&mut self, conn: &mut Conn, first: bool) -> io::Result<()> {
        if first {
            for (i, room) in self.cfg.join.clone().into_iter().enumerate() {
                if i == 0 {
                    self.state.expect_current(&room);
                    self.update_prompt();
                }
                self.join(conn, room, false, i == 0, None).await?;
            }
        } else {
            self.view.info(&format!("reconnected as {}", self.state.me));
            for room in self.state.rooms().to_vec() {
                self.join(conn, room, true, false, None).await?;
            }
        }
        while let Some(line) = self.state.next_queued() {
            self.on_input(conn, line, None).await?;
        }
        Ok(())
    }

    async fn join(
        &mut self,
        conn: &mut Conn,
        room: RoomName,
        rejoin: bool,
        make_current: bool,
        done: Done,
    ) -> io::Result<()> {
        let what = What::Join { room: room.clone(), rejoin, make_current, lines: Vec::new() };
        conn.request(Command::Join(room), Pending { what, done }).await
    }

    /// The connection is gone: say why, and forget the commands in flight (their input lines are
    /// released; a message that was never acknowledged may or may not have been stored).
    fn lost(&mut self, why: &Lost, pending: Vec<Pending>) {
        self.view.disconnected(why);
        for p in pending {
            match p.what {
                What::Msg { room, text } => self
                    .view
                    .error(&format!("not confirmed (it shows up after reconnecting if it was stored): #{room} {text}")),
                What::Join { room, rejoin: false, .. } => self.state.queue(format!("/join {room}"), false),
                _ => {}
            }
        }
    }

    /// A line typed while disconnected: client-side commands run now, the rest waits.
    fn offline_line(&mut self, line: String) -> Flow {
        match Action::parse(&line) {
            Action::Quit(reason) => return Flow::Quit(reason),
            Action::Nothing => {}
            Action::Help => self.view.help(self.state.rooms()),
            Action::Usage(u) => self.view.error(u),
            Action::BadRoom(r) => self.bad_room(&r),
            Action::Switch(room) => self.switch(&room),
            _ => {
                self.view.info("not connected: it will be sent after reconnecting");
                self.state.queue(line, false);
            }
        }
        Flow::Continue
    }

    async fn on_input(&mut self, conn: &mut Conn, line: String, done: Done) -> io::Result<Flow> {
        let res = self.act(conn, Action::parse(&line), done).await;
        if res.is_err() {
            // Not sent: send it after reconnecting.
            self.state.queue(line, true);
        }
        res
    }

    /// Does what a typed line asks: locally, or by sending a command (`done` is released with
    /// its final reply).
    async fn act(&mut self, conn: &mut Conn, action: Action, done: Done) -> io::Result<Flow> {
        match action {
            Action::Nothing => {}
            Action::Help => self.view.help(self.state.rooms()),
            Action::Usage(u) => self.view.error(u),
            Action::BadRoom(r) => self.bad_room(&r),
            Action::Quit(reason) => return Ok(Flow::Quit(reason)),
            Action::Switch(room) => self.switch(&room),
            Action::Join(room) if self.state.is_joined(&room) => self.switch(&room),
            Action::Join(room) => self.join(conn, room, false, true, done).await?,
            Action::Part(room) => match room.or_else(|| self.state.current().cloned()) {
                Some(room) => self.request(conn, Command::Part(room.clone()), What::Part { room }, done).await?,
                None => self.view.error("not in a room"),
            },
            Action::Rooms => self.request(conn, Command::Rooms, What::Rooms { rooms: Vec::new() }, done).await?,
            Action::Who(room) => match room.or_else(|| self.state.current().cloned()) {
                Some(room) => {
                    let what = What::Names { room: room.clone(), users: Vec::new() };
                    self.request(conn, Command::Names(room), what, done).await?
                }
                None => self.view.error("usage: /who <room> (no current room)"),
            },
            Action::History(page) => self.history(conn, page, done).await?,
            Action::More => self.history(conn, None, done).await?,
            Action::Raw(line) => self.raw(conn, &line, done).await?,
            Action::Say(text) => match self.state.current().cloned() {
                Some(room) => {
                    let what = What::Msg { room: room.clone(), text: text.clone() };
                    self.request(conn, Command::Msg { room, text }, what, done).await?
                }
                None => self.view.error("no current room: /join <room> first"),
            },
        }
        Ok(Flow::Continue)
    }

    async fn request(&mut self, conn: &mut Conn, command: Command, what: What, done: Done) -> io::Result<()> {
        conn.request(command, Pending { what, done }).await
    }

    /// `/history [n]` or `/more`: the next page of the current room (`page` sets its size).
    async fn history(&mut self, conn: &mut Conn, page: Option<usize>, done: Done) -> io::Result<()> {
        let Some((room, command)) = self.state.history(page) else {
            self.view.error("no current room: /join <room> first");
            return Ok(());
        };
        self.request(conn, command, What::History { room, lines: Vec::new() }, done).await
    }

    /// `/raw <line>`: read by the daemon's own parser first, so what is sent is a typed command
    /// (under the client's label); a line the daemon would refuse is refused here, with its reason.
    async fn raw(&mut self, conn: &mut Conn, line: &str, done: Done) -> io::Result<()> {
        match parse_line(line.as_bytes(), MAX_LINE) {
            Ok(request) => self.request(conn, request.command, What::Raw, done).await,
            Err(rejected) => {
                self.view.error(&format!("not sent: {} ({})", rejected.error, rejected.error.code()));
                Ok(())
            }
        }
    }

    async fn on_server_line(&mut self, conn: &mut Conn, line: ServerLine) -> io::Result<()> {
        let message = line.as_message();
        match line {
            ServerLine::Reply(r) => self.on_reply(conn, r, message),
            ServerLine::Event(e) => self.on_event(conn, e, message).await?,
        }
        Ok(())
    }

    async fn on_event(&mut self, conn: &mut Conn, e: Event, message: Option<ChatMessage>) -> io::Result<()> {
        match e.name.as_str() {
            "MSG" | "CMD" => match message {
                Some(m) => self.show(&m, false),
                None => self.view.event(&e),
            },
            "JOIN" | "PART" if e.fields.len() == 2 => {
                if e.fields[1] != self.state.me {
                    self.view.presence(&e.fields[0], &e.fields[1], if e.name == "JOIN" { "joined" } else { "left" });
                }
            }
            "PING" => {
                // Any line answers a PING; a token that is not one (never sent by chatd) gets a PING.
                let pong = match e.fields.first().and_then(|t| Token::parse(t)) {
                    Some(token) => Command::Pong(token),
                    None => Command::Ping(None),
                };
                conn.notify(pong).await?;
            }
            "NOTICE" => match e.fields.first() {
                // A server-wide notice from an admin (ANNOUNCE).
                Some(from) => self.view.info(&format!("notice from {from}: {}", e.text.as_deref().unwrap_or(""))),
                None => self.view.info(&format!("server: {}", e.text.as_deref().unwrap_or(""))),
            },
            // Remembered by the connection: it is why the connection ends.
            "BYE" | "HELLO" => {}
            _ => self.view.event(&e),
        }
        Ok(())
    }

    fn on_reply(&mut self, conn: &mut Conn, r: Reply, message: Option<ChatMessage>) {
        match conn.answer(&r) {
            Answer::Unmatched => self.view.reply(&r),
            Answer::Partial(id) => {
                let collected = conn.pending_mut(id).is_some_and(|p| collect(&mut p.what, &r, message));
                if !collected {
                    self.view.reply(&r);
                }
            }
            Answer::Final(p) => {
                self.finish(p.what, &r);
                self.update_prompt();
                // Only now may the input side go on (and read the prompt).
                drop(p.done);
            }
        }
    }

    /// A command got its final reply.
    fn finish(&mut self, what: What, r: &Reply) {
        match what {
            What::Join { room, rejoin: true, lines, .. } => self.finish_rejoin(room, lines, r),
            What::Join { room, make_current, lines, .. } => self.finish_join(room, make_current, lines, r),
            What::Part { room } => self.finish_part(room, r),
            What::Rooms { rooms } if r.is_ok() => self.view.rooms(&rooms),
            What::Rooms { .. } => self.view.error(&format!("rooms: {}", refusal(r))),
            What::Names { room, users } if r.is_ok() => self.view.who(&room, &users),
            What::Names { room, .. } => self.view.who_refused(&room, r),
            What::Msg { room, text } => self.finish_msg(room, text, r),
            What::History { room, lines } => self.finish_history(room, lines, r),
            What::Raw => self.view.reply(r),
            What::Quit | What::Ping => {}
        }
    }

    fn finish_join(&mut self, room: RoomName, make_current: bool, lines: Vec<ChatMessage>, r: &Reply) {
        if !r.is_ok() {
            self.state.join_refused(&room);
            self.view.error(&format!("could not join #{room}: {}", refusal(r)));
            return;
        }
        self.state.joined(&room, make_current);
        // `200 JOIN <room> <members>`
        self.view.joined(&room, r.fields.get(1).and_then(|n| n.parse().ok()));
        for m in &lines {
            self.show(m, true);
        }
    }

    /// Rejoined after reconnecting: show only the messages of the replay not shown before.
    fn finish_rejoin(&mut self, room: RoomName, lines: Vec<ChatMessage>, r: &Reply) {
        if !r.is_ok() {
            self.state.rejoin_refused(&room);
            self.view.error(&format!("could not rejoin #{room}: {}", refusal(r)));
            return;
        }
        self.state.joined(&room, false);
        let had_seen = self.state.has_seen(&room);
        let missed = self.state.missed(&room, &lines);
        self.view.rejoined(&room, missed.len());
        if had_seen && missed.len() == lines.len() && missed.len() >= 50 {
            self.view.info("(older missed messages may be there too: /history)");
        }
        for m in &missed {
            self.show(m, false);
        }
    }

    fn finish_part(&mut self, room: RoomName, r: &Reply) {
        if !r.is_ok() {
            self.view.error(&format!("could not leave #{room}: {}", refusal(r)));
            return;
        }
        let now_current = self.state.left(&room);
        self.view.info(&format!("left #{room}"));
        if let Some(c) = now_current {
            self.view.now_talking_in(&c);
        }
    }

    /// `200 MSG <room> <id> <time>`, `200 MSG <room> - <time> :relayed ...` (a bot command line),
    /// `419 MSG <room> <word>` (no bot serves it; the room saw it anyway) or a refusal.
    fn finish_msg(&mut self, room: RoomName, text: String, r: &Reply) {
        let time = r.fields.get(2).cloned().unwrap_or_else(now_rfc3339);
        match (r.code, r.fields.get(1).map(String::as_str)) {
            (200, Some("-")) => self.show_own(&room, None, time, text),
            (200, Some(id)) => match id.parse::<u64>() {
                Ok(id) => self.show_own(&room, Some(id), time, text),
                Err(_) => self.view.reply(r),
            },
            (419, word) => {
                let word = word.unwrap_or_default().to_string();
                self.show_own(&room, None, now_rfc3339(), text);
                self.view.error(&format!("no bot answers /{word} (the room saw the line)"));
            }
            _ => self.view.error(&format!("not sent to #{room}: {}", refusal(r))),
        }
    }

    fn finish_history(&mut self, room: RoomName, lines: Vec<ChatMessage>, r: &Reply) {
        if !r.is_ok() {
            self.view.error(&format!("history #{room}: {}", refusal(r)));
            return;
        }
        self.view.history_page(&room, lines.len());
        for m in &lines {
            self.show(m, true);
        }
    }

    /// Prints a chat message unless it was shown already (`always` prints it anyway, for an
    /// explicit /join or /history), and remembers its id.
    fn show(&mut self, m: &ChatMessage, always: bool) {
        if self.state.remember(m) || always {
            self.view.message(m);
        }
    }

    /// Our own message, once the server acknowledged it (`id` is `None` for a bot command line).
    fn show_own(&mut self, room: &RoomName, id: Option<u64>, time: String, text: String) {
        let sender = self.state.me.clone();
        let m = ChatMessage { room: room.to_string(), id, time, sender, text, is_command: id.is_none() };
        self.show(&m, false);
    }

    /// Says goodbye: `QUIT`, then waits briefly for the server's `200 QUIT` or the close.
    async fn quit(&mut self, conn: &mut Conn, reason: Option<String>) {
        if conn.request(Command::Quit(reason), Pending { what: What::Quit, done: None }).await.is_err() {
            return;
        }
        let deadline = Instant::now() + QUIT_WAIT;
        while let Some(line) = conn.next_before(deadline).await {
            if matches!(&line, ServerLine::Reply(r) if r.verb == "QUIT" && r.is_final()) {
                break;
            }
            let _ = self.on_server_line(conn, line).await;
        }
        conn.close().await;
    }

    fn switch(&mut self, room: &RoomName) {
        if self.state.switch(room) {
            self.update_prompt();
            self.view.now_talking_in(room);
        } else {
            self.view.error(&format!("not in #{room} (/join {room})"));
        }
    }

    fn bad_room(&self, typed: &str) {
        self.view.error(&format!("{typed:?} is not a room name (1-32 of a-z, 0-9, _ or -)"));
    }

    fn update_prompt(&self) {
        self.view.set_prompt(self.state.current());
    }
}

/// Adds a data line (1xx) to what its command collects; false when it is not one it expects.
fn collect(what: &mut What, r: &Reply, message: Option<ChatMessage>) -> bool {
    match (what, r.code, message) {
        (What::Join { lines, .. } | What::History { lines, .. }, 130, Some(m)) => lines.push(m),
        (What::Rooms { rooms }, 110, _) if r.fields.len() >= 2 => {
            rooms.push((r.fields[0].clone(), r.fields[1].clone()))
        }
        (What::Names { users, .. }, 120, _) if r.fields.len() >= 2 => users.push(r.fields[1].clone()),
        _ => return false,
    }
    true
}

/// `250ms`, `2s`, `1.5s`.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
