//! Sinks for people and benchmarks: print, or count and discard.
