//! Per-component counters, and the summary `run` logs when it ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

/// Counters of one component (all its instances together).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Messages taken from its in-ports.
    pub received: AtomicU64,
    /// Messages sent on its out-ports (each counted once, whatever the fan-out).
    pub sent: AtomicU64,
    /// Messages it could not process (sent to `err` or dead-lettered).
    pub errors: AtomicU64,
    /// Messages a lossy queue (`drop_newest`, `drop_oldest`) dropped on the way out.
    pub dropped: AtomicU64,
    /// Times the supervisor restarted it.
    pub restarts: AtomicU64,
    /// Of `errors`, those written to the flow's dead-letter file.
    pub dead_lettered: AtomicU64,
    /// Milliseconds from the start of the run until it finished (0: it ran to the end).
    pub finished_ms: AtomicU64,
    /// Its "message rejected" warnings (where `err` goes nowhere), limited.
    pub rejected_log: crate::ratelimit::LogLimit,
}

/// A snapshot of one component's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Component name.
    pub component: String,
    /// Its type, e.g. `sqlite`.
    pub type_name: &'static str,
    /// Whether it is a sink (its `sent` is 0; what it wrote is `received - errors - dropped`).
    pub sink: bool,
    /// See [`Metrics::received`].
    pub received: u64,
    /// See [`Metrics::sent`].
    pub sent: u64,
    /// See [`Metrics::errors`].
    pub errors: u64,
    /// See [`Metrics::dropped`].
    pub dropped: u64,
    /// See [`Metrics::restarts`].
    pub restarts: u64,
    /// See [`Metrics::dead_lettered`].
    pub dead_lettered: u64,
    /// How long it ran.
    pub ran: std::time::Duration,
}

impl Metrics {
    fn summary(&self, component: &str) -> Summary {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Summary {
            component: component.to_string(),
            received: get(&self.received),
            sent: get(&self.sent),
            errors: get(&self.errors),
            dropped: get(&self.dropped),
            restarts: get(&self.restarts),
            dead_lettered: get(&self.dead_lettered),
            ran: std::time::Duration::from_millis(get(&self.finished_ms)),
            ..Summary::default()
        }
    }
}

/// Every component's counters, by name.
#[derive(Debug, Default)]
pub struct Registry(DashMap<Arc<str>, Arc<Metrics>>);

impl Registry {
    /// The counters of `component`, created on first use.
    pub fn component(&self, component: &Arc<str>) -> Arc<Metrics> {
        self.0.entry(component.clone()).or_default().clone()
    }

    /// Snapshots in the order of `names`.
    pub fn summaries<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Vec<Summary> {
        names
            .into_iter()
            .map(|n| {
                self.0
                    .get(n)
                    .map(|m| m.summary(n))
                    .unwrap_or_else(|| Summary { component: n.into(), ..Default::default() })
            })
            .collect()
    }
}
