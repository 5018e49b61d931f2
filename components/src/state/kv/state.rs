//! The state itself: the latest value per key, a version that counts changes,
//! and the change feed subscribers follow. No I/O here: the task is the one
//! writer, the HTTP server reads, and every reader locks only briefly (never
//! across an `.await`).
//!
//! A change is applied and published under the same lock, and a subscriber
//! takes its full sync and its place in the feed under that lock too, so what
//! it receives is exactly "the state at version N, then every change after N,
//! in order". The feed is a bounded ring (`tokio::sync::broadcast`): a
//! subscriber that falls more than its length behind misses changes, learns
//! it (`Lagged`), and is sent a fresh full sync instead; the writer never waits.
//!
//! A key is removed by its writer (`DELETE`, a `null` update) or expires once
//! it has not been updated for `ttl`: an index by last update lets a sweep
//! find the oldest keys without walking the map.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fbp_runtime::value::{self, Value};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// One key's latest value, and its JSON text (rendered once per change).
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) value: Value,
    pub(crate) json: Arc<str>,
    /// When the key was last updated (changed or not).
    touched: Instant,
}

/// Why an update was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// A new key while the state already holds `max_keys` keys.
    Full(usize),
    /// A `PUT` to a key the state does not hold (and `put_creates` is off).
    UnknownKey,
    /// A `PUT` whose value's type is not the key's (its capability).
    WrongType { have: &'static str, got: &'static str },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Full(n) => write!(f, "the state already holds `max_keys` = {n} keys"),
            Refused::UnknownKey => f.write_str("unknown key"),
            Refused::WrongType { have, got } => write!(f, "the key's type is {have}, not {got}"),
        }
    }
}

/// The latest value per key, bounded to `max_keys` keys.
#[derive(Debug)]
pub(crate) struct State {
    entries: BTreeMap<String, Entry>,
    version: u64,
    max_keys: usize,
    /// How long a key lives without an update; `None`: for ever.
    ttl: Option<Duration>,
    /// The keys by last update, oldest first (kept only with a `ttl`).
    by_age: BTreeSet<(Instant, String)>,
}

impl State {
    pub(crate) fn new(max_keys: usize, ttl: Option<Duration>) -> Self {
        State { entries: BTreeMap::new(), version: 0, max_keys, ttl, by_age: BTreeSet::new() }
    }

    /// Sets `key` to `value`. `Ok(Some(json))` when the state changed (the
    /// version moved on), `Ok(None)` when the key already held that value
    /// (it counts as an update for `ttl` all the same).
    pub(crate) fn apply(&mut self, key: &str, value: Value) -> Result<Option<Arc<str>>, Refused> {
        let json: Arc<str> = value::to_json_string(&value).into();
        let (len, now) = (self.entries.len(), Instant::now());
        let (before, changed) = match self.entries.get_mut(key) {
            Some(e) if e.json == json => (Some(std::mem::replace(&mut e.touched, now)), false),
            Some(e) => (Some(std::mem::replace(e, Entry { value, json: json.clone(), touched: now }).touched), true),
            None if len >= self.max_keys => return Err(Refused::Full(self.max_keys)),
            None => {
                self.entries.insert(key.to_string(), Entry { value, json: json.clone(), touched: now });
                (None, true)
            }
        };
        self.age(key, before, Some(now));
        if !changed {
            return Ok(None);
        }
        self.version += 1;
        Ok(Some(json))
    }

    /// Removes `key`; whether the state held it (the version moved on).
    pub(crate) fn remove(&mut self, key: &str) -> bool {
        let Some(entry) = self.entries.remove(key) else { return false };
        self.age(key, Some(entry.touched), None);
        self.version += 1;
        true
    }

    /// Up to `most` keys not updated for `ttl` at `now`, oldest first.
    pub(crate) fn expired(&self, now: Instant, most: usize) -> Vec<String> {
        let Some(ttl) = self.ttl else { return Vec::new() };
        let due = self.by_age.iter().take_while(|(touched, _)| *touched + ttl <= now);
        due.take(most).map(|(_, key)| key.clone()).collect()
    }

    /// Moves `key` in the age index from `before` to `after`.
    fn age(&mut self, key: &str, before: Option<Instant>, after: Option<Instant>) {
        if self.ttl.is_none() {
            return;
        }
        if let Some(t) = before {
            self.by_age.remove(&(t, key.to_string()));
        }
        if let Some(t) = after {
            self.by_age.insert((t, key.to_string()));
        }
    }

    /// Whether a `PUT` of `value` to `key` may be applied: the key exists (or
    /// `creates`), and the value has the key's type (unless the key holds null).
    pub(crate) fn check_put(&self, key: &str, value: &Value, creates: bool) -> Result<(), Refused> {
        match self.entries.get(key) {
            None if creates => Ok(()),
            None => Err(Refused::UnknownKey),
            Some(e) => {
                let (have, got) = (value::type_name(&e.value), value::type_name(value));
                if have == got || have == "null" || got == "null" {
                    Ok(())
                } else {
                    Err(Refused::WrongType { have, got })
                }
            }
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Every key and value as one JSON object, keys in order.
    pub(crate) fn to_json(&self) -> String {
        let mut out = String::with_capacity(2 + self.entries.len() * 32);
        out.push('{');
        for (i, (k, e)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&json_string(k));
            out.push(':');
            out.push_str(&e.json);
        }
        out.push('}');
        out
    }

    /// The full-sync event: `{"type":"sync","version":N,"state":{..}}`.
    pub(crate) fn sync_event(&self) -> Arc<str> {
        format!(r#"{{"type":"sync","version":{},"state":{}}}"#, self.version, self.to_json()).into()
    }

    /// The keys with their capabilities: the value's type and, for an object,
    /// the type of each of its fields.
    pub(crate) fn capabilities(&self) -> serde_json::Value {
        let keys = self.entries.iter().map(|(k, e)| {
            let mut cap = serde_json::json!({"key": k, "type": value::type_name(&e.value)});
            if let Value::Obj(fields) = &e.value {
                let fields: serde_json::Map<String, serde_json::Value> = fields
                    .iter()
                    .map(|(f, v)| {
                        (
                            value::as_str(f).map_or_else(|| value::to_json_string(f), |s| s.into_owned()),
                            value::type_name(v).into(),
                        )
                    })
                    .collect();
                cap["fields"] = fields.into();
            }
            cap
        });
        serde_json::Value::Array(keys.collect())
    }
}

/// The change event: `{"type":"change","version":N,"key":K,"value":V}`.
pub(crate) fn change_event(version: u64, key: &str, json: &str) -> Arc<str> {
    format!(r#"{{"type":"change","version":{version},"key":{},"value":{json}}}"#, json_string(key)).into()
}

/// The removal event: `{"type":"delete","version":N,"key":K}`.
pub(crate) fn delete_event(version: u64, key: &str) -> Arc<str> {
    format!(r#"{{"type":"delete","version":{version},"key":{}}}"#, json_string(key)).into()
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// What one event to a subscriber is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// The whole state; replaces whatever the subscriber held.
    Sync,
    /// One key's new value.
    Change,
    /// One key removed.
    Delete,
}

impl EventKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::Sync => "sync",
            EventKind::Change => "change",
            EventKind::Delete => "delete",
        }
    }
}

/// An event's JSON text with the version it brings the subscriber to.
type Versioned = (u64, Arc<str>);

/// A feed event: what it is, and its text with its version.
type Fed = (EventKind, Versioned);

/// The state shared between the task (the writer) and the server (readers).
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    feed: broadcast::Sender<Fed>,
}

impl Shared {
    /// A state of at most `max_keys` keys, each living `ttl` without an
    /// update, whose subscribers may fall `buffer` changes behind.
    pub(crate) fn new(max_keys: usize, ttl: Option<Duration>, buffer: usize) -> Arc<Self> {
        let state = Mutex::new(State::new(max_keys, ttl));
        Arc::new(Shared { state, feed: broadcast::channel(buffer.max(1)).0 })
    }

    /// Locks the state to read it.
    pub(crate) fn read(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent map (every write is one insert or
        // removal, with its `ttl` index entry moved beside it).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies an update and publishes it to subscribers; the new value's JSON when it changed.
    pub(crate) fn update(&self, key: &str, value: Value) -> Result<Option<Arc<str>>, Refused> {
        let mut state = self.read();
        let changed = state.apply(key, value)?;
        if let Some(json) = &changed {
            let version = state.version();
            // No subscriber is not an error: the event is simply not kept.
            let _ = self.feed.send((EventKind::Change, (version, change_event(version, key, json))));
        }
        Ok(changed)
    }

    /// Removes `key` and publishes its removal; whether the state held it.
    pub(crate) fn remove(&self, key: &str) -> bool {
        let mut state = self.read();
        let removed = state.remove(key);
        if removed {
            self.publish_removal(&state, key);
        }
        removed
    }

    /// Removes up to `most` keys not updated for `ttl` at `now` and publishes
    /// their removals; the keys removed.
    pub(crate) fn expire(&self, now: Instant, most: usize) -> Vec<String> {
        let mut state = self.read();
        let mut keys = state.expired(now, most);
        keys.retain(|key| {
            let removed = state.remove(key);
            if removed {
                self.publish_removal(&state, key);
            }
            removed
        });
        keys
    }

    fn publish_removal(&self, state: &State, key: &str) {
        let version = state.version();
        let _ = self.feed.send((EventKind::Delete, (version, delete_event(version, key))));
    }

    /// A subscription: a full sync, then every change after it, in order.
    pub(crate) fn subscribe(self: &Arc<Self>) -> Subscription {
        let (rx, sync) = self.sync_point();
        Subscription { shared: self.clone(), rx, pending: Some(sync), resyncs: 0 }
    }

    fn sync_point(&self) -> (broadcast::Receiver<Fed>, Versioned) {
        let state = self.read();
        (self.feed.subscribe(), (state.version(), state.sync_event()))
    }
}

/// One subscriber's view of the feed.
pub(crate) struct Subscription {
    shared: Arc<Shared>,
    rx: broadcast::Receiver<Fed>,
    pending: Option<Versioned>,
    resyncs: u64,
}

impl Subscription {
    /// The next event: `(kind, version, JSON text)`. After falling behind, a fresh full sync.
    pub(crate) async fn next(&mut self) -> (EventKind, u64, Arc<str>) {
        if let Some((version, sync)) = self.pending.take() {
            return (EventKind::Sync, version, sync);
        }
        match self.rx.recv().await {
            Ok((kind, (version, event))) => (kind, version, event),
            // `Closed` cannot happen while we hold the sender through `shared`.
            Err(_) => {
                self.resyncs += 1;
                let (rx, (version, sync)) = self.shared.sync_point();
                self.rx = rx;
                (EventKind::Sync, version, sync)
            }
        }
    }

    /// How many times this subscriber fell behind and was sent a full sync again.
    pub(crate) fn resyncs(&self) -> u64 {
        self.resyncs
    }
}
