//! Sharing upstream calls: identical requests that arrive while one is in flight wait for it, and
//! its answer (a quote or a failure) is reused for `ttl` after it arrived. Keys are the
//! lower-case codes. Expired entries are dropped whenever a new entry is made, so the map holds
//! at most the codes asked in the last `ttl` plus those in flight.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

type Slot<V> = Arc<OnceCell<(Instant, V)>>;

/// A short-lived answer cache with in-flight de-duplication.
pub struct Cache<V> {
    ttl: Duration,
    map: Mutex<HashMap<String, Slot<V>>>,
}

impl<V: Clone> Cache<V> {
    pub fn new(ttl: Duration) -> Self {
        Cache { ttl, map: Mutex::new(HashMap::new()) }
    }

    /// The answer for `key`: a fresh cached one, the one of a call already in flight, or the result
    /// of `fetch` (called at most once per key and period). The boolean is true when this caller
    /// ran `fetch` itself.
    pub async fn get_or_fetch<F, Fut>(&self, key: &str, fetch: F) -> (V, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let slot = self.slot(key);
        let mut ran = false;
        let (_, value) = slot
            .get_or_init(|| {
                ran = true;
                async {
                    let v = fetch().await;
                    (Instant::now(), v)
                }
            })
            .await;
        (value.clone(), ran)
    }

    /// How many keys are held (in flight or fresh or not yet pruned).
    pub fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, key: &str) -> Slot<V> {
        let now = Instant::now();
        let ttl = self.ttl;
        let fresh = |slot: &Slot<V>| match slot.get() {
            None => true, // in flight
            Some((at, _)) => now.duration_since(*at) < ttl,
        };
        let mut map = self.map.lock().unwrap();
        if let Some(slot) = map.get(key) {
            if fresh(slot) {
                return slot.clone();
            }
        }
        map.retain(|_, slot| fresh(slot));
        let slot: Slot<V> = Arc::new(OnceCell::new());
        map.insert(key.to_string(), slot.clone());
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_identical_requests_share_one_call() {
        let cache = Arc::new(Cache::<u32>::new(Duration::from_secs(5)));
        let calls = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (cache, calls, mut release) = (cache.clone(), calls.clone(), release_rx.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch("aapl.us", || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let _ = release.wait_for(|r| *r).await;
                        42
                    })
                    .await
            }));
        }
        tokio::task::yield_now().await;
        release_tx.send(true).unwrap();
        let mut ran = 0;
        for t in tasks {
            let (v, r) = t.await.unwrap();
            assert_eq!(v, 42);
            ran += r as usize;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(ran, 1);
        // Within the ttl: cached.
        let (v, r) = cache.get_or_fetch("aapl.us", || async { 7 }).await;
        assert_eq!((v, r), (42, false));
        // Another key: its own call.
        let (v, r) = cache.get_or_fetch("msft.us", || async { 7 }).await;
        assert_eq!((v, r), (7, true));
    }

    #[tokio::test]
    async fn expired_answers_are_fetched_again_and_pruned() {
        let cache = Cache::<u32>::new(Duration::ZERO);
        assert_eq!(cache.get_or_fetch("a", || async { 1 }).await, (1, true));
        assert_eq!(cache.get_or_fetch("a", || async { 2 }).await, (2, true));
        assert_eq!(cache.get_or_fetch("b", || async { 3 }).await, (3, true));
        assert_eq!(cache.len(), 1, "expired entries pruned");
    }
}
