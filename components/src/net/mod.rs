//! Brokers, servers and sockets: the components that talk to the network.
//!
//! Each keeps a [`fbp_runtime::link::Link`] per connection (state logged once
//! per change, reconnection with backoff, never giving up) and shares the TLS
//! set-up in [`tls`].

pub mod http;
pub mod tls;
