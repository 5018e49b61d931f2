//! Live state: components that keep the latest value per key and serve it
//! (`kv-state`: list keys, read the state, subscribe to changes, push an
//! update into the flow, over HTTP, WebSocket and Server-Sent Events).

pub mod kv;
