//! A running network: queues created up front and owned here, one supervisor
//! actor per component, and the coordinator that decides when the run ends.
//!
//! Threads: the data plane (component tasks and their queues) runs on a
//! multi-threaded tokio runtime; the control plane (the supervisors) runs in an
//! actix system on the calling thread.

use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::deadletter::{DeadLetter, ErrorRoute};
use crate::flow::{Flow, OnFailure};
use crate::message::Message;
use crate::metrics::{Registry, Summary};
use crate::queue::OutPort;
use crate::queue::{Queue, WhenFull};
use crate::supervisor::{Event, Supervisor, Wiring};

/// How to run a flow.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// How long a graceful shutdown may take before the rest is abandoned.
    pub shutdown_timeout: Duration,
    /// Cancel it to stop the flow gracefully (the CLI cancels it on SIGINT/SIGTERM).
    pub shutdown: CancellationToken,
    /// Data-plane threads; `None` for one per core.
    pub threads: Option<usize>,
    /// How often to log a status line (`None`: never).
    pub status_every: Option<Duration>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            shutdown_timeout: Duration::from_secs(10),
            shutdown: CancellationToken::new(),
            threads: None,
            status_every: None,
        }
    }
}

/// Why a run did not end cleanly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// A component failed past its restart limit and the flow stopped.
    #[error("component `{component}` failed: {reason}")]
    ComponentFailed {
        /// The component.
        component: String,
        /// Its last error.
        reason: String,
        /// Whether it was a failure no restart can fix ([`crate::Context::permanent`]).
        permanent: bool,
    },
    /// The graceful shutdown did not finish in time.
    #[error("shutdown timed out after {timeout:?}; still running: {pending}")]
    ShutdownTimeout {
        /// The limit.
        timeout: Duration,
        /// Components that had not finished.
        pending: String,
    },
    /// The flow could not start.
    #[error("cannot start: {0}")]
    Start(String),
}

/// How a run ended, with every component's counters.
#[derive(Debug)]
pub struct RunReport {
    /// `Ok` when every source finished (or was stopped) and everything drained.
    pub result: Result<(), RunError>,
    /// Per-component counters, in flow order.
    pub summaries: Vec<Summary>,
}

/// Stack of each data-plane thread: room for the deepest value a jq program
/// can build within its step budget (less on a 32-bit target, whose address
/// space is small).
#[cfg(target_pointer_width = "64")]
const DATA_STACK: usize = 256 << 20;
#[cfg(not(target_pointer_width = "64"))]
const DATA_STACK: usize = 32 << 20;

/// Runs a flow until its sources finish and it drains, or until `opts.shutdown`
/// fires and it drains. Blocks the calling thread.
pub fn run(flow: Flow, opts: RunOptions) -> RunReport {
    let metrics = Arc::new(Registry::default());
    let nodes: Vec<(Arc<str>, &'static crate::spec::ComponentSpec)> =
        flow.nodes.iter().map(|n| (n.name.clone(), n.spec)).collect();
    let started = std::time::Instant::now();
    let result = run_inner(flow, &opts, &metrics);
    let mut summaries = metrics.summaries(nodes.iter().map(|(n, _)| &**n));
    for (s, (_, spec)) in summaries.iter_mut().zip(&nodes) {
        s.type_name = spec.name;
        s.sink = spec.kind == crate::spec::Kind::Sink;
        if s.ran.is_zero() {
            s.ran = started.elapsed();
        }
    }
    RunReport { result, summaries }
}

fn run_inner(flow: Flow, opts: &RunOptions, metrics: &Arc<Registry>) -> Result<(), RunError> {
    flow.limits.apply();
    crate::fd::raise_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // A value a jq program builds may nest as deep as its step budget lets
    // it (`reduce range(300000) as $i (null; [.])`), and is dropped by
    // recursion inside jaq: the data threads have room for that (only what
    // is touched is memory).
    builder.enable_all().thread_name("fbp-data").thread_stack_size(DATA_STACK);
    if let Some(n) = opts.threads {
        builder.worker_threads(n);
    }
    let data = builder.build().map_err(|e| RunError::Start(format!("cannot start the data runtime: {e}")))?;
    let dead_letter = match &flow.dead_letter {
        Some(path) => Some(Arc::new(
            DeadLetter::open(path)
                .map_err(|e| RunError::Start(format!("cannot open dead_letter `{}`: {e}", path.display())))?,
        )),
        None => None,
    };
    let (wirings, buffered) = wire(&flow);
    let settling = start_buffers(&flow, buffered, data.handle(), metrics)?;
    let system = actix::System::new();
    let result =
        system.block_on(coordinate(flow, wirings, data.handle().clone(), opts.clone(), metrics.clone(), dead_letter));
    settle_buffers(&data, settling);
    data.shutdown_timeout(Duration::from_millis(100));
    result
}

/// How long an ending flow waits for its disk buffers to write the position
/// of what the targets committed last (whatever is not written is replayed).
const BUFFER_SETTLE: Duration = Duration::from_secs(2);

fn settle_buffers(data: &tokio::runtime::Runtime, settling: Vec<tokio::task::JoinHandle<()>>) {
    if settling.is_empty() {
        return;
    }
    data.block_on(async {
        let _ = tokio::time::timeout(BUFFER_SETTLE, futures_util::future::join_all(settling)).await;
    });
}

/// A buffered connection's two queues: into the buffer, out of it.
pub(crate) struct Buffered {
    edge: usize,
    input: Queue,
    output: Queue,
}

/// Opens every connection's disk buffer, then starts the tasks that move
/// messages through them (returned: each ends once its buffer has settled);
/// a buffer that cannot be opened stops the start.
fn start_buffers(
    flow: &Flow,
    buffered: Vec<Buffered>,
    data: &tokio::runtime::Handle,
    metrics: &Arc<Registry>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, RunError> {
    let mut opened = Vec::with_capacity(buffered.len());
    let mut dirs = std::collections::HashSet::new();
    for b in buffered {
        // `check` catches this within one file; a subflow used twice repeats its paths.
        if let Some(e) = flow.edges[b.edge].buffer.as_ref().filter(|e| !dirs.insert(e.path.clone())) {
            return Err(RunError::Start(format!("two connections buffer in {}", e.path.display())));
        }
        let config = flow.edges[b.edge].buffer.as_ref().map(|e| e.config());
        let Some(config) = config else { continue };
        let buffer = crate::buffer::DiskBuffer::open(&config).map_err(|e| RunError::Start(e.to_string()))?;
        tracing::info!(path = %config.path.display(), bytes = buffer.bytes(), "Disk buffer opened.");
        opened.push((b, buffer));
    }
    let start = |(b, buffer): (Buffered, crate::buffer::DiskBuffer)| {
        let upstream = metrics.component(&flow.nodes[flow.edges[b.edge].from.node].name);
        crate::buffer::forward::spawn(data, buffer, &b.input, &b.output, upstream)
    };
    Ok(opened.into_iter().map(start).collect())
}

/// Creates one queue per connection (two around a disk buffer) and hands
/// each component its ends.
pub(crate) fn wire(flow: &Flow) -> (Vec<Wiring>, Vec<Buffered>) {
    let inputs: Vec<Queue> = flow.edges.iter().map(|e| Queue::new(e.capacity, e.when_full)).collect();
    let mut buffered = Vec::new();
    let mut queues = inputs.clone();
    for (edge, e) in flow.edges.iter().enumerate().filter(|(_, e)| e.buffer.is_some()) {
        let output = Queue::new(e.capacity, WhenFull::Block);
        queues[edge] = output.clone();
        buffered.push(Buffered { edge, input: inputs[edge].clone(), output });
    }
    let wirings = flow
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let ins = |p: usize| {
                flow.edges
                    .iter()
                    .zip(&queues)
                    .filter(|(e, _)| e.to.node == i && e.to.port == p)
                    .map(|(_, q)| q.clone())
                    .collect()
            };
            let outs = |p: usize| {
                flow.edges
                    .iter()
                    .zip(&inputs)
                    .filter(|(e, _)| e.from.node == i && e.from.port == p)
                    .map(|(_, q)| q.clone())
                    .collect()
            };
            let check =
                |p: usize| flow.edges.iter().find(|e| e.to.node == i && e.to.port == p).and_then(|e| e.check.clone());
            Wiring {
                checks: (0..node.inputs.len()).map(check).collect(),
                inputs: node.inputs.iter().enumerate().map(|(p, port)| (port.name.clone(), ins(p))).collect(),
                outputs: node.outputs.iter().enumerate().map(|(p, port)| (port.name.clone(), outs(p))).collect(),
                ack_holders: crate::flow::acks::holders(flow, i).into(),
            }
        })
        .collect();
    (wirings, buffered)
}

async fn coordinate(
    flow: Flow,
    wirings: Vec<Wiring>,
    data: tokio::runtime::Handle,
    opts: RunOptions,
    metrics: Arc<Registry>,
    dead_letter: Option<Arc<crate::deadletter::DeadLetter>>,
) -> Result<(), RunError> {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let sources = opts.shutdown.child_token();
    let mut running = vec![true; flow.nodes.len()];
    let aborted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for (i, (node, wiring)) in flow.nodes.iter().zip(wirings.iter()).enumerate() {
        let m = metrics.component(&node.name);
        Supervisor::new(
            i,
            node.clone(),
            Arc::new(wiring.clone()),
            data.clone(),
            sources.clone(),
            events_tx.clone(),
            m,
            dead_letter.clone(),
            aborted.clone(),
        )
        .start();
    }
    drop(events_tx);
    tracing::info!(flow = %flow.name, components = flow.nodes.len(), connections = flow.edges.len(), "Flow started.");
    for node in &flow.nodes {
        if let Some(to) = crate::report::destination(node) {
            tracing::info!(component = %node.name, "{} ({}) writes to {to}.", node.name, node.spec.name);
        }
    }
    let started = tokio::time::Instant::now();
    let finished = |i: usize| {
        let ms = started.elapsed().as_millis().max(1) as u64;
        metrics.component(&flow.nodes[i].name).finished_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    };
    let every = opts.status_every.unwrap_or(Duration::MAX / 4);
    let mut status = tokio::time::interval_at(started + every, every);
    let is_source: Vec<bool> = flow.nodes.iter().map(|n| n.spec.kind == crate::spec::Kind::Source).collect();
    let names: Vec<&str> = flow.nodes.iter().map(|n| &*n.name).collect();
    let mut failure = None;
    let deadline = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(deadline);
    let mut draining = false;
    let mut drains = Vec::new();
    while running.iter().any(|r| *r) {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(Event::Finished(i)) => {
                    running[i] = false;
                    finished(i);
                }
                Some(Event::Failed(i, reason, permanent, left)) => {
                    running[i] = false;
                    finished(i);
                    let component = flow.nodes[i].name.to_string();
                    match flow.on_component_failure {
                        OnFailure::Stop => {
                            tracing::error!(component = %component, "Component failed; stopping the flow.");
                            failure.get_or_insert(RunError::ComponentFailed { component, reason, permanent });
                            sources.cancel();
                        }
                        OnFailure::Isolate => {
                            tracing::error!(component = %component, "Component failed; isolating it.");
                            failure.get_or_insert(RunError::ComponentFailed { component, reason, permanent });
                        }
                    }
                    let route = ErrorRoute {
                        component: flow.nodes[i].name.clone(),
                        type_name: flow.nodes[i].spec.name,
                        port: OutPort::new(Vec::new(), metrics.component(&flow.nodes[i].name)),
                        dead_letter: dead_letter.clone(),
                        metrics: metrics.component(&flow.nodes[i].name),
                    };
                    drains.push(drain_failed(&flow.nodes[i], &wirings[i], left, route, &data));
                    wirings[i].outputs.iter().flat_map(|(_, qs)| qs).for_each(Queue::close);
                }
                None => break,
            },
            _ = status.tick() => {
                let mut now = metrics.summaries(names.iter().copied());
                for (s, node) in now.iter_mut().zip(&flow.nodes) {
                    s.sink = node.spec.kind == crate::spec::Kind::Sink;
                }
                let (taken, at_sinks, errors, dropped) = crate::report::totals(&now, &is_source);
                tracing::info!(taken, at_sinks, errors, dropped, "Flowing.");
            }
            _ = sources.cancelled(), if !draining => {
                draining = true;
                tracing::info!(timeout = ?opts.shutdown_timeout, "Shutting down: sources stop, queues drain.");
                deadline.as_mut().reset(tokio::time::Instant::now() + opts.shutdown_timeout);
            }
            _ = &mut deadline => {
                let pending: Vec<String> = flow.nodes.iter().zip(&running).filter(|(_, r)| **r).map(|(n, _)| n.name.to_string()).collect();
                // What is still held is abandoned: its sources learn `Rejected`, not `Delivered`.
                aborted.store(true, std::sync::atomic::Ordering::Relaxed);
                actix::System::current().stop();
                return Err(failure.unwrap_or(RunError::ShutdownTimeout { timeout: opts.shutdown_timeout, pending: pending.join(", ") }));
            }
        }
    }
    // A failed component's input closes once its upstream has finished: by now.
    for d in drains {
        let _ = d.await;
    }
    actix::System::current().stop();
    failure.map_or(Ok(()), Err)
}

/// Empties a failed component's inputs so its upstream never blocks: each
/// message goes to the dead letter, or (without one) is counted and marked
/// rejected, so its source learns it was not delivered.
fn drain_failed(
    node: &crate::flow::Node,
    wiring: &Wiring,
    left: Vec<Message>,
    route: ErrorRoute,
    data: &tokio::runtime::Handle,
) -> tokio::task::JoinHandle<()> {
    let name = &node.name;
    if route.dead_letter.is_none() {
        tracing::warn!(component = %name, "No dead_letter in the flow: the failed component's input is counted and dropped.");
    }
    let error: Arc<str> = format!("component `{name}` ({}) failed and was isolated", node.spec.name).into();
    let receivers: Vec<_> = wiring.inputs.iter().flat_map(|(_, qs)| qs).map(|q| q.receiver()).collect();
    data.spawn(async move {
        for m in left {
            dispose(&route, &m, &error).await;
        }
        let mut input = crate::queue::InPort::new(receivers, route.metrics.clone());
        while let Some(m) = input.recv().await {
            dispose(&route, &m, &error).await;
        }
    })
}

async fn dispose(route: &ErrorRoute, m: &Message, error: &str) {
    if route.dead_letter.is_some() {
        let _ = route.route(m, error, 0).await;
    } else {
        route.metrics.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(a) = &m.ack {
            a.reject();
        }
    }
}
