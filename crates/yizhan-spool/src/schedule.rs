//! The retry schedule: pure arithmetic on Unix seconds, no clock.
//!
//! RFC 5321 4.5.4.1 asks for a retry interval of at least 30 minutes and a give-up time of at
//! least 4-5 days. Like Postfix (`minimal_backoff_time` 300 s, `maximal_backoff_time` 4000 s,
//! `maximal_queue_lifetime` 5 d) we start faster and double the wait after each failed attempt,
//! up to a cap, which stays well inside the RFC's intent for a long-lived queue.

use std::time::Duration;

/// When to try again after a transient failure, and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failed attempt (default 5 minutes).
    pub initial: Duration,
    /// The longest wait between two attempts (default 4000 s).
    pub max_backoff: Duration,
    /// How long after `received_at` we stop trying (default 5 days).
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(300),
            max_backoff: Duration::from_secs(4000),
            give_up_after: Duration::from_secs(5 * 24 * 3600),
        }
    }
}

impl RetryPolicy {
    /// When the next attempt is due, given that `attempts` attempts have failed so far, or
    /// `None` when it is time to give up (`now >= received_at + give_up_after`).
    ///
    /// The wait is `initial * 2^(attempts - 1)`, capped at `max_backoff`; with no failed attempt
    /// yet (`attempts == 0`) the message is due at once (`now`).
    pub fn next_attempt(&self, attempts: u32, received_at: i64, now: i64) -> Option<i64> {
        if self.expired(received_at, now) {
            return None;
        }
        if attempts == 0 {
            return Some(now);
        }
        Some(now.saturating_add(self.wait(attempts)))
    }

    /// The wait after `attempts` failed attempts (`initial * 2^(attempts - 1)`, capped), in
    /// seconds; 0 before any attempt.
    pub fn wait(&self, attempts: u32) -> i64 {
        if attempts == 0 {
            return 0;
        }
        let factor = 1u64.checked_shl(attempts - 1).unwrap_or(u64::MAX);
        let wait = self
            .initial
            .as_secs()
            .saturating_mul(factor)
            .min(self.max_backoff.as_secs());
        i64::try_from(wait).unwrap_or(i64::MAX)
    }

    /// Whether the attempt being made now (the recipient's attempt number `attempts + 1`, which
    /// was due at `due`) is the first one at or after `received_at + warn_after`, so a delay
    /// warning (RFC 3464 "delayed") is due if it fails again.
    ///
    /// Stateless on purpose: the previous attempt's time is reconstructed from the schedule
    /// (`due - wait(attempts)`), so the spool needs no "warned" flag. A retry schedule changed
    /// between two attempts, or a flush that made a recipient due early, can cause one
    /// duplicate or one missing warning, never a stream of them.
    pub fn delay_warning_due(
        &self,
        warn_after: Duration,
        received_at: i64,
        attempts: u32,
        due: i64,
        now: i64,
    ) -> bool {
        let threshold =
            received_at.saturating_add(i64::try_from(warn_after.as_secs()).unwrap_or(i64::MAX));
        if now < threshold {
            return false;
        }
        if attempts == 0 {
            return true;
        }
        due.saturating_sub(self.wait(attempts)) < threshold
    }

    /// Whether a message received at `received_at` is past its give-up time at `now`.
    pub fn expired(&self, received_at: i64, now: i64) -> bool {
        let lifetime = i64::try_from(self.give_up_after.as_secs()).unwrap_or(i64::MAX);
        now >= received_at.saturating_add(lifetime)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_doubles_from_five_minutes_up_to_4000_seconds() {
        let p = RetryPolicy::default();
        let t0 = 1_000_000;
        // (attempts, now, expected next attempt)
        let cases = [
            (0, t0, Some(t0)),
            (1, t0, Some(t0 + 300)),
            (2, t0 + 300, Some(t0 + 300 + 600)),
            (3, t0, Some(t0 + 1200)),
            (4, t0, Some(t0 + 2400)),
            (5, t0, Some(t0 + 4000)), // 4800 capped
            (6, t0, Some(t0 + 4000)),
            (63, t0, Some(t0 + 4000)),
            (64, t0, Some(t0 + 4000)), // shift overflow saturates
            (u32::MAX, t0, Some(t0 + 4000)),
        ];
        for (attempts, now, want) in cases {
            assert_eq!(
                p.next_attempt(attempts, t0, now),
                want,
                "attempts {attempts}"
            );
        }
    }

    #[test]
    fn gives_up_after_five_days() {
        // RFC 5321 4.5.4.1: give-up time at least 4-5 days.
        let p = RetryPolicy::default();
        let t0 = 1_000_000;
        let five_days = 5 * 24 * 3600;
        assert_eq!(
            p.next_attempt(3, t0, t0 + five_days - 1),
            Some(t0 + five_days - 1 + 1200)
        );
        assert_eq!(p.next_attempt(3, t0, t0 + five_days), None);
        assert_eq!(p.next_attempt(0, t0, t0 + five_days + 1), None);
        assert!(!p.expired(t0, t0 + five_days - 1));
        assert!(p.expired(t0, t0 + five_days));
    }

    #[test]
    fn delay_warning_once_when_the_threshold_is_crossed() {
        // RFC 3464 2.3.3 "delayed"; the warning time is 4 hours by default in the runner.
        let p = RetryPolicy::default();
        let t0 = 1_000_000;
        let four_h = Duration::from_secs(4 * 3600);
        let th = t0 + 4 * 3600;
        // Walk a recipient that always fails through the default schedule with a fake clock:
        // exactly one attempt says "warn now", the first one at or after the threshold.
        let mut now = t0;
        let mut attempts = 0;
        let mut warned_at = vec![];
        while now < t0 + 24 * 3600 {
            let due = now;
            if p.delay_warning_due(four_h, t0, attempts, due, now) {
                warned_at.push(now);
            }
            attempts += 1;
            now = p.next_attempt(attempts, t0, now).unwrap();
        }
        assert_eq!(warned_at.len(), 1, "{warned_at:?}");
        assert!(warned_at[0] >= th && warned_at[0] < th + 4000);
        // The first attempt late (e.g. after downtime) warns at once; before the threshold never.
        assert!(p.delay_warning_due(four_h, t0, 0, th + 10, th + 10));
        assert!(!p.delay_warning_due(four_h, t0, 0, th - 1, th - 1));
        assert_eq!(p.wait(0), 0);
        assert_eq!(p.wait(3), 1200);
    }

    #[test]
    fn custom_policy_and_extreme_values() {
        let p = RetryPolicy {
            initial: Duration::from_secs(10),
            max_backoff: Duration::from_secs(25),
            give_up_after: Duration::from_secs(100),
        };
        assert_eq!(p.next_attempt(1, 0, 5), Some(15));
        assert_eq!(p.next_attempt(2, 0, 5), Some(25));
        assert_eq!(p.next_attempt(3, 0, 5), Some(30)); // 40 capped at 25
        assert_eq!(p.next_attempt(1, 0, 100), None);
        // No overflow at the ends of the range.
        let huge = RetryPolicy {
            initial: Duration::MAX,
            max_backoff: Duration::MAX,
            give_up_after: Duration::MAX,
        };
        assert_eq!(huge.next_attempt(5, 0, i64::MAX - 1), Some(i64::MAX));
    }
}
