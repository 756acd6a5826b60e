//! Limits that keep the bot polite: a per-sender request limit (a sliding window, so one user
//! cannot make the bot hammer the quote service) and a token bucket that paces the bot's own lines
//! to the daemon (so a burst of answers stays under the daemon's flood control instead of being
//! delayed or getting the bot disconnected for excess flood).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What the rate limiter says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// Over the limit, first time in this streak: tell the user once.
    Warn,
    /// Over the limit and already told: stay silent.
    Deny,
}

#[derive(Default)]
struct Sender {
    times: VecDeque<Instant>,
    warned: bool,
}

/// At most `max` requests per `window` for each sender.
pub struct RateLimiter {
    max: usize,
    window: Duration,
    senders: HashMap<String, Sender>,
}

impl RateLimiter {
    pub fn new(max: usize, window: Duration) -> Self {
        RateLimiter { max, window, senders: HashMap::new() }
    }

    pub fn check(&mut self, sender: &str, now: Instant) -> Verdict {
        if self.senders.len() > 1024 {
            let window = self.window;
            self.senders.retain(|_, s| s.times.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let window = self.window;
        let s = self.senders.entry(sender.to_string()).or_default();
        while s.times.front().is_some_and(|t| now.duration_since(*t) >= window) {
            s.times.pop_front();
        }
        if s.times.len() < self.max {
            s.times.push_back(now);
            s.warned = false;
            Verdict::Allow
        } else if !s.warned {
            s.warned = true;
            Verdict::Warn
        } else {
            Verdict::Deny
        }
    }

    /// The polite reply for [`Verdict::Warn`].
    pub fn warning(&self, sender: &str, word: &str) -> String {
        format!(
            "{sender}, please slow down: at most {} /{word} requests per {}. Try again in a moment.",
            self.max,
            crate::error::human_duration(self.window)
        )
    }
}

/// `burst` lines at once, then `rate` per second.
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket { rate: rate.max(0.001), burst, tokens: burst, at: now }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.at = now;
    }

    /// When the next line may go (now or later).
    pub fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }

    /// Spends one token (call when [`ready_at`](Self::ready_at) is not in the future).
    pub fn take(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_sender_window() {
        let mut rl = RateLimiter::new(5, Duration::from_secs(30));
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(rl.check("alice", t0 + Duration::from_secs(i)), Verdict::Allow);
        }
        assert_eq!(rl.check("alice", t0 + Duration::from_secs(6)), Verdict::Warn);
        assert_eq!(rl.check("alice", t0 + Duration::from_secs(7)), Verdict::Deny);
        assert_eq!(rl.check("bob", t0 + Duration::from_secs(7)), Verdict::Allow, "others unaffected");
        // The first request leaves the window at t0+30.
        assert_eq!(rl.check("alice", t0 + Duration::from_secs(30)), Verdict::Allow);
        assert_eq!(rl.check("alice", t0 + Duration::from_secs(30)), Verdict::Warn);
        let w = rl.warning("alice", "stock");
        assert!(w.contains("alice") && w.contains("5 /stock requests per 30 s"), "{w}");
    }

    #[test]
    fn bucket_paces_after_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5.0, 2, t0);
        assert_eq!(b.ready_at(t0), t0);
        b.take(t0);
        assert_eq!(b.ready_at(t0), t0);
        b.take(t0);
        let next = b.ready_at(t0);
        assert!(next > t0 && next <= t0 + Duration::from_millis(201), "{:?}", next - t0);
        assert_eq!(b.ready_at(t0 + Duration::from_millis(200)), t0 + Duration::from_millis(200));
    }
}
