//! The fbp component catalogue.
//!
//! One module per component type, grouped by family:
//!
//! - [`generate`]: sources that make their own messages (`counter`,
//!   `sensor-sim`, `inject`);
//! - [`transform`]: reshape, select, route, aggregate, pace (`map`,
//!   `filter`, `switch`, `window`, `batch`, `split`, `dedupe`, `throttle`,
//!   `delay`, `decode`, `encode`);
//! - [`io`]: the process's standard input (`stdin`);
//! - [`output`]: sinks for people and benchmarks (`console`, `null`);
//! - [`storage`]: files and databases (`file-read`, `file-write`, `sqlite`,
//!   `postgres`, `postgres-read`);
//! - [`process`]: programs in any language as components (`exec`);
//! - [`net`]: brokers, servers and sockets (`mqtt-*`, `nats-*`, `amqp-*`,
//!   `http-*`, `tcp-listen`, `udp-listen`, `websocket`);
//! - [`state`]: live state served over HTTP, WebSocket and SSE (`kv-state`).
//!
//! `sink_retry` is how every sink keeps the batch in hand through a failure
//! that passes (a lock, a lost connection, a server refusing for a while).
//!
//! Each module declares its type in a `pub static SPEC: ComponentSpec`;
//! [`CATALOGUE`] lists them all, and that list is the only place a new
//! component is registered.

mod codec;
pub mod generate;
pub mod io;
pub mod net;
pub mod output;
mod probe;
pub mod process;
mod sink_retry;
pub mod state;
pub mod storage;
pub mod transform;

/// Seeds, mutations and a bounded runner for the property tests of the
/// crate-private parsers (shared with `tests/fuzz/`).
#[cfg(test)]
#[path = "../../tests/fuzz/support.rs"]
mod fuzz_support;

use fbp_runtime::Catalogue;

/// Every component type fbp knows.
pub static CATALOGUE: Catalogue = Catalogue(&[
    &generate::counter::SPEC,
    &generate::sensor_sim::SPEC,
    &generate::inject::SPEC,
    &generate::fault::SPEC,
    &transform::map::SPEC,
    &transform::filter::SPEC,
    &transform::window::SPEC,
    &transform::decode::SPEC,
    &transform::encode::SPEC,
    &transform::switch::SPEC,
    &transform::dedupe::SPEC,
    &transform::split::SPEC,
    &transform::batch::SPEC,
    &transform::throttle::SPEC,
    &transform::delay::SPEC,
    &io::stdin::SPEC,
    &output::console::SPEC,
    &output::null::SPEC,
    &storage::file_read::SPEC,
    &storage::file_write::SPEC,
    &storage::sqlite::SPEC,
    &storage::postgres::SPEC,
    &storage::postgres_read::SPEC,
    &process::exec::SPEC,
    &state::kv::SPEC,
    &net::mqtt::subscribe::SPEC,
    &net::mqtt::publish::SPEC,
    &net::amqp::subscribe::SPEC,
    &net::amqp::publish::SPEC,
    &net::tcp::SPEC,
    &net::udp::SPEC,
    &net::websocket::SPEC,
    &net::nats::subscribe::SPEC,
    &net::nats::publish::SPEC,
    &net::http::poll::SPEC,
    &net::http::listen::SPEC,
    &net::http::request::SPEC,
]);
