//! `kv-state`: the latest value per key, served live over HTTP, WebSocket and
//! Server-Sent Events, in the spirit of datastream (list keys, read the state,
//! subscribe to changes, push an update into the flow).
//!
//! - this file: the declaration, the config and the build (no I/O);
//! - `state`: the map, its version, capabilities, the `ttl` index and the
//!   change feed (no I/O);
//! - `store`: the [`store::Store`] trait and its SQLite and PostgreSQL backends;
//! - `server`: the axum routes, served by [`crate::net::server`] behind its
//!   `Host` and `Origin` checks;
//! - `run`: the task, the one writer of the state.

mod probe;
mod run;
mod server;
mod state;
mod store;
#[cfg(test)]
mod tests;

use std::time::Duration;

use fbp_runtime::jq::Program;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::units::positive_size;
use fbp_runtime::{Acks, BuildContext, ComponentSpec, Delivery, Instance, Kind, PortSpec};
use serde::Deserialize;

use self::store::StoreSpec;
use crate::net::server::{self as server_keys, Limits};

/// The `kv-state` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "kv-state",
    summary: "Keep the latest value per key and serve it live: list, read, subscribe (WebSocket/SSE), push updates.",
    doc: "Keeps the latest value per key of the messages on `in` (the key from the jq `key`, the \
          value the payload or the jq `value`) and serves it on `bind`: `GET /keys` lists the keys \
          with their capabilities (the value's type, and each field's type for an object); \
          `GET /state` gives every key and value as one object; `GET /state/{key}` one value (404 \
          for an unknown key); `GET /subscribe` (WebSocket, text frames) and `GET /events` \
          (Server-Sent Events) start with a full sync, `{\"type\":\"sync\",\"version\":N,\"state\":{..}}`, \
          then send one event per change, in order, `{\"type\":\"change\",\"version\":N,\"key\":K,\"value\":V}`, \
          or per removal, `{\"type\":\"delete\",\"version\":N,\"key\":K}` (SSE event names `sync`, \
          `change` and `delete`, SSE id the version). An update that leaves a key's value as it was \
          is not a change. A key is removed by `DELETE /state/{key}` (204; 404 for a key the state \
          does not hold; not sent on `out`), by an update whose value is `null` (unless \
          `null_deletes = false`, which keeps the key holding `null`), or once it has not been \
          updated for `ttl` (swept on a timer, at most 1024 keys a sweep); a removal frees its \
          place under `max_keys` and is written to the store like any change. A subscriber is never waited for: one that falls more \
          than `subscriber_buffer` changes behind is sent a fresh full sync (any sync replaces what \
          the subscriber held). `PUT /state/{key}` with a JSON body applies the update and sends it \
          into the flow on `out` (topic: the key, header `origin = \"api\"`), answered 202 with \
          `{\"key\",\"version\"}` once it is queued on `out`; 400 when the body is not JSON, 404 for a \
          key the state does not hold (unless `put_creates`), 422 when the value's type is not the \
          key's, 413 past `max_body_size`, 507 past `max_keys`, 503 while shutting down. With \
          `emit_changes` every change from `in` is sent on `out` too, carrying its input's \
          acknowledgement. A message whose key is not a string or a number, or a new key past \
          `max_keys`, goes to `err`. With `store = \"sqlite:PATH\"` or a PostgreSQL URI every change (a removal \
          too) is committed to the database (a batch at a time, before its messages are acknowledged) and \
          the state is loaded from it at start, so it survives a restart; with `memory` it starts \
          empty. A store that fails (PostgreSQL is reconnected once per batch first) fails the \
          component: its batch is rejected and the supervisor restarts it, which loads the state \
          again. Who may ask: a request whose `Host` is not the bind address (for a \
          loopback bind also `localhost`, `127.0.0.1`, `[::1]`; for a wildcard bind any IP \
          address) or in `allowed_hosts` gets 421 (DNS rebinding); one with an `Origin` that is \
          not its own or in `allowed_origins` gets 403, WebSocket and SSE included (no `Origin`, \
          as from curl, is answered); with `auth = { token }` one without `Authorization: \
          Bearer TOKEN` gets 401; `tls = { cert, key }` serves HTTPS. Connections are bounded \
          by `max_connections`, `read_timeout` (head, TLS handshake, `PUT` body: 408) and \
          `idle_timeout` (subscribers are pinged every 15s); what a WebSocket subscriber sends \
          is ignored, past `max_message_size` its connection is closed. The component keeps serving after its input ends, until the flow shuts down, when the server stops, its \
          subscribers are disconnected and the input is drained.",
    kind: Kind::Transform,
    inputs: &[PortSpec {
        name: "in",
        ty: "json",
        doc: "updates: a key (from `key`) and a value (the payload or `value`)",
    }],
    outputs: &[PortSpec {
        name: "out",
        ty: "json",
        doc: "updates pushed through `PUT /state/{key}` (topic: the key); with `emit_changes`, every change from `in` too",
    }],
    config: &[
        KeySpec::required(
            "key",
            KeyType::Expr,
            "The key of a message, a jq expression giving a string (or a number), e.g. `.sensor`.",
        ),
        KeySpec::optional(
            "value",
            KeyType::Expr,
            "The value to keep, a jq expression, e.g. `.value`. Unset: the whole payload.",
        ),
        KeySpec::new("bind", KeyType::String, "\"127.0.0.1:8091\"", "The address the API listens on, `HOST:PORT`."),
        KeySpec::new(
            "store",
            KeyType::String,
            "\"memory\"",
            "Where the state survives a restart: `\"memory\"` (nowhere), `\"sqlite:PATH\"` (a relative \
             path is taken from the flow file's folder) or PostgreSQL, as a URI \
             (`\"postgresql://user@host/db\"`) or `\"postgres:\"` and a connection string \
             (`\"postgres:host=127.0.0.1 dbname=app\"`). Either way the table `kv_state` (made if \
             missing) holds one row per component and key; in PostgreSQL the value is `JSONB`.",
        ),
        KeySpec::new(
            "max_keys",
            KeyType::Integer,
            "10000",
            "Most keys held; an update that would add one more goes to `err` (a PUT gets 507). A \
             removed key (`DELETE`, `null`, `ttl`) frees its place.",
        ),
        KeySpec::new(
            "null_deletes",
            KeyType::Bool,
            "true",
            "An update whose value (after `value`) is `null` removes its key, as `DELETE` does; \
             `false`: the key is kept, holding `null`.",
        ),
        KeySpec::optional(
            "ttl",
            KeyType::Duration,
            "Remove a key not updated for this long (an update that leaves its value as it was \
             counts), e.g. `\"10m\"`; subscribers see a `delete`, the store forgets it. Unset: keys \
             stay until removed.",
        ),
        KeySpec::new(
            "subscriber_buffer",
            KeyType::Integer,
            "1024",
            "How many changes a subscriber may fall behind before it is sent a fresh full sync instead.",
        ),
        KeySpec::new(
            "max_body_size",
            KeyType::String,
            "\"64KiB\"",
            "The largest `PUT` body, as a size; a larger one gets 413.",
        ),
        KeySpec::new(
            "max_message_size",
            KeyType::String,
            "\"64KiB\"",
            "The largest WebSocket frame or message a subscriber may send (they are read and \
             ignored); a larger one closes its connection.",
        ),
        KeySpec::new(
            "allowed_hosts",
            KeyType::StringList,
            "[]",
            "`Host` names answered besides the bind address (`name` for any port, `name:port` for \
             one), e.g. the gateway's DNS name; any other gets 421, so a web page cannot reach \
             the API through a name it controls (DNS rebinding).",
        ),
        KeySpec::new(
            "allowed_origins",
            KeyType::StringList,
            "[]",
            "Origins (`\"https://dash.example\"`) whose pages may call the API besides its own; \
             a request with another `Origin` gets 403 (one without, as from curl, is answered).",
        ),
        server_keys::READ_TIMEOUT_KEY,
        server_keys::IDLE_TIMEOUT_KEY,
        server_keys::MAX_CONNECTIONS_KEY,
        server_keys::AUTH_KEY,
        server_keys::TLS_KEY,
        KeySpec::new(
            "emit_changes",
            KeyType::Bool,
            "false",
            "Send every change from `in` on `out` as well, not only the updates pushed through the API.",
        ),
        KeySpec::new(
            "put_creates",
            KeyType::Bool,
            "false",
            "Let `PUT` add keys the state does not hold yet (else 404).",
        ),
    ],
    delivery: Delivery::AtLeastOnce,
    acks: Acks::Holds {
        when: "once its change is committed to the store, a batch at a time as messages arrive (with \
               `store = \"memory\"` at once); with `emit_changes` once the change sent on `out` is delivered: \
               it holds nothing for a time of its own",
        hold: |_| None,
        fix: "",
    },
    stateless: false,
    example: "[components.state]\ntype = \"kv-state\"\nconfig = { key = \".sensor\", bind = \"127.0.0.1:8091\", store = \"sqlite:state.db\" }\n",
    build,
    ports: None,
    probe: Some(probe::PROBE),
};

#[derive(Deserialize)]
struct Config {
    key: String,
    value: Option<String>,
    bind: String,
    store: String,
    max_keys: usize,
    null_deletes: bool,
    #[serde(default, deserialize_with = "fbp_runtime::units::opt_duration")]
    ttl: Option<Duration>,
    subscriber_buffer: usize,
    max_body_size: String,
    max_message_size: String,
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
    emit_changes: bool,
    put_creates: bool,
}

/// A built `kv-state`.
struct KvState {
    key: Program,
    value: Option<Program>,
    bind: String,
    store: StoreSpec,
    max_keys: usize,
    /// Whether a `null` value removes its key.
    null_deletes: bool,
    /// How long a key lives without an update.
    ttl: Option<Duration>,
    subscriber_buffer: usize,
    max_body: usize,
    /// Frames and messages from subscribers.
    max_message: usize,
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
    limits: Limits,
    emit_changes: bool,
    put_creates: bool,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    check_bind(&config.bind)?;
    if config.max_keys == 0 {
        return Err("`max_keys` must be at least 1".into());
    }
    if config.ttl == Some(Duration::ZERO) {
        return Err("`ttl` must be more than 0s (leave it unset to keep keys until removed)".into());
    }
    if config.subscriber_buffer == 0 {
        return Err("`subscriber_buffer` must be at least 1".into());
    }
    Ok(Instance::task(KvState {
        key: Program::compile(&config.key)?,
        value: config.value.as_deref().map(Program::compile).transpose()?,
        store: StoreSpec::parse(&config.store, |p| ctx.path(p))?,
        bind: config.bind,
        max_keys: config.max_keys,
        null_deletes: config.null_deletes,
        ttl: config.ttl,
        subscriber_buffer: config.subscriber_buffer,
        max_body: positive_size("max_body_size", &config.max_body_size)?,
        max_message: positive_size("max_message_size", &config.max_message_size)?,
        allowed_hosts: config.allowed_hosts,
        allowed_origins: config.allowed_origins,
        limits: Limits::from_config(ctx)?,
        emit_changes: config.emit_changes,
        put_creates: config.put_creates,
    }))
}

fn check_bind(bind: &str) -> Result<(), String> {
    match bind.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(format!("`bind = \"{bind}\"`: write `HOST:PORT`, e.g. \"127.0.0.1:8091\"")),
    }
}
