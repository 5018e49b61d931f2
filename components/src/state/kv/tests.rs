use fbp_runtime::testing::Harness;
use fbp_runtime::value::{self, Value};
use serde_json::json;

use super::state::{EventKind, Refused, Shared, State};

fn v(json: &str) -> Value {
    value::parse_json(json.as_bytes()).unwrap()
}

#[test]
fn keeps_the_latest_value_per_key_and_counts_only_changes() {
    let mut s = State::new(2, None);
    assert_eq!(s.apply("a", v("1")).unwrap().as_deref(), Some("1"));
    assert_eq!(s.apply("a", v("1")).unwrap(), None, "the same value is not a change");
    assert_eq!(s.apply("b", v(r#"{"x":2}"#)).unwrap().as_deref(), Some(r#"{"x":2}"#));
    assert_eq!(s.apply("a", v("3")).unwrap().as_deref(), Some("3"));
    assert_eq!(s.apply("c", v("4")), Err(Refused::Full(2)), "max_keys bounds the state");
    assert_eq!((s.version(), s.len()), (3, 2));
    assert_eq!(s.to_json(), r#"{"a":3,"b":{"x":2}}"#);
    assert_eq!(&*s.sync_event(), r#"{"type":"sync","version":3,"state":{"a":3,"b":{"x":2}}}"#);
}

#[test]
fn capabilities_give_each_key_its_type_and_fields() {
    let mut s = State::new(10, None);
    s.apply("t", v(r#"{"sensor":"s1","value":2.5,"ok":true}"#)).unwrap();
    s.apply("n", v("7")).unwrap();
    s.apply("w", v(r#""on""#)).unwrap();
    assert_eq!(
        s.capabilities(),
        json!([
            {"key": "n", "type": "number"},
            {"key": "t", "type": "object", "fields": {"sensor": "string", "value": "number", "ok": "bool"}},
            {"key": "w", "type": "string"},
        ])
    );
}

#[test]
fn a_put_must_name_a_known_key_and_keep_its_type() {
    let mut s = State::new(10, None);
    s.apply("n", v("7")).unwrap();
    s.apply("z", v("null")).unwrap();
    assert_eq!(s.check_put("n", &v("8"), false), Ok(()));
    assert_eq!(s.check_put("n", &v(r#""x""#), false), Err(Refused::WrongType { have: "number", got: "string" }));
    assert_eq!(s.check_put("z", &v(r#""x""#), false), Ok(()), "a null key takes any type");
    assert_eq!(s.check_put("new", &v("1"), false), Err(Refused::UnknownKey));
    assert_eq!(s.check_put("new", &v("1"), true), Ok(()));
}

#[tokio::test]
async fn a_subscriber_gets_a_full_sync_then_every_change_in_order() {
    let shared = Shared::new(100, None, 16);
    shared.update("a", v("1")).unwrap();
    let mut sub = shared.subscribe();
    shared.update("b", v("2")).unwrap();
    shared.update("a", v("3")).unwrap();
    shared.update("a", v("3")).unwrap(); // unchanged: no event
    let (kind, version, sync) = sub.next().await;
    assert_eq!((kind, version, &*sync), (EventKind::Sync, 1, r#"{"type":"sync","version":1,"state":{"a":1}}"#));
    let (kind, version, change) = sub.next().await;
    assert_eq!(
        (kind, version, &*change),
        (EventKind::Change, 2, r#"{"type":"change","version":2,"key":"b","value":2}"#)
    );
    let (kind, version, change) = sub.next().await;
    assert_eq!(
        (kind, version, &*change),
        (EventKind::Change, 3, r#"{"type":"change","version":3,"key":"a","value":3}"#)
    );
    assert_eq!(sub.resyncs(), 0);
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_gets_a_fresh_full_sync() {
    let shared = Shared::new(100, None, 4);
    let mut sub = shared.subscribe();
    assert_eq!(sub.next().await.0, EventKind::Sync);
    for i in 0..50 {
        shared.update(&format!("k{}", i % 5), v(&i.to_string())).unwrap();
    }
    let (kind, version, sync) = sub.next().await;
    assert_eq!((kind, version), (EventKind::Sync, 50), "behind by more than the buffer: a fresh sync");
    assert_eq!(&*sync, r#"{"type":"sync","version":50,"state":{"k0":45,"k1":46,"k2":47,"k3":48,"k4":49}}"#);
    assert_eq!(sub.resyncs(), 1);
    shared.update("k0", v("0")).unwrap();
    assert_eq!(sub.next().await.1, 51, "and then the changes after it");
}

fn harness(config: serde_json::Value) -> Harness {
    let mut config = config;
    config["bind"] = json!("127.0.0.1:0");
    let h = Harness::new(&super::SPEC, config);
    h.shutdown().cancel(); // run until the input ends
    h
}

#[tokio::test]
async fn bad_keys_and_keys_past_max_keys_go_to_err() {
    let mut h = harness(json!({"key": ".k", "value": ".v", "max_keys": 2}));
    for line in
        [r#"{"k":"a","v":1}"#, r#"{"k":[1],"v":2}"#, r#"{"k":"b","v":3}"#, r#"{"k":"c","v":4}"#, r#"{"k":5,"v":5}"#]
    {
        h.push_json(line);
    }
    let out = h.run_to_end().await;
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    let err = out.json("err");
    assert_eq!(err.len(), 3, "{err:?}");
    assert!(err[0].contains("the key must be a string or a number, not array"), "{}", err[0]);
    assert!(err[1].contains("key `c`: the state already holds `max_keys` = 2 keys"), "{}", err[1]);
    assert!(err[2].contains("key `5`"), "{}", err[2]);
    assert!(out.messages("out").is_empty(), "changes go to `out` only with emit_changes");
}

#[tokio::test]
async fn emit_changes_sends_each_change_keyed_by_topic() {
    let mut h = harness(json!({"key": ".k", "value": ".v", "emit_changes": true}));
    for line in [r#"{"k":"a","v":1}"#, r#"{"k":"a","v":1}"#, r#"{"k":"b","v":2}"#, r#"{"k":"a","v":3}"#] {
        h.push_json(line);
    }
    let out = h.run_to_end().await;
    assert_eq!(out.json("out"), ["1", "2", "3"], "the repeated value is not a change");
    let topics: Vec<_> = out.messages("out").iter().map(|m| m.meta.topic.as_deref().unwrap().to_string()).collect();
    assert_eq!(topics, ["a", "b", "a"]);
}

#[tokio::test]
async fn config_mistakes_are_build_errors() {
    async fn error(config: serde_json::Value) -> String {
        let out = Harness::new(&super::SPEC, config).run_to_end().await;
        out.result.unwrap().unwrap_err().0
    }
    assert!(error(json!({"key": ".k", "bind": "8091"})).await.contains("`HOST:PORT`"));
    assert!(error(json!({"key": ".k", "store": "redis:x"})).await.contains("sqlite:PATH"));
    assert!(error(json!({"key": ".k", "max_keys": 0})).await.contains("`max_keys`"));
    assert!(error(json!({"key": ".k +"})).await.contains("invalid jq"));
    assert!(error(json!({"key": ".k", "ttl": "0s"})).await.contains("`ttl`"));
    assert!(error(json!({"key": ".k", "ttl": "soon"})).await.contains("not a duration"));
}

#[tokio::test]
async fn a_removal_is_a_change_subscribers_see_in_order_and_frees_its_place() {
    let shared = Shared::new(1, None, 16);
    shared.update("a", v("1")).unwrap();
    let mut sub = shared.subscribe();
    assert!(shared.remove("a"));
    assert!(!shared.remove("a"), "a key not held is not removed twice");
    shared.update("b", v("2")).expect("the removal left room under max_keys = 1");
    assert_eq!(sub.next().await.0, EventKind::Sync);
    let (kind, version, event) = sub.next().await;
    assert_eq!((kind, version, &*event), (EventKind::Delete, 2, r#"{"type":"delete","version":2,"key":"a"}"#));
    assert_eq!(sub.next().await.1, 3);
    assert_eq!(shared.read().to_json(), r#"{"b":2}"#);
}

#[tokio::test(start_paused = true)]
async fn keys_not_updated_for_ttl_expire_oldest_first_a_bounded_number_at_a_time() {
    let ttl = std::time::Duration::from_secs(10);
    let shared = Shared::new(100, Some(ttl), 16);
    let mut sub = shared.subscribe();
    for k in ["a", "b", "c"] {
        shared.update(k, v("1")).unwrap();
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
    }
    shared.update("a", v("1")).unwrap(); // unchanged, yet updated: lives on
    tokio::time::advance(std::time::Duration::from_millis(8500)).await;
    let now = tokio::time::Instant::now();
    assert_eq!(shared.expire(now, 10), ["b"], "only `b` is 10s old");
    tokio::time::advance(std::time::Duration::from_secs(2)).await;
    let now = tokio::time::Instant::now();
    assert_eq!(shared.expire(now, 1), ["c"], "at most `most` a sweep");
    assert_eq!(shared.expire(now, 1), ["a"]);
    assert!(shared.expire(now, 10).is_empty());
    assert_eq!(shared.read().version(), 6, "three sets, three removals");
    let mut events = Vec::new();
    for _ in 0..7 {
        let (kind, version, _) = sub.next().await;
        events.push((kind, version));
    }
    let (sync, change, delete) = (EventKind::Sync, EventKind::Change, EventKind::Delete);
    assert_eq!(events, [(sync, 0), (change, 1), (change, 2), (change, 3), (delete, 4), (delete, 5), (delete, 6)]);
}

#[tokio::test]
async fn a_null_value_removes_its_key_unless_null_deletes_is_off() {
    let lines = [r#"{"k":"a","v":1}"#, r#"{"k":"b","v":2}"#, r#"{"k":"a","v":null}"#, r#"{"k":"c","v":3}"#];
    let mut h = harness(json!({"key": ".k", "value": ".v", "max_keys": 2, "emit_changes": true}));
    lines.iter().for_each(|l| h.push_json(l));
    let out = h.run_to_end().await;
    assert!(out.json("err").is_empty(), "`a` was removed, so `c` fits: {:?}", out.json("err"));
    assert_eq!(out.json("out"), ["1", "2", "null", "3"], "a removal is a change");

    let mut h = harness(json!({"key": ".k", "value": ".v", "max_keys": 2, "null_deletes": false}));
    lines.iter().for_each(|l| h.push_json(l));
    let err = h.run_to_end().await.json("err");
    assert_eq!(err.len(), 1, "`a` holds null, so `c` is one too many: {err:?}");
    assert!(err[0].contains("key `c`"), "{}", err[0]);
}
