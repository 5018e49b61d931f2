//! Brokers, servers and sockets: the components that talk to the network
//! ([`mqtt`]: `mqtt-subscribe`, `mqtt-publish`).
//!
//! Each keeps a [`fbp_runtime::link::Link`] per connection (state logged once
//! per change, reconnection with backoff, never giving up) and shares the TLS
//! set-up in [`tls`].

pub mod mqtt;
pub mod nats;
pub mod template;
pub mod tls;
