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
//! - [`storage`]: sinks that keep data (`file-write`, `sqlite`);
//! - [`process`]: programs in any language as components (`exec`);
//! - [`net`]: brokers, servers and sockets (`mqtt-subscribe`, `mqtt-publish`).
//!
//! Each module declares its type in a `pub static SPEC: ComponentSpec`;
//! [`CATALOGUE`] lists them all, and that list is the only place a new
//! component is registered.

mod codec;
pub mod generate;
pub mod io;
pub mod net;
pub mod output;
pub mod process;
pub mod storage;
pub mod transform;

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
    &process::exec::SPEC,
    &net::mqtt::subscribe::SPEC,
    &net::mqtt::publish::SPEC,
    &net::nats::subscribe::SPEC,
    &net::nats::publish::SPEC,
]);
