//! A source's budget of unacknowledged messages, watched (apart from any
//! socket: [`Stall`] takes events and times and says when to warn).
//!
//! A broker sends a client only so many messages it has not acknowledged
//! (mosquitto's `max_inflight_messages`, JetStream's `max_ack_pending`,
//! AMQP's `prefetch`). When a component downstream holds acknowledgements
//! for a time, the source sits at that limit: nothing comes in, nothing goes
//! out. The source warns once per such stall, naming who holds them.

use std::time::Duration;

use fbp_runtime::Context;
use tokio::time::Instant;

/// How long messages may stay unacknowledged with nothing moving before the
/// source warns.
pub(crate) const STALL: Duration = Duration::from_secs(3);

/// What the watch found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// Messages have stayed unacknowledged, nothing moving, for the stall time.
    Stalled,
    /// After a stall, something moved again.
    Recovered,
}

/// Whether a source's unacknowledged messages stay stuck.
#[derive(Debug)]
pub(crate) struct Stall {
    after: Duration,
    moved: Instant,
    warned: bool,
}

impl Stall {
    /// A watch that reports a stall of `after`, starting at `now`.
    pub(crate) fn new(after: Duration, now: Instant) -> Self {
        Stall { after, moved: now, warned: false }
    }

    /// A message arrived or was acknowledged at `now`.
    pub(crate) fn moved(&mut self, now: Instant) -> Option<Change> {
        self.moved = now;
        std::mem::take(&mut self.warned).then_some(Change::Recovered)
    }

    /// A look at `now`, with `held` messages unacknowledged.
    pub(crate) fn look(&mut self, now: Instant, held: usize) -> Option<Change> {
        if held == 0 {
            return self.moved(now);
        }
        if self.warned || now.duration_since(self.moved) < self.after {
            return None;
        }
        self.warned = true;
        Some(Change::Stalled)
    }
}

/// Logs what [`Stall`] found for the source `ctx`, `held` messages
/// unacknowledged; `limit` names the broker's setting.
pub(crate) fn log(ctx: &Context, change: Change, held: usize, limit: &str) {
    match change {
        Change::Recovered => tracing::info!(component = %ctx.name, "Acknowledgements flow again."),
        Change::Stalled => {
            let (holders, help) = holders(ctx);
            tracing::warn!(
                component = %ctx.name,
                unacknowledged = held,
                held_by = %holders,
                limit,
                help = %help,
                "Messages stay unacknowledged, so the broker sends no more; what it cannot queue, it may drop."
            );
        }
    }
}

/// Who holds the acknowledgements, and what to change.
fn holders(ctx: &Context) -> (String, String) {
    let held = ctx.ack_holders();
    if held.is_empty() {
        let help = "a component downstream is slow to deliver or holds messages; see `fbp describe` for when each \
                    acknowledges";
        return ("a component downstream".into(), help.into());
    }
    let names = held.iter().map(|h| h.describe()).collect::<Vec<_>>().join("; ");
    let fixes = held.iter().filter(|h| !h.fix.is_empty()).map(|h| format!("`{}`: {}", h.name, h.fix));
    (names, fixes.collect::<Vec<_>>().join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn warns_once_per_stall_and_again_only_after_a_recovery() {
        let t0 = Instant::now();
        let mut s = Stall::new(3 * SECOND, t0);
        assert_eq!(s.look(t0 + 2 * SECOND, 20), None, "not yet");
        assert_eq!(s.look(t0 + 3 * SECOND, 20), Some(Change::Stalled));
        assert_eq!(s.look(t0 + 9 * SECOND, 20), None, "once");
        assert_eq!(s.moved(t0 + 10 * SECOND), Some(Change::Recovered));
        assert_eq!(s.moved(t0 + 11 * SECOND), None);
        assert_eq!(s.look(t0 + 13 * SECOND, 20), None);
        assert_eq!(s.look(t0 + 14 * SECOND, 20), Some(Change::Stalled), "a new stall");
    }

    #[test]
    fn nothing_held_is_no_stall() {
        let t0 = Instant::now();
        let mut s = Stall::new(3 * SECOND, t0);
        assert_eq!(s.look(t0 + 60 * SECOND, 0), None);
        assert_eq!(s.look(t0 + 62 * SECOND, 5), None, "held only since the last look");
        assert_eq!(s.look(t0 + 63 * SECOND, 5), Some(Change::Stalled));
        assert_eq!(s.look(t0 + 64 * SECOND, 0), Some(Change::Recovered));
    }
}
