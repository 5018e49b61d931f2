//! `postgres` against the PostgreSQL on 127.0.0.1:5432 (trust auth, user
//! `postgres`, database `test`); each test has a table of its own, dropped after.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use fbp_runtime::testing::Harness;
use fbp_runtime::{Ack, BuildContext, Message, Meta, Outcome, value};
use serde_json::json;
use tokio_postgres::{Client, NoTls};

use super::*;

const URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

/// A table name unique to this test run, dropped when the guard goes.
struct Table(String);

impl Table {
    fn new(what: &str) -> Table {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Table(format!("fbp_unit_{what}_{}_{n}", std::process::id()))
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        let sql = format!("DROP TABLE IF EXISTS {}", self.0);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async { pg().await.batch_execute(&sql).await.ok() });
        })
        .join()
        .ok();
    }
}

async fn pg() -> Client {
    let (client, conn) = tokio_postgres::connect(URL, NoTls).await.expect("PostgreSQL on 127.0.0.1:5432");
    tokio::spawn(conn);
    client
}

async fn rows(sql: &str) -> Vec<String> {
    let wrapped = format!("SELECT row_to_json(q)::text FROM ({sql}) q");
    pg().await.query(&wrapped, &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
}

fn config(table: &Table, extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"url": URL, "table": table.0, "flush_interval": "0s"});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    c
}

#[tokio::test]
async fn creates_the_table_from_the_first_record_with_json_types() {
    let t = Table::new("first");
    let mut h = Harness::new(&SPEC, config(&t, json!({})));
    h.push_json(r#"{"s": "a", "n": 3, "f": 2.5, "ok": true, "o": {"x": [1]}, "z": null}"#);
    h.push_json(r#"{"s": "b", "n": 4, "extra": 1}"#);
    let out = h.run_to_end().await;
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    let types = rows(&format!(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '{}' ORDER BY ordinal_position",
        t.0
    ))
    .await;
    let want =
        [("s", "text"), ("n", "bigint"), ("f", "double precision"), ("ok", "boolean"), ("o", "jsonb"), ("z", "text")];
    let want: Vec<String> =
        want.iter().map(|(c, ty)| format!(r#"{{"column_name":"{c}","data_type":"{ty}"}}"#)).collect();
    assert_eq!(types, want);
    let got = rows(&format!("SELECT s, n, o FROM {} ORDER BY s", t.0)).await;
    assert_eq!(got, [r#"{"s":"a","n":3,"o":{"x": [1]}}"#, r#"{"s":"b","n":4,"o":null}"#]);
}

#[tokio::test]
async fn refused_records_go_to_err_and_the_rest_commits() {
    let t = Table::new("refused");
    let columns = json!({"id": "BIGINT NOT NULL", "v": "TEXT"});
    let mut h = Harness::new(&SPEC, config(&t, json!({"columns": columns, "key": ["id"], "batch_size": 100})));
    for line in [r#"{"id": 1, "v": "a"}"#, r#""text""#, r#"{"id": "x"}"#, r#"{"v": "no id"}"#, r#"{"id": 2, "v": "b"}"#]
    {
        h.push_json(line);
    }
    let out = h.run_to_end().await;
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    assert_eq!(
        rows(&format!("SELECT id, v FROM {} ORDER BY id", t.0)).await,
        [r#"{"id":1,"v":"a"}"#, r#"{"id":2,"v":"b"}"#]
    );
    let err = out.json("err");
    assert_eq!(err.len(), 3, "{err:?}");
    assert!(err[0].contains("a string is not a record"), "{}", err[0]);
    assert!(err[1].contains("invalid input syntax for type bigint"), "{}", err[1]);
    assert!(err[2].contains("null value"), "{}", err[2]);
}

/// Every way a value reaches a column: binary integers, floats and booleans,
/// text cast by the server (a string into a number column, RFC 3339 into
/// `TIMESTAMPTZ`, `NUMERIC`, `REAL`), JSON into `JSONB`, and the JSON form for
/// an array column; the server's refusals (too long, out of range) go to `err`.
#[tokio::test]
async fn each_column_type_gets_its_values_as_the_server_converts_json() {
    let t = Table::new("types");
    let columns = json!({
        "i": "INTEGER", "b": "BIGINT", "f": "DOUBLE PRECISION", "ok": "BOOLEAN", "s": "VARCHAR(3)",
        "ts": "TIMESTAMPTZ", "d": "NUMERIC(6,2)", "r": "REAL", "j": "JSONB"
    });
    let mut h = Harness::new(&SPEC, config(&t, json!({"columns": columns, "batch_size": 100})));
    for line in [
        r#"{"i": 1, "b": 10, "f": 1, "ok": true, "s": "abc", "ts": "2026-12-03T10:00:00Z", "d": 1.005, "r": 0.5, "j": "x"}"#,
        r#"{"i": "2", "b": 20, "f": "2.5", "ok": "yes", "s": 7, "ts": "2026-12-03 11:00:00+01", "d": "2.5", "j": {"a": [1]}}"#,
        r#"{"i": 3, "s": "toolong"}"#,
        r#"{"i": 3000000000, "b": 4}"#,
        r#"{"i": 5, "f": null}"#,
    ] {
        h.push_json(line);
    }
    let out = h.run_to_end().await;
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    let got = rows(&format!("SELECT i, b, f, ok, s, ts::text, d::text, r, j FROM {} ORDER BY i", t.0)).await;
    assert_eq!(
        got,
        [
            r#"{"i":1,"b":10,"f":1,"ok":true,"s":"abc","ts":"2026-12-03 10:00:00+00","d":"1.01","r":0.5,"j":"x"}"#,
            r#"{"i":2,"b":20,"f":2.5,"ok":true,"s":"7","ts":"2026-12-03 10:00:00+00","d":"2.50","r":null,"j":{"a": [1]}}"#,
            r#"{"i":5,"b":null,"f":null,"ok":null,"s":null,"ts":null,"d":null,"r":null,"j":null}"#,
        ]
    );
    let err = out.json("err");
    assert_eq!(err.len(), 2, "{err:?}");
    assert!(err[0].contains("too long"), "{}", err[0]);
    assert!(err[1].contains("out of range"), "{}", err[1]);

    // An array column takes the JSON form for the whole batch.
    let t = Table::new("arrays");
    let columns = json!({"id": "BIGINT", "tags": "TEXT[]"});
    let mut h = Harness::new(&SPEC, config(&t, json!({"columns": columns})));
    h.push_json(r#"{"id": 1, "tags": ["a", "b"]}"#);
    assert!(matches!(h.run_to_end().await.result, Some(Ok(()))));
    assert_eq!(rows(&format!("SELECT id, tags FROM {}", t.0)).await, [r#"{"id":1,"tags":["a","b"]}"#]);
}

#[tokio::test]
async fn upserts_by_key_keeping_the_last_record_of_a_batch() {
    let t = Table::new("upsert");
    let cfg = config(&t, json!({"key": ["sensor"]}));
    let first = [json!({"sensor": "a", "v": 1}), json!({"sensor": "b", "v": 1}), json!({"sensor": "a", "v": 2})];
    let out = Harness::run_payloads(&SPEC, cfg.clone(), first.iter().map(value::from_serde).collect()).await;
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    let out = Harness::run_payloads(&SPEC, cfg, vec![value::from_serde(&json!({"sensor": "b", "v": 3}))]).await;
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    let got = rows(&format!("SELECT sensor, v FROM {} ORDER BY sensor", t.0)).await;
    assert_eq!(got, [r#"{"sensor":"a","v":2}"#, r#"{"sensor":"b","v":3}"#]);
}

#[tokio::test]
async fn acknowledges_only_once_committed() {
    let t = Table::new("ack");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut h = Harness::new(&SPEC, config(&t, json!({})));
    let s = seen.clone();
    let table = t.0.clone();
    let mut msg = Message::new(value::object([("value", value::int(1))]), Meta::new("t".into(), 0));
    msg.ack = Some(Ack::new(move |o| {
        // Counted from another connection: visible only once committed.
        let sql = format!("SELECT count(*) FROM {table}");
        let n = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async { pg().await.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) })
        })
        .join()
        .unwrap();
        s.lock().unwrap().push((o, n));
    }));
    h.push_message("in", msg);
    assert!(matches!(h.run_to_end().await.result, Some(Ok(()))));
    assert_eq!(*seen.lock().unwrap(), [(Outcome::Delivered, 1)]);
}

#[tokio::test]
async fn a_key_without_a_unique_index_is_a_failure_and_the_batch_is_rejected() {
    let t = Table::new("nokey");
    pg().await.batch_execute(&format!("CREATE TABLE {} (id BIGINT, v TEXT)", t.0)).await.unwrap();
    let outcome = Arc::new(Mutex::new(None));
    let o = outcome.clone();
    let mut h = Harness::new(&SPEC, config(&t, json!({"key": ["id"]})));
    let mut msg = Message::new(value::from_serde(&json!({"id": 1})), Meta::new("t".into(), 0));
    msg.ack = Some(Ack::new(move |x| *o.lock().unwrap() = Some(x)));
    h.push_message("in", msg);
    let err = h.run_to_end().await.result.unwrap().unwrap_err().0;
    assert!(err.contains("no unique or exclusion constraint"), "{err}");
    assert_eq!(*outcome.lock().unwrap(), Some(Outcome::Rejected));
}

#[test]
fn config_mistakes_are_build_errors() {
    let ctx = |extra: serde_json::Value| {
        let mut config = json!({"url": URL, "table": "t", "batch_size": 10, "flush_interval": "0s",
            "sslmode": "disable", "reconnect": "100ms..1s"});
        config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        BuildContext { name: "store".into(), config, base_dir: ".".into() }
    };
    let err = |extra| build(&ctx(extra)).err().unwrap();
    assert!(err(json!({"table": "t; DROP TABLE u"})).contains("a table name is letters"));
    assert!(err(json!({"batch_size": 0})).contains("`batch_size`"));
    assert!(err(json!({"columns": {"v": "TEXT); DROP TABLE t; --"}})).contains("column `v`"));
    assert!(err(json!({"columns": {"v": "TEXT"}, "key": ["id"]})).contains("not one of the declared"));
    assert!(err(json!({"sslmode": "disable", "ca_file": "ca.pem"})).contains("verify-full"));
    assert!(build(&ctx(json!({"columns": {"id": "BIGINT", "v": "NUMERIC(10,2)"}, "key": ["id"]}))).is_ok());
}
