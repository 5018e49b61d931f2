//! Transforms: reshape, select, aggregate.

pub mod batch;
pub mod dedupe;
pub mod decode;
pub mod encode;
pub mod filter;
pub mod map;
pub mod split;
pub mod switch;
pub mod throttle;
mod timer;
pub mod window;
