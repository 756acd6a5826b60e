//! The connection to chatd: connect over TLS like any client, `LOGIN`, `SERVE <word>`, then read
//! `* CMD` lines and hand them to the bot while a writer task posts its answers as `MSG <room>
//! <text>`, paced under the daemon's flood control. Answers `* PING`, sends its own `PING` when
//! idle and takes a daemon silent for twice that long as gone.
//!
//! When the connection drops (daemon restart, `* BYE`, network) it reconnects with exponential
//! backoff (`backoff_min` doubling up to `backoff_max`, with jitter), logs in and serves again.
//! The daemon does not replay command lines, and the bot keeps no list of requests to redo, so a
//! request is answered at most once; answers finished while disconnected wait in the queue (for at
//! most [`MAX_ANSWER_AGE`]) and are posted after reconnecting.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use chatd_proto::client::{LineReader, LineWriter};
use chatd_proto::tls::client_config;
use chatd_proto::{LineConn, ServerLine};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, timeout, Instant};

use crate::bot::{Bot, Outgoing};
use crate::config::Config;
use crate::limit::TokenBucket;

/// Bound on connecting, the TLS handshake, LOGIN and SERVE.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on writing one line (a daemon that stops reading is taken as gone).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Answers older than this when a connection is there to post them are dropped as stale.
pub const MAX_ANSWER_AGE: Duration = Duration::from_secs(60);
/// A session that lasted this long resets the backoff.
pub const STABLE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0:#}")]
    Setup(anyhow::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("timed out connecting and logging in")]
    Timeout,
    #[error("login throttled, retry in {0} s")]
    Throttled(u64),
    #[error("{verb} refused: {code} {text}")]
    Refused { verb: &'static str, code: u16, text: String },
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum End {
    #[error("the daemon closed the connection")]
    Closed,
    #[error("the daemon said goodbye: {0}")]
    Bye(String),
    #[error("reading: {0}")]
    Read(io::Error),
    #[error("writing: {0}")]
    Write(io::Error),
    #[error("the daemon was silent for {0:?}")]
    Idle(Duration),
    #[error("shutting down")]
    Shutdown,
}

/// Runs until `shutdown` turns true: connect, serve, reconnect.
pub async fn run(
    config: Arc<Config>,
    bot: Arc<Bot>,
    mut answers: mpsc::Receiver<Outgoing>,
    shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
    // A cluster's nodes: a node that cannot be reached (or refuses) sends the bot to the next one.
    let addrs: Vec<&str> = config.addr.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    let mut at = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let addr = addrs.get(at).copied().unwrap_or(config.addr.as_str());
        let attempt = tokio::select! {
            r = connect(&config, &bot, addr) => r,
            _ = stopped(shutdown.clone()) => return,
        };
        if attempt.is_err() {
            at = (at + 1) % addrs.len().max(1);
        }
        let wait = match attempt {
            Ok(conn) => {
                tracing::info!(addr = %addr, user = %config.user, "serving /{}", bot.command());
                let started = Instant::now();
                let (rx, end) = session(conn, answers, &bot, &config, shutdown.clone()).await;
                answers = rx;
                if let End::Shutdown = end {
                    return;
                }
                tracing::warn!("connection lost: {end}");
                if started.elapsed() >= STABLE {
                    backoff.reset();
                }
                backoff.next_delay()
            }
            Err(ConnectError::Throttled(secs)) => {
                tracing::warn!("login throttled by the daemon for {secs} s");
                backoff.next_delay().max(Duration::from_secs(secs))
            }
            Err(e) => {
                tracing::warn!(addr = %addr, "cannot serve: {e}");
                backoff.next_delay()
            }
        };
        tracing::info!("reconnecting in {wait:.1?}");
        tokio::select! {
            _ = sleep(wait) => {}
            _ = stopped(shutdown.clone()) => return,
        }
    }
}

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Connects to `addr`, logs in and announces the command word.
pub async fn connect(config: &Config, bot: &Arc<Bot>, addr: &str) -> Result<LineConn, ConnectError> {
    let password = config.password.read().map_err(ConnectError::Setup)?;
    let tls =
        client_config(&config.trust.resolve()).map_err(|e| ConnectError::Setup(anyhow::anyhow!("TLS setup: {e}")))?;
    timeout(CONNECT_TIMEOUT, async {
        let mut conn = LineConn::connect_tls(addr, &config.server_name, tls).await?;
        let login = conn.call(&format!("LOGIN {} {}", config.user, password)).await?;
        match login.fin.code {
            200 => {}
            412 => {
                let secs = login.fin.fields.first().and_then(|s| s.parse().ok()).unwrap_or(5);
                return Err(ConnectError::Throttled(secs));
            }
            code => {
                return Err(ConnectError::Refused { verb: "LOGIN", code, text: login.fin.text.unwrap_or_default() })
            }
        }
        let serve = conn.call(&format!("SERVE {}", bot.command())).await?;
        if !serve.fin.is_ok() {
            let text = serve.fin.text.unwrap_or_default();
            return Err(ConnectError::Refused { verb: "SERVE", code: serve.fin.code, text });
        }
        for event in serve.events {
            if let Some(msg) = ServerLine::Event(event).as_message().filter(|m| m.is_command) {
                bot.handle(&msg);
            }
        }
        Ok(conn)
    })
    .await
    .map_err(|_| ConnectError::Timeout)?
}

/// Serves on one connection until it ends; gives the answer queue back for the next one.
async fn session(
    conn: LineConn,
    answers: mpsc::Receiver<Outgoing>,
    bot: &Arc<Bot>,
    config: &Config,
    shutdown: watch::Receiver<bool>,
) -> (mpsc::Receiver<Outgoing>, End) {
    let (reader, writer) = conn.split();
    let (ctl_tx, ctl_rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let pacing = TokenBucket::new(config.send_rate, config.send_burst, Instant::now().into_std());
    let mut writer_task = tokio::spawn(write_loop(writer, answers, ctl_rx, stop_rx, pacing, config.keepalive));
    let read = read_loop(reader, bot.clone(), ctl_tx, config.keepalive * 2);
    tokio::pin!(read);

    let end = tokio::select! {
        end = &mut read => end,
        done = &mut writer_task => {
            let (answers, _, err) = done.expect("writer task panicked");
            let err = err.unwrap_or_else(|| io::Error::other("writer stopped"));
            return (answers, End::Write(err));
        }
        _ = stopped(shutdown) => End::Shutdown,
    };
    let _ = stop_tx.send(true);
    let (answers, writer, _) = writer_task.await.expect("writer task panicked");
    if let (End::Shutdown, Some(mut writer)) = (&end, writer) {
        let _ = timeout(Duration::from_secs(2), writer.send("QUIT bot shutting down")).await;
    }
    (answers, end)
}

type WriterEnd = (mpsc::Receiver<Outgoing>, Option<LineWriter>, Option<io::Error>);

async fn write_loop(
    mut writer: LineWriter,
    mut answers: mpsc::Receiver<Outgoing>,
    mut ctl: mpsc::Receiver<String>,
    mut stop: watch::Receiver<bool>,
    mut pacing: TokenBucket,
    keepalive: Duration,
) -> WriterEnd {
    let mut last_write = Instant::now();
    loop {
        let now = Instant::now();
        let ready: Instant = pacing.ready_at(now.into_std()).into();
        let line = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            Some(line) = ctl.recv() => line,
            _ = sleep_until(ready), if ready > now => continue,
            answer = answers.recv(), if ready <= now => {
                let Some(answer) = answer else { break };
                let age = answer.queued.elapsed();
                if age > MAX_ANSWER_AGE {
                    tracing::warn!(room = %answer.room, text = %answer.text, ?age, "stale answer dropped");
                    continue;
                }
                pacing.take(std::time::Instant::now());
                tracing::info!(room = %answer.room, text = %answer.text, "answer");
                format!("MSG {} {}", answer.room, answer.text)
            }
            _ = sleep_until(last_write + keepalive) => "PING keepalive".to_string(),
        };
        match timeout(WRITE_TIMEOUT, writer.send(&line)).await {
            Ok(Ok(())) => last_write = Instant::now(),
            Ok(Err(e)) => {
                tracing::warn!(line = %line, "write failed, line lost: {e}");
                return (answers, None, Some(e));
            }
            Err(_) => {
                tracing::warn!(line = %line, "write timed out, line lost");
                return (answers, None, Some(io::Error::new(io::ErrorKind::TimedOut, "write timed out")));
            }
        }
    }
    (answers, Some(writer), None)
}

async fn read_loop(mut reader: LineReader, bot: Arc<Bot>, ctl: mpsc::Sender<String>, idle: Duration) -> End {
    let mut bye = None;
    loop {
        let line = match timeout(idle, reader.read_line()).await {
            Err(_) => return End::Idle(idle),
            Ok(Err(e)) => return End::Read(e),
            Ok(Ok(None)) => return bye.map_or(End::Closed, End::Bye),
            Ok(Ok(Some(line))) => line,
        };
        let parsed = match ServerLine::parse(&line) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("ignoring a line: {e}");
                continue;
            }
        };
        match parsed {
            ServerLine::Event(event) => match event.name.as_str() {
                "CMD" => match ServerLine::Event(event).as_message() {
                    Some(msg) => bot.handle(&msg),
                    None => tracing::warn!(line = %line, "malformed CMD event"),
                },
                "PING" => {
                    let token = event.fields.first().cloned().or(event.text).unwrap_or_else(|| "x".into());
                    let _ = ctl.send(format!("PONG {token}")).await;
                }
                "BYE" => {
                    let reason = event.text.unwrap_or_default();
                    tracing::info!(%reason, "daemon says BYE");
                    bye = Some(reason);
                }
                "NOTICE" => tracing::warn!(text = %event.text.unwrap_or_default(), "daemon notice"),
                _ => tracing::debug!(line = %line, "event ignored"),
            },
            ServerLine::Reply(reply) if reply.is_ok() => tracing::debug!(line = %line, "ok"),
            ServerLine::Reply(reply) => tracing::warn!(
                code = reply.code,
                verb = %reply.verb,
                fields = ?reply.fields,
                text = %reply.text.unwrap_or_default(),
                "the daemon refused a line"
            ),
        }
    }
}

/// Exponential backoff with jitter: each delay is drawn from the upper half of the current step.
pub struct Backoff {
    min: Duration,
    max: Duration,
    step: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max, step: min }
    }

    pub fn reset(&mut self) {
        self.step = self.min;
    }

    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let jitter: f64 = rand::random::<f64>() * 0.5 + 0.5;
        step.mul_f64(jitter).max(self.min.min(step))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut steps = Vec::new();
        for _ in 0..10 {
            steps.push(b.next_delay());
        }
        for (i, d) in steps.iter().enumerate() {
            let step = (Duration::from_millis(500) * 2u32.pow(i as u32)).min(Duration::from_secs(30));
            assert!(*d <= step, "{i}: {d:?} > {step:?}");
            assert!(*d >= Duration::from_millis(500), "{i}: {d:?}");
            assert!(*d >= step / 2, "{i}: {d:?}");
        }
        assert!(*steps.last().unwrap() <= Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
    }
}
