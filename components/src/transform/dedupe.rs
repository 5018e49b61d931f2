//! `dedupe`: drop messages whose key was seen recently.
//!
//! The keys seen live in `Recent`, a set bounded to `size` keys that
//! forgets the least recently seen key first.

use std::collections::{BTreeMap, HashMap};

use fbp_runtime::jq::Program;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::value::Value;
use fbp_runtime::{Acks, BuildContext, ComponentSpec, Delivery, Instance, Kind, Message, Outbox, PortSpec, Transform};
use serde::Deserialize;

/// The `dedupe` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "dedupe",
    summary: "Drop messages whose key was seen among the last keys.",
    doc: "Computes a key for each message with the jq expression `key` (its first output; by \
          default the whole payload) and drops the message when that key is among the `size` \
          keys seen most recently; other messages pass unchanged. Seeing a key again makes it \
          the most recent, and past `size` keys the least recently seen is forgotten, so memory \
          stays bounded. Keys compare as JSON values (object key order does not matter). A \
          dropped duplicate is acknowledged. A jq error, or a `key` with no output, sends the \
          message to `err`. The keys live in memory: a restart forgets them.",
    kind: Kind::Transform,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "messages to deduplicate" }],
    outputs: &[PortSpec { name: "out", ty: "same", doc: "messages whose key was not seen recently, unchanged" }],
    config: &[
        KeySpec::new(
            "key",
            KeyType::Expr,
            "\".\"",
            "jq expression giving a message's key, e.g. `.id`; `.` uses the whole payload.",
        ),
        KeySpec::new("size", KeyType::Integer, "10000", "How many recent keys to remember (at least 1)."),
    ],
    delivery: Delivery::PassThrough,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.once]\ntype = \"dedupe\"\nconfig = { key = \".id\", size = 1000 }\n",
    build,
    ports: None,
    probe: None,
};

#[derive(Deserialize)]
struct Config {
    key: String,
    size: i64,
}

struct Dedupe {
    key: Program,
    seen: Recent,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    let size = usize::try_from(config.size).ok().filter(|&n| n > 0).ok_or("`size` must be at least 1")?;
    Ok(Instance::transform(Dedupe { key: Program::compile(&config.key)?, seen: Recent::new(size) }))
}

impl Transform for Dedupe {
    fn process(&mut self, msg: &Message, out: &mut Outbox) -> Result<(), String> {
        let key = self.key.first(msg)?.ok_or("`key` gave no value")?;
        if self.seen.insert(key) {
            out.send(msg.clone());
        }
        Ok(())
    }
}

/// A set of at most `size` values that forgets the least recently seen first.
struct Recent {
    size: usize,
    /// Each value and the tick it was last seen at.
    ticks: HashMap<Value, u64>,
    /// The same, by tick: the first entry is the least recently seen.
    order: BTreeMap<u64, Value>,
    tick: u64,
}

impl Recent {
    fn new(size: usize) -> Self {
        Recent { size, ticks: HashMap::new(), order: BTreeMap::new(), tick: 0 }
    }

    /// Records `key` as the most recent; `true` when it was not in the set.
    fn insert(&mut self, key: Value) -> bool {
        self.tick += 1;
        if let Some(last) = self.ticks.insert(key.clone(), self.tick) {
            self.order.remove(&last);
            self.order.insert(self.tick, key);
            return false;
        }
        self.order.insert(self.tick, key);
        if self.ticks.len() > self.size
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.ticks.remove(&oldest);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use fbp_runtime::testing::Harness;
    use fbp_runtime::value;
    use serde_json::json;

    use super::Recent;

    #[test]
    fn recent_forgets_the_least_recently_seen_key() {
        let mut r = Recent::new(2);
        let k = |i| value::int(i);
        assert!(r.insert(k(1)) && r.insert(k(2)));
        assert!(!r.insert(k(1)), "1 is remembered, and now the most recent");
        assert!(r.insert(k(3)), "3 is new; 2 is forgotten");
        assert!(!r.insert(k(1)));
        assert!(r.insert(k(2)));
        assert_eq!((r.ticks.len(), r.order.len()), (2, 2));
    }

    #[tokio::test]
    async fn drops_recent_duplicates_by_key() {
        let mut h = Harness::new(&super::SPEC, json!({"key": ".id", "size": 2}));
        for (id, v) in [(1, "a"), (2, "b"), (1, "c"), (3, "d"), (1, "e"), (2, "f")] {
            h.push_json(&format!(r#"{{"id": {id}, "v": "{v}"}}"#));
        }
        let out = h.run_to_end().await;
        let kept: Vec<_> = out.payloads("out").iter().map(|p| value::to_serde(p)["v"].clone()).collect();
        // `c` repeats 1 and makes it the most recent, so `d` (3) pushes 2 out, not 1:
        // `e` repeats 1 and is dropped too, and `f` (2) is new again.
        assert_eq!(kept, ["a", "b", "d", "f"]);
    }

    #[tokio::test]
    async fn whole_payloads_compare_as_json_values() {
        let mut h = Harness::new(&super::SPEC, json!({}));
        h.push_json(r#"{"a": 1, "b": 2}"#);
        h.push_json(r#"{"b": 2, "a": 1}"#);
        h.push_json(r#"{"a": 1}"#);
        h.push_json(r#"{"a": 1.0}"#);
        let out = h.run_to_end().await;
        assert_eq!(out.json("out"), [r#"{"a":1,"b":2}"#, r#"{"a":1}"#]);
    }

    #[tokio::test]
    async fn key_errors_go_to_err_and_bad_size_is_a_build_error() {
        let mut h = Harness::new(&super::SPEC, json!({"key": ".id + 1"}));
        h.push_json(r#"{"id": "x"}"#);
        let out = h.run_to_end().await;
        assert!(out.json("err")[0].contains("jq error"));
        let mut h = Harness::new(&super::SPEC, json!({"key": "empty"}));
        h.push_json("1");
        assert!(h.run_to_end().await.json("err")[0].contains("`key` gave no value"));
        let mut h = Harness::new(&super::SPEC, json!({"size": 0}));
        assert_eq!(h.run_to_end().await.result.unwrap().unwrap_err().0, "`size` must be at least 1");
    }
}
