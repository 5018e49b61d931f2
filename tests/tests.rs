//! Integration tests: one binary, driving the real `fbp` executable and the
//! runtime against real files and processes.

mod catalogue;
mod cli;
mod exec;
mod flow_errors;
mod nats;
mod relay;
mod run;
mod subflows;
mod supervision;
mod util;
