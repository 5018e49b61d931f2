//! How the runtime drives a [`Transform`]: batches from its `in` port, outputs
//! delivered after each batch, message errors to `err`, and panics contained.
//!
//! A panic inside `process` fails the instance, but nothing it had is lost: the
//! message in hand and the rest of its batch are left in the supervisor's
//! [`Carry`] for the next instance, which retries the message once. If the
//! retry fails too, the message goes to `err` (or the dead letter) with
//! `attempts = 2`: a poison message costs two restarts, then flows around.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::component::{Carry, Context, Failure, Outbox, Transform};
use crate::message::Message;
use crate::queue::OutPort;

const BATCH: usize = 128;

/// Attempts after which a message that keeps failing is routed to `err`.
pub(crate) const MAX_ATTEMPTS: u32 = 2;

/// Runs a transform until its input ends.
pub(crate) async fn drive(mut t: Box<dyn Transform>, mut ctx: Context) -> Result<(), Failure> {
    let mut input = ctx.input("in");
    let outputs = ctx.output_ports();
    let mut outbox = Outbox::new(outputs.len());
    let carried = std::mem::take(&mut *ctx.carry.lock().unwrap_or_else(|p| p.into_inner()));
    let mut buf = carried.rest;
    if let Some((msg, attempts, error)) = carried.in_hand {
        if attempts >= MAX_ATTEMPTS {
            ctx.errors().route(&msg, &error, attempts).await?;
        } else {
            // The retry leads the batch, so a second failure keeps the rest behind it.
            buf.insert(0, msg);
            run_batch(&mut t, &ctx, std::mem::take(&mut buf), attempts + 1, &mut outbox, &outputs).await?;
        }
    }
    loop {
        if buf.is_empty() && !input.recv_many(&mut buf, BATCH).await {
            break;
        }
        run_batch(&mut t, &ctx, std::mem::take(&mut buf), 1, &mut outbox, &outputs).await?;
    }
    t.finish(&mut outbox);
    outbox.deliver(&outputs).await?;
    Ok(())
}

/// Processes a batch; the first message is on attempt `first_attempt`.
async fn run_batch(
    t: &mut Box<dyn Transform>,
    ctx: &Context,
    batch: Vec<Message>,
    first_attempt: u32,
    outbox: &mut Outbox,
    outputs: &[OutPort],
) -> Result<(), Failure> {
    let mut attempts = first_attempt;
    let mut rest = batch.into_iter();
    while let Some(msg) = rest.next() {
        match catch_unwind(AssertUnwindSafe(|| t.process(&msg, outbox))) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => ctx.errors().route(&msg, &e, attempts).await?,
            Err(panic) => {
                let error = format!("panicked: {}", panic_text(&*panic));
                // What the earlier messages produced is delivered once, not redone.
                outbox.deliver(outputs).await?;
                *ctx.carry.lock().unwrap_or_else(|p| p.into_inner()) =
                    Carry { in_hand: Some((msg, attempts, error.clone())), rest: rest.collect(), kept: Vec::new() };
                return Err(Failure(error));
            }
        }
        attempts = 1;
    }
    outbox.deliver(outputs).await?;
    Ok(())
}

/// The message a panic carried.
pub(crate) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}
