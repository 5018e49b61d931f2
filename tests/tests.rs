//! Integration tests: one binary, driving the real `fbp` executable and the
//! runtime against real files and processes.

mod amqp;
mod buffer;
mod catalogue;
mod cli;
mod exec;
mod flow_errors;
mod fuzz;
mod hostile;
mod http;
mod kv_state;
mod mqtt;
mod mqtt_sessions;
mod nats;
mod postgres;
mod probe;
mod relay;
mod run;
mod servers;
mod sinks;
mod sockets;
mod subflows;
mod supervision;
mod unix;
mod util;
