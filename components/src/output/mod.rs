//! Sinks for people and benchmarks: print, or count and discard.

pub mod console;
pub mod null;
