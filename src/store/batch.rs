//! Batch sizing under the lock budget ([`Batcher`]) and the `--max-seconds`
//! deadline ([`Deadline`]).

use std::time::{Duration, Instant};

/// Adaptive batch size: keeps one transaction near half of `max_lock_ms`.
#[derive(Debug, Clone)]
pub struct Batcher {
    size: usize,
    min: usize,
    max: usize,
    target: Duration,
    limit: Duration,
}

impl Batcher {
    /// Starts at 500 rows, or fewer under a small budget (5 rows per ms of
    /// budget, at least 50): the first batch has no measurement yet.
    pub fn new(max_lock_ms: u64) -> Batcher {
        let initial = usize::try_from(max_lock_ms.saturating_mul(5))
            .unwrap_or(500)
            .clamp(50, 500);
        Batcher::with_bounds(max_lock_ms, initial, 1, 200_000)
    }

    pub fn with_bounds(max_lock_ms: u64, initial: usize, min: usize, max: usize) -> Batcher {
        let limit = Duration::from_millis(max_lock_ms.max(1));
        Batcher {
            size: initial.clamp(min.max(1), max.max(1)),
            min: min.max(1),
            max: max.max(1),
            target: limit / 2,
            limit,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// The hold one transaction is aimed at.
    #[cfg(test)]
    pub fn aim(&self) -> Duration {
        self.target
    }

    /// Aim one transaction at `target` instead of half the budget (never
    /// above the budget).
    pub fn aim_at(&mut self, target: Duration) {
        self.target = target.min(self.limit);
    }

    /// Feed back how long a batch of `rows` rows held the lock.
    pub fn observe(&mut self, rows: usize, elapsed: Duration) {
        if rows == 0 {
            return;
        }
        let el = elapsed.as_secs_f64().max(1e-6);
        let per_row = el / rows as f64;
        let ideal = (self.target.as_secs_f64() / per_row).floor();
        let ideal = if ideal.is_finite() {
            ideal as usize
        } else {
            self.max
        };
        let next = if elapsed > self.limit {
            // Over budget: shrink at once, at least halve.
            ideal.min(self.size / 2)
        } else if rows < self.size {
            // A short batch (end of data) says little about speed.
            self.size
        } else {
            // Grow at most 2× per step, shrink to the estimate.
            ideal.min(self.size.saturating_mul(2))
        };
        self.size = next.clamp(self.min, self.max);
    }
}

/// Stop at a batch boundary after `--max-seconds`.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    end: Option<Instant>,
}

impl Deadline {
    pub fn new(max_seconds: Option<f64>) -> Deadline {
        Deadline {
            // The CLI bounds --max-seconds; this never panics anyway (NaN,
            // negative or huge values mean no deadline).
            end: max_seconds
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .and_then(|d| Instant::now().checked_add(d)),
        }
    }

    pub fn expired(&self) -> bool {
        matches!(self.end, Some(end) if Instant::now() >= end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batcher_adapts() {
        let mut b = Batcher::with_bounds(200, 1000, 1, 1_000_000);
        b.observe(1000, Duration::from_millis(10)); // 10 µs/row → ideal 10 000, capped at 2×
        assert_eq!(b.size(), 2000);
        b.observe(2000, Duration::from_millis(400)); // over budget: 200 µs/row → 500
        assert_eq!(b.size(), 500);
        b.observe(10, Duration::from_millis(1)); // short batch: unchanged
        assert_eq!(b.size(), 500);
    }

    #[test]
    fn a_shorter_aim_sizes_batches_for_it() {
        let mut b = Batcher::with_bounds(200, 1000, 1, 1_000_000);
        assert_eq!(b.aim(), Duration::from_millis(100));
        b.aim_at(Duration::from_millis(50));
        b.observe(1000, Duration::from_millis(80)); // 80 µs/row → 625 rows for 50 ms
        assert_eq!(b.size(), 625);
        b.aim_at(Duration::from_secs(1)); // capped at the 200 ms budget
        b.observe(625, Duration::from_millis(50)); // → 2 500, grown at most 2×
        assert_eq!(b.size(), 1250);
    }

    #[test]
    fn first_batch_scales_with_the_budget() {
        assert_eq!(Batcher::new(20).size(), 100);
        assert_eq!(Batcher::new(200).size(), 500);
        assert_eq!(Batcher::new(5000).size(), 500);
        assert_eq!(Batcher::new(1).size(), 50);
    }

    #[test]
    fn a_fixed_commit_cost_below_the_target_keeps_batches_growing() {
        // 20 ms budget (target 10 ms): 2 ms fixed + 5 us/row.
        let mut b = Batcher::new(20);
        for _ in 0..10 {
            let n = b.size();
            b.observe(n, Duration::from_micros(2000 + 5 * n as u64));
        }
        assert!(b.size() >= 1000, "{}", b.size());
    }

    #[test]
    fn deadline() {
        assert!(!Deadline::new(None).expired());
        assert!(Deadline::new(Some(0.0)).expired());
        assert!(!Deadline::new(Some(3600.0)).expired());
        for odd in [1e19, 1e300, f64::INFINITY, f64::NAN, -1.0] {
            assert!(!Deadline::new(Some(odd)).expired(), "{odd}");
        }
    }
}
