//! The control plane: one actix actor per component supervises its instances.
//!
//! The actor builds an instance from the component's declaration and config,
//! runs it as a task on the data-plane runtime, and watches the task. When the
//! instance ends, the actor decides: done (its inputs are closed, or it is a
//! finished source), restart (a failure or a panic, within the restart budget,
//! after an exponential backoff), or failed (past the budget). A restarted
//! instance gets clones of the same queues: nothing queued is lost. A panic is
//! caught by the task boundary; it never reaches a thread, an arbiter or
//! another component.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::component::{Carry, Context as ComponentContext, Failure, Instance};
use crate::deadletter::{DeadLetter, ErrorRoute};
use crate::drive::{drive, panic_text};
use crate::flow::acks::AckHolder;
use crate::flow::{Node, Policy};
use crate::message::Message;
use crate::metrics::Metrics;
use crate::port::PortType;
use crate::queue::{InPort, OutPort, Queue};
use crate::spec::{BuildContext, Kind};

/// What a supervisor tells the network.
#[derive(Debug)]
pub(crate) enum Event {
    /// The component has finished; its outputs are closed.
    Finished(usize),
    /// The component failed past its restart budget, or for good (`true`);
    /// with the messages it had taken from its queues but not processed.
    Failed(usize, String, bool, Vec<Message>),
}

/// The queues one component reads and writes, owned by the network.
#[derive(Clone)]
pub(crate) struct Wiring {
    pub(crate) inputs: Vec<(Arc<str>, Vec<Queue>)>,
    /// Per in-port, a type to check each message against (fed by a `json` port).
    pub(crate) checks: Vec<Option<PortType>>,
    pub(crate) outputs: Vec<(Arc<str>, Vec<Queue>)>,
    /// Who downstream holds this component's acknowledgements for a time.
    pub(crate) ack_holders: Arc<[AckHolder]>,
}

impl Wiring {
    fn inputs_closed(&self) -> bool {
        self.inputs.iter().flat_map(|(_, qs)| qs).all(|q| q.is_closed() && q.is_empty())
    }

    fn close_outputs(&self) {
        self.outputs.iter().flat_map(|(_, qs)| qs).for_each(Queue::close);
    }
}

/// The restart budget: restarts within the window, and the next backoff.
pub(crate) struct Budget {
    recent: VecDeque<Instant>,
    backoff: Duration,
}

impl Budget {
    fn new(min: Duration) -> Self {
        Budget { recent: VecDeque::new(), backoff: min }
    }

    /// The delay before the next restart, or `None` past the limit.
    /// `ran` is how long the instance ran: longer than the maximum backoff resets it.
    pub(crate) fn next(&mut self, now: Instant, ran: Duration, r: &crate::flow::Restart) -> Option<Duration> {
        if ran > r.backoff_max {
            self.backoff = r.backoff_min;
        }
        while self.recent.front().is_some_and(|t| now.duration_since(*t) > r.within) {
            self.recent.pop_front();
        }
        if self.recent.len() as u32 >= r.max_restarts {
            return None;
        }
        self.recent.push_back(now);
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(r.backoff_max);
        Some(delay)
    }
}

/// Supervises one component.
pub(crate) struct Supervisor {
    pub(crate) index: usize,
    pub(crate) node: Node,
    pub(crate) wiring: Arc<Wiring>,
    pub(crate) data: tokio::runtime::Handle,
    pub(crate) shutdown: CancellationToken,
    pub(crate) events: UnboundedSender<Event>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) dead_letter: Option<Arc<DeadLetter>>,
    pub(crate) seq: Arc<AtomicU64>,
    pub(crate) carry: Arc<Mutex<Carry>>,
    pub(crate) aborted: Arc<AtomicBool>,
    pub(crate) budget: Budget,
    pub(crate) running: usize,
    pub(crate) finished: bool,
    /// Restarts waiting out their backoff: a shutdown launches them at once
    /// (a source's are dropped: it would only stop again).
    pub(crate) pending: Vec<SpawnHandle>,
    /// Set when an instance failed with [`ComponentContext::permanent`].
    pub(crate) permanent: Arc<AtomicBool>,
}

impl Supervisor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        index: usize,
        node: Node,
        wiring: Arc<Wiring>,
        data: tokio::runtime::Handle,
        shutdown: CancellationToken,
        events: UnboundedSender<Event>,
        metrics: Arc<Metrics>,
        dead_letter: Option<Arc<DeadLetter>>,
        aborted: Arc<AtomicBool>,
    ) -> Self {
        let budget = Budget::new(node.restart.backoff_min);
        Supervisor {
            index,
            node,
            wiring,
            data,
            shutdown,
            events,
            metrics,
            dead_letter,
            seq: Arc::default(),
            carry: Arc::default(),
            aborted,
            budget,
            running: 0,
            finished: false,
            pending: Vec::new(),
            permanent: Arc::default(),
        }
    }

    fn context(&self) -> ComponentContext {
        let out = |qs: &Vec<Queue>| OutPort::new(qs.iter().map(Queue::sender).collect(), self.metrics.clone());
        let outputs: Vec<(Arc<str>, OutPort)> =
            self.wiring.outputs.iter().map(|(n, qs)| (n.clone(), out(qs))).collect();
        let err_port =
            outputs.iter().find(|(n, _)| &**n == "err").map(|(_, p)| p.clone()).unwrap_or_else(|| out(&Vec::new()));
        let errors = ErrorRoute {
            component: self.node.name.clone(),
            type_name: self.node.spec.name,
            port: err_port,
            dead_letter: self.dead_letter.clone(),
            metrics: self.metrics.clone(),
        };
        let inputs = self
            .wiring
            .inputs
            .iter()
            .zip(&self.wiring.checks)
            .map(|((n, qs), check)| {
                let port = InPort::new(qs.iter().map(Queue::receiver).collect(), self.metrics.clone());
                let port = match check {
                    Some(ty) => port.with_check(ty.clone(), errors.clone()),
                    None => port,
                };
                (n.clone(), port)
            })
            .collect();
        ComponentContext::new(
            self.node.name.clone(),
            self.node.spec.name,
            inputs,
            outputs,
            errors,
            self.shutdown.clone(),
            self.metrics.clone(),
            self.seq.clone(),
        )
        .with_carry(self.carry.clone())
        .with_abort(self.aborted.clone())
        .with_ack_holders(self.wiring.ack_holders.clone())
        .with_permanent(self.permanent.clone())
    }

    fn launch(&mut self, ctx: &mut actix::Context<Self>) {
        let build = BuildContext {
            name: self.node.name.clone(),
            config: self.node.config.clone(),
            base_dir: self.node.base_dir.clone(),
        };
        let component = self.context();
        let build_fn = self.node.spec.build;
        let started = Instant::now();
        let handle = self.data.spawn(async move {
            match build_fn(&build).map_err(Failure)? {
                Instance::Transform(t) => drive(t, component).await,
                Instance::Task(t) => t.run(component).await,
            }
        });
        self.running += 1;
        ctx.spawn(actix::fut::wrap_future::<_, Self>(handle).map(move |res, act, ctx| {
            let result = match res {
                Ok(r) => r,
                Err(e) if e.is_panic() => Err(Failure(format!("panicked: {}", panic_text(&*e.into_panic())))),
                Err(e) => Err(Failure(e.to_string())),
            };
            act.exited(result, started.elapsed(), ctx);
        }));
    }

    fn exited(&mut self, result: Result<(), Failure>, ran: Duration, ctx: &mut actix::Context<Self>) {
        self.running -= 1;
        let name = self.node.name.clone();
        let reason = match result {
            Ok(()) if self.done_after_stop() => return self.worker_done(ctx),
            Ok(()) => "stopped while its inputs are still open".to_string(),
            Err(f) => f.0,
        };
        let permanent = self.permanent.swap(false, Ordering::Relaxed);
        let restartable = match self.node.restart.policy {
            Policy::Never => false,
            Policy::OnFailure | Policy::Always => !permanent,
        };
        let delay = if restartable && !self.shutdown.is_cancelled() {
            self.budget.next(Instant::now(), ran, &self.node.restart)
        } else {
            None
        };
        match delay {
            Some(delay) => {
                tracing::warn!(component = %name, error = %reason, restart_in = ?delay, "Component failed; restarting.");
                self.metrics.restarts.fetch_add(1, Ordering::Relaxed);
                let handle = ctx.run_later(delay, |act, ctx| {
                    act.pending.pop();
                    act.launch(ctx)
                });
                self.pending.push(handle);
            }
            None if permanent => {
                tracing::error!(component = %name, error = %reason, "Component failed; restarting cannot fix this.");
                self.give_up(reason, true, ctx);
            }
            None => {
                tracing::error!(component = %name, error = %reason, "Component failed and will not be restarted.");
                self.give_up(reason, false, ctx);
            }
        }
    }

    /// No restart: once no instance runs, hands what it held to the network.
    fn give_up(&mut self, reason: String, permanent: bool, ctx: &mut actix::Context<Self>) {
        if self.running == 0 {
            let carry = std::mem::take(&mut *self.carry.lock().unwrap_or_else(|p| p.into_inner()));
            let kept = carry.kept.into_iter().map(|(m, _)| m);
            let left: Vec<Message> =
                carry.in_hand.map(|(m, _, _)| m).into_iter().chain(kept).chain(carry.rest).collect();
            let _ = self.events.send(Event::Failed(self.index, reason, permanent, left));
            ctx.stop();
        }
    }

    /// Whether an instance that returned `Ok` is done rather than to be restarted.
    fn done_after_stop(&self) -> bool {
        self.node.spec.kind == Kind::Source || self.node.restart.policy != Policy::Always || self.wiring.inputs_closed()
    }

    /// The flow is shutting down: restarts waiting out a backoff happen now,
    /// so the instance drains its inputs; a source, or a component nothing
    /// is connected to, has nothing to drain and is done.
    fn shutting_down(&mut self, ctx: &mut actix::Context<Self>) {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return;
        }
        for handle in &pending {
            ctx.cancel_future(*handle);
        }
        let nothing_to_drain = self.wiring.inputs.iter().all(|(_, qs)| qs.is_empty());
        if self.node.spec.kind == Kind::Source || nothing_to_drain {
            tracing::info!(component = %self.node.name, "Shutting down; the restart it waited for is cancelled.");
            return self.worker_done(ctx);
        }
        for _ in pending {
            self.launch(ctx);
        }
    }

    fn worker_done(&mut self, ctx: &mut actix::Context<Self>) {
        if self.running > 0 || self.finished {
            return;
        }
        self.finished = true;
        self.wiring.close_outputs();
        let _ = self.events.send(Event::Finished(self.index));
        ctx.stop();
    }
}

impl Actor for Supervisor {
    type Context = actix::Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        for _ in 0..self.node.workers.max(1) {
            self.launch(ctx);
        }
        let shutdown = self.shutdown.clone().cancelled_owned();
        ctx.spawn(actix::fut::wrap_future::<_, Self>(shutdown).map(|(), act, ctx| act.shutting_down(ctx)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Restart;

    fn restart(max: u32) -> Restart {
        Restart {
            policy: Policy::Always,
            max_restarts: max,
            within: Duration::from_secs(60),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
        }
    }

    #[test]
    fn backoff_doubles_to_its_maximum_and_the_budget_runs_out() {
        let r = restart(5);
        let mut b = Budget::new(r.backoff_min);
        let t = Instant::now();
        let delays: Vec<_> = (0..5).map(|_| b.next(t, Duration::ZERO, &r).unwrap().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000]);
        assert_eq!(b.next(t, Duration::ZERO, &r), None);
    }

    #[test]
    fn a_healthy_run_resets_the_backoff_and_old_restarts_expire() {
        let r = restart(2);
        let mut b = Budget::new(r.backoff_min);
        let t = Instant::now();
        b.next(t, Duration::ZERO, &r);
        b.next(t, Duration::ZERO, &r);
        let later = t + Duration::from_secs(61);
        assert_eq!(b.next(later, Duration::from_secs(5), &r), Some(Duration::from_millis(100)));
    }
}
