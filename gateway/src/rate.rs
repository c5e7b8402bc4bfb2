//! A per-identity request rate limit: one token bucket per caller, refilled at a steady rate
//! up to a burst. Buckets that have refilled completely are forgotten (they hold nothing a
//! fresh bucket would not), so idle callers cost no memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bounds each identity to `per_second` calls on average, `burst` at once.
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Beyond this many remembered identities, full buckets are dropped before adding one.
const PRUNE_ABOVE: usize = 10_000;

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::default(),
        }
    }

    /// Takes one call's token for `identity`, or says how long until one is there.
    pub fn check(&self, identity: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() > PRUNE_ABOVE {
            let refill = Duration::from_secs_f64(self.burst / self.per_second);
            buckets.retain(|_, bucket| now.duration_since(bucket.at) < refill);
        }
        // A known caller costs no allocation: its name is copied only for a new bucket.
        if !buckets.contains_key(identity) {
            buckets.insert(
                identity.to_owned(),
                Bucket {
                    tokens: self.burst,
                    at: now,
                },
            );
        }
        let bucket = buckets.get_mut(identity).expect("just inserted");
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }

    pub fn per_second(&self) -> f64 {
        self.per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_steady_rate() {
        let limiter = RateLimiter::new(10, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check("alice", t0).is_ok());
        }
        let wait = limiter.check("alice", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        // Another identity has its own bucket.
        assert!(limiter.check("bob", t0).is_ok());
        // One token back after 100 ms, and only one.
        let t1 = t0 + Duration::from_millis(100);
        assert!(limiter.check("alice", t1).is_ok());
        assert!(limiter.check("alice", t1).is_err());
        // Never more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(limiter.check("alice", t2).is_ok());
        }
        assert!(limiter.check("alice", t2).is_err());
    }

    #[test]
    fn idle_identities_are_forgotten_once_many() {
        let limiter = RateLimiter::new(100, 1);
        let t0 = Instant::now();
        for i in 0..=PRUNE_ABOVE {
            limiter.check(&format!("c{i}"), t0).unwrap();
        }
        // Every bucket refills within 10 ms; the next call prunes them all.
        let later = t0 + Duration::from_millis(20);
        limiter.check("new", later).unwrap();
        assert_eq!(limiter.buckets.lock().unwrap().len(), 1);
    }
}
