//! The task: the one writer of the state. It loads the store, starts the
//! server, then applies what comes from `in`, from `PUT`s and `DELETE`s and
//! from the `ttl` sweep, in arrival order, until the flow shuts down and its
//! input has ended.

use std::sync::Arc;
use std::time::Duration;

use fbp_runtime::queue::OutPort;
use fbp_runtime::value::{self, Value};
use fbp_runtime::{Context, Failure, Message, Task, TaskFuture};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::KvState;
use super::server::{self, Api, Put, Reply};
use super::state::{Refused, Shared};
use super::store::{Change, Store};
use crate::net::server::host::Allowed;
use crate::storage::reject_all;

/// Most messages taken from `in` at once (one store transaction).
const BATCH: usize = 256;
/// How long the server may take to close its connections at the end.
const SERVER_GRACE: Duration = Duration::from_secs(2);
/// How often a quiet subscriber is pinged (at most half of `idle_timeout`).
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Most keys one `ttl` sweep removes (one store transaction); the rest wait for the next.
const SWEEP: usize = 1024;

type BoxStore = Option<Box<dyn Store>>;

impl Task for KvState {
    fn run(self: Box<Self>, ctx: Context) -> TaskFuture {
        Box::pin(self.serve(ctx))
    }
}

impl KvState {
    async fn serve(self: Box<Self>, mut ctx: Context) -> Result<(), Failure> {
        let mut input = ctx.input("in");
        let out = ctx.output("out");
        let shared = Shared::new(self.max_keys, self.ttl, self.subscriber_buffer);
        let mut store = self.load(&ctx.name, &shared).await?;
        let listener = TcpListener::bind(&self.bind)
            .await
            .map_err(|e| crate::net::bind_failure(&ctx, "listen", &self.bind, &e))?;
        let local = listener.local_addr()?;
        let allowed = Allowed::new(&self.bind, local, self.limits.tls(), &self.allowed_hosts, &self.allowed_origins);
        let (puts_tx, mut puts) = mpsc::channel(64);
        let stop = CancellationToken::new();
        let api = Api {
            shared: shared.clone(),
            puts: puts_tx,
            stop: stop.clone(),
            max_body: self.max_body,
            max_message: self.max_message,
            read_timeout: self.limits.read_timeout,
            keep_alive: KEEP_ALIVE.min(self.limits.idle_timeout / 2),
        };
        let task = tokio::spawn(server::serve(listener, api, self.limits.clone(), allowed));
        let mut server = Server { stop: stop.clone(), task };
        tracing::info!(
            component = %ctx.name, bind = %self.bind, address = %local, tls = self.limits.tls(),
            keys = shared.read().len(), "State API listening."
        );

        let (mut batch, mut input_open) = (Vec::with_capacity(BATCH), true);
        let mut sweep = tokio::time::interval(sweep_period(self.ttl));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while input_open || !stop.is_cancelled() {
            tokio::select! {
                biased;
                _ = ctx.shutdown().cancelled(), if !stop.is_cancelled() => {
                    stop.cancel();
                    puts.close();
                }
                _ = sweep.tick(), if self.ttl.is_some() => store = expire(&shared, store, &ctx.name).await?,
                more = input.recv_many(&mut batch, BATCH), if input_open => {
                    if more {
                        store = self.apply_batch(&batch, &shared, store, &ctx, &out).await?;
                        batch.clear();
                    } else {
                        input_open = false;
                    }
                }
                Some(put) = puts.recv() => store = self.apply_put(put, &shared, store, &ctx, &out).await?,
            }
        }
        server.shut_down(&ctx.name).await;
        Ok(())
    }

    /// Opens the store and loads what it holds into the state.
    async fn load(&self, name: &str, shared: &Shared) -> Result<BoxStore, Failure> {
        let (spec, name) = (self.store.clone(), name.to_string());
        let opened = tokio::task::spawn_blocking(move || {
            let mut store = spec.open(&name)?;
            let rows = match &mut store {
                Some(s) => s.load()?,
                None => Vec::new(),
            };
            Ok::<_, String>((store, rows))
        })
        .await
        .map_err(|e| Failure(format!("kv-state store crashed: {e}")))?;
        let (store, rows) = opened.map_err(Failure)?;
        for (key, json) in rows {
            let loaded = value::parse_json(json.as_bytes()).map_err(|e| e.to_string());
            if let Err(e) = loaded.and_then(|v| shared.update(&key, v).map_err(|e| e.to_string())) {
                tracing::warn!(key = %key, error = %e, "Stored key not loaded.");
            }
        }
        Ok(store)
    }

    /// The key and value of a message, or why it has none.
    fn key_value(&self, msg: &Message) -> Result<(String, Value), String> {
        let key = match self.key.first(msg)? {
            Some(v @ Value::Num(_)) => value::to_json_string(&v),
            Some(ref v) if matches!(v, Value::TStr(_)) => value::as_str(v).unwrap_or_default().into_owned(),
            Some(v) => return Err(format!("the key must be a string or a number, not {}", value::type_name(&v))),
            None => return Err("`key` gave no output".into()),
        };
        let value = match &self.value {
            Some(p) => p.first(msg)?.ok_or("`value` gave no output")?,
            None => msg.payload.clone(),
        };
        Ok((key, value))
    }

    /// Sets `key` to `value`, or removes it when the value is `null` and
    /// `null_deletes`; the change for the store when the state changed.
    fn change(&self, shared: &Shared, key: &str, value: Value) -> Result<Option<Change>, Refused> {
        if self.null_deletes && matches!(value, Value::Null) {
            return Ok(shared.remove(key).then(|| (key.to_string(), None)));
        }
        Ok(shared.update(key, value)?.map(|json| (key.to_string(), Some(json.to_string()))))
    }

    /// Applies a batch from `in`, commits its changes, then lets its messages go.
    async fn apply_batch(
        &self,
        batch: &[Message],
        shared: &Shared,
        store: BoxStore,
        ctx: &Context,
        out: &OutPort,
    ) -> Result<BoxStore, Failure> {
        let (mut changes, mut emits) = (Vec::new(), Vec::new());
        for msg in batch {
            let (key, value) = match self.key_value(msg) {
                Ok(kv) => kv,
                Err(e) => {
                    ctx.reject(msg, &e).await?;
                    continue;
                }
            };
            match self.change(shared, &key, value.clone()) {
                Err(refused) => ctx.reject(msg, &format!("key `{key}`: {refused}")).await?,
                Ok(None) => {}
                Ok(Some(change)) => {
                    if self.emit_changes {
                        emits.push(keyed(msg.with_payload(value), &key, None));
                    }
                    if store.is_some() {
                        changes.push(change);
                    }
                }
            }
        }
        let store = persist(store, changes).await.inspect_err(|_| reject_all(batch))?;
        out.send_all(emits).await?;
        Ok(store)
    }

    /// Applies an update pushed through the API, commits it, sends it on `out`, answers;
    /// or applies and commits a `DELETE`.
    async fn apply_put(
        &self,
        put: Put,
        shared: &Shared,
        store: BoxStore,
        ctx: &Context,
        out: &OutPort,
    ) -> Result<BoxStore, Failure> {
        let Put { key, value, reply } = put;
        let Some(value) = value else { return delete(key, reply, shared, store).await };
        let checked = shared.read().check_put(&key, &value, self.put_creates);
        let changed = match checked.and_then(|()| self.change(shared, &key, value.clone())) {
            Ok(changed) => changed,
            Err(refused) => {
                let _ = reply.send(Err(refused));
                return Ok(store);
            }
        };
        let store = match changed {
            Some(change) => persist(store, vec![change]).await?,
            None => store,
        };
        let version = shared.read().version();
        out.send(keyed(Message::new(value, ctx.meta()), &key, Some("api"))).await?;
        // The client may have gone; the update stands.
        let _ = reply.send(Ok(version));
        Ok(store)
    }
}

/// The running server. However the instance ends (a failure or a panic too),
/// dropping this stops the server and frees its port for the next instance.
struct Server {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Stops taking requests, ends the subscriptions, and waits a little for the connections to close.
    async fn shut_down(&mut self, name: &str) {
        self.stop.cancel();
        // A client that stopped reading keeps its connection open: it is cut on drop.
        if tokio::time::timeout(SERVER_GRACE, &mut self.task).await.is_err() {
            tracing::warn!(component = %name, "State API connections did not close in time; closing them.");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

/// The message with the key as its topic (and an `origin` header for API updates).
fn keyed(msg: Message, key: &str, origin: Option<&str>) -> Message {
    let mut meta = (*msg.meta).clone();
    meta.topic = Some(key.into());
    if let Some(origin) = origin {
        meta.headers.insert("origin".into(), origin.into());
    }
    Message { payload: msg.payload, meta: Arc::new(meta), ack: msg.ack }
}

/// Removes `key` (a `DELETE`), commits it, answers with the new version (or
/// `UnknownKey` when the state did not hold it).
async fn delete(key: String, reply: Reply, shared: &Shared, store: BoxStore) -> Result<BoxStore, Failure> {
    if !shared.remove(&key) {
        let _ = reply.send(Err(Refused::UnknownKey));
        return Ok(store);
    }
    let store = persist(store, vec![(key, None)]).await?;
    let _ = reply.send(Ok(shared.read().version()));
    Ok(store)
}

/// Removes the keys whose `ttl` has passed (at most [`SWEEP`]) and commits their removal.
async fn expire(shared: &Shared, store: BoxStore, name: &str) -> Result<BoxStore, Failure> {
    let expired = shared.expire(tokio::time::Instant::now(), SWEEP);
    if !expired.is_empty() {
        tracing::debug!(component = %name, keys = expired.len(), "Keys expired.");
    }
    persist(store, expired.into_iter().map(|key| (key, None)).collect()).await
}

/// How often the `ttl` sweep runs: a quarter of `ttl`, between 10ms and 1s.
fn sweep_period(ttl: Option<Duration>) -> Duration {
    ttl.map_or(Duration::from_secs(3600), |ttl| (ttl / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)))
}

/// Commits changes to the store (on the blocking pool); a failure breaks the component.
async fn persist(store: BoxStore, changes: Vec<Change>) -> Result<BoxStore, Failure> {
    let mut store = match store {
        Some(s) if !changes.is_empty() => s,
        other => return Ok(other),
    };
    let saved = tokio::task::spawn_blocking(move || store.save(&changes).map(|()| store)).await;
    match saved {
        Ok(Ok(store)) => Ok(Some(store)),
        Ok(Err(e)) => Err(Failure(e)),
        Err(e) => Err(Failure(format!("kv-state store crashed: {e}"))),
    }
}
