//! The fbp runtime: message model, flow loader, data plane and supervisor.
//!
//! How the pieces fit:
//!
//! - [`value`] and [`message`]: the payload (a jq value), metadata and the
//!   acknowledgement handle every message carries.
//! - [`port`] and [`spec`]: port types, and the one declaration each component
//!   type makes ([`spec::ComponentSpec`]).
//! - [`flow`]: what the user wrote (`RawFlow`, spanned, unchecked) becomes a
//!   [`flow::Flow`] (resolved, typed, checked), with rustc-style diagnostics.
//! - [`queue`]: bounded queues, one per connection, owned by the network;
//!   [`buffer`]: a connection's disk buffer (store and forward).
//! - [`component`]: the two component shapes and the context an instance sees;
//!   `drive` runs a transform in batches and contains its panics (the message in
//!   hand is retried once by the next instance).
//! - [`deadletter`]: where messages a component could not process go;
//!   [`ratelimit`]: per-message warnings limited to a few per interval.
//! - [`network`] and [`supervisor`]: the running network; one actix actor per
//!   component supervises its instance, which runs as a tokio task.
//! - [`metrics`], [`jq`], [`graph`], [`launch`]: counters, jq programs, graph
//!   rendering and the `launch` pipeline parser.
//! - [`uri`] and [`relay`]: the table of URI schemes, and the two-component
//!   flow `fbp relay` builds from a source and a sink URI.
//! - [`link`]: a network component's connection state (logged once per
//!   change) and its reconnection backoff; [`secret`]: secrets in URLs masked.
//! - [`fd`]: the descriptor limit, raised at start, and listeners' share of it.
//! - [`docs`], [`units`], [`testing`]: text for `describe` and the docs,
//!   durations and sizes, and a harness to test one component without a flow;
//!   [`testbed`]: real brokers started on free ports for tests.

pub mod buffer;
pub mod cause;
pub mod channel;
pub mod component;
pub mod deadletter;
pub mod docs;
mod drive;
pub mod fd;
pub mod flow;
pub mod graph;
pub mod jq;
pub mod launch;
pub mod link;
pub mod message;
pub mod metrics;
pub mod network;
pub mod port;
pub mod queue;
pub mod ratelimit;
pub mod relay;
pub mod report;
pub mod secret;
pub mod skeleton;
pub mod spec;
pub mod supervisor;
pub mod testbed;
pub mod testing;
pub mod units;
pub mod uri;
pub mod value;

pub use component::{Context, Failure, Instance, Outbox, Task, TaskFuture, Transform};
pub use message::{Ack, Message, Meta, Outcome};
pub use spec::{
    Acks, BuildContext, Catalogue, ComponentSpec, Delivery, KeySpec, KeyType, Kind, PortSpec, Probe, ProbeFn,
    ProbeFuture,
};
pub use value::Value;
