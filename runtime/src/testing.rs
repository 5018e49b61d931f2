//! A harness to unit-test a component without a whole flow.
//!
//! ```text
//! let mut h = Harness::new(&MY_SPEC, json!({"every": "1s"}));
//! h.push("in", payload);          // queue input
//! let out = h.run_to_end().await; // close inputs, run, collect every port
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio_util::sync::CancellationToken;

use crate::component::{Context, Failure, Instance};
use crate::deadletter::ErrorRoute;
use crate::drive::drive;
use crate::message::{Message, Meta};
use crate::metrics::Metrics;
use crate::queue::{InPort, OutPort, Queue, WhenFull};
use crate::spec::{BuildContext, ComponentSpec};
use crate::value::{self, Value};

/// One component instance wired to in-memory queues.
pub struct Harness {
    spec: &'static ComponentSpec,
    config: serde_json::Value,
    inputs: Vec<(Arc<str>, Queue)>,
    outputs: Vec<(Arc<str>, Queue)>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    seq: u64,
    /// Shared by every run, as the supervisor shares it between instances.
    carry: Arc<std::sync::Mutex<crate::component::Carry>>,
}

/// What a run produced, port by port.
#[derive(Debug, Default)]
pub struct Output {
    /// `(port, messages)` for every out-port, `err` last.
    pub ports: Vec<(Arc<str>, Vec<Message>)>,
    /// How the instance ended.
    pub result: Option<Result<(), Failure>>,
}

impl Output {
    /// The payloads sent on `port`.
    pub fn payloads(&self, port: &str) -> Vec<Value> {
        self.messages(port).iter().map(|m| m.payload.clone()).collect()
    }

    /// The payloads sent on `port`, as JSON text.
    pub fn json(&self, port: &str) -> Vec<String> {
        self.payloads(port).iter().map(value::to_json_string).collect()
    }

    /// The messages sent on `port`.
    pub fn messages(&self, port: &str) -> &[Message] {
        self.ports.iter().find(|(n, _)| &**n == port).map(|(_, m)| m.as_slice()).unwrap_or(&[])
    }
}

impl Harness {
    /// A harness for `spec` with `config` (defaults from the spec are filled in).
    pub fn new(spec: &'static ComponentSpec, config: serde_json::Value) -> Self {
        let mut config = match config {
            serde_json::Value::Object(m) => m,
            _ => Default::default(),
        };
        for key in spec.config {
            if let (Some(default), false) = (key.default, config.contains_key(key.name)) {
                let v: toml::Value =
                    toml::from_str::<toml::Table>(&format!("v = {default}")).expect("default parses")["v"].clone();
                config.insert(key.name.into(), serde_json::to_value(v).expect("toml to json"));
            }
        }
        let q = || Queue::new(65_536, WhenFull::Block);
        let config = serde_json::Value::Object(config);
        let (inputs, outputs) = spec.resolve_ports(&config);
        Harness {
            spec,
            config,
            inputs: inputs.into_iter().map(|p| (p.name, q())).collect(),
            outputs: outputs.into_iter().map(|p| (p.name, q())).collect(),
            shutdown: CancellationToken::new(),
            metrics: Arc::default(),
            carry: Arc::default(),
            seq: 0,
        }
    }

    /// Queues a payload on in-port `port`.
    pub fn push(&mut self, port: &str, payload: Value) {
        let meta = Meta::new("test".into(), self.seq);
        self.seq += 1;
        self.push_message(port, Message::new(payload, meta));
    }

    /// Queues a JSON payload (given as text) on `in`.
    pub fn push_json(&mut self, json: &str) {
        self.push("in", value::parse_json(json.as_bytes()).expect("test JSON parses"));
    }

    /// Queues a whole message on in-port `port`.
    pub fn push_message(&mut self, port: &str, msg: Message) {
        let q = &self.inputs.iter().find(|(n, _)| &**n == port).expect("no such in-port").1;
        q.sender().0.try_send(msg).expect("harness queue has room");
    }

    /// The token that tells a source to stop.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The instance's counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Runs `spec` with `config` over `payloads` on its `in` port; what it sent, port by port.
    pub async fn run_payloads(spec: &'static ComponentSpec, config: serde_json::Value, payloads: Vec<Value>) -> Output {
        let mut h = Harness::new(spec, config);
        payloads.into_iter().for_each(|p| h.push("in", p));
        h.run_to_end().await
    }

    /// Builds the component, closes its inputs, runs it to its end and collects its output.
    pub async fn run_to_end(&mut self) -> Output {
        for (_, q) in &self.inputs {
            q.close();
        }
        self.run().await
    }

    /// Builds and runs the component until it ends (a source ends by itself or on shutdown).
    pub async fn run(&mut self) -> Output {
        let ctx = BuildContext { name: "test".into(), config: self.config.clone(), base_dir: PathBuf::from(".") };
        let instance = match (self.spec.build)(&ctx) {
            Ok(i) => i,
            Err(e) => {
                return Output { ports: Vec::new(), result: Some(Err(Failure(e))) };
            }
        };
        let result = match instance {
            Instance::Transform(t) => drive(t, self.context()).await,
            Instance::Task(t) => t.run(self.context()).await,
        };
        let ports = self
            .outputs
            .iter()
            .map(|(name, q)| {
                let rx = q.receiver();
                (name.clone(), std::iter::from_fn(|| rx.try_recv().ok()).collect())
            })
            .collect();
        Output { ports, result: Some(result) }
    }

    fn context(&self) -> Context {
        let out = |q: &Queue| OutPort::new(vec![q.sender()], self.metrics.clone());
        let err = &self.outputs.last().expect("err port").1;
        Context::new(
            "test".into(),
            self.spec.name,
            self.inputs
                .iter()
                .map(|(n, q)| (n.clone(), InPort::new(vec![q.receiver()], self.metrics.clone())))
                .collect(),
            self.outputs.iter().map(|(n, q)| (n.clone(), out(q))).collect(),
            ErrorRoute {
                component: "test".into(),
                type_name: self.spec.name,
                port: out(err),
                dead_letter: None,
                metrics: self.metrics.clone(),
            },
            self.shutdown.clone(),
            self.metrics.clone(),
            Arc::new(AtomicU64::new(0)),
        )
        .with_carry(self.carry.clone())
    }
}
