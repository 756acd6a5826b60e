//! The protocol state of one logged-in user across connections: joined rooms, the current room,
//! the ids already shown (so a replay after a reconnect shows only what was missed), history
//! paging, and the commands in flight (each sent with its own label, so every reply is matched to
//! the command it answers). Also the connection loop: serve a connection, and when it drops,
//! reconnect with backoff, log in again and rejoin.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use chatd_proto::client::LineWriter;
use chatd_proto::{ChatMessage, Event, LineConn, Reply, ServerLine};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::args::Config;
use crate::command::{Command, DEFAULT_HISTORY, HELP};
use crate::login::{self, Credentials, LoginError};
use crate::render::{Mark, Output, Style};
use crate::trust::{self, ConnectError, TrustChoice};

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

/// A command waiting for its final reply.
struct Pending {
    what: What,
    _done: Done,
}

enum What {
    Join { room: String, rejoin: bool, make_current: bool, lines: Vec<ChatMessage> },
    Part { room: String },
    Rooms { rooms: Vec<(String, String)> },
    Names { room: String, users: Vec<String> },
    Msg { room: String, text: String },
    History { room: String, lines: Vec<ChatMessage> },
    Raw,
    Quit,
    Ping,
}

/// How serving a connection ended.
enum End {
    Quit,
    Lost(String),
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
    /// The user name as the server shows it.
    me: String,
    style: Style,
    out: Arc<Output>,
    prompt: Arc<Mutex<String>>,
    /// Joined rooms, in the order they were joined.
    rooms: Vec<String>,
    current: Option<String>,
    /// Ids of the messages already shown, per room.
    seen: HashMap<String, HashSet<u64>>,
    /// The oldest id shown per room: where `/history` pages on from.
    oldest: HashMap<String, u64>,
    /// Page size of the last `/history`, for `/more`.
    page: usize,
    pending: HashMap<String, Pending>,
    next_label: u64,
    /// Lines typed while disconnected, sent once connected again.
    queued: VecDeque<String>,
    /// The reason of the last `* BYE`.
    bye: Option<String>,
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
        let style = Style { color: cfg.color };
        let s = Session {
            cfg,
            trust,
            creds,
            me,
            style,
            out,
            prompt,
            rooms: Vec::new(),
            current: None,
            seen: HashMap::new(),
            oldest: HashMap::new(),
            page: DEFAULT_HISTORY,
            pending: HashMap::new(),
            next_label: 0,
            queued: VecDeque::new(),
            bye: None,
        };
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
                match self.serve(c, &mut input, first).await {
                    End::Quit => return Ok(()),
                    End::Lost(reason) => self.lost(&reason),
                }
                first = false;
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = FIRST_BACKOFF;
                }
            }
            self.info(&format!("reconnecting in {}", human(backoff)));
            let deadline = Instant::now() + backoff;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => break,
                    i = input.recv() => match i {
                        None | Some(Input::Quit) => return Ok(()),
                        Some(Input::Line(line, _done)) => {
                            if let Flow::Quit(_) = self.offline_line(line) {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            backoff = (backoff * 2).min(self.cfg.max_backoff);
            match trust::connect(&self.cfg, &self.trust).await {
                Ok(mut c) => match login::authenticate(&mut c, &self.creds, false).await {
                    Ok(me) => {
                        self.me = me;
                        conn = Some(c);
                    }
                    Err(LoginError::Io(e)) => self.info(&format!("reconnect failed: {e}")),
                    Err(LoginError::Throttled(secs)) => {
                        self.info(&format!("login throttled by the server, waiting {secs}s"));
                        backoff = Duration::from_secs(secs.max(1));
                    }
                    Err(e) => return Err(anyhow!("logging in again as {} failed: {e}", self.creds.user)),
                },
                Err(ConnectError::Io(e)) => self.info(&format!("reconnect failed: {e}")),
                Err(ConnectError::Cert(e)) => return Err(e),
            }
        }
    }

    /// Serves one logged-in connection until it drops or the user quits.
    async fn serve(&mut self, conn: LineConn, input: &mut mpsc::Receiver<Input>, first: bool) -> End {
        let (mut reader, mut writer) = conn.split();
        // Reading is not cancel-safe, so one task reads and hands over whole lines.
        let (tx, mut rx) = mpsc::channel::<io::Result<Option<ServerLine>>>(1024);
        let reader_task = tokio::spawn(async move {
            loop {
                let item = reader.next().await;
                let last = !matches!(item, Ok(Some(_)));
                if tx.send(item).await.is_err() || last {
                    break;
                }
            }
        });
        let _abort = AbortOnDrop(reader_task);
        self.bye = None;

        if let Err(e) = self.start(&mut writer, first).await {
            return End::Lost(e.to_string());
        }
        let mut last_rx = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                item = rx.recv() => match item {
                    Some(Ok(Some(line))) => {
                        last_rx = Instant::now();
                        if let Err(e) = self.on_server_line(&mut writer, line).await {
                            return End::Lost(e.to_string());
                        }
                    }
                    Some(Ok(None)) | None => {
                        return End::Lost(self.bye.take().unwrap_or_else(|| "connection closed".into()))
                    }
                    Some(Err(e)) => return End::Lost(self.bye.take().unwrap_or_else(|| e.to_string())),
                },
                i = input.recv() => {
                    let flow = match i {
                        None | Some(Input::Quit) => Ok(Flow::Quit(None)),
                        Some(Input::Line(line, done)) => self.on_input(&mut writer, line, done).await,
                    };
                    match flow {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Quit(reason)) => {
                            self.quit(&mut writer, &mut rx, reason).await;
                            return End::Quit;
                        }
                        Err(e) => return End::Lost(e.to_string()),
                    }
                }
                _ = tick.tick() => {
                    if last_rx.elapsed() > DEAD_AFTER {
                        return End::Lost("the server stopped answering".into());
                    }
                    if last_rx.elapsed() > PING_AFTER && !self.pending.values().any(|p| matches!(p.what, What::Ping)) {
                        if let Err(e) = self.send(&mut writer, What::Ping, "PING keepalive", None).await {
                            return End::Lost(e.to_string());
                        }
                    }
                }
            }
        }
    }

    /// After logging in: join the rooms (again), then send what was typed while disconnected.
    async fn start(&mut self, w: &mut LineWriter, first: bool) -> io::Result<()> {
        if first {
            let rooms = self.cfg.join.clone();
            for (i, room) in rooms.into_iter().enumerate() {
                if i == 0 {
                    // Current right away, so lines read before the reply already go there (the
                    // server handles them after the JOIN).
                    self.current = Some(room.clone());
                    self.update_prompt();
                }
                let what = What::Join { room: room.clone(), rejoin: false, make_current: i == 0, lines: Vec::new() };
                self.send(w, what, &format!("JOIN {room}"), None).await?;
            }
        } else {
            self.info(&format!("reconnected as {}", self.me));
            for room in self.rooms.clone() {
                let what = What::Join { room: room.clone(), rejoin: true, make_current: false, lines: Vec::new() };
                self.send(w, what, &format!("JOIN {room}"), None).await?;
            }
        }
        while let Some(line) = self.queued.pop_front() {
            self.on_input(w, line, None).await?;
        }
        Ok(())
    }

    /// The connection is gone: say so, and forget the commands in flight (their input lines are
    /// released; a message that was never acknowledged may or may not have been stored).
    fn lost(&mut self, reason: &str) {
        self.error(&format!("disconnected: {reason}"));
        let pending: Vec<Pending> = self.pending.drain().map(|(_, p)| p).collect();
        for p in pending {
            match p.what {
                What::Msg { room, text } => {
                    self.error(&format!("not confirmed (it shows up after reconnecting if it was stored): #{room} {text}"))
                }
                What::Join { room, rejoin: false, .. } => self.queued.push_back(format!("/join {room}")),
                _ => {}
            }
        }
    }

    /// A line typed while disconnected: client-side commands run now, the rest waits.
    fn offline_line(&mut self, line: String) -> Flow {
        match Command::parse(&line) {
            Command::Quit(reason) => Flow::Quit(reason),
            Command::Nothing => Flow::Continue,
            Command::Help => {
                self.help();
                Flow::Continue
            }
            Command::Usage(u) => {
                self.error(u);
                Flow::Continue
            }
            Command::Switch(room) => {
                self.switch(&room);
                Flow::Continue
            }
            _ => {
                self.info("not connected: it will be sent after reconnecting");
                self.queued.push_back(line);
                Flow::Continue
            }
        }
    }

    async fn on_input(&mut self, w: &mut LineWriter, line: String, done: Done) -> io::Result<Flow> {
        let cmd = Command::parse(&line);
        let res = self.run_command(w, cmd, done).await;
        if res.is_err() {
            // Not sent: send it after reconnecting.
            self.queued.push_front(line);
        }
        res
    }

    async fn run_command(&mut self, w: &mut LineWriter, cmd: Command, done: Done) -> io::Result<Flow> {
        match cmd {
            Command::Nothing => {}
            Command::Help => self.help(),
            Command::Usage(u) => self.error(u),
            Command::Quit(reason) => return Ok(Flow::Quit(reason)),
            Command::Switch(room) => self.switch(&room),
            Command::Join(room) => {
                if self.rooms.contains(&room) {
                    self.switch(&room);
                } else {
                    let what = What::Join { room: room.clone(), rejoin: false, make_current: true, lines: Vec::new() };
                    self.send(w, what, &format!("JOIN {room}"), done).await?;
                }
            }
            Command::Part(room) => match room.or_else(|| self.current.clone()) {
                Some(room) => self.send(w, What::Part { room: room.clone() }, &format!("PART {room}"), done).await?,
                None => self.error("not in a room"),
            },
            Command::Rooms => self.send(w, What::Rooms { rooms: Vec::new() }, "ROOMS", done).await?,
            Command::Who(room) => match room.or_else(|| self.current.clone()) {
                Some(room) => {
                    let what = What::Names { room: room.clone(), users: Vec::new() };
                    self.send(w, what, &format!("NAMES {room}"), done).await?
                }
                None => self.error("usage: /who <room> (no current room)"),
            },
            Command::History(_) | Command::More if self.current.is_none() => {
                self.error("no current room: /join <room> first");
            }
            Command::History(n) => {
                self.page = n.unwrap_or(self.page);
                self.history(w, done).await?;
            }
            Command::More => self.history(w, done).await?,
            Command::Raw(line) => self.send(w, What::Raw, &line, done).await?,
            Command::Say(text) => match self.current.clone() {
                Some(room) => {
                    let what = What::Msg { room: room.clone(), text: text.clone() };
                    self.send(w, what, &format!("MSG {room} {text}"), done).await?;
                }
                None => self.error("no current room: /join <room> first"),
            },
        }
        Ok(Flow::Continue)
    }

    async fn history(&mut self, w: &mut LineWriter, done: Done) -> io::Result<()> {
        let Some(room) = self.current.clone() else { return Ok(()) };
        let mut line = format!("HISTORY {room}");
        if let Some(oldest) = self.oldest.get(&room) {
            line.push_str(&format!(" BEFORE {oldest}"));
        }
        line.push_str(&format!(" LIMIT {}", self.page));
        self.send(w, What::History { room, lines: Vec::new() }, &line, done).await
    }

    /// Sends `line` under a fresh label and remembers what it was for.
    async fn send(&mut self, w: &mut LineWriter, what: What, line: &str, done: Done) -> io::Result<()> {
        self.next_label += 1;
        let label = format!("c{}", self.next_label);
        w.send(&format!("@{label} {line}")).await?;
        self.pending.insert(label, Pending { what, _done: done });
        Ok(())
    }

    async fn on_server_line(&mut self, w: &mut LineWriter, line: ServerLine) -> io::Result<()> {
        let message = line.as_message();
        match line {
            ServerLine::Reply(r) => self.on_reply(r, message),
            ServerLine::Event(e) => match e.name.as_str() {
                "MSG" | "CMD" => match message {
                    Some(m) => self.show(&m, false),
                    None => self.unexpected_event(&e),
                },
                "JOIN" | "PART" if e.fields.len() == 2 => {
                    if e.fields[1] != self.me {
                        let what = if e.name == "JOIN" { "joined" } else { "left" };
                        self.out.line(self.style.presence(&e.fields[0], &e.fields[1], what));
                    }
                }
                "PING" => {
                    let token = e.fields.first().cloned().unwrap_or_default();
                    w.send(&format!("PONG {token}")).await?;
                }
                "NOTICE" => self.info(&format!("server: {}", e.text.as_deref().unwrap_or(""))),
                "BYE" => self.bye = Some(format!("server said: {}", e.text.as_deref().unwrap_or("bye"))),
                "HELLO" => {}
                _ => self.unexpected_event(&e),
            },
        }
        Ok(())
    }

    fn unexpected_event(&self, e: &Event) {
        let mut s = format!("* {} {}", e.name, e.fields.join(" "));
        if let Some(t) = &e.text {
            s.push_str(&format!(" :{t}"));
        }
        self.info(&s);
    }

    fn on_reply(&mut self, r: Reply, message: Option<ChatMessage>) {
        let Some(label) = r.label.clone().filter(|l| self.pending.contains_key(l)) else {
            // Not an answer to anything we sent with a label.
            self.generic_reply(&r);
            return;
        };
        if !r.is_final() {
            let p = self.pending.get_mut(&label).expect("checked");
            match (&mut p.what, r.code) {
                (What::Join { lines, .. } | What::History { lines, .. }, 130) if message.is_some() => {
                    lines.push(message.expect("checked"))
                }
                (What::Rooms { rooms }, 110) if r.fields.len() >= 2 => rooms.push((r.fields[0].clone(), r.fields[1].clone())),
                (What::Names { users, .. }, 120) if r.fields.len() >= 2 => users.push(r.fields[1].clone()),
                _ => self.generic_reply(&r),
            }
            return;
        }
        let p = self.pending.remove(&label).expect("checked");
        self.finish(p.what, &r);
        // p's Done is dropped here: the input side may go on.
    }

    /// A command got its final reply.
    fn finish(&mut self, what: What, r: &Reply) {
        let why = || format!("{} ({})", r.text.clone().unwrap_or_else(|| "error".into()), r.code);
        match what {
            What::Join { room, rejoin, make_current, lines } => {
                if !r.is_ok() {
                    if rejoin {
                        self.rooms.retain(|x| x != &room);
                        if self.current.as_deref() == Some(&room) {
                            self.current = self.rooms.first().cloned();
                            self.update_prompt();
                        }
                        self.error(&format!("could not rejoin #{room}: {}", why()));
                    } else {
                        if self.current.as_deref() == Some(&room) && !self.rooms.contains(&room) {
                            self.current = self.rooms.last().cloned();
                            self.update_prompt();
                        }
                        self.error(&format!("could not join #{room}: {}", why()));
                    }
                    return;
                }
                if !self.rooms.contains(&room) {
                    self.rooms.push(room.clone());
                }
                if make_current || self.current.is_none() {
                    self.current = Some(room.clone());
                    self.update_prompt();
                }
                if rejoin {
                    let had_seen = self.seen.get(&room).is_some_and(|s| !s.is_empty());
                    let missed: Vec<ChatMessage> = lines
                        .iter()
                        .filter(|m| m.id.is_some_and(|id| !self.seen.get(&room).is_some_and(|s| s.contains(&id))))
                        .cloned()
                        .collect();
                    let n = missed.len();
                    self.info(&format!("rejoined #{room}: {n} missed message{}", if n == 1 { "" } else { "s" }));
                    if had_seen && n == lines.len() && n >= 50 {
                        self.info("(older missed messages may be there too: /history)");
                    }
                    for m in &missed {
                        self.show(m, false);
                    }
                } else {
                    let members = r.fields.get(1).cloned().unwrap_or_else(|| "?".into());
                    self.info(&format!("joined #{room} ({members} members)"));
                    for m in &lines {
                        self.show(m, true);
                    }
                }
            }
            What::Part { room } => {
                if !r.is_ok() {
                    self.error(&format!("could not leave #{room}: {}", why()));
                    return;
                }
                self.rooms.retain(|x| x != &room);
                self.info(&format!("left #{room}"));
                if self.current.as_deref() == Some(&room) {
                    self.current = self.rooms.last().cloned();
                    self.update_prompt();
                    if let Some(c) = self.current.clone() {
                        self.info(&format!("now talking in #{c}"));
                    }
                }
            }
            What::Rooms { rooms } => {
                if !r.is_ok() {
                    self.error(&format!("rooms: {}", why()));
                    return;
                }
                let list: Vec<String> = rooms.iter().map(|(room, n)| format!("#{room} ({n})")).collect();
                self.info(&format!("rooms: {}", if list.is_empty() { "none".into() } else { list.join(", ") }));
            }
            What::Names { room, users } => {
                if !r.is_ok() {
                    self.error(&format!("who #{room}: {}", why()));
                    return;
                }
                let n = users.len();
                self.info(&format!("#{room}: {} ({n} user{})", users.join(", "), if n == 1 { "" } else { "s" }));
            }
            What::Msg { room, text } => {
                let time = r.fields.get(2).cloned().unwrap_or_else(now_rfc3339);
                match (r.code, r.fields.get(1).map(String::as_str)) {
                    (200, Some("-")) => self.show_own(&room, None, &time, &text, true),
                    (200, Some(id)) => match id.parse::<u64>() {
                        Ok(id) => self.show_own(&room, Some(id), &time, &text, false),
                        Err(_) => self.generic_reply(r),
                    },
                    (419, _) => {
                        self.show_own(&room, None, &now_rfc3339(), &text, true);
                        let word = r.fields.get(1).cloned().unwrap_or_default();
                        self.error(&format!("no bot answers /{word} (the room saw the line)"));
                    }
                    _ => self.error(&format!("not sent to #{room}: {}", why())),
                }
            }
            What::History { room, lines } => {
                if !r.is_ok() {
                    self.error(&format!("history #{room}: {}", why()));
                    return;
                }
                if lines.is_empty() {
                    self.info(&format!("#{room}: no older messages"));
                    return;
                }
                let n = lines.len();
                self.info(&format!("#{room}: {n} older message{} (/more for more)", if n == 1 { "" } else { "s" }));
                for m in &lines {
                    self.show(m, true);
                }
            }
            What::Raw => self.generic_reply(r),
            What::Quit | What::Ping => {}
        }
    }

    /// Prints a chat message unless it was shown already (`always` prints it anyway, for an
    /// explicit /join or /history), and remembers its id.
    fn show(&mut self, m: &ChatMessage, always: bool) {
        if let Some(id) = m.id {
            let fresh = self.seen.entry(m.room.clone()).or_default().insert(id);
            let oldest = self.oldest.entry(m.room.clone()).or_insert(id);
            *oldest = (*oldest).min(id);
            if !fresh && !always {
                return;
            }
        }
        let mark = if m.is_command {
            Mark::Cmd
        } else if self.cfg.is_bot(&m.sender) {
            Mark::Bot
        } else {
            Mark::None
        };
        self.out.line(self.style.message(m, mark));
    }

    /// Our own message, once the server acknowledged it.
    fn show_own(&mut self, room: &str, id: Option<u64>, time: &str, text: &str, is_command: bool) {
        let m = ChatMessage {
            room: room.to_string(),
            id,
            time: time.to_string(),
            sender: self.me.clone(),
            text: text.to_string(),
            is_command,
        };
        self.show(&m, false);
    }

    fn generic_reply(&self, r: &Reply) {
        let mut s = format!("{} {}", r.code, r.verb);
        for f in &r.fields {
            s.push(' ');
            s.push_str(f);
        }
        if let Some(t) = &r.text {
            s.push_str(&format!(" :{t}"));
        }
        if r.code >= 400 {
            self.error(&s);
        } else {
            self.info(&s);
        }
    }

    /// Says goodbye: `QUIT`, then waits briefly for the server's `200 QUIT` or the close.
    async fn quit(&mut self, w: &mut LineWriter, rx: &mut mpsc::Receiver<io::Result<Option<ServerLine>>>, reason: Option<String>) {
        let line = match reason {
            Some(r) => format!("QUIT {r}"),
            None => "QUIT".to_string(),
        };
        if self.send(w, What::Quit, &line, None).await.is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while let Ok(Some(Ok(Some(line)))) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if let ServerLine::Reply(r) = &line {
                if r.verb == "QUIT" && r.is_final() {
                    break;
                }
            }
            let _ = self.on_server_line(w, line).await;
        }
        let _ = w.shutdown().await;
    }

    fn switch(&mut self, room: &str) {
        if self.rooms.iter().any(|r| r == room) {
            self.current = Some(room.to_string());
            self.update_prompt();
            self.info(&format!("now talking in #{room}"));
        } else {
            self.error(&format!("not in #{room} (/join {room})"));
        }
    }

    fn help(&self) {
        for line in HELP.lines() {
            self.out.line(line.to_string());
        }
        if !self.rooms.is_empty() {
            let rooms: Vec<String> = self.rooms.iter().map(|r| format!("#{r}")).collect();
            self.info(&format!("joined: {}", rooms.join(", ")));
        }
    }

    fn update_prompt(&self) {
        *self.prompt.lock().unwrap() = match &self.current {
            Some(r) => format!("#{r}> "),
            None => "> ".to_string(),
        };
    }

    fn info(&self, text: &str) {
        self.out.line(self.style.info(text));
    }

    fn error(&self, text: &str) {
        self.out.line(self.style.error(text));
    }
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

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
