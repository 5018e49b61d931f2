//! Transforms: reshape, select, aggregate.

pub mod filter;
pub mod map;
pub mod switch;
pub mod window;
