//! Retry timing shared by everything that waits out a dependency: the database connection at
//! start-up, the consumer loop's transient failures, the outbox relay and the dead-letter
//! publisher. It has no dependencies of its own, so the registry can use it without Kafka.

use std::time::Duration;

/// Exponential backoff with equal jitter: a random delay in `[ceiling / 2, ceiling]`, where
/// `ceiling = min(cap, base * 2^attempt)` (at least 1 ms).
///
/// Half of the delay is fixed, so a retry never comes back almost at once after a failure
/// (as full jitter, `[0, ceiling]`, may), and half is random, so many clients that failed
/// together spread out instead of retrying in step.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let ceiling = exp.min(cap).as_millis().max(1) as u64;
    Duration::from_millis(rand::random_range(ceiling / 2..=ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        for attempt in 0..30 {
            let d = backoff(attempt, base, cap);
            assert!(d <= cap, "attempt {attempt}: {d:?} exceeds the cap");
        }
        // Attempt 3 draws from [400, 800] ms: never below half the ceiling.
        assert!(backoff(3, base, cap) >= Duration::from_millis(400));
    }

    #[test]
    fn every_delay_lies_in_the_upper_half_of_its_ceiling() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(10);
        for attempt in 0..20 {
            let ceiling = base.saturating_mul(1 << attempt.min(16)).min(cap);
            for _ in 0..50 {
                let d = backoff(attempt, base, cap);
                assert!(
                    ceiling / 2 <= d && d <= ceiling,
                    "attempt {attempt}: {d:?} is outside [{:?}, {ceiling:?}]",
                    ceiling / 2
                );
            }
        }
    }
}
