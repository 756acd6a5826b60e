//! What the bot does with one bot command line: rate-limit the sender, read the request, and for a
//! quote run it in its own task (bounded by a semaphore, shared through the cache) so a slow quote
//! never holds up another. Answers go to a queue that the connection drains (`chat.rs`); the queue
//! outlives a connection, so an answer finished while the bot reconnects is still posted, once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chatd_proto::ChatMessage;
use tokio::sync::{mpsc, Semaphore};

use crate::cache::Cache;
use crate::command::{self, Request};
use crate::config::Config;
use crate::error::QuoteError;
use crate::limit::{RateLimiter, Verdict};
use crate::quote::Quote;
use crate::source::Sources;

/// How many answers may wait for the connection.
pub const QUEUE: usize = 1024;

/// A line to post: `MSG <room> <text>`.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub room: String,
    pub text: String,
    /// When it was queued (answers that waited too long for a connection are dropped).
    pub queued: Instant,
}

pub struct Bot {
    command: String,
    sources: Sources,
    cache: Cache<Result<Quote, QuoteError>>,
    limiter: Option<Mutex<RateLimiter>>,
    permits: Semaphore,
    pending: AtomicUsize,
    max_pending: usize,
    out: mpsc::Sender<Outgoing>,
}

impl Bot {
    /// The bot and the receiving end of its answer queue.
    pub fn new(config: &Config) -> anyhow::Result<(Arc<Bot>, mpsc::Receiver<Outgoing>)> {
        let (out, rx) = mpsc::channel(QUEUE);
        let sources = Sources::new(config.primary.clone(), config.fallback.clone(), config.timeout)?;
        let limiter =
            (config.rate_limit > 0).then(|| Mutex::new(RateLimiter::new(config.rate_limit, config.rate_window)));
        let bot = Bot {
            command: config.command.clone(),
            sources,
            cache: Cache::new(config.cache_ttl),
            limiter,
            permits: Semaphore::new(config.max_concurrent),
            pending: AtomicUsize::new(0),
            max_pending: config.max_pending,
            out,
        };
        Ok((Arc::new(bot), rx))
    }

    pub fn command(&self) -> &str {
        &self.command
    }

    /// Handles one `* CMD` line. Never blocks: quotes are answered from spawned tasks.
    pub fn handle(self: &Arc<Self>, msg: &ChatMessage) {
        let Some(request) = command::parse(&msg.text, &self.command) else {
            tracing::debug!(room = %msg.room, sender = %msg.sender, "not a /{} line, ignored", self.command);
            return;
        };
        if let Some(limiter) = &self.limiter {
            let mut limiter = limiter.lock().unwrap();
            match limiter.check(&msg.sender, Instant::now()) {
                Verdict::Allow => {}
                Verdict::Warn => {
                    tracing::info!(room = %msg.room, sender = %msg.sender, "rate limited");
                    let text = limiter.warning(&msg.sender, &self.command);
                    drop(limiter);
                    self.post(&msg.room, text);
                    return;
                }
                Verdict::Deny => {
                    tracing::debug!(room = %msg.room, sender = %msg.sender, "rate limited (silently)");
                    return;
                }
            }
        }
        match request {
            Request::Usage => {
                tracing::info!(room = %msg.room, sender = %msg.sender, text = %msg.text, "usage");
                self.post(&msg.room, command::usage(&self.command));
            }
            Request::Quote(code) => {
                tracing::info!(room = %msg.room, sender = %msg.sender, code = %code, "quote request");
                let Some(guard) = Pending::enter(self) else {
                    self.post(&msg.room, QuoteError::Busy.reply(&code));
                    return;
                };
                let bot = self.clone();
                let room = msg.room.clone();
                tokio::spawn(async move {
                    let text = bot.answer(&code).await;
                    drop(guard);
                    bot.send(room, text).await;
                });
            }
        }
    }

    /// The reply text for a valid code: from the cache, a call in flight, or a new upstream call.
    pub async fn answer(&self, code: &str) -> String {
        let (result, fetched) = self
            .cache
            .get_or_fetch(code, || async {
                let _permit = self.permits.acquire().await.expect("semaphore never closed");
                self.sources.quote(code).await
            })
            .await;
        if !fetched {
            tracing::debug!(code, "answered from a shared call");
        }
        match result {
            Ok(quote) => quote.reply(),
            Err(e) => e.reply(code),
        }
    }

    fn post(&self, room: &str, text: String) {
        let out = Outgoing { room: room.to_string(), text, queued: Instant::now() };
        if let Err(e) = self.out.try_send(out) {
            tracing::warn!(room, "answer queue full, answer dropped: {e}");
        }
    }

    async fn send(&self, room: String, text: String) {
        let out = Outgoing { room, text, queued: Instant::now() };
        if self.out.send(out).await.is_err() {
            tracing::warn!("answer queue closed, answer dropped");
        }
    }
}

/// Counts a request from its arrival to its answer, for the `max_pending` bound.
struct Pending(Arc<Bot>);

impl Pending {
    fn enter(bot: &Arc<Bot>) -> Option<Pending> {
        if bot.pending.fetch_add(1, Ordering::SeqCst) >= bot.max_pending {
            bot.pending.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("too many pending requests");
            return None;
        }
        Some(Pending(bot.clone()))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
    }
}
