//! Rate-limit primitives: a token bucket for a connection's lines, sliding-window counters and
//! failure back-off keyed by address or account. All bounded in memory; they know nothing of what
//! they limit (the connection gate in `net`, accounts in `chat`, flood control in `session`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Flood control for one connection (GCRA form of a token bucket): `burst` lines at once, then
/// `rate` per second.
pub struct TokenBucket {
    interval: Duration,
    span: Duration,
    tat: Instant,
}

impl TokenBucket {
    pub fn new(burst: u32, rate_per_sec: f64) -> TokenBucket {
        let interval = Duration::from_secs_f64(1.0 / rate_per_sec);
        TokenBucket { interval, span: interval * burst.saturating_sub(1), tat: Instant::now() }
    }

    /// When the next token will be there (`now` or earlier: there is one now).
    pub fn ready_at(&self, now: Instant) -> Instant {
        self.tat.checked_sub(self.span).unwrap_or(now)
    }

    /// Takes a token now, or says when one will be there.
    pub fn take(&mut self, now: Instant) -> Result<(), Instant> {
        let earliest = self.ready_at(now);
        if now >= earliest {
            self.tat = self.tat.max(now) + self.interval;
            Ok(())
        } else {
            Err(earliest)
        }
    }
}

/// Counts events per key within a sliding window (approximated by fixed windows of `window`).
pub struct WindowCounter<K> {
    window: Duration,
    max: usize,
    counts: Mutex<HashMap<K, (Instant, usize)>>,
}

impl<K: Eq + Hash + Clone> WindowCounter<K> {
    pub fn new(window: Duration, max: usize) -> Self {
        WindowCounter { window, max, counts: Mutex::new(HashMap::new()) }
    }

    /// Counts one event for `key`; over the limit, the event is not counted and the error says how
    /// long until the key's window ends.
    pub fn hit(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut counts = self.counts.lock().unwrap();
        if counts.len() > 100_000 {
            counts.retain(|_, (start, _)| now.duration_since(*start) < self.window);
        }
        let entry = counts.entry(key.clone()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.max {
            return Err(self.window.saturating_sub(now.duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }

    /// Takes back one counted event for `key` (one that another limit then refused).
    pub fn give_back(&self, key: &K) {
        if let Some(entry) = self.counts.lock().unwrap().get_mut(key) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }
}

/// Failed-login backoff per key: after `free` failures each further one doubles the wait
/// (1 s, 2 s, 4 s ... up to 5 minutes). Forgotten 15 minutes after the last failure.
pub struct Backoff<K> {
    free: u32,
    entries: Mutex<HashMap<K, (u32, Instant)>>,
}

const BACKOFF_FORGET: Duration = Duration::from_secs(15 * 60);
const BACKOFF_MAX_SECS: u64 = 300;

impl<K: Eq + Hash + Clone> Backoff<K> {
    pub fn new(free: u32) -> Self {
        Backoff { free, entries: Mutex::new(HashMap::new()) }
    }

    /// Seconds to wait before `key` may try again (0: go ahead).
    pub fn wait_secs(&self, key: &K) -> u64 {
        let entries = self.entries.lock().unwrap();
        let Some((failures, last)) = entries.get(key) else { return 0 };
        if *failures < self.free {
            return 0;
        }
        let delay = Duration::from_secs((1u64 << (failures - self.free).min(16)).min(BACKOFF_MAX_SECS));
        (delay.saturating_sub(last.elapsed()).as_secs_f64()).ceil() as u64
    }

    pub fn fail(&self, key: &K) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap();
        if entries.len() > 100_000 {
            entries.retain(|_, (_, last)| now.duration_since(*last) < BACKOFF_FORGET);
        }
        let e = entries.entry(key.clone()).or_insert((0, now));
        if now.duration_since(e.1) >= BACKOFF_FORGET {
            e.0 = 0;
        }
        e.0 += 1;
        e.1 = now;
    }

    pub fn clear(&self, key: &K) {
        self.entries.lock().unwrap().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut b = TokenBucket::new(3, 10.0);
        let t = Instant::now();
        assert!(b.take(t).is_ok());
        assert!(b.take(t).is_ok());
        assert!(b.take(t).is_ok());
        let next = b.take(t).unwrap_err();
        assert!(next > t && next <= t + Duration::from_millis(110));
        assert!(b.take(next).is_ok());
    }

    #[test]
    fn window_counter_says_how_long_to_wait() {
        let w = WindowCounter::new(Duration::from_secs(3600), 2);
        assert!(w.hit(&1).is_ok());
        assert!(w.hit(&1).is_ok());
        let wait = w.hit(&1).unwrap_err();
        assert!(wait > Duration::from_secs(3500) && wait <= Duration::from_secs(3600), "{wait:?}");
        assert!(w.hit(&2).is_ok(), "other keys are counted apart");
        w.give_back(&1);
        assert!(w.hit(&1).is_ok(), "an event given back is not counted");
        assert!(w.hit(&1).is_err());
    }

    #[test]
    fn backoff_grows() {
        let b = Backoff::new(2);
        b.fail(&"x");
        assert_eq!(b.wait_secs(&"x"), 0);
        b.fail(&"x");
        assert_eq!(b.wait_secs(&"x"), 1);
        b.fail(&"x");
        assert_eq!(b.wait_secs(&"x"), 2);
        b.clear(&"x");
        assert_eq!(b.wait_secs(&"x"), 0);
    }
}
