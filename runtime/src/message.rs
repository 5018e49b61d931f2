//! Messages: a payload, its metadata, and the acknowledgement it carries.
//!
//! A `Message` is cheap to clone: the payload shares its contents by reference
//! count, the metadata sits behind an `Arc`, and so does the acknowledgement.
//! Fan-out hands every receiver a clone; nothing is deep-copied.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use crate::value::{self, Json, Value};

/// Metadata every message carries (DESIGN §3b).
#[derive(Clone, Debug, PartialEq)]
pub struct Meta {
    /// MQTT topic, NATS subject, HTTP path or file name; `None` where there is none.
    pub topic: Option<Arc<str>>,
    /// The component the message came from.
    pub source: Arc<str>,
    /// Ingest time.
    pub timestamp: SystemTime,
    /// Sequence number, per source.
    pub seq: u64,
    /// Free string headers.
    pub headers: BTreeMap<String, String>,
}

impl Meta {
    /// Metadata for a message a source ingests now.
    pub fn new(source: Arc<str>, seq: u64) -> Self {
        Meta { topic: None, source, timestamp: SystemTime::now(), seq, headers: BTreeMap::new() }
    }

    /// The metadata as the jq value `$meta`.
    pub fn to_value(&self) -> Value {
        value::object(self.fields())
    }

    fn fields(&self) -> Vec<(&'static str, Value)> {
        let topic = self.topic.as_deref().map_or(Value::Null, value::string);
        let headers = value::object(self.headers.iter().map(|(k, v)| (k.clone(), value::string(v.as_str()))));
        vec![
            ("topic", topic),
            ("source", value::string(&*self.source)),
            ("timestamp", value::string(format_timestamp(self.timestamp))),
            ("seq", value::int(self.seq as i64)),
            ("headers", headers),
        ]
    }
}

/// RFC 3339, UTC, milliseconds.
pub fn format_timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// How a message's journey ended, as its source learns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every copy was committed by a sink, dropped by a filter, or dead-lettered.
    Delivered,
    /// Some copy was rejected and could not be dead-lettered.
    Rejected,
}

type Notify = Box<dyn Fn(Outcome) + Send + Sync>;

enum OnDone {
    Notify(Notify),
    Parents(Vec<Ack>),
}

struct AckNode {
    rejected: AtomicBool,
    on_done: OnDone,
}

impl Drop for AckNode {
    fn drop(&mut self) {
        // Dropped while a component panics: the message was lost, not delivered.
        let rejected = *self.rejected.get_mut() || std::thread::panicking();
        match &self.on_done {
            OnDone::Notify(f) => f(if rejected { Outcome::Rejected } else { Outcome::Delivered }),
            OnDone::Parents(parents) if rejected => parents.iter().for_each(Ack::reject),
            OnDone::Parents(_) => {}
        }
    }
}

/// An acknowledgement handle.
///
/// Every copy of a message holds a clone; when the last clone is dropped the
/// source is told the outcome. Dropping a message therefore acknowledges it:
/// a filter drops what it rejects, a sink drops what it has committed. A
/// component that aggregates messages (`window`, `batch`) builds one `Ack` from
/// its inputs' with [`Ack::merge`], so the inputs are acknowledged when the
/// aggregate is.
#[derive(Clone)]
pub struct Ack(Arc<AckNode>);

impl Ack {
    /// A handle that calls `notify` once every copy is done.
    pub fn new(notify: impl Fn(Outcome) + Send + Sync + 'static) -> Self {
        Ack(Arc::new(AckNode { rejected: AtomicBool::new(false), on_done: OnDone::Notify(Box::new(notify)) }))
    }

    /// A handle that acknowledges all of `parents` when it is done.
    pub fn merge(parents: Vec<Ack>) -> Option<Self> {
        match parents.len() {
            0 => None,
            1 => parents.into_iter().next(),
            _ => Some(Ack(Arc::new(AckNode { rejected: AtomicBool::new(false), on_done: OnDone::Parents(parents) }))),
        }
    }

    /// Marks the message as rejected: the source will learn `Outcome::Rejected`.
    pub fn reject(&self) {
        self.0.rejected.store(true, Ordering::Relaxed);
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ack")
    }
}

/// A message: payload, metadata, and an optional acknowledgement handle.
#[derive(Clone, Debug)]
pub struct Message {
    /// The payload: a JSON value, or bytes (`Value::BStr`).
    pub payload: Value,
    /// The metadata, shared between copies.
    pub meta: Arc<Meta>,
    /// Present when the source wants to know the outcome.
    pub ack: Option<Ack>,
}

impl Message {
    /// A message with fresh metadata and no acknowledgement.
    pub fn new(payload: Value, meta: Meta) -> Self {
        Message { payload, meta: Arc::new(meta), ack: None }
    }

    /// The same metadata and acknowledgement with another payload.
    pub fn with_payload(&self, payload: Value) -> Self {
        Message { payload, meta: self.meta.clone(), ack: self.ack.clone() }
    }

    /// The wire envelope `{"data": .., "metadata": {..}}` as one JSON line
    /// (without the newline).
    pub fn to_envelope(&self) -> String {
        let mut meta = self.meta.fields();
        if matches!(self.payload, Value::BStr(_)) {
            meta.push(("encoding", value::string("base64")));
        }
        let env = value::object([("data", self.payload.clone()), ("metadata", value::object(meta))]);
        Json(&env).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn recorder() -> (Arc<Mutex<Vec<Outcome>>>, Ack) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        (seen, Ack::new(move |o| s.lock().unwrap().push(o)))
    }

    #[test]
    fn ack_fires_once_after_last_copy() {
        let (seen, ack) = recorder();
        let copy = ack.clone();
        drop(ack);
        assert!(seen.lock().unwrap().is_empty());
        drop(copy);
        assert_eq!(*seen.lock().unwrap(), vec![Outcome::Delivered]);
    }

    #[test]
    fn a_message_dropped_by_a_panic_is_rejected_not_delivered() {
        let (seen, ack) = recorder();
        let held = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _in_hand = ack;
            panic!("component bug");
        }));
        assert!(held.is_err());
        assert_eq!(*seen.lock().unwrap(), vec![Outcome::Rejected]);
    }

    #[test]
    fn merged_ack_carries_rejection_to_parents() {
        let (a, ack_a) = recorder();
        let (b, ack_b) = recorder();
        let merged = Ack::merge(vec![ack_a, ack_b]).unwrap();
        merged.reject();
        drop(merged);
        assert_eq!(*a.lock().unwrap(), vec![Outcome::Rejected]);
        assert_eq!(*b.lock().unwrap(), vec![Outcome::Rejected]);
    }

    #[test]
    fn envelope_has_data_and_metadata() {
        let mut meta = Meta::new("src".into(), 7);
        meta.topic = Some("t/1".into());
        let m = Message::new(value::int(5), meta);
        let env: serde_json::Value = serde_json::from_str(&m.to_envelope()).unwrap();
        assert_eq!(env["data"], 5);
        assert_eq!(env["metadata"]["topic"], "t/1");
        assert_eq!(env["metadata"]["seq"], 7);
        assert_eq!(env["metadata"]["source"], "src");
    }
}
