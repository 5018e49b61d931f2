//! Property tests of the parsers that face files and peers, run for a
//! bounded number of cases and time in `cargo test` (select them with
//! `cargo test fuzz`). `tests/fuzz/README.md` says how to run longer and
//! how to add a seed; the line and length framing and topic templates are
//! crate-private and have their targets in `fbp-components`.

mod flow;
mod json;
mod support;
