//! The messages a failed `exec` instance leaves to the next one.
//!
//! The runtime keeps a failed transform's message in hand for its next
//! instance, but a task has no such hand-over, so `exec` keeps its own: in a
//! table keyed by the component's metrics, which the supervisor shares between
//! every instance of one component and no other. An entry whose component has
//! gone is cleared.

use std::sync::{Arc, Mutex, Weak};

use fbp_runtime::metrics::Metrics;
use fbp_runtime::{Context, Message};

/// A message not yet answered, and how many programs failed while it was the oldest in flight.
pub(super) type Kept = (Message, u32);

type Table = Vec<(Weak<Metrics>, Vec<Kept>)>;

static LEFT: Mutex<Table> = Mutex::new(Vec::new());

fn table() -> std::sync::MutexGuard<'static, Table> {
    LEFT.lock().unwrap_or_else(|p| p.into_inner())
}

/// Takes what the last instance of this component left.
pub(super) fn take(ctx: &Context) -> Vec<Kept> {
    let key = Arc::downgrade(ctx.metrics());
    let mut table = table();
    table.retain(|(k, _)| k.strong_count() > 0);
    match table.iter().position(|(k, _)| k.ptr_eq(&key)) {
        Some(i) => table.swap_remove(i).1,
        None => Vec::new(),
    }
}

/// Leaves `kept` to the next instance of this component.
pub(super) fn leave(ctx: &Context, kept: Vec<Kept>) {
    if kept.is_empty() {
        return;
    }
    table().push((Arc::downgrade(ctx.metrics()), kept));
}
