//! Rate limits: a token bucket for a connection's lines, sliding-window counters keyed by address
//! or account, and the per-address connection gate. All bounded in memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
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

/// Why a new connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ServerFull,
    TooManyFromAddress,
    TooManyNewFromAddress,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::ServerFull => "server full, try again later",
            Refusal::TooManyFromAddress => "too many connections from your address",
            Refusal::TooManyNewFromAddress => "too many new connections from your address, slow down",
        }
    }
}

/// Admission of new connections: a global cap, concurrent and new-per-minute caps per address.
pub struct ConnectionGate {
    max_total: usize,
    max_per_address: usize,
    exempt_loopback: bool,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    new_per_address: WindowCounter<IpAddr>,
}

/// Holds a place at the gate; frees it when dropped.
pub struct Admission<'a> {
    gate: &'a ConnectionGate,
    ip: IpAddr,
}

impl ConnectionGate {
    pub fn new(max_total: usize, max_per_address: usize, new_per_minute: usize, exempt_loopback: bool) -> Self {
        ConnectionGate {
            max_total,
            max_per_address,
            exempt_loopback,
            open: Mutex::new((0, HashMap::new())),
            new_per_address: WindowCounter::new(Duration::from_secs(60), new_per_minute),
        }
    }

    pub fn exempt(&self, ip: IpAddr) -> bool {
        self.exempt_loopback && ip.is_loopback()
    }

    pub fn admit(&self, ip: IpAddr) -> Result<Admission<'_>, Refusal> {
        let exempt = self.exempt(ip);
        let mut open = self.open.lock().unwrap();
        if open.0 >= self.max_total {
            return Err(Refusal::ServerFull);
        }
        let per = open.1.get(&ip).copied().unwrap_or(0);
        if !exempt && per >= self.max_per_address {
            return Err(Refusal::TooManyFromAddress);
        }
        if !exempt && self.new_per_address.hit(&ip).is_err() {
            return Err(Refusal::TooManyNewFromAddress);
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        Ok(Admission { gate: self, ip })
    }

    pub fn open_connections(&self) -> usize {
        self.open.lock().unwrap().0
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().unwrap();
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
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
    fn gate_counts_per_address() {
        let gate = ConnectionGate::new(10, 2, 100, false);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = gate.admit(ip).unwrap();
        let _b = gate.admit(ip).unwrap();
        assert_eq!(gate.admit(ip).err(), Some(Refusal::TooManyFromAddress));
        drop(a);
        assert!(gate.admit(ip).is_ok());
    }

    #[test]
    fn window_counter_says_how_long_to_wait() {
        let w = WindowCounter::new(Duration::from_secs(3600), 2);
        assert!(w.hit(&1).is_ok());
        assert!(w.hit(&1).is_ok());
        let wait = w.hit(&1).unwrap_err();
        assert!(wait > Duration::from_secs(3500) && wait <= Duration::from_secs(3600), "{wait:?}");
        assert!(w.hit(&2).is_ok(), "other keys are counted apart");
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
