//! Transforms: reshape, select, route, aggregate, pace.
//!
//! Most are synchronous functions of one message; `window`, `batch`,
//! `throttle` and `delay` keep timers, and share the helpers in `timer`.

pub mod batch;
pub mod decode;
pub mod dedupe;
pub mod delay;
pub mod encode;
pub mod filter;
pub mod map;
pub mod split;
pub mod switch;
pub mod throttle;
mod timer;
pub mod window;
