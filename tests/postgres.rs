//! `postgres` and `postgres-read` through the binary, against the PostgreSQL
//! on 127.0.0.1:5432 (trust auth, user `postgres`, database `test`). Each test
//! has tables of its own, dropped after. A server outage is a
//! `testbed::Proxy` between fbp and PostgreSQL, cut and restored.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fbp_runtime::testbed::Proxy;
use tokio_postgres::NoTls;

use crate::util::{fbp, lines, root, signal, stderr, tempdir, wait_until, write};

pub(crate) const URL: &str = "postgresql://postgres@127.0.0.1:5432/test";

/// Runs SQL on the test database; rows as JSON text (`row_to_json`).
pub(crate) fn sql(query: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(URL, NoTls).await.expect("PostgreSQL on 127.0.0.1:5432");
        tokio::spawn(conn);
        if query.trim_start().to_ascii_uppercase().starts_with("SELECT") {
            let wrapped = format!("SELECT row_to_json(q)::text FROM ({query}) q");
            client.query(&wrapped, &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
        } else {
            client.batch_execute(query).await.unwrap();
            Vec::new()
        }
    })
}

/// One number from a `SELECT` of one row and one column.
fn number(query: &str) -> i64 {
    let row: serde_json::Value = serde_json::from_str(&sql(query)[0]).unwrap();
    row.as_object().unwrap().values().next().unwrap().as_i64().unwrap()
}

/// A table name for this test, dropped when the guard goes.
pub(crate) struct Table(pub(crate) String);

impl Table {
    pub(crate) fn new(what: &str) -> Table {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let t = Table(format!("fbp_it_{what}_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        sql(&format!("DROP TABLE IF EXISTS {}", t.0));
        t
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        sql(&format!("DROP TABLE IF EXISTS {}", self.0));
    }
}

/// `n` JSON lines `{"n": i, "sensor": "s<i % 10>", "value": i + 0.5}` (a fractional value, so a table made from the first record types it DOUBLE PRECISION).
fn records(n: usize) -> String {
    (0..n).map(|i| format!("{{\"n\": {i}, \"sensor\": \"s{}\", \"value\": {i}.5}}\n", i % 10)).collect()
}

#[test]
fn relay_inserts_ten_thousand_records_exactly_once() {
    let t = Table::new("ten_k");
    let dir = tempdir();
    write(dir.path(), "in.jsonl", &records(10_000));
    let sink = format!("{URL}?table={}&batch_size=500", t.0);
    let o = fbp().current_dir(dir.path()).args(["relay", "file:in.jsonl", &sink]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(number(&format!("SELECT count(*) FROM {}", t.0)), 10_000);
    assert_eq!(number(&format!("SELECT count(DISTINCT n) FROM {}", t.0)), 10_000);
    assert_eq!(number(&format!("SELECT sum(n) FROM {}", t.0)), (0..10_000).sum::<i64>());
}

#[test]
fn the_sample_flow_upserts_by_key_and_dead_letters_what_the_table_refuses() {
    let t = Table::new("upsert");
    let dir = tempdir();
    let mut input = records(1000);
    input.push_str("{\"sensor\": \"s1\", \"value\": \"not a number\"}\n");
    input.push_str("{\"sensor\": \"s2\", \"value\": 1.5, \"ts\": \"2026-01-02T03:04:05Z\"}\n");
    write(dir.path(), "in.jsonl", &input);
    let o = fbp()
        .current_dir(dir.path())
        .env("INPUT", dir.path().join("in.jsonl"))
        .env("TABLE", &t.0)
        .env("DEAD_LETTER", dir.path().join("dead.jsonl"))
        .arg("run")
        .arg(root().join("flows/file-to-postgres.toml"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = sql(&format!("SELECT sensor, value, ts FROM {} ORDER BY sensor", t.0));
    assert_eq!(rows.len(), 10, "{rows:?}");
    // The last value per sensor wins: 99x.5 for sensor s<x>, and the last record for s2.
    assert_eq!(rows[0], r#"{"sensor":"s0","value":990.5,"ts":null}"#);
    assert_eq!(rows[2], r#"{"sensor":"s2","value":1.5,"ts":"2026-01-02T03:04:05+00:00"}"#);
    assert_eq!(rows[9], r#"{"sensor":"s9","value":999.5,"ts":null}"#);
    let dead = lines(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].contains("not a number") && dead[0].contains("double precision"), "{}", dead[0]);
}

#[test]
fn tables_are_created_from_declared_columns_or_from_the_first_record() {
    let (declared, inferred) = (Table::new("declared"), Table::new("inferred"));
    let dir = tempdir();
    write(dir.path(), "in.jsonl", "{\"id\": 1, \"at\": \"2026-05-01T00:00:00Z\", \"tags\": [\"a\"], \"ok\": true}\n");
    let flow = format!(
        "[flow]\nname = \"t\"\nconnections = [\"read -> a\", \"read -> b\"]\n\
         [components.read]\ntype = \"file-read\"\nconfig = {{ path = \"in.jsonl\" }}\n\
         [components.a]\ntype = \"postgres\"\nconfig = {{ url = \"{URL}\", table = \"{}\", key = [\"id\"], \
         columns = {{ id = \"INTEGER\", at = \"TIMESTAMPTZ\", tags = \"TEXT[]\" }} }}\n\
         [components.b]\ntype = \"postgres\"\nconfig = {{ url = \"{URL}\", table = \"{}\" }}\n",
        declared.0, inferred.0
    );
    let path = write(dir.path(), "flow.toml", &flow);
    let o = fbp().current_dir(dir.path()).arg("run").arg(&path).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let types = |t: &Table| {
        sql(&format!(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '{}' ORDER BY ordinal_position",
            t.0
        ))
        .join(" ")
    };
    // Declared columns are created in name order (a TOML table keeps no order here).
    let want = r#"{"column_name":"at","data_type":"timestamp with time zone"} {"column_name":"id","data_type":"integer"} {"column_name":"tags","data_type":"ARRAY"}"#;
    assert_eq!(types(&declared), want);
    let key = sql(&format!(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = '{}'::regclass AND i.indisprimary",
        declared.0
    ));
    assert_eq!(key, [r#"{"attname":"id"}"#]);
    let want = r#"{"column_name":"id","data_type":"bigint"} {"column_name":"at","data_type":"text"} {"column_name":"tags","data_type":"jsonb"} {"column_name":"ok","data_type":"boolean"}"#;
    assert_eq!(types(&inferred), want);
    assert_eq!(sql(&format!("SELECT tags FROM {}", declared.0)), [r#"{"tags":["a"]}"#]);
}

/// JSON log lines of `stderr` at `level` whose message starts with `prefix`.
fn logged(stderr: &str, level: &str, prefix: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == level && v["fields"]["message"].as_str().is_some_and(|m| m.starts_with(prefix)))
        .collect()
}

#[test]
fn a_server_outage_mid_stream_loses_nothing_and_duplicates_only_batches_in_doubt() {
    let t = Table::new("outage");
    let proxy = Proxy::start("127.0.0.1:5432".parse::<SocketAddr>().unwrap()).unwrap();
    let dir = tempdir();
    let n = 6000;
    write(dir.path(), "in.jsonl", &records(n));
    let flow = format!(
        "[flow]\nname = \"outage\"\nconnections = [\"read -> pace\", \"pace -> store\"]\n\
         [components.read]\ntype = \"file-read\"\nconfig = {{ path = \"in.jsonl\" }}\n\
         [components.pace]\ntype = \"throttle\"\nconfig = {{ rate = 300, per = \"100ms\" }}\n\
         [components.store]\ntype = \"postgres\"\nconfig = {{ url = \"postgresql://postgres@127.0.0.1:{}/test\", \
         table = \"{}\", batch_size = 100, flush_interval = \"20ms\", reconnect = \"50ms..200ms\" }}\n",
        proxy.port(),
        t.0
    );
    let path = write(dir.path(), "flow.toml", &flow);
    let child = fbp().args(["--log-format", "json", "run"]).arg(&path).stderr(Stdio::piped()).spawn().unwrap();
    let count = || {
        let exists = number(&format!("SELECT count(*) FROM pg_tables WHERE tablename = '{}'", t.0)) > 0;
        if exists { number(&format!("SELECT count(*) FROM {}", t.0)) } else { 0 }
    };
    for outage in 1..=2 {
        let at = outage * 1500;
        assert!(wait_until(Duration::from_secs(20), || count() >= at), "fewer than {at} rows before outage {outage}");
        proxy.cut();
        // The outage lasts a while: rows stop coming in.
        std::thread::sleep(Duration::from_millis(600));
        let during = count();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(count(), during, "rows came in while the server was away");
        proxy.restore();
    }
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let distinct = number(&format!("SELECT count(DISTINCT n) FROM {}", t.0));
    assert_eq!(distinct, n as i64, "every record is there");
    let duplicates = number(&format!("SELECT count(*) FROM {}", t.0)) - distinct;
    let in_doubt: i64 = logged(&err, "WARN", "The connection broke before a COMMIT")
        .iter()
        .map(|v| v["fields"]["in_doubt"].as_i64().unwrap())
        .sum();
    assert!(duplicates <= in_doubt, "{duplicates} duplicates but only {in_doubt} records in doubt");
    let lost = logged(&err, "WARN", "Connection lost");
    assert_eq!(lost.len(), 2, "one warning per outage:\n{err}");
    assert_eq!(logged(&err, "INFO", "Reconnected").len(), 2, "{err}");
    eprintln!("outage test: {duplicates} duplicates, {in_doubt} records in doubt");
}

/// A `postgres-read` flow polling `SELECT id, v FROM table` by `id` through
/// `port`, writing envelopes to `dir/out.jsonl`.
fn poll_flow(dir: &std::path::Path, port: u16, table: &str) -> std::path::PathBuf {
    let flow = format!(
        "[flow]\nname = \"poll\"\nconnections = [\"read -> out\"]\n\
         [components.read]\ntype = \"postgres-read\"\nconfig = {{ url = \"postgresql://postgres@127.0.0.1:{port}/test\", \
         query = \"SELECT id, v FROM {table}\", watermark = \"id\", interval = \"50ms\", batch_size = 2, \
         reconnect = \"50ms..200ms\" }}\n\
         [components.out]\ntype = \"file-write\"\nconfig = {{ path = \"out.jsonl\" }}\n"
    );
    write(dir, "flow.toml", &flow)
}

/// The ids in the envelopes of `out`, in order.
fn ids(out: &std::path::Path) -> Vec<i64> {
    let rows = lines(out).iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).collect::<Vec<_>>();
    rows.iter().map(|v| v["data"]["id"].as_i64().unwrap()).collect()
}

#[test]
fn watermark_polling_picks_up_new_rows_exactly_once() {
    let t = Table::new("poll");
    sql(&format!(
        "CREATE TABLE {} (id BIGSERIAL PRIMARY KEY, v TEXT); INSERT INTO {0} (v) VALUES ('a'), ('b'), ('c')",
        t.0
    ));
    let dir = tempdir();
    let path = poll_flow(dir.path(), 5432, &t.0);
    let child = fbp().arg("run").arg(&path).stderr(Stdio::piped()).spawn().unwrap();
    let out = dir.path().join("out.jsonl");
    assert!(wait_until(Duration::from_secs(10), || lines(&out).len() >= 3), "{:?}", lines(&out));
    sql(&format!("INSERT INTO {} (v) VALUES ('d'), ('e'), ('f')", t.0));
    assert!(wait_until(Duration::from_secs(10), || lines(&out).len() >= 6), "{:?}", lines(&out));
    sql(&format!("INSERT INTO {} (v) VALUES ('g')", t.0));
    assert!(wait_until(Duration::from_secs(10), || lines(&out).len() >= 7), "{:?}", lines(&out));
    signal(&child, "TERM");
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ids(&out), [1, 2, 3, 4, 5, 6, 7]);
    let last: serde_json::Value = serde_json::from_str(&lines(&out)[6]).unwrap();
    assert_eq!(last["data"]["v"], "g");
}

#[test]
fn watermark_polling_goes_on_after_an_outage_without_repeating_rows() {
    let t = Table::new("poll_outage");
    sql(&format!("CREATE TABLE {} (id BIGSERIAL PRIMARY KEY, v TEXT); INSERT INTO {0} (v) VALUES ('a'), ('b')", t.0));
    let proxy = Proxy::start("127.0.0.1:5432".parse::<SocketAddr>().unwrap()).unwrap();
    let dir = tempdir();
    let path = poll_flow(dir.path(), proxy.port(), &t.0);
    let child = fbp().args(["--log-format", "json", "run"]).arg(&path).stderr(Stdio::piped()).spawn().unwrap();
    let out = dir.path().join("out.jsonl");
    assert!(wait_until(Duration::from_secs(10), || lines(&out).len() >= 2), "{:?}", lines(&out));
    proxy.cut();
    sql(&format!("INSERT INTO {} (v) VALUES ('c'), ('d'), ('e')", t.0));
    // The outage lasts a while: nothing new can be read.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lines(&out).len(), 2);
    proxy.restore();
    assert!(wait_until(Duration::from_secs(10), || lines(&out).len() >= 5), "{:?}", lines(&out));
    signal(&child, "TERM");
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(ids(&out), [1, 2, 3, 4, 5]);
    assert_eq!(logged(&err, "WARN", "Connection lost").len(), 1, "one warning per outage:\n{err}");
}

#[test]
fn listen_sends_each_notification_payload() {
    let dir = tempdir();
    let channel = format!("fbp_it_events_{}", std::process::id());
    let flow = format!(
        "[flow]\nname = \"listen\"\nconnections = [\"read -> out\"]\n\
         [components.read]\ntype = \"postgres-read\"\nconfig = {{ url = \"{URL}\", listen = \"{channel}\" }}\n\
         [components.out]\ntype = \"file-write\"\nconfig = {{ path = \"out.jsonl\" }}\n"
    );
    let path = write(dir.path(), "flow.toml", &flow);
    let child = fbp().arg("run").arg(&path).stderr(Stdio::piped()).spawn().unwrap();
    let listening = format!("SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN \"{channel}\"'");
    assert!(wait_until(Duration::from_secs(10), || number(&listening) > 0), "fbp never listened");
    sql(&format!(
        "SELECT pg_notify('{channel}', '{{\"door\": \"open\"}}'), pg_notify('{channel}', 'not json'), pg_notify('{channel}', '[1, 2]')"
    ));
    let out = dir.path().join("out.jsonl");
    assert!(wait_until(Duration::from_secs(10), || lines(&out).len() >= 2), "{:?}", lines(&out));
    signal(&child, "TERM");
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Vec<serde_json::Value> = lines(&out).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0]["data"], serde_json::json!({"door": "open"}));
    assert_eq!(got[0]["metadata"]["topic"], channel.as_str());
    assert_eq!(got[1]["data"], serde_json::json!([1, 2]));
    assert!(stderr(&o).contains("not JSON"), "the text payload is dead-lettered (logged):\n{}", stderr(&o));
}

/// `flows/webhook-to-postgres.toml` as shipped: each JSON body POSTed to
/// `/ingest` is a row once it is answered 200 (the answer waits for COMMIT);
/// a body that is not JSON is answered 400 and stored nowhere.
#[test]
fn the_webhook_flow_answers_200_once_the_row_is_committed() {
    /// The flow's process, killed by its PID if the test ends early.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let table = Table::new("webhook");
    let port = fbp_runtime::testbed::free_port();
    let bind = format!("127.0.0.1:{port}");
    let flow = root().join("flows/webhook-to-postgres.toml");
    let child = fbp()
        .args(["run", flow.to_str().unwrap()])
        .envs([("BIND", bind.as_str()), ("TABLE", table.0.as_str())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    assert!(fbp_runtime::testbed::wait_for_port(port, Duration::from_secs(15)), "http-listen is up");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (url, client) = (format!("http://{bind}/ingest"), crate::http::client());
    let post =
        |body: String| rt.block_on(async { client.post(&url).body(body).send().await.unwrap().status().as_u16() });
    for i in 0..20 {
        assert_eq!(post(format!(r#"{{"device": "d{}", "temp": {i}.5}}"#, i % 3)), 200);
        // Answered after COMMIT: the row is already visible from another connection.
        assert_eq!(number(&format!("SELECT count(*) FROM {}", table.0)), i + 1, "200 came before COMMIT");
    }
    assert_eq!(post("{\"device\": ".into()), 400);
    signal(&running.0, "TERM");
    let status = running.0.wait().unwrap();
    assert!(status.success(), "fbp exited with {status}");
    assert_eq!(number(&format!("SELECT count(*) FROM {}", table.0)), 20);
    assert_eq!(number(&format!("SELECT count(DISTINCT device) FROM {}", table.0)), 3);
}

#[test]
fn verify_full_checks_the_servers_certificate_and_name_and_require_only_encrypts() {
    // The local server's own certificate (Debian's, for `localhost`) is the CA.
    assert_eq!(sql("SELECT current_setting('ssl') AS ssl")[0], r#"{"ssl":"on"}"#, "the test server speaks TLS");
    let cert: serde_json::Value =
        serde_json::from_str(&sql("SELECT current_setting('ssl_cert_file') AS f")[0]).unwrap();
    let ca = cert["f"].as_str().unwrap().to_string();
    let t = Table::new("tls");
    let dir = tempdir();
    write(dir.path(), "in.jsonl", &records(100));
    let relay = |host: &str, sslmode: &str| {
        let sink = format!("postgresql://postgres@{host}:5432/test?table={}&sslmode={sslmode}&ca_file={ca}", t.0);
        let sink = if sslmode == "verify-full" { sink } else { sink.replace(&format!("&ca_file={ca}"), "") };
        let log = dir.path().join("fbp.log");
        let mut child = fbp()
            .current_dir(dir.path())
            .args(["relay", "--shutdown-timeout", "1s", "file:in.jsonl", &sink])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let text = || std::fs::read_to_string(&log).unwrap_or_default();
        // It ends once written; a server it will not trust it retries until stopped.
        wait_until(Duration::from_secs(20), || {
            child.try_wait().unwrap().is_some() || text().contains("Cannot connect")
        });
        if child.try_wait().unwrap().is_none() {
            signal(&child, "TERM");
            child.wait().unwrap();
        }
        text()
    };
    let count = || number(&format!("SELECT count(*) FROM {}", t.0));
    // The certificate names `localhost`, not 127.0.0.1: refused, nothing written.
    let log = relay("127.0.0.1", "verify-full");
    assert!(log.contains("Cannot connect") && log.to_lowercase().contains("certificate"), "{log}");
    assert_eq!(sql(&format!("SELECT to_regclass('{}') AS t", t.0))[0], r#"{"t":null}"#, "{log}");
    let log = relay("localhost", "verify-full");
    assert_eq!(count(), 100, "{log}");
    assert!(!log.contains("not checked"), "{log}");
    // `require` takes any certificate, and says so.
    let log = relay("127.0.0.1", "require");
    assert_eq!(count(), 200, "{log}");
    assert!(log.contains("the server's certificate is not") && log.contains("checked"), "{log}");
}
