//! The two shapes of component, and what a running instance sees.
//!
//! - [`Transform`]: a synchronous function of one message to zero or more
//!   messages. Most transforms are this kind; they are unit-tested without a
//!   runtime, and the runtime drives them in batches.
//! - [`Task`]: an async task for sources, sinks and anything with I/O or timers.
//!
//! Either way, a message the component cannot process is a *message error*
//! (`Err(String)` from `process`, or [`Context::reject`]): it goes to the `err`
//! port and the component keeps running. A *failure* (`Err(Failure)` from a
//! task, or a panic) ends the instance and the supervisor decides what next.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::deadletter::ErrorRoute;
use crate::flow::acks::AckHolder;
use crate::message::{Ack, Message, Meta, Outcome};
use crate::metrics::Metrics;
use crate::queue::{Closed, InPort, OutPort};

/// A failure that breaks the component itself; the supervisor restarts it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Failure(pub String);

impl From<Closed> for Failure {
    fn from(e: Closed) -> Self {
        Failure(e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure(e.to_string())
    }
}

/// The future a [`Task`] runs as.
pub type TaskFuture = Pin<Box<dyn Future<Output = Result<(), Failure>> + Send>>;

/// A synchronous component: message in, zero or more messages out.
pub trait Transform: Send + 'static {
    /// Processes one message. `Err` is a message error: the message goes to `err`.
    fn process(&mut self, msg: &Message, out: &mut Outbox) -> Result<(), String>;

    /// Called once when every input has ended, to flush what is held.
    fn finish(&mut self, _out: &mut Outbox) {}
}

/// An async component: owns its loop, its I/O and its timers.
pub trait Task: Send + 'static {
    /// Runs until the inputs end (or, for a source, until it finishes or is told to stop).
    fn run(self: Box<Self>, ctx: Context) -> TaskFuture;
}

/// A built component, ready to run.
pub enum Instance {
    /// A synchronous transform, driven by the runtime.
    Transform(Box<dyn Transform>),
    /// An async task.
    Task(Box<dyn Task>),
}

impl Instance {
    /// Wraps a transform.
    pub fn transform(t: impl Transform) -> Self {
        Instance::Transform(Box::new(t))
    }

    /// Wraps a task.
    pub fn task(t: impl Task) -> Self {
        Instance::Task(Box::new(t))
    }
}

/// Where a transform puts its output, port by port (index in the spec's outputs).
#[derive(Debug, Default)]
pub struct Outbox {
    ports: Vec<Vec<Message>>,
}

impl Outbox {
    /// An outbox for `ports` out-ports.
    pub fn new(ports: usize) -> Self {
        Outbox { ports: (0..ports.max(1)).map(|_| Vec::new()).collect() }
    }

    /// Emits on the first out-port (`out`).
    pub fn send(&mut self, msg: Message) {
        self.ports[0].push(msg);
    }

    /// Emits on out-port number `port`.
    pub fn send_to(&mut self, port: usize, msg: Message) {
        self.ports[port].push(msg);
    }

    /// Everything emitted on `port` so far, taken out.
    pub fn take(&mut self, port: usize) -> Vec<Message> {
        std::mem::take(&mut self.ports[port])
    }

    pub(crate) async fn deliver(&mut self, outputs: &[OutPort]) -> Result<(), Closed> {
        for (port, msgs) in outputs.iter().zip(self.ports.iter_mut()) {
            port.send_all(msgs.drain(..)).await?;
        }
        Ok(())
    }
}

/// What a running instance sees of the network.
pub struct Context {
    /// The component's name in the flow.
    pub name: Arc<str>,
    /// Its type name.
    pub type_name: &'static str,
    inputs: Vec<(Arc<str>, Option<InPort>)>,
    outputs: Vec<(Arc<str>, OutPort)>,
    errors: ErrorRoute,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    seq: Arc<AtomicU64>,
    pub(crate) carry: Arc<Mutex<Carry>>,
    /// Set when the network abandons a shutdown that timed out.
    aborted: Arc<AtomicBool>,
    /// Components downstream that hold this source's acknowledgements for a time.
    ack_holders: Arc<[AckHolder]>,
    /// Set by [`Context::permanent`]: the failure this instance returns is not retried.
    pub(crate) permanent: Arc<AtomicBool>,
}

/// What a failed instance of a transform leaves for the next one: the message
/// it had in hand (with the attempts so far and the last error) and the rest of
/// the batch it had taken from its queue.
#[derive(Debug, Default)]
pub(crate) struct Carry {
    pub(crate) in_hand: Option<(Message, u32, String)>,
    pub(crate) rest: Vec<Message>,
    /// What a task left to its next instance ([`Context::keep`]), with its attempts.
    pub(crate) kept: Vec<(Message, u32)>,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        name: Arc<str>,
        type_name: &'static str,
        inputs: Vec<(Arc<str>, InPort)>,
        outputs: Vec<(Arc<str>, OutPort)>,
        errors: ErrorRoute,
        shutdown: CancellationToken,
        metrics: Arc<Metrics>,
        seq: Arc<AtomicU64>,
    ) -> Self {
        let inputs = inputs.into_iter().map(|(n, p)| (n, Some(p))).collect();
        Context {
            name,
            type_name,
            inputs,
            outputs,
            errors,
            shutdown,
            metrics,
            seq,
            carry: Arc::default(),
            aborted: Arc::default(),
            ack_holders: Vec::new().into(),
            permanent: Arc::default(),
        }
    }

    /// Tells the component who downstream holds its acknowledgements.
    pub(crate) fn with_ack_holders(mut self, holders: Arc<[AckHolder]>) -> Self {
        self.ack_holders = holders;
        self
    }

    /// The components downstream (directly or through pass-through
    /// components) that hold this component's messages' acknowledgements for
    /// a time: whom a source names when its broker stops sending.
    pub fn ack_holders(&self) -> &[AckHolder] {
        &self.ack_holders
    }

    /// Shares the supervisor's carry-over between this instance and the next.
    pub(crate) fn with_carry(mut self, carry: Arc<Mutex<Carry>>) -> Self {
        self.carry = carry;
        self
    }

    /// Shares the network's abort flag (set when a shutdown times out).
    pub(crate) fn with_abort(mut self, aborted: Arc<AtomicBool>) -> Self {
        self.aborted = aborted;
        self
    }

    /// The out-ports, in declaration order (`err` last).
    pub(crate) fn output_ports(&self) -> Vec<OutPort> {
        self.outputs.iter().map(|(_, p)| p.clone()).collect()
    }

    pub(crate) fn errors(&self) -> &ErrorRoute {
        &self.errors
    }

    /// Takes the in-port called `name` (each can be taken once).
    pub fn input(&mut self, name: &str) -> InPort {
        self.inputs
            .iter_mut()
            .find(|(n, _)| &**n == name)
            .and_then(|(_, p)| p.take())
            .unwrap_or_else(|| InPort::new(Vec::new(), self.metrics.clone()))
    }

    /// The out-port called `name`.
    pub fn output(&self, name: &str) -> OutPort {
        self.outputs
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| OutPort::new(Vec::new(), self.metrics.clone()))
    }

    /// Fires when the flow is shutting down: a source stops taking new input.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Fresh metadata for a message this component ingests (next `seq`).
    pub fn meta(&self) -> Meta {
        Meta::new(self.name.clone(), self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// Like [`Context::meta`], ingested at `timestamp`: for the messages of a
    /// batch read at once, which then share one clock reading.
    pub fn meta_at(&self, timestamp: std::time::SystemTime) -> Meta {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        Meta { topic: None, source: self.name.clone(), timestamp, seq, headers: Default::default() }
    }

    /// An acknowledgement handle for a message this source ingests: `notify`
    /// learns the outcome once every copy is committed, dropped or
    /// dead-lettered (see [`Ack`]). A source that acknowledges to a broker
    /// acknowledges on [`Outcome::Delivered`] and leaves the message for
    /// redelivery (or sends a negative acknowledgement) on
    /// [`Outcome::Rejected`]. Copies still held when the network abandons a
    /// shutdown that timed out are reported `Rejected`, never `Delivered`.
    pub fn ack(&self, notify: impl Fn(Outcome) + Send + Sync + 'static) -> Ack {
        let aborted = self.aborted.clone();
        Ack::new(move |o| notify(if aborted.load(Ordering::Relaxed) { Outcome::Rejected } else { o }))
    }

    /// A failure no restart can fix (a missing input file, a database that
    /// does not exist, credentials refused, an address in use, a provider
    /// that refuses its config): return it, and the supervisor fails the
    /// flow at once with `message` instead of retrying. Say what to change.
    pub fn permanent(&self, message: impl Into<String>) -> Failure {
        self.permanent.store(true, Ordering::Relaxed);
        Failure(message.into())
    }

    /// Shares the supervisor's flag for [`Context::permanent`].
    pub(crate) fn with_permanent(mut self, flag: Arc<AtomicBool>) -> Self {
        self.permanent = flag;
        self
    }

    /// Leaves messages a task holds and has not finished with (each with
    /// the attempts it has had) to its next instance, after a failure. If
    /// no instance follows (past the restart limit), the network sends them
    /// to the dead letter, or counts and rejects them: never lost silently.
    pub fn keep(&self, kept: Vec<(Message, u32)>) {
        self.carry.lock().unwrap_or_else(|p| p.into_inner()).kept.extend(kept);
    }

    /// Takes what the last instance left with [`Context::keep`].
    pub fn take_kept(&self) -> Vec<(Message, u32)> {
        std::mem::take(&mut self.carry.lock().unwrap_or_else(|p| p.into_inner()).kept)
    }

    /// This component's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Sends a message this component cannot process to `err` (or the dead letter).
    pub async fn reject(&self, msg: &Message, error: &str) -> Result<(), Failure> {
        self.errors.route(msg, error, 1).await
    }
}
