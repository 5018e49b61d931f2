//! The state of a component's connection to a broker or server, and the
//! backoff between attempts to reconnect.
//!
//! Every network component keeps one [`Link`] per connection and tells it
//! what happened: [`Link::up`] when connected, [`Link::down`] when an attempt
//! or the connection fails. The link logs once per change of state, not once
//! per attempt or per message: "connected", then at most one warning per
//! outage ("connection lost ..., reconnecting"), then "reconnected after
//! 3.2s". Attempts during an outage are logged at debug level. `down`
//! returns how long to wait before the next attempt: exponential backoff
//! with jitter between the bounds of the component's `reconnect` key.
//!
//! The backoff starts again from its first delay only once a connection has
//! stayed up for [`Link::stable_after`]: the backoff's longest delay, and at
//! least a second (as the supervisor resets a component's restart backoff
//! once it has run longer than the maximum). A connection that the server
//! accepts and then drops at once (a refused login after the handshake, a
//! packet it cannot take) is an outage that goes on: the delay keeps growing
//! instead of reconnecting at the first delay for ever.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::spec::{KeySpec, KeyType};
use crate::units::parse_duration;

/// The `reconnect` key every network component declares.
pub const RECONNECT_KEY: KeySpec = KeySpec::new(
    "reconnect",
    KeyType::String,
    "\"100ms..10s\"",
    "Backoff between reconnection attempts while the server is unreachable: the first delay, \
     doubled (with jitter) after each failed attempt up to the second. The component never \
     gives up: the flow keeps running and back-pressure holds upstream until it is back.",
);

/// Bounds of the reconnection backoff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub min: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { min: Duration::from_millis(100), max: Duration::from_secs(10) }
    }
}

impl Backoff {
    /// Parses `"100ms..10s"`; `key` names the setting in the error.
    pub fn parse(key: &str, s: &str) -> Result<Self, String> {
        let bad = || format!("`{key} = \"{s}\"`: write a range of durations like \"100ms..10s\"");
        let (lo, hi) = s.split_once("..").ok_or_else(bad)?;
        let (min, max) = (parse_duration(lo).map_err(|_| bad())?, parse_duration(hi).map_err(|_| bad())?);
        if min.is_zero() || min > max {
            return Err(format!("`{key} = \"{s}\"`: the first delay must be more than 0 and at most the second"));
        }
        Ok(Backoff { min, max })
    }
}

/// Whether a link is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not connected yet.
    Connecting,
    /// Connected.
    Up,
    /// Lost, being retried.
    Down,
}

/// One connection's state, logged on change.
#[derive(Debug)]
pub struct Link {
    component: Arc<str>,
    target: String,
    backoff: Backoff,
    state: State,
    next_delay: Duration,
    down_since: Option<Instant>,
    up_since: Option<Instant>,
    attempts: u32,
    outages: u64,
}

/// A connection that stays up this long, at least, resets the backoff.
const STABLE_MIN: Duration = Duration::from_secs(1);

impl Link {
    /// A link of `component` to `target` (say `mqtt 127.0.0.1:1883`), not
    /// connected yet. A URL in `target` is logged with its secrets masked.
    pub fn new(component: Arc<str>, target: impl Into<String>, backoff: Backoff) -> Self {
        let target = target.into();
        Link {
            component,
            target: crate::secret::urls_in(&target),
            backoff,
            state: State::Connecting,
            next_delay: backoff.min,
            down_since: None,
            up_since: None,
            attempts: 0,
            outages: 0,
        }
    }

    /// How long a connection must stay up before the backoff starts again
    /// from its first delay: its longest delay, and at least a second.
    pub fn stable_after(&self) -> Duration {
        self.backoff.max.max(STABLE_MIN)
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// How many times the connection was lost (or failed at start).
    pub fn outages(&self) -> u64 {
        self.outages
    }

    /// Connected (or reconnected): logs the change. The backoff is reset
    /// only if this connection lasts (see [`Link::stable_after`]).
    pub fn up(&mut self) {
        self.up_at(Instant::now());
    }

    fn up_at(&mut self, now: Instant) {
        match self.state {
            State::Up => return,
            State::Connecting => {
                tracing::info!(component = %self.component, target = %self.target, state = "connected", "Connected.")
            }
            State::Down => {
                let after = self.down_since.map(|t| now.saturating_duration_since(t)).unwrap_or_default();
                tracing::info!(
                    component = %self.component,
                    target = %self.target,
                    state = "connected",
                    outage = ?Duration::from_millis(after.as_millis() as u64),
                    attempts = self.attempts,
                    "Reconnected."
                );
            }
        }
        self.state = State::Up;
        self.up_since = Some(now);
        self.down_since = None;
        self.attempts = 0;
    }

    /// A connection attempt failed or the connection was lost: logs a warning
    /// the first time in an outage (debug after), and returns how long to wait
    /// before the next attempt: the first delay after a connection that
    /// lasted, else the last delay doubled.
    pub fn down(&mut self, error: &dyn fmt::Display) -> Duration {
        self.down_at(error, Instant::now())
    }

    fn down_at(&mut self, error: &dyn fmt::Display, now: Instant) -> Duration {
        // A client library's error may name the URL, password and all.
        let error = crate::secret::urls_in(&error.to_string());
        if self.state == State::Up
            && self.up_since.is_some_and(|t| now.saturating_duration_since(t) >= self.stable_after())
        {
            self.next_delay = self.backoff.min;
        }
        self.attempts += 1;
        if self.state == State::Down {
            tracing::debug!(component = %self.component, target = %self.target, attempt = self.attempts, error = %error, "Still unreachable.");
        } else {
            self.outages += 1;
            self.down_since = Some(now);
            let what = if self.state == State::Up { "Connection lost" } else { "Cannot connect" };
            tracing::warn!(
                component = %self.component,
                target = %self.target,
                state = "disconnected",
                error = %error,
                "{what}; reconnecting in the background (logged again when back)."
            );
            self.state = State::Down;
        }
        let delay = self.next_delay;
        self.next_delay = (self.next_delay * 2).min(self.backoff.max);
        // Jitter: 75% to 100% of the delay, so many clients do not retry in step.
        let jitter = fastrand::u64(0..=delay.as_millis() as u64 / 4);
        delay.saturating_sub(Duration::from_millis(jitter)).max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_refuses_nonsense() {
        let b = Backoff::parse("reconnect", "200ms..5s").unwrap();
        assert_eq!((b.min, b.max), (Duration::from_millis(200), Duration::from_secs(5)));
        assert!(Backoff::parse("reconnect", "5s..1s").unwrap_err().contains("at most the second"));
        assert!(Backoff::parse("reconnect", "0s..1s").is_err());
        assert!(Backoff::parse("reconnect", "soon").unwrap_err().contains("100ms..10s"));
    }

    /// The upper bounds of the delays `down` gives (jitter takes up to a quarter off).
    fn within(delay: Duration, hi: u64) -> bool {
        let ms = delay.as_millis() as u64;
        ms <= hi && ms >= hi * 3 / 4
    }

    fn link(max_ms: u64) -> Link {
        Link::new("c".into(), "x", Backoff { min: Duration::from_millis(100), max: Duration::from_millis(max_ms) })
    }

    #[test]
    fn backoff_doubles_up_to_the_limit() {
        let mut link = link(400);
        let delays: Vec<_> = (0..5).map(|_| link.down(&"refused")).collect();
        for (d, hi) in delays.iter().zip([100, 200, 400, 400, 400]) {
            assert!(within(*d, hi), "{d:?} vs {hi}");
        }
        assert_eq!(link.outages(), 1);
        assert_eq!(link.state(), State::Down);
    }

    #[test]
    fn a_connection_that_fails_again_at_once_does_not_reset_the_backoff() {
        let mut link = link(3_000);
        let t0 = Instant::now();
        // Up, then down 10 ms later, four times: the delay keeps doubling.
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..5 {
            link.up_at(now);
            now += Duration::from_millis(10);
            delays.push(link.down_at(&"lost", now));
            now += Duration::from_millis(10);
        }
        for (d, hi) in delays.iter().zip([100, 200, 400, 800, 1600]) {
            assert!(within(*d, hi), "{d:?} vs {hi}");
        }
        assert_eq!(link.outages(), 5, "each loss after a connection is an outage of its own");
        assert_eq!(link.state(), State::Down);
    }

    #[test]
    fn a_connection_that_lasted_resets_the_backoff() {
        let mut link = link(3_000);
        assert_eq!(link.stable_after(), Duration::from_secs(3));
        let t0 = Instant::now();
        for _ in 0..4 {
            link.down_at(&"refused", t0);
        }
        // Up just under the longest delay: not reset.
        link.up_at(t0);
        assert!(within(link.down_at(&"lost", t0 + Duration::from_millis(2_900)), 1_600));
        // Up as long as the longest delay: the first delay again.
        link.up_at(t0 + Duration::from_secs(10));
        assert!(within(link.down_at(&"lost", t0 + Duration::from_secs(13)), 100));
        assert_eq!(link.state(), State::Down);
        assert_eq!(self::link(400).stable_after(), STABLE_MIN, "at least a second");
    }
}
