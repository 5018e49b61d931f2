//! `exec`: runs a program as a source, transform or sink, speaking the DStream
//! provider protocol on its stdin and stdout.
//!
//! - `config`: the declaration, the config and the build (no I/O);
//! - `protocol`: the command envelope, and what a line of stdout says;
//! - `run`: the task: the process, its pipes, back-pressure, stopping it;
//! - `carry`: the messages a failed instance leaves to the next one.

mod carry;
mod config;
mod protocol;
mod run;
#[cfg(test)]
mod tests;

pub use config::SPEC;
