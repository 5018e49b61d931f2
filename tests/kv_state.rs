//! `kv-state` through the binary: subscribers (WebSocket and Server-Sent
//! Events) that follow 10 000 updates, a `PUT` that enters the flow, the
//! SQLite and PostgreSQL stores across a restart, a subscriber that stops
//! reading, and keys removed (`DELETE`, `null`, `ttl`) for good.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use fbp_runtime::testbed::free_port;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

use crate::util::{fbp, lines, rss_kib, signal, tempdir, wait_until, write};

/// A running `fbp run`, killed on drop if a test fails before stopping it.
struct Running(Child);

impl Running {
    fn start(flow: &Path) -> Running {
        Running(fbp().args(["--log-level", "warn", "run"]).arg(flow).stderr(Stdio::piped()).spawn().unwrap())
    }

    /// SIGTERM, then the exit status within `limit` (and stderr).
    fn stop(mut self, limit: Duration) -> (bool, Duration, String) {
        signal(&self.0, "TERM");
        let started = Instant::now();
        assert!(wait_until(limit, || self.0.try_wait().unwrap().is_some()), "fbp did not stop within {limit:?}");
        let mut err = String::new();
        self.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (self.0.wait().unwrap().success(), started.elapsed(), err)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// One HTTP/1.1 request with `Connection: close`: the status and the body.
pub(crate) fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    http_from(port, &format!("127.0.0.1:{port}"), method, path, body)
}

/// The same with this `Host` header.
fn http_from(port: u16, host: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    if s.read_to_string(&mut text).is_err() {
        return (0, String::new());
    }
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

fn get_json(port: u16, path: &str) -> Value {
    let (status, body) = http(port, "GET", path, "");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_for_api(port: u16) {
    assert!(wait_until(Duration::from_secs(20), || http(port, "GET", "/keys", "").0 == 200), "the API never came up");
}

/// A subscriber's copy of the state, built from its events; checks their order.
#[derive(Default)]
struct Mirror {
    state: BTreeMap<String, Value>,
    version: Option<u64>,
    syncs: u32,
    changes: u32,
    deletes: u32,
}

impl Mirror {
    fn apply(&mut self, event: &Value) {
        let version = event["version"].as_u64().unwrap();
        match event["type"].as_str().unwrap() {
            "sync" => {
                assert!(self.version.is_none_or(|v| version >= v), "a sync went back in time: {version}");
                self.state = event["state"].as_object().unwrap().clone().into_iter().collect();
                self.syncs += 1;
            }
            "change" => {
                let last = self.version.expect("a change before the first sync");
                assert_eq!(version, last + 1, "a change was skipped or reordered without a sync");
                self.state.insert(event["key"].as_str().unwrap().to_string(), event["value"].clone());
                self.changes += 1;
            }
            "delete" => {
                let last = self.version.expect("a delete before the first sync");
                assert_eq!(version, last + 1, "a delete was skipped or reordered without a sync");
                let key = event["key"].as_str().unwrap();
                assert!(self.state.remove(key).is_some(), "a delete of `{key}`, which was not held");
                self.deletes += 1;
            }
            other => panic!("unknown event type {other}"),
        }
        self.version = Some(version);
    }
}

/// A Server-Sent Events client over a plain socket (HTTP/1.0: no chunked encoding).
struct Sse(BufReader<TcpStream>);

impl Sse {
    fn connect(port: u16) -> Sse {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET /events HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n").unwrap();
        Sse(BufReader::new(s))
    }

    /// The next event's `(name, data)`; `None` at the end of the stream or after `limit`.
    fn next(&mut self, limit: Duration) -> Option<(String, Value)> {
        self.0.get_ref().set_read_timeout(Some(limit)).unwrap();
        let (mut name, mut line) = (String::new(), String::new());
        loop {
            line.clear();
            if self.0.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                return Some((name, serde_json::from_str(data.trim()).unwrap()));
            }
        }
    }
}

type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

fn ws_connect(port: u16) -> Ws {
    let (ws, _) = tungstenite::connect(format!("ws://127.0.0.1:{port}/subscribe")).unwrap();
    ws
}

fn ws_next(ws: &mut Ws, limit: Duration) -> Option<Value> {
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(limit)).unwrap();
    }
    loop {
        match ws.read().ok()? {
            tungstenite::Message::Text(t) => return Some(serde_json::from_str(&t).unwrap()),
            tungstenite::Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// Follows events from `next` until the mirror equals `want` or `limit` passes.
fn follow(
    mut mirror: Mirror,
    mut next: impl FnMut() -> Option<Value>,
    want: &BTreeMap<String, Value>,
    limit: Duration,
) -> Mirror {
    let end = Instant::now() + limit;
    while mirror.state != *want && Instant::now() < end {
        match next() {
            Some(event) => mirror.apply(&event),
            None => break,
        }
    }
    mirror
}

/// `count` updates `{"k": "key-N", "v": ..}` over `keys` keys, and the final value per key.
fn updates(count: usize, keys: usize, value: impl Fn(usize) -> Value) -> (String, BTreeMap<String, Value>) {
    let (mut text, mut last) = (String::new(), BTreeMap::new());
    for i in 0..count {
        let (k, v) = (format!("key-{}", i % keys), value(i));
        text.push_str(&json!({"k": k, "v": v}).to_string());
        text.push('\n');
        last.insert(k, v);
    }
    (text, last)
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
}

fn following_flow(dir: &Path, port: u16, state_config: &str, tail: &str) -> std::path::PathBuf {
    write(dir, "in.jsonl", "");
    write(
        dir,
        "f.toml",
        &format!(
            "[flow]\nname = \"kv\"\nconnections = [\"input -> state\"{tail}]\n\
             [components.input]\ntype = \"file-read\"\nconfig = {{ path = \"in.jsonl\", follow = true, poll_interval = \"20ms\" }}\n\
             [components.state]\ntype = \"kv-state\"\nconfig = {{ key = \".k\", value = \".v\", bind = \"127.0.0.1:{port}\"{state_config} }}\n"
        ),
    )
}

#[test]
fn subscribers_connected_before_10000_updates_see_the_final_value_of_every_key() {
    let (dir, port) = (tempdir(), free_port());
    let flow = following_flow(dir.path(), port, "", "");
    let fbp = Running::start(&flow);
    wait_for_api(port);
    let (mut ws, mut sse) = (ws_connect(port), Sse::connect(port));
    // Both are subscribed once they have their first sync: the empty state.
    let (mut ws_mirror, mut sse_mirror) = (Mirror::default(), Mirror::default());
    let first = Duration::from_secs(10);
    ws_mirror.apply(&ws_next(&mut ws, first).unwrap());
    sse_mirror.apply(&sse.next(first).unwrap().1);
    assert_eq!((ws_mirror.syncs, ws_mirror.version, sse_mirror.syncs, sse_mirror.version), (1, Some(0), 1, Some(0)));
    let (text, want) = updates(10_000, 100, |i| json!(i));
    let (limit, start) = (Duration::from_secs(20), Instant::now());
    let (ws_mirror, sse_mirror) = std::thread::scope(|s| {
        let ws_side = s.spawn(|| follow(ws_mirror, || ws_next(&mut ws, limit), &want, limit));
        let sse_side = s.spawn(|| follow(sse_mirror, || sse.next(limit).map(|(_, data)| data), &want, limit));
        append(&dir.path().join("in.jsonl"), &text);
        (ws_side.join().unwrap(), sse_side.join().unwrap())
    });
    eprintln!(
        "10 000 updates followed by a WebSocket and an SSE subscriber in {:?} (syncs {}/{}, changes {}/{})",
        start.elapsed(),
        ws_mirror.syncs,
        sse_mirror.syncs,
        ws_mirror.changes,
        sse_mirror.changes
    );
    for (name, m) in [("websocket", &ws_mirror), ("sse", &sse_mirror)] {
        assert_eq!(m.state, want, "{name} subscriber's state after {} syncs and {} changes", m.syncs, m.changes);
        assert_eq!(m.version, Some(10_000), "{name}: every update changed a value, so 10 000 versions");
        assert!(m.syncs >= 1 && m.changes > 0, "{name}: a sync first, then changes");
    }
    assert_eq!(get_json(port, "/state"), serde_json::to_value(&want).unwrap());
    let keys = get_json(port, "/keys");
    assert_eq!(keys.as_array().unwrap().len(), 100);
    assert_eq!(keys[0], json!({"key": "key-0", "type": "number"}));
    let (ok, took, err) = fbp.stop(Duration::from_secs(10));
    assert!(ok, "{err}");
    assert!(took < Duration::from_secs(5), "subscribers still connected must not hold up the shutdown: {took:?}");
}

#[test]
fn put_enters_the_flow_on_out_keyed_by_topic_and_bad_requests_are_refused() {
    let (dir, port) = (tempdir(), free_port());
    let flow = write(
        dir.path(),
        "f.toml",
        &format!(
            "[flow]\nname = \"kv\"\nconnections = [\"sensors -> state\", \"state -> commands\"]\n\
             [components.sensors]\ntype = \"sensor-sim\"\nconfig = {{ sensors = 3, count = 3, interval = \"0s\" }}\n\
             [components.state]\ntype = \"kv-state\"\nconfig = {{ key = \".sensor\", value = \".value\", bind = \"127.0.0.1:{port}\", max_body_size = \"1KiB\" }}\n\
             [components.commands]\ntype = \"file-write\"\nconfig = {{ path = \"out.jsonl\" }}\n"
        ),
    );
    let fbp = Running::start(&flow);
    wait_for_api(port);
    assert!(wait_until(Duration::from_secs(10), || get_json(port, "/keys").as_array().unwrap().len() == 3));
    let (status, body) = http(port, "PUT", "/state/sensor-2", "99.5");
    assert_eq!(status, 202, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["key"], "sensor-2");
    let out = dir.path().join("out.jsonl");
    assert!(wait_until(Duration::from_secs(10), || !lines(&out).is_empty()), "the update never reached file-write");
    let written: Vec<Value> = lines(&out).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(written.len(), 1, "only API updates go to `out` without emit_changes: {written:?}");
    assert_eq!(written[0]["data"], 99.5);
    assert_eq!(written[0]["metadata"]["topic"], "sensor-2");
    assert_eq!(written[0]["metadata"]["headers"]["origin"], "api");
    assert_eq!(get_json(port, "/state/sensor-2"), 99.5);

    assert_eq!(http(port, "PUT", "/state/sensor-2", "{\"value\": ").0, 400, "bad JSON");
    assert_eq!(http(port, "PUT", "/state/nope", "1").0, 404, "unknown key");
    assert_eq!(http(port, "PUT", "/state/sensor-2", "\"hot\"").0, 422, "a string to a number key");
    assert_eq!(http(port, "PUT", "/state/sensor-2", &format!("\"{}\"", "x".repeat(2000))).0, 413, "past max_body_size");
    assert_eq!(http(port, "GET", "/state/nope", "").0, 404);
    assert_eq!(lines(&out).len(), 1, "refused updates do not enter the flow");
    let (ok, _, err) = fbp.stop(Duration::from_secs(10));
    assert!(ok, "{err}");
}

/// Runs a flow whose `kv-state` (named `component`) has `store`, PUTs a key,
/// stops it with SIGTERM and starts it again on empty input: the state must
/// be as it was.
fn the_store_brings_the_state_back_after_a_restart(store: &str, component: &str) -> BTreeMap<String, Value> {
    let (dir, port) = (tempdir(), free_port());
    let (text, mut want) = updates(300, 30, |i| json!({"n": i, "ok": i % 2 == 0}));
    write(dir.path(), "in.jsonl", &text);
    let flow = write(
        dir.path(),
        "f.toml",
        &format!(
            "[flow]\nname = \"kv\"\nconnections = [\"input -> {component}\"]\n\
             [components.input]\ntype = \"file-read\"\nconfig = {{ path = \"in.jsonl\" }}\n\
             [components.{component}]\ntype = \"kv-state\"\nconfig = {{ key = \".k\", value = \".v\", bind = \"127.0.0.1:{port}\", store = \"{store}\", put_creates = true }}\n"
        ),
    );
    let fbp = Running::start(&flow);
    wait_for_api(port);
    let all = |want: &BTreeMap<String, Value>| serde_json::to_value(want).unwrap();
    let first = all(&want);
    assert!(wait_until(Duration::from_secs(10), || get_json(port, "/state") == first), "{}", get_json(port, "/state"));
    assert_eq!(http(port, "PUT", "/state/extra", "[1, 2]").0, 202);
    want.insert("extra".into(), json!([1, 2]));
    let (ok, _, err) = fbp.stop(Duration::from_secs(10));
    assert!(ok, "{err}");

    write(dir.path(), "in.jsonl", "");
    let fbp = Running::start(&flow);
    wait_for_api(port);
    assert_eq!(get_json(port, "/state"), all(&want), "the state as it was before SIGTERM, PUT included");
    let (ok, _, err) = fbp.stop(Duration::from_secs(10));
    assert!(ok, "{err}");
    want
}

#[test]
fn the_sqlite_store_brings_the_state_back_after_a_restart() {
    the_store_brings_the_state_back_after_a_restart("sqlite:state.db", "state");
}

#[test]
fn the_postgres_store_brings_the_state_back_after_a_restart_and_keeps_it_as_jsonb() {
    use crate::postgres::{URL, sql};
    let component = format!("state_{}", std::process::id());
    // The component makes the table if it is missing; rows of an earlier run go first.
    let clear = format!(
        "DO $$ BEGIN IF to_regclass('kv_state') IS NOT NULL THEN \
         DELETE FROM kv_state WHERE component = '{component}'; END IF; END $$"
    );
    sql(&clear);
    let want = the_store_brings_the_state_back_after_a_restart(URL, &component);
    let rows = sql(&format!(
        "SELECT key, value, jsonb_typeof(value) AS t FROM kv_state WHERE component = '{component}' ORDER BY key"
    ));
    sql(&clear);
    assert_eq!(rows.len(), want.len(), "one row per key: {rows:?}");
    let extra: Value = serde_json::from_str(rows.iter().find(|r| r.contains("\"extra\"")).unwrap()).unwrap();
    assert_eq!(extra, json!({"key": "extra", "value": [1, 2], "t": "array"}));
    let key_0: Value = serde_json::from_str(&rows[0]).unwrap();
    assert_eq!(key_0["value"], want[key_0["key"].as_str().unwrap()], "{key_0}");
}

#[test]
fn a_subscriber_that_stops_reading_neither_stalls_the_flow_nor_grows_memory() {
    let (dir, port) = (tempdir(), free_port());
    let flow = following_flow(
        dir.path(),
        port,
        ", subscriber_buffer = 64, emit_changes = true",
        ", \"state -> changes\"]\n[components.changes]\ntype = \"file-write\"\nconfig = { path = \"out.jsonl\", format = \"lines\" }\n#",
    );
    let fbp = Running::start(&flow);
    wait_for_api(port);
    // Both subscribe, then read nothing while 12 MB of changes go by (more
    // than the sockets hold: 4 MiB send buffer at most here).
    let (mut slow_sse, _slow_ws) = (Sse::connect(port), ws_connect(port));
    assert!(wait_until(Duration::from_secs(5), || http(port, "GET", "/keys", "").0 == 200));
    let pad = "x".repeat(2000);
    let (text, want) = updates(6_000, 100, |i| json!({"n": i, "pad": pad}));
    append(&dir.path().join("in.jsonl"), &text);
    let (start, mut peak) = (Instant::now(), 0);
    let done = wait_until(Duration::from_secs(30), || {
        peak = peak.max(rss_kib(fbp.0.id()).unwrap_or(0));
        let (status, last) = http(port, "GET", "/state/key-99", "");
        status == 200 && serde_json::from_str::<Value>(&last).unwrap()["n"] == 5_999
    });
    assert!(done, "the flow stalled behind subscribers that do not read");
    assert_eq!(get_json(port, "/state"), serde_json::to_value(&want).unwrap());
    let out = dir.path().join("out.jsonl");
    assert!(wait_until(Duration::from_secs(10), || lines(&out).len() == 6_000), "every change reached `out`");
    eprintln!("6 000 updates of 2 KB past two stalled subscribers: {:?}, peak RSS {peak} KiB", start.elapsed());
    // Without subscribers this flow peaks near 50 MiB (debug build); a stalled
    // subscriber holding its changes would add 12 MB each.
    assert!(peak < 80 * 1024, "RSS peaked at {peak} KiB");

    // Reading again, the slow subscriber gets what the socket held, then a fresh full sync.
    let mut mirror = Mirror::default();
    let mut resynced = false;
    while let Some((name, event)) = slow_sse.next(Duration::from_secs(5)) {
        if name == "sync" && mirror.syncs > 0 {
            resynced = true;
        }
        mirror.apply(&event);
        if resynced && mirror.state == want {
            break;
        }
    }
    assert!(resynced, "the subscriber fell behind yet was never sent a fresh sync");
    assert_eq!(mirror.state, want);
    let (ok, took, err) = fbp.stop(Duration::from_secs(10));
    assert!(ok, "{err}");
    assert!(took < Duration::from_secs(5), "a stalled WebSocket client held up the shutdown: {took:?}");
}

#[test]
fn the_sensor_state_sample_flow_serves_the_latest_reading_per_sensor() {
    let port = free_port();
    let flow = crate::util::root().join("flows/sensor-state.toml");
    let fbp = Running(
        fbp()
            .env("STATE_BIND", format!("127.0.0.1:{port}"))
            .args(["--log-level", "warn", "run"])
            .arg(flow)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_api(port);
    assert!(wait_until(Duration::from_secs(10), || get_json(port, "/keys").as_array().unwrap().len() == 4));
    let keys = get_json(port, "/keys");
    assert_eq!(keys[0]["key"], "sensor-1");
    assert_eq!(keys[0]["fields"], json!({"sensor": "string", "value": "number", "unit": "string", "ts": "string"}));
    let mut sse = Sse::connect(port);
    let (name, sync) = sse.next(Duration::from_secs(10)).unwrap();
    assert_eq!((name.as_str(), sync["state"].as_object().unwrap().len()), ("sync", 4));
    let (name, change) = sse.next(Duration::from_secs(10)).unwrap();
    assert_eq!(name, "change", "a new reading every second");
    assert_eq!(change["version"], sync["version"].as_u64().unwrap() + 1);
    assert!(change["value"]["value"].is_number(), "{change}");
    let (ok, _, err) = fbp.stop(Duration::from_secs(10));
    assert!(ok, "{err}");
}

/// `n` updates `{"k": "{prefix}N", "v": value}`, one per key.
fn keys(prefix: &str, n: usize, value: Value) -> String {
    (0..n).map(|i| format!("{}\n", json!({"k": format!("{prefix}{i}"), "v": value}))).collect()
}

fn key_count(port: u16) -> usize {
    get_json(port, "/keys").as_array().unwrap().len()
}

#[test]
fn delete_and_null_remove_keys_and_subscribers_see_each_removal_in_order() {
    let (dir, port) = (tempdir(), free_port());
    let flow = following_flow(dir.path(), port, ", put_creates = true", "");
    let fbp = Running::start(&flow);
    wait_for_api(port);
    let (mut ws, mut sse) = (ws_connect(port), Sse::connect(port));
    let (mut ws_mirror, mut sse_mirror) = (Mirror::default(), Mirror::default());
    ws_mirror.apply(&ws_next(&mut ws, Duration::from_secs(10)).unwrap());
    sse_mirror.apply(&sse.next(Duration::from_secs(10)).unwrap().1);
    let input = dir.path().join("in.jsonl");
    append(&input, &keys("k", 3, json!(1)));
    append(&input, "{\"k\": \"k1\", \"v\": null}\n");
    let two = json!({"k0": 1, "k2": 1});
    assert!(wait_until(Duration::from_secs(10), || get_json(port, "/state") == two), "{}", get_json(port, "/state"));
    assert_eq!(http(port, "GET", "/state/k1", "").0, 404, "a null update removed `k1`");

    assert_eq!(http_from(port, "evil.example", "DELETE", "/state/k0", "").0, 421, "the Host rules hold for DELETE");
    assert_eq!(http(port, "DELETE", "/state/k0", ""), (204, String::new()));
    assert_eq!(http(port, "DELETE", "/state/k0", "").0, 404, "already removed");
    assert_eq!(http(port, "DELETE", "/state/never", "").0, 404);
    assert_eq!(http(port, "PUT", "/state/k2", "null").0, 202, "a null PUT removes too");
    assert_eq!(http(port, "PUT", "/state/a/b", "7").0, 202);
    assert_eq!(http(port, "DELETE", "/state/a/b", "").0, 204, "a key with a `/`");
    assert_eq!(get_json(port, "/state"), json!({}));

    let (want, limit) = (BTreeMap::new(), Duration::from_secs(10));
    // Three keys set, `k1` by null, `k0` by DELETE, `k2` by null PUT, `a/b` set and deleted.
    let events = 3 + 1 + 1 + 1 + 2;
    for (name, mirror, next) in [
        ("websocket", &mut ws_mirror, &mut (|| ws_next(&mut ws, limit)) as &mut dyn FnMut() -> Option<Value>),
        ("sse", &mut sse_mirror, &mut || sse.next(limit).map(|(_, data)| data)),
    ] {
        while mirror.version < Some(events) {
            mirror.apply(&next().unwrap_or_else(|| panic!("{name}: the stream ended at {:?}", mirror.version)));
        }
        assert_eq!(mirror.state, want, "{name}");
        assert_eq!((mirror.syncs, mirror.changes, mirror.deletes), (1, 4, 4), "{name}: every removal, in order");
    }
    let (ok, _, err) = fbp.stop(Duration::from_secs(10));
    assert!(ok, "{err}");
}

#[test]
fn keys_not_updated_for_ttl_expire_for_subscribers_and_the_store() {
    let (dir, port) = (tempdir(), free_port());
    let flow = following_flow(dir.path(), port, ", ttl = \"1s\", store = \"sqlite:state.db\"", "");
    let fbp = Running::start(&flow);
    wait_for_api(port);
    let mut sse = Sse::connect(port);
    assert_eq!(sse.next(Duration::from_secs(10)).unwrap().0, "sync");
    append(&dir.path().join("in.jsonl"), &keys("k", 2, json!("x")));
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let (name, event) = sse.next(Duration::from_secs(10)).expect("the keys never expired");
        seen.push((name, event["key"].as_str().unwrap().to_string()));
    }
    let seen: Vec<(&str, &str)> = seen.iter().map(|(n, k)| (n.as_str(), k.as_str())).collect();
    assert_eq!(seen, [("change", "k0"), ("change", "k1"), ("delete", "k0"), ("delete", "k1")]);
    assert_eq!(get_json(port, "/state"), json!({}));
    let (ok, _, err) = fbp.stop(Duration::from_secs(10));
    assert!(ok, "{err}");

    write(dir.path(), "in.jsonl", "");
    let fbp = Running::start(&flow);
    wait_for_api(port);
    assert_eq!(get_json(port, "/state"), json!({}), "expired keys are gone from the store too");
    let (ok, _, err) = fbp.stop(Duration::from_secs(10));
    assert!(ok, "{err}");
}

/// The acceptance case of removals: `max_keys = 10000` filled, then emptied by
/// `null` updates (and one `DELETE`), leaves room for 100 new keys, and after
/// a restart on `store` the removed keys are still gone and the room is still there.
fn removed_keys_leave_room_also_after_a_restart(store: &str, component: &str) {
    let (dir, port) = (tempdir(), free_port());
    write(dir.path(), "in.jsonl", "");
    let flow = write(
        dir.path(),
        "f.toml",
        &format!(
            "[flow]\nname = \"kv\"\nconnections = [\"input -> {component}\"]\n\
             [components.input]\ntype = \"file-read\"\nconfig = {{ path = \"in.jsonl\", follow = true, poll_interval = \"20ms\" }}\n\
             [components.{component}]\ntype = \"kv-state\"\nconfig = {{ key = \".k\", value = \".v\", bind = \"127.0.0.1:{port}\", store = \"{store}\", max_keys = 10000 }}\n"
        ),
    );
    let input = dir.path().join("in.jsonl");
    let fbp = Running::start(&flow);
    wait_for_api(port);
    append(&input, &keys("old-", 10_000, json!(1)));
    assert!(wait_until(Duration::from_secs(60), || key_count(port) == 10_000), "{} keys", key_count(port));
    assert_eq!(http(port, "DELETE", "/state/old-0", "").0, 204);
    append(&input, &keys("old-", 10_000, Value::Null));
    assert!(wait_until(Duration::from_secs(60), || key_count(port) == 0), "{} keys left", key_count(port));
    append(&input, &keys("new-", 100, json!(2)));
    assert!(wait_until(Duration::from_secs(20), || key_count(port) == 100), "{} keys: no room", key_count(port));
    let (ok, _, err) = fbp.stop(Duration::from_secs(10));
    assert!(ok, "{err}");

    write(dir.path(), "in.jsonl", "");
    let fbp = Running::start(&flow);
    wait_for_api(port);
    let want: BTreeMap<String, Value> = (0..100).map(|i| (format!("new-{i}"), json!(2))).collect();
    let state = get_json(port, "/state");
    let held = state.as_object().unwrap().len();
    assert_eq!(held, 100, "the removed keys stay removed: {held} keys after the restart");
    assert_eq!(state, serde_json::to_value(&want).unwrap());
    append(&input, &keys("newer-", 100, json!(3)));
    assert!(wait_until(Duration::from_secs(20), || key_count(port) == 200), "{} keys: no room", key_count(port));
    let (ok, _, err) = fbp.stop(Duration::from_secs(10));
    assert!(ok, "{err}");
}

#[test]
fn removed_keys_leave_room_under_max_keys_also_after_a_restart_with_sqlite() {
    removed_keys_leave_room_also_after_a_restart("sqlite:state.db", "state");
}

#[test]
fn removed_keys_leave_room_under_max_keys_also_after_a_restart_with_postgres() {
    use crate::postgres::sql;
    let component = format!("room_{}", std::process::id());
    let clear = format!(
        "DO $$ BEGIN IF to_regclass('kv_state') IS NOT NULL THEN \
         DELETE FROM kv_state WHERE component = '{component}'; END IF; END $$"
    );
    sql(&clear);
    removed_keys_leave_room_also_after_a_restart(crate::postgres::URL, &component);
    let rows = sql(&format!("SELECT count(*) AS n FROM kv_state WHERE component = '{component}'"));
    sql(&clear);
    assert_eq!(rows, ["{\"n\":200}"], "one row per key held, none for a removed one");
}
