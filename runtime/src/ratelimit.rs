//! A warning that would repeat per message, limited: the first few of each
//! interval are logged in full, the rest only counted, and the count is
//! logged with the first warning of the next interval.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Warnings logged in full per interval.
pub const BURST: u32 = 5;

/// The length of an interval.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// What to do with one more warning.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Log this one in full.
    pub log: bool,
    /// Warnings left out in the interval that just ended (say so first).
    pub left_out: u64,
}

/// The state of one kind of warning (one per component and kind).
#[derive(Debug, Default)]
pub struct LogLimit(Mutex<Interval>);

#[derive(Debug, Default)]
struct Interval {
    start: Option<Instant>,
    logged: u32,
    left_out: u64,
}

impl LogLimit {
    /// One more warning, now.
    pub fn check(&self) -> Verdict {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Verdict {
        let mut i = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut left_out = 0;
        if i.start.is_none_or(|s| now.duration_since(s) >= INTERVAL) {
            left_out = std::mem::take(&mut i.left_out);
            (i.start, i.logged) = (Some(now), 0);
        }
        let log = i.logged < BURST;
        match log {
            true => i.logged += 1,
            false => i.left_out += 1,
        }
        Verdict { log, left_out }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_few_in_full_then_a_count_with_the_next_interval() {
        let (limit, t0) = (LogLimit::default(), Instant::now());
        let verdicts: Vec<Verdict> = (0..8).map(|i| limit.check_at(t0 + Duration::from_millis(i))).collect();
        assert_eq!(verdicts.iter().filter(|v| v.log).count(), BURST as usize);
        assert!(verdicts.iter().all(|v| v.left_out == 0));
        assert_eq!(limit.check_at(t0 + INTERVAL), Verdict { log: true, left_out: 3 });
        assert_eq!(limit.check_at(t0 + 3 * INTERVAL), Verdict { log: true, left_out: 0 });
    }
}
