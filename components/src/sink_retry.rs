//! How every sink keeps the batch in hand through a failure that passes.
//!
//! A sink tries to write its batch (or its one message) and, when the attempt
//! fails, maps the cause into a [`Fault`]:
//!
//! - [`Fault::Transient`]: the destination refuses for a while (a lock, a
//!   lost connection, a cancelled statement, a full disk, an HTTP 503): the
//!   whole batch is kept and written again after a pause, with the
//!   component's backoff, until it is written or the flow shuts down;
//! - [`Fault::Permanent`]: no retry helps (a table missing, no permission):
//!   the batch is rejected and the component fails with the cause.
//!
//! A record refused for what it is (a constraint, a type) is no fault of the
//! batch: each sink sorts those out within an attempt, the cheapest way its
//! destination allows (SQLite goes on past a refused row in the same
//! transaction, PostgreSQL writes the batch again in halves under
//! savepoints, a publisher hears per message), and the attempt succeeds with
//! the list of [`Refused`] records, which go to `err` alone.
//!
//! [`Retry`] holds the attempts at one batch, a plain struct whose decisions
//! are unit-tested without I/O. A sink drives it like this:
//!
//! ```text
//! let refused = loop {
//!     match write(&batch).await {
//!         Ok(refused) => break refused,
//!         Err(fault) => retry.failed(fault, ctx.shutdown()).await?, // or give_up
//!     }
//! };
//! retry.written();
//! ```
//!
//! It logs once per episode: a warning at the first failure, with its cause,
//! then "Written after N attempts (3.2s)." once the batch is in. At shutdown
//! a pause ends at once: the batch is rejected (never acknowledged as
//! delivered) and the sink drains the rest of its input, each batch tried
//! once. The first attempt that succeeds costs one branch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fbp_runtime::link::Backoff;
use fbp_runtime::queue::InPort;
use fbp_runtime::{Context, Failure, Message};
use tokio_util::sync::CancellationToken;

/// A record of the batch refused for what it is: its index and why.
pub(crate) type Refused = (usize, String);

/// What a failed attempt means for the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Refused for a while: keep the batch and write it again after a pause.
    Transient(String),
    /// No retry helps: the batch is rejected and the component fails.
    Permanent(String),
}

/// Why a batch was given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The flow is shutting down: the batch is left unwritten (rejected, never
    /// acknowledged as delivered).
    Shutdown,
    /// A permanent error, with its cause.
    Permanent(String),
}

/// The attempts at writing one batch, then the next (reset when written).
#[derive(Debug)]
pub(crate) struct Retry {
    component: Arc<str>,
    target: String,
    backoff: Backoff,
    next_delay: Duration,
    /// When the current episode's first failure happened.
    since: Option<Instant>,
    /// Failed attempts in the current episode.
    attempts: u32,
    /// Whether a batch was given up at shutdown (logged once).
    stopping: bool,
}

impl Retry {
    /// The attempts of `component` at writing to `target` (how logs name the
    /// destination), pausing between them by `backoff`.
    pub(crate) fn new(component: Arc<str>, target: impl Into<String>, backoff: Backoff) -> Self {
        Retry {
            component,
            target: fbp_runtime::secret::urls_in(&target.into()),
            backoff,
            next_delay: backoff.min,
            since: None,
            attempts: 0,
            stopping: false,
        }
    }

    /// The batch is written: logs the end of an episode, if there was one, and resets.
    pub(crate) fn written(&mut self) {
        if let Some(since) = self.since.take() {
            let after = Duration::from_millis(since.elapsed().as_millis() as u64);
            tracing::info!(
                component = %self.component,
                target = %self.target,
                attempts = self.attempts + 1,
                after = ?after,
                "Written after {} attempts ({after:?}).",
                self.attempts + 1
            );
        }
        self.reset();
    }

    fn reset(&mut self) {
        self.since = None;
        self.attempts = 0;
        self.next_delay = self.backoff.min;
    }

    /// An attempt failed: waits out the backoff (ended at once by
    /// `shutdown`) and says to try again, or gives up.
    pub(crate) async fn failed(&mut self, fault: Fault, shutdown: &CancellationToken) -> Result<(), Stop> {
        self.failed_at_least(fault, Duration::ZERO, shutdown).await
    }

    /// [`Retry::failed`], pausing at least `floor` (a server's `Retry-After`).
    pub(crate) async fn failed_at_least(
        &mut self,
        fault: Fault,
        floor: Duration,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        let delay = self.next(fault, floor)?;
        if pause(delay, shutdown).await { Ok(()) } else { Err(self.stopped()) }
    }

    /// The decision of [`Retry::failed_at_least`] without the pause, for
    /// attempts that share one `Retry` behind a lock: the pause before the
    /// next attempt (then [`Retry::stopped`] if the shutdown ends it).
    pub(crate) fn next(&mut self, fault: Fault, floor: Duration) -> Result<Duration, Stop> {
        match fault {
            Fault::Transient(why) => Ok(self.pause(&why).max(floor)),
            Fault::Permanent(why) => {
                self.reset();
                Err(Stop::Permanent(why))
            }
        }
    }

    /// The shutdown ended a pause: the batch is given up (logged once).
    pub(crate) fn stopped(&mut self) -> Stop {
        if !self.stopping {
            self.stopping = true;
            tracing::warn!(
                component = %self.component,
                target = %self.target,
                attempts = self.attempts,
                "Shutting down with a batch not written; it is rejected, not acknowledged, and so is what \
                 follows that cannot be written at the first attempt."
            );
        }
        self.reset();
        Stop::Shutdown
    }

    /// Logs a transient failure (a warning at the first of an episode, debug
    /// after) and returns the pause before the next attempt.
    fn pause(&mut self, why: &str) -> Duration {
        let why = fbp_runtime::secret::urls_in(why);
        self.attempts += 1;
        if self.since.is_none() && self.stopping {
            // Draining at shutdown: said once already.
            self.since = Some(Instant::now());
            tracing::debug!(component = %self.component, error = %why, "Not written at shutdown.");
        } else if self.since.is_none() {
            self.since = Some(Instant::now());
            tracing::warn!(
                component = %self.component,
                target = %self.target,
                error = %why,
                "Cannot write the batch; keeping it and retrying (logged again when written)."
            );
        } else {
            tracing::debug!(component = %self.component, attempt = self.attempts, error = %why, "Still not written.");
        }
        let delay = self.next_delay;
        self.next_delay = (self.next_delay * 2).min(self.backoff.max);
        // Jitter: 75% to 100% of the delay, so many writers do not retry in step.
        let jitter = fastrand::u64(0..=delay.as_millis() as u64 / 4);
        delay.saturating_sub(Duration::from_millis(jitter)).max(Duration::from_millis(1))
    }
}

/// Waits `delay`; `false` if `shutdown` fired first (at once if it has).
pub(crate) async fn pause(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// At shutdown, with the destination away: rejects the batch in hand and
/// everything still queued, until the input ends, counting each in `dropped`.
pub(crate) async fn reject_rest(input: &mut InPort, batch: &mut Vec<Message>, ctx: &Context) {
    loop {
        not_written(batch, ctx);
        batch.clear();
        if !input.recv_many(batch, 256).await {
            return;
        }
    }
}

/// A batch given up: it is rejected (its sources learn it was not
/// delivered). At shutdown the sink goes on with the next batch (it drains
/// its input, each batch tried once, without pauses); after a permanent
/// error it fails with the cause, and is not restarted.
pub(crate) fn give_up(stop: Stop, batch: &[Message], ctx: &Context) -> Result<(), Failure> {
    match stop {
        Stop::Shutdown => {
            not_written(batch, ctx);
            Ok(())
        }
        Stop::Permanent(why) => {
            not_written(batch, ctx);
            // A restart would meet the same refusal.
            Err(ctx.permanent(why))
        }
    }
}

/// A batch left unwritten (at shutdown, or refused for good): rejected (a source that can
/// redeliver will) and counted in `dropped`, so the summary never shows it
/// as written.
pub(crate) fn not_written(batch: &[Message], ctx: &Context) {
    crate::storage::reject_all(batch);
    ctx.metrics().dropped.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> Retry {
        Retry::new("c".into(), "db", Backoff { min: Duration::from_millis(100), max: Duration::from_millis(400) })
    }

    fn next(r: &mut Retry) -> Duration {
        r.next(Fault::Transient("locked".into()), Duration::ZERO).unwrap()
    }

    #[test]
    fn transient_faults_back_off_up_to_the_limit_and_reset_when_written() {
        let mut r = retry();
        for hi in [100u64, 200, 400, 400] {
            let d = next(&mut r).as_millis() as u64;
            assert!((hi * 3 / 4..=hi).contains(&d), "{d} vs {hi}");
        }
        assert_eq!(r.attempts, 4);
        r.written();
        assert!(next(&mut r) <= Duration::from_millis(100));
    }

    #[test]
    fn a_floor_such_as_retry_after_lengthens_the_pause() {
        let mut r = retry();
        let d = r.next(Fault::Transient("429".into()), Duration::from_secs(3)).unwrap();
        assert_eq!(d, Duration::from_secs(3));
    }

    #[test]
    fn a_permanent_fault_stops_with_its_cause() {
        let mut r = retry();
        next(&mut r);
        assert_eq!(
            r.next(Fault::Permanent("no table".into()), Duration::ZERO),
            Err(Stop::Permanent("no table".into()))
        );
        assert_eq!(r.attempts, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pause_ends_at_once_on_shutdown() {
        let mut r = retry();
        let stop = CancellationToken::new();
        assert_eq!(r.failed(Fault::Transient("busy".into()), &stop).await, Ok(()));
        stop.cancel();
        let started = tokio::time::Instant::now();
        assert_eq!(r.failed(Fault::Transient("busy".into()), &stop).await, Err(Stop::Shutdown));
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert!(r.stopping && r.since.is_none());
    }
}
