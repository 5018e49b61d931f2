//! The messages a failed `exec` instance leaves to the next one, through the
//! supervisor's carry-over ([`Context::keep`]): past the restart limit the
//! network dead-letters them, so none is lost silently.

use fbp_runtime::{Context, Message};

/// A message not yet answered, and how many programs failed while it was the oldest in flight.
pub(super) type Kept = (Message, u32);

/// Takes what the last instance of this component left.
pub(super) fn take(ctx: &Context) -> Vec<Kept> {
    ctx.take_kept()
}

/// Leaves `kept` to the next instance of this component.
pub(super) fn leave(ctx: &Context, kept: Vec<Kept>) {
    ctx.keep(kept);
}
