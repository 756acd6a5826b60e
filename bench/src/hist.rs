//! A lock-free log-linear latency histogram (nanoseconds): 64 linear sub-buckets per power of two,
//! so any reported percentile is within 1.6% of the true value. Shared by every reader task of a
//! phase without a lock (relaxed atomic adds); about 30 KiB each.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const SUB_BITS: u32 = 6; // 64 sub-buckets per octave
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (SUB as usize) * (64 - SUB_BITS as usize + 1);

pub struct Hist {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    max: AtomicU64,
    min: AtomicU64,
}

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let shift = msb - SUB_BITS; // keeps the top SUB_BITS+1 bits: top in [SUB, 2*SUB)
    let top = v >> shift;
    (shift as usize) * (SUB as usize) + top as usize
}

/// The middle of the values that map to bucket `i`.
fn value_of(i: usize) -> u64 {
    if (i as u64) < 2 * SUB {
        return i as u64;
    }
    let shift = (i as u64 / SUB) - 1;
    let top = i as u64 - shift * SUB;
    (top << shift) + ((1u64 << shift) >> 1)
}

impl Hist {
    pub fn new() -> Self {
        Hist {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            max: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
        }
    }

    pub fn record(&self, v: u64) {
        self.buckets[index(v).min(BUCKETS - 1)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(v, Relaxed);
        self.max.fetch_max(v, Relaxed);
        self.min.fetch_min(v, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn max(&self) -> u64 {
        self.max.load(Relaxed)
    }

    /// The value at quantile `q` (0..=1), 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Relaxed);
            if seen >= rank {
                return value_of(i).min(self.max()).max(self.min.load(Relaxed));
            }
        }
        self.max()
    }

    /// p50/p90/p99/p99.9/max/mean in microseconds, as JSON.
    pub fn summary_us(&self) -> serde_json::Value {
        let us = |v: u64| (v as f64 / 1000.0 * 10.0).round() / 10.0;
        let n = self.count();
        serde_json::json!({
            "count": n,
            "p50_us": us(self.quantile(0.50)),
            "p90_us": us(self.quantile(0.90)),
            "p99_us": us(self.quantile(0.99)),
            "p999_us": us(self.quantile(0.999)),
            "max_us": us(self.max()),
            "mean_us": self.sum.load(Relaxed).checked_div(n).map_or(0.0, us),
        })
    }

    /// "p50 1.2ms p99 3.4ms p99.9 5.6ms max 7.8ms"
    pub fn line(&self) -> String {
        format!(
            "p50 {} p99 {} p99.9 {} max {}",
            fmt_ns(self.quantile(0.5)),
            fmt_ns(self.quantile(0.99)),
            fmt_ns(self.quantile(0.999)),
            fmt_ns(self.max())
        )
    }
}

pub fn fmt_ns(ns: u64) -> String {
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.2}s", ns as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_close() {
        for v in [0u64, 1, 127, 128, 129, 1000, 65_535, 1_000_000, 123_456_789, u64::MAX / 2] {
            let i = index(v);
            assert!(i < BUCKETS);
            let back = value_of(i);
            let err = (back as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(err <= 1.0 / SUB as f64, "{v} -> {i} -> {back}");
        }
        for i in 0..BUCKETS - 1 {
            assert!(value_of(i) < value_of(i + 1));
        }
    }

    #[test]
    fn quantiles() {
        let h = Hist::new();
        for v in 1..=1000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.02, "{p50}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        assert_eq!(h.count(), 1000);
    }
}
