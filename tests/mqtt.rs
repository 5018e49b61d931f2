//! MQTT through the real binary against real Mosquitto brokers (each test
//! starts its own on a free port, killed by PID when dropped): relays without
//! loss, the broker and fbp killed mid-stream, bad payloads, reconnection logs,
//! and the two example flows.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use fbp_runtime::testbed::{Server, UNLIMITED_QUEUE};
use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};

use crate::util::{fbp, lines, root, signal, summary, tempdir, wait_until, write};

/// A unique client id for a test client.
fn client_id(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("test-{what}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn options(port: u16, what: &str) -> MqttOptions {
    let mut o = MqttOptions::new(client_id(what), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5)).set_max_packet_size(4 << 20, 4 << 20);
    o
}

/// Publishes every `(topic, payload)` at `qos` and returns once the broker confirmed them all.
pub(crate) fn publish(port: u16, messages: Vec<(String, Vec<u8>)>, qos: QoS) {
    let n = messages.len();
    let mut options = options(port, "pub");
    if qos == QoS::ExactlyOnce {
        // Mosquitto 2.0.11 takes QoS 2 publishes beyond its in-flight limit
        // (`max_inflight_messages`, 20) and completes them, but routes none
        // of them to subscribers: keep within it.
        options.set_inflight(20);
    }
    let (client, mut conn) = Client::new(options, 1000);
    let publisher = thread::spawn(move || {
        for (topic, payload) in messages {
            client.publish(topic, qos, false, payload).expect("queue a publish");
        }
        client
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = 0;
    for event in conn.iter() {
        assert!(Instant::now() < deadline, "published {done} of {n} in 30 s");
        match (event, qos) {
            (Ok(Event::Incoming(Packet::PubAck(_))), QoS::AtLeastOnce)
            | (Ok(Event::Incoming(Packet::PubComp(_))), QoS::ExactlyOnce)
            | (Ok(Event::Outgoing(Outgoing::Publish(_))), QoS::AtMostOnce) => done += 1,
            (Err(e), _) => panic!("test publisher: {e}"),
            _ => {}
        }
        if done == n {
            break;
        }
    }
    let client = publisher.join().unwrap();
    let _ = client.disconnect();
}

/// `{"id": i}` on `topic`, for each id.
pub(crate) fn numbered(topic: impl Fn(u64) -> String, ids: std::ops::Range<u64>) -> Vec<(String, Vec<u8>)> {
    ids.map(|i| (topic(i), format!(r#"{{"id": {i}}}"#).into_bytes())).collect()
}

/// What a test subscriber received: topic and payload.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A test subscriber collecting what arrives on a filter (QoS 1).
pub(crate) struct Collector {
    client: Client,
    got: Received,
    stop: Arc<AtomicBool>,
}

impl Collector {
    /// Subscribes and returns once the broker has acknowledged the subscription.
    pub(crate) fn start(port: u16, filter: &str) -> Collector {
        Collector::with(options(port, "sub"), filter)
    }

    /// The same with a persistent session, which outlives a broker restart.
    pub(crate) fn persistent(port: u16, filter: &str) -> Collector {
        let mut o = options(port, "sub");
        o.set_clean_session(false);
        Collector::with(o, filter)
    }

    fn with(options: MqttOptions, filter: &str) -> Collector {
        let (client, mut conn) = Client::new(options, 100);
        client.subscribe(filter, QoS::AtLeastOnce).unwrap();
        let got: Received = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (subscribed, wait) = std::sync::mpsc::channel();
        let (g, s) = (got.clone(), stop.clone());
        thread::spawn(move || {
            for event in conn.iter() {
                match event {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subscribed.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => g.lock().unwrap().push((p.topic, p.payload.to_vec())),
                    Err(_) if s.load(Ordering::Relaxed) => break,
                    Err(_) => thread::sleep(Duration::from_millis(50)),
                    _ => {}
                }
            }
        });
        wait.recv_timeout(Duration::from_secs(10)).expect("the test subscriber is subscribed");
        Collector { client, got, stop }
    }

    /// How many messages arrived, duplicates included.
    pub(crate) fn received(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    pub(crate) fn ids(&self) -> HashSet<u64> {
        self.got.lock().unwrap().iter().filter_map(|(_, p)| id(p)).collect()
    }

    pub(crate) fn topics(&self) -> Vec<String> {
        self.got.lock().unwrap().iter().map(|(t, _)| t.clone()).collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.disconnect();
    }
}

/// The `id` of a `{"id": N}` payload.
fn id(payload: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(payload).ok()?["id"].as_u64()
}

/// Ids in a JSON-lines file of payloads: (distinct, lines with an id).
pub(crate) fn file_ids(path: &Path) -> (HashSet<u64>, usize) {
    let all: Vec<u64> = lines(path).iter().filter_map(|l| id(l.as_bytes())).collect();
    (all.iter().copied().collect(), all.len())
}

/// A running `fbp`, its stderr in a file; killed if still running when dropped.
struct Fbp {
    child: Child,
    log: PathBuf,
}

impl Fbp {
    fn start(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Fbp {
        let log = dir.join(format!("fbp-{}.log", client_id("log")));
        let mut cmd = fbp();
        cmd.current_dir(dir).args(["--log-format", "json"]).args(args).stderr(File::create(&log).unwrap());
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        Fbp { child: cmd.spawn().expect("fbp starts"), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits until the log says the component `name` is connected.
    fn wait_connected(&self, times: usize) {
        let ok = wait_until(Duration::from_secs(10), || count(&self.log(), "Connected.") >= times);
        assert!(ok, "fbp did not connect:\n{}", self.log());
    }

    /// SIGTERM, then waits for it to exit; its log.
    fn stop(mut self) -> String {
        signal(&self.child, "TERM");
        let ok = wait_until(Duration::from_secs(15), || self.child.try_wait().unwrap().is_some());
        assert!(ok, "fbp did not stop on SIGTERM:\n{}", self.log());
        self.log()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Fbp {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Log lines (JSON) whose message is `message`.
pub(crate) fn count(log: &str, message: &str) -> usize {
    log.lines().filter(|l| l.contains(&format!(r#""message":"{message}"#))).count()
}

/// Publishes probes on `topic` until `arrived` holds: the path through fbp is up.
pub(crate) fn wait_flowing(port: u16, topic: &str, arrived: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !arrived() {
        assert!(Instant::now() < deadline, "no probe went through fbp in 15 s");
        publish(port, vec![(topic.to_string(), br#"{"probe": true}"#.to_vec())], QoS::AtLeastOnce);
        wait_until(Duration::from_millis(300), &arrived);
    }
}

#[test]
fn relay_moves_10000_qos1_messages_between_brokers_without_loss() {
    let dir = tempdir();
    // The test publishes 10 000 messages in a burst, faster than any
    // subscriber that mosquitto sends only 20 unacknowledged messages at a
    // time; with its default queue of 1 000 it would drop the rest. What is
    // measured is fbp's relay, not the broker's queue: lift both limits.
    let unlimited = |name: &str| Server::mosquitto_with(&dir.path().join(name), UNLIMITED_QUEUE).unwrap();
    let (a, b) = (unlimited("a"), unlimited("b"));
    let far = Collector::start(b.port(), "sensors/#");
    let source = format!("mqtt://{}/sensors/%23?qos=1", a.addr());
    let sink = format!("mqtt://{}/", b.addr());
    let relay = Fbp::start(dir.path(), &["relay", &source, &sink], &[]);
    relay.wait_connected(2);
    wait_flowing(a.port(), "sensors/probe", || far.topics().iter().any(|t| t == "sensors/probe"));

    let started = Instant::now();
    publish(a.port(), numbered(|i| format!("sensors/s{}", i % 10), 0..10_000), QoS::AtLeastOnce);
    let all = wait_until(Duration::from_secs(30), || far.ids().len() == 10_000);
    println!("10000 QoS 1 messages relayed broker to broker in {:?}", started.elapsed());
    assert!(all, "{} of 10000 arrived", far.ids().len());
    let topics: HashSet<String> = far.topics().into_iter().collect();
    assert!(topics.contains("sensors/s3"), "topics kept: {topics:?}");
    // With the defaults, payloads go through as they are: not JSON, or JSON
    // with spacing that a decode and encode would change.
    let raw = [b"\xff\x00 not json".to_vec(), br#"{ "id" : 10000 }"#.to_vec()];
    publish(a.port(), raw.iter().map(|p| ("sensors/raw".to_string(), p.clone())).collect(), QoS::AtLeastOnce);
    let raw_arrived = || far.got.lock().unwrap().iter().filter(|(t, _)| t == "sensors/raw").count() == 2;
    assert!(wait_until(Duration::from_secs(10), raw_arrived), "the raw payloads did not arrive");
    let got: Vec<Vec<u8>> =
        far.got.lock().unwrap().iter().filter(|(t, _)| t == "sensors/raw").map(|(_, p)| p.clone()).collect();
    assert_eq!(got, raw, "forwarded byte for byte");
    let log = relay.stop();
    assert_eq!(summary(&log, "source", "errors"), Some(0), "{log}");
}

#[test]
fn broker_stopped_mid_stream_and_restarted_loses_nothing_with_a_persistent_session() {
    // SIGTERM, not SIGKILL: Mosquitto writes its store (the session, the
    // subscription, the queued messages) on a clean exit and otherwise only
    // every `autosave_interval`, so a SIGKILL would lose messages the broker
    // itself had acknowledged to the publisher: its loss, not fbp's. The
    // test's publisher bursts 3 000 messages just before the stop: the broker
    // keeps them all for the session across its restart only with no limit
    // on its queue (by default it keeps 1 000 and drops the rest).
    let dir = tempdir();
    let mut broker = Server::mosquitto_with(&dir.path().join("broker"), UNLIMITED_QUEUE).unwrap();
    let out = dir.path().join("out.jsonl");
    let source = format!("mqtt://{}/sensors/%23?qos=1&client_id=fbp-outage&clean_session=false", broker.addr());
    let mut relay = Fbp::start(
        dir.path(),
        &["relay", &source, "file:out.jsonl?format=lines", "--set", "source.reconnect=50ms..500ms"],
        &[],
    );
    relay.wait_connected(1);
    wait_flowing(broker.port(), "sensors/probe", || lines(&out).iter().any(|l| l.contains("probe")));

    publish(broker.port(), numbered(|_| "sensors/a".into(), 0..3000), QoS::AtLeastOnce);
    broker.stop();
    let at_stop = file_ids(&out).0.len();
    // fbp keeps running while the broker is away, retrying with backoff.
    assert!(!wait_until(Duration::from_millis(1500), || !relay.running()), "fbp exited while the broker was down");
    broker.restart().unwrap();
    publish(broker.port(), numbered(|_| "sensors/b".into(), 3000..6000), QoS::AtLeastOnce);

    let all = wait_until(Duration::from_secs(20), || file_ids(&out).0.len() == 6000);
    let (distinct, total) = file_ids(&out);
    println!(
        "broker stopped with {at_stop} of the first 3000 written; after restart: {total} lines, {} duplicates",
        total - distinct.len()
    );
    assert!(all, "{} of 6000 arrived", distinct.len());
    let log = relay.stop();
    assert_eq!(count(&log, "Connection lost; reconnecting in the background (logged again when back)."), 1, "{log}");
    assert_eq!(count(&log, "Reconnected."), 1, "one outage, one reconnection:\n{log}");
}

#[test]
fn fbp_killed_with_sigkill_and_started_again_loses_nothing() {
    let dir = tempdir();
    // The publisher goes on while fbp is dead: mosquitto keeps what comes for
    // the offline session, by default 1 000 messages and then drops. The test
    // is about fbp's restart, so the broker may queue all 8 000.
    let broker = Server::mosquitto_with(&dir.path().join("broker"), UNLIMITED_QUEUE).unwrap();
    let db = dir.path().join("readings.db");
    let env = vec![
        ("MQTT_PORT", broker.port().to_string()),
        ("MQTT_CLIENT_ID", "fbp-killed".to_string()),
        ("SQLITE_PATH", db.display().to_string()),
        ("DEAD_LETTER", dir.path().join("dead.jsonl").display().to_string()),
    ];
    let flow = root().join("flows/mqtt-to-sqlite.toml");
    let flow = flow.to_str().unwrap();
    let mut first = Fbp::start(dir.path(), &["run", flow], &env);
    first.wait_connected(1);
    let ids = |db: &Path| -> Vec<u64> {
        let Ok(c) = rusqlite::Connection::open(db) else { return Vec::new() };
        let Ok(mut q) = c.prepare("SELECT id FROM readings WHERE id IS NOT NULL") else { return Vec::new() };
        q.query_map([], |r| r.get::<_, i64>(0)).map(|rs| rs.flatten().map(|i| i as u64).collect()).unwrap_or_default()
    };
    wait_flowing(broker.port(), "sensors/probe", || any_rows(&db));

    let publisher = {
        let port = broker.port();
        thread::spawn(move || {
            let sensor = |i: u64| format!(r#"{{"sensor": "s{}", "value": {}.5, "id": {i}}}"#, i % 7, i % 40);
            let msgs = (0..8000).map(|i| (format!("sensors/s{}", i % 7), sensor(i).into_bytes())).collect();
            publish(port, msgs, QoS::AtLeastOnce)
        })
    };
    let midway = wait_until(Duration::from_secs(20), || ids(&db).len() >= 500);
    first.kill();
    let at_kill = ids(&db).iter().collect::<HashSet<_>>().len();
    assert!(midway, "no rows before the kill");
    publisher.join().unwrap();

    let second = Fbp::start(dir.path(), &["run", flow], &env);
    let all = wait_until(Duration::from_secs(25), || ids(&db).iter().collect::<HashSet<_>>().len() == 8000);
    let stored = ids(&db);
    let distinct: HashSet<_> = stored.iter().collect();
    let duplicates = stored.len() - distinct.len();
    println!("fbp SIGKILLed with {at_kill} of 8000 rows; after restart {} rows, {duplicates} duplicates", stored.len());
    assert!(all, "{} of 8000 arrived after the restart", distinct.len());
    second.stop();
}

#[test]
fn malformed_json_goes_to_the_dead_letter_and_good_readings_are_stored() {
    let dir = tempdir();
    let broker = Server::mosquitto(&dir.path().join("broker")).unwrap();
    let (db, dead) = (dir.path().join("r.db"), dir.path().join("dead.jsonl"));
    let env = vec![
        ("MQTT_PORT", broker.port().to_string()),
        ("MQTT_CLIENT_ID", "fbp-malformed".to_string()),
        ("SQLITE_PATH", db.display().to_string()),
        ("DEAD_LETTER", dead.display().to_string()),
    ];
    let flow = root().join("flows/mqtt-to-sqlite.toml");
    let run = Fbp::start(dir.path(), &["run", flow.to_str().unwrap()], &env);
    run.wait_connected(1);
    wait_flowing(broker.port(), "sensors/probe", || any_rows(&db));

    let mut msgs = Vec::new();
    for i in 0..200u64 {
        msgs.push((
            format!("sensors/s{}", i % 3),
            format!(r#"{{"sensor": "s", "value": 1.5, "id": {i}}}"#).into_bytes(),
        ));
        if i % 10 == 0 {
            msgs.push(("sensors/bad".into(), format!("{{not json {i}").into_bytes()));
        }
    }
    publish(broker.port(), msgs, QoS::AtLeastOnce);
    let ok = wait_until(Duration::from_secs(15), || rows(&db) >= 200 && lines(&dead).len() >= 20);
    assert!(ok, "rows {}, dead letters {}", rows(&db), lines(&dead).len());
    let bad: Vec<serde_json::Value> = lines(&dead).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(bad.len(), 20);
    assert!(bad.iter().all(|e| e["metadata"]["topic"] == "sensors/bad"), "{bad:?}");
    assert!(bad.iter().all(|e| e["data"]["error"].as_str().unwrap().contains("not JSON")), "{bad:?}");
    assert!(bad[0]["data"]["data"].as_str().unwrap().starts_with("{not json"), "{bad:?}");
    let log = run.stop();
    assert_eq!(summary(&log, "readings", "restarts"), Some(0), "{log}");
    assert_eq!(summary(&log, "readings", "errors"), Some(20), "{log}");
}

/// Rows with an id in the `readings` table (0 when it does not exist yet).
fn rows(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .and_then(|c| c.query_row("SELECT count(*) FROM readings WHERE id IS NOT NULL", [], |r| r.get(0)))
        .unwrap_or(0)
}

/// Whether the `readings` table has any row (a probe).
fn any_rows(db: &Path) -> bool {
    rusqlite::Connection::open(db)
        .and_then(|c| c.query_row("SELECT count(*) FROM readings", [], |r| r.get::<_, i64>(0)))
        .is_ok_and(|n| n > 0)
}

#[test]
fn a_text_subscription_takes_1mb_and_empty_payloads_and_dead_letters_invalid_utf8() {
    let dir = tempdir();
    let broker = Server::mosquitto(&dir.path().join("broker")).unwrap();
    let flow = write(
        dir.path(),
        "text.toml",
        &format!(
            r#"[flow]
name = "text"
dead_letter = "file:dead.jsonl"
connections = ["sub -> out"]

[components.sub]
type = "mqtt-subscribe"
config = {{ port = {}, topics = ["t/#"], format = "text" }}

[components.out]
type = "file-write"
config = {{ path = "out.jsonl" }}
"#,
            broker.port()
        ),
    );
    let run = Fbp::start(dir.path(), &["run", flow.to_str().unwrap()], &[]);
    run.wait_connected(1);
    let out = dir.path().join("out.jsonl");
    wait_flowing(broker.port(), "t/probe", || !lines(&out).is_empty());

    let big = "x".repeat(1_000_000);
    let msgs = vec![
        ("t/big".to_string(), big.clone().into_bytes()),
        ("t/empty".to_string(), Vec::new()),
        ("t/broken".to_string(), vec![b'o', b'k', 0xff, 0xfe]),
        ("t/after".to_string(), b"still flowing".to_vec()),
    ];
    publish(broker.port(), msgs, QoS::AtLeastOnce);
    let got = |t: &str| -> Option<serde_json::Value> {
        lines(&out)
            .iter()
            // A line still being written (1 MB) does not parse yet: skipped.
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["metadata"]["topic"] == t)
    };
    assert!(wait_until(Duration::from_secs(15), || got("t/after").is_some()), "{}", run.log());
    assert_eq!(got("t/big").unwrap()["data"].as_str().unwrap().len(), 1_000_000);
    assert_eq!(got("t/empty").unwrap()["data"], "");
    assert!(got("t/broken").is_none());
    let dead: Vec<serde_json::Value> =
        lines(&dir.path().join("dead.jsonl")).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["metadata"]["topic"], "t/broken");
    assert!(dead[0]["data"]["error"].as_str().unwrap().contains("not UTF-8"), "{dead:?}");
    let log = run.stop();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(summary(&log, "sub", "restarts"), Some(0), "{log}");
}

#[test]
fn the_bridge_flow_rewrites_topics_from_one_broker_to_another() {
    let dir = tempdir();
    let (local, upstream) =
        (Server::mosquitto(&dir.path().join("l")).unwrap(), Server::mosquitto(&dir.path().join("u")).unwrap());
    let far = Collector::start(upstream.port(), "site/#");
    let env = vec![
        ("LOCAL_PORT", local.port().to_string()),
        ("UPSTREAM_PORT", upstream.port().to_string()),
        ("SITE", "plant-7".to_string()),
        ("BRIDGE_CLIENT_ID", client_id("bridge")),
    ];
    let bridge = Fbp::start(dir.path(), &["run", root().join("flows/mqtt-bridge.toml").to_str().unwrap()], &env);
    bridge.wait_connected(2);
    wait_flowing(local.port(), "sensors/probe", || !far.topics().is_empty());

    publish(local.port(), numbered(|i| format!("sensors/room{}/temp", i % 4), 0..500), QoS::AtLeastOnce);
    assert!(wait_until(Duration::from_secs(15), || far.ids().len() == 500), "{} of 500", far.ids().len());
    let mut by_topic: BTreeMap<String, usize> = BTreeMap::new();
    for t in far.topics().into_iter().filter(|t| !t.ends_with("probe")) {
        *by_topic.entry(t).or_default() += 1;
    }
    let topics: Vec<&String> = by_topic.keys().collect();
    assert_eq!(
        topics,
        [
            "site/plant-7/sensors/room0/temp",
            "site/plant-7/sensors/room1/temp",
            "site/plant-7/sensors/room2/temp",
            "site/plant-7/sensors/room3/temp"
        ]
    );
    bridge.stop();
}

#[test]
fn publish_holds_while_its_broker_is_down_and_loses_nothing() {
    let dir = tempdir();
    // The relay's catch-up after the restart is a burst of thousands at the
    // test's own subscriber, which mosquitto's default queue of 1 000 for it
    // would cut: the test counts what fbp published, not that queue.
    let mut broker = Server::mosquitto_with(&dir.path().join("broker"), UNLIMITED_QUEUE).unwrap();
    let far = Collector::persistent(broker.port(), "out/#");
    let input: String = (0..5000).map(|i| format!("{{\"id\": {i}}}\n")).collect();
    write(dir.path(), "in.jsonl", &input);
    let sink = format!("mqtt://{}/out/x?qos=1&reconnect=50ms..500ms", broker.addr());
    let mut relay = Fbp::start(dir.path(), &["relay", "file:in.jsonl", &sink], &[]);
    assert!(wait_until(Duration::from_secs(15), || far.ids().len() >= 500), "{}", relay.log());
    broker.stop();
    let at_stop = far.ids().len();
    assert!(!wait_until(Duration::from_millis(1500), || !relay.running()), "fbp exited while its broker was down");
    broker.restart().unwrap();
    let all = wait_until(Duration::from_secs(20), || far.ids().len() == 5000);
    let received = far.got.lock().unwrap().len();
    println!("publisher: broker stopped with {at_stop} of 5000 received; {received} received in all");
    assert!(all, "{} of 5000 arrived", far.ids().len());
    // The source has finished: the relay exits once everything is confirmed.
    assert!(wait_until(Duration::from_secs(10), || !relay.running()), "{}", relay.log());
    assert!(relay.child.wait().unwrap().success(), "{}", relay.log());
    let log = relay.log();
    assert_eq!(count(&log, "Connection lost; reconnecting in the background (logged again when back)."), 1, "{log}");
    assert_eq!(count(&log, "Reconnected."), 1, "{log}");
}

#[test]
fn a_slow_flow_keeps_the_subscription_alive_past_the_keep_alive() {
    // QoS 0: no acknowledgements go to the broker, so only the pings the
    // polling task still sends while the out-port is full keep the
    // connection (Mosquitto drops a client silent for 1.5 keep-alives).
    let dir = tempdir();
    let broker = Server::mosquitto(&dir.path().join("broker")).unwrap();
    let flow = write(
        dir.path(),
        "slow.toml",
        &format!(
            r#"[flow]
name = "slow"
connections = [{{ from = "sub.out", to = "pace.in", capacity = 1 }}, "pace -> out"]

[components.sub]
type = "mqtt-subscribe"
config = {{ port = {}, topics = ["slow/#"], qos = 0, keep_alive = "1s" }}

[components.pace]
type = "throttle"
config = {{ rate = 40, per = "1s" }}

[components.out]
type = "file-write"
config = {{ path = "out.jsonl", format = "lines" }}
"#,
            broker.port()
        ),
    );
    let run = Fbp::start(dir.path(), &["run", flow.to_str().unwrap()], &[]);
    let out = dir.path().join("out.jsonl");
    run.wait_connected(1);
    wait_flowing(broker.port(), "slow/probe", || !lines(&out).is_empty());
    let started = Instant::now();
    publish(broker.port(), numbered(|_| "slow/a".into(), 0..300), QoS::AtLeastOnce);
    let all = wait_until(Duration::from_secs(20), || file_ids(&out).0.len() == 300);
    println!("300 messages through a 40/s throttle in {:?} with a 1 s keep-alive", started.elapsed());
    assert!(all, "{} of 300 arrived:\n{}", file_ids(&out).0.len(), run.log());
    let log = run.stop();
    assert_eq!(count(&log, "Connection lost; reconnecting in the background (logged again when back)."), 0, "{log}");
}

/// Runs `program` with `args` in `dir`; panics with its stderr when it fails.
fn run_ok(dir: &Path, program: &str, args: &[&str]) {
    let o = std::process::Command::new(program).current_dir(dir).args(args).output().expect("runs");
    assert!(o.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// A Mosquitto with a config of the test's own (`conf` in `dir`) on `port`;
/// killed by PID when dropped.
pub(crate) struct OwnBroker(Child);

impl OwnBroker {
    pub(crate) fn start(dir: &Path, port: u16, conf: &str) -> OwnBroker {
        let conf = format!("listener {port} 127.0.0.1\nuser root\nallow_anonymous true\n{conf}");
        let path = write(dir, "mosquitto.conf", &conf);
        let exe = fbp_runtime::testbed::program("mosquitto").expect("mosquitto is installed");
        let log = File::create(dir.join("mosquitto.log")).unwrap();
        let broker = OwnBroker(std::process::Command::new(exe).arg("-c").arg(path).stderr(log).spawn().unwrap());
        assert!(fbp_runtime::testbed::wait_for_port(port, Duration::from_secs(10)), "mosquitto did not start");
        broker
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn relay_to_sqlite_starts_before_its_broker_and_stores_every_reading() {
    let dir = tempdir();
    let port = fbp_runtime::testbed::free_port();
    let source = format!("mqtt://127.0.0.1:{port}/sensors/%23?qos=1&reconnect=50ms..300ms");
    let columns = r#"sink.columns={ sensor = "TEXT", value = "REAL", id = "INTEGER" }"#;
    let args = ["relay", &source, "sqlite://readings.db?table=readings", "--set", columns];
    let mut relay = Fbp::start(dir.path(), &args, &[]);
    let refused = wait_until(Duration::from_secs(10), || {
        count(&relay.log(), "Cannot connect; reconnecting in the background (logged again when back).") == 1
    });
    assert!(refused, "{}", relay.log());
    assert!(!wait_until(Duration::from_millis(1500), || !relay.running()), "fbp exited while the broker was down");
    let _broker = OwnBroker::start(dir.path(), port, "");
    assert!(wait_until(Duration::from_secs(10), || count(&relay.log(), "Reconnected.") == 1), "{}", relay.log());
    let db = dir.path().join("readings.db");
    wait_flowing(port, "sensors/probe", || any_rows(&db));
    let readings = (0..300u64)
        .map(|i| {
            (
                format!("sensors/s{}", i % 5),
                format!(r#"{{"sensor": "s{}", "value": {i}.25, "id": {i}}}"#, i % 5).into_bytes(),
            )
        })
        .collect();
    publish(port, readings, QoS::AtLeastOnce);
    assert!(wait_until(Duration::from_secs(15), || rows(&db) == 300), "{} of 300 rows", rows(&db));
    let log = relay.stop();
    assert_eq!(count(&log, "Cannot connect; reconnecting in the background (logged again when back)."), 1, "{log}");
}

#[test]
fn mqtts_subscribes_over_tls_trusting_the_given_ca() {
    let dir = tempdir();
    let d = dir.path();
    // A CA, and a server certificate it signs for 127.0.0.1.
    fbp_runtime::testbed::certificates(d, "IP:127.0.0.1").expect("openssl makes the test certificates");
    let port = fbp_runtime::testbed::free_port();
    let tls = format!("cafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n", d.display());
    let _broker = OwnBroker::start(d, port, &tls);

    let source = format!("mqtts://127.0.0.1:{port}/secure/%23?ca_file=ca.pem");
    let relay = Fbp::start(d, &["relay", &source, "file:out.jsonl?format=lines"], &[]);
    relay.wait_connected(1);
    let out = d.join("out.jsonl");
    let arrived = wait_until(Duration::from_secs(15), || {
        let port = port.to_string();
        let args =
            ["-h", "127.0.0.1", "-p", &port, "--cafile", "ca.pem", "-q", "1", "-t", "secure/a", "-m", r#"{"id": 7}"#];
        run_ok(d, "mosquitto_pub", &args);
        wait_until(Duration::from_millis(300), || file_ids(&out).0.contains(&7))
    });
    assert!(arrived, "nothing arrived over TLS:\n{}", relay.log());
    let log = relay.stop();
    assert!(!log.contains("Cannot connect"), "{log}");
}

#[test]
fn mqtt_flows_check() {
    for flow in ["flows/mqtt-to-sqlite.toml", "flows/mqtt-bridge.toml"] {
        let o = fbp().arg("check").arg(root().join(flow)).output().unwrap();
        assert!(o.status.success(), "{flow}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

/// Publishes `messages` at QoS 1, `per_second` of them (in steps of 10 ms),
/// and returns once the broker confirmed them all. Bounded: it panics past
/// `limit`.
fn publish_paced(port: u16, messages: Vec<(String, Vec<u8>)>, per_second: usize, limit: Duration) {
    let n = messages.len();
    let (client, mut conn) = Client::new(options(port, "paced"), 1000);
    let started = Instant::now();
    let publisher = thread::spawn(move || {
        let per_tick = (per_second / 100).max(1);
        for (i, chunk) in messages.chunks(per_tick).enumerate() {
            let due = started + Duration::from_millis(10 * i as u64);
            thread::sleep(due.saturating_duration_since(Instant::now()));
            for (topic, payload) in chunk {
                client.publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone()).expect("queue a publish");
            }
        }
        client
    });
    let mut done = 0;
    for event in conn.iter() {
        assert!(started.elapsed() < limit, "published {done} of {n} in {limit:?}");
        match event {
            Ok(Event::Incoming(Packet::PubAck(_))) => done += 1,
            Err(e) => panic!("test publisher: {e}"),
            _ => {}
        }
        if done == n {
            break;
        }
    }
    let client = publisher.join().unwrap();
    let _ = client.disconnect();
}

/// The sum of `count` over the window results in `path` whose sensor is not the probe.
fn counted(path: &Path) -> u64 {
    lines(path)
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|w| w["sensor"] != "probe")
        .filter_map(|w| w["count"].as_u64())
        .sum()
}

#[test]
fn a_window_on_a_qos1_subscription_counts_every_reading_with_the_brokers_default_limits() {
    // Issue 20: a window holding its inputs' acknowledgements for its period
    // left the subscription 20 messages per period; mosquitto queued 1 000
    // more and dropped the rest, silently.
    let dir = tempdir();
    let broker_dir = dir.path().join("broker");
    let broker = Server::mosquitto(&broker_dir).unwrap();
    let flow = write(
        dir.path(),
        "windows.toml",
        &format!(
            r#"[flow]
name = "windows"
connections = ["sub -> avg", "avg -> windows", "sub -> hot", "hot -> store"]

[components.sub]
type = "mqtt-subscribe"
config = {{ port = {}, topics = ["sensors/#"], qos = 1 }}

[components.avg]
type = "window"
config = {{ every = "2s", group_by = "sensor", aggregates = ["avg", "max"] }}

[components.windows]
type = "file-write"
config = {{ path = "windows.jsonl", format = "lines" }}

[components.hot]
type = "filter"
config = {{ expr = ".value >= 40" }}

[components.store]
type = "sqlite"
config = {{ path = "readings.db", table = "readings", columns = {{ sensor = "TEXT", value = "REAL", id = "INTEGER" }} }}
"#,
            broker.port()
        ),
    );
    let run = Fbp::start(dir.path(), &["run", flow.to_str().unwrap()], &[]);
    run.wait_connected(1);
    let db = dir.path().join("readings.db");
    let probe = br#"{"sensor": "probe", "value": 99}"#;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !any_rows(&db) {
        assert!(Instant::now() < deadline, "no probe went through fbp in 15 s:\n{}", run.log());
        publish(broker.port(), vec![("sensors/probe".into(), probe.to_vec())], QoS::AtLeastOnce);
        wait_until(Duration::from_millis(300), || any_rows(&db));
    }

    let total = 20_000u64;
    let reading = |i: u64| format!(r#"{{"sensor": "s{}", "value": {}, "id": {i}}}"#, i % 10, i % 50);
    let readings = (0..total).map(|i| (format!("sensors/s{}", i % 10), reading(i).into_bytes())).collect();
    publish_paced(broker.port(), readings, 2000, Duration::from_secs(40));
    let hot = (0..total).filter(|i| i % 50 >= 40).count() as i64;
    let windows = dir.path().join("windows.jsonl");
    let all = wait_until(Duration::from_secs(20), || counted(&windows) == total && rows(&db) == hot);
    let broker_log = fbp_runtime::testbed::mosquitto_log(&broker_dir);
    let dropped = broker_log.lines().filter(|l| l.contains("dropped")).take(3).collect::<Vec<_>>();
    assert!(
        all,
        "{} of {total} counted in windows, {} of {hot} rows; broker: {dropped:?}",
        counted(&windows),
        rows(&db)
    );
    let log = run.stop();
    assert_eq!(counted(&windows), total, "counted twice:\n{log}");
    assert_eq!(summary(&log, "sub", "errors"), Some(0), "{log}");
}

/// The `fields` of the JSON log lines whose message starts with `start`.
fn logged(log: &str, start: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["fields"].clone())
        .filter(|f| f["message"].as_str().is_some_and(|m| m.starts_with(start)))
        .collect()
}

#[test]
fn a_subscription_stuck_behind_held_acknowledgements_warns_once_naming_the_holder() {
    let dir = tempdir();
    let broker = Server::mosquitto(&dir.path().join("broker")).unwrap();
    let flow = write(
        dir.path(),
        "held.toml",
        &format!(
            r#"[flow]
name = "held"
connections = ["sub -> keep", "keep -> avg", "avg -> out"]

[components.sub]
type = "mqtt-subscribe"
config = {{ port = {}, topics = ["sensors/#"], qos = 1 }}

[components.keep]
type = "filter"
config = {{ expr = ".value != null" }}

[components.avg]
type = "window"
config = {{ every = "1h", group_by = "sensor", ack = "on_emit" }}

[components.out]
type = "file-write"
config = {{ path = "windows.jsonl", format = "lines" }}
"#,
            broker.port()
        ),
    );
    let run = Fbp::start(dir.path(), &["run", flow.to_str().unwrap()], &[]);
    run.wait_connected(1);
    let readings =
        (0..100u64).map(|i| ("sensors/a".to_string(), format!(r#"{{"sensor": "a", "value": {i}}}"#).into_bytes()));
    publish(broker.port(), readings.collect(), QoS::AtLeastOnce);
    let start = "Messages stay unacknowledged";
    let warned = wait_until(Duration::from_secs(15), || !logged(&run.log(), start).is_empty());
    assert!(warned, "no warning:\n{}", run.log());
    let log = run.stop();
    let warnings = logged(&log, start);
    assert_eq!(warnings.len(), 1, "{log}");
    let w = &warnings[0];
    assert_eq!(w["component"], "sub");
    assert_eq!(w["unacknowledged"], 20, "mosquitto's default in-flight limit: {w}");
    let checked = logged(&log, "The flow check warns.");
    assert!(checked.len() == 1 && checked[0]["warning"].as_str().unwrap().starts_with("`avg` holds"), "{log}");
    assert!(w["held_by"].as_str().unwrap().contains("`avg` (window) holds them up to 1h"), "{w}");
    assert!(w["help"].as_str().unwrap().contains(r#"set `ack = "on_fold"`"#), "{w}");
    // The broker sent 20 and kept the rest: the window flushes those 20 when the flow stops.
    assert_eq!(counted(&dir.path().join("windows.jsonl")), 20, "{log}");
}

#[test]
fn lorrystreams_own_pipelines_run_unchanged() {
    let dir = tempdir();
    let topic = client_id("testdrive");
    let db = dir.path().join("testdrive.db");
    let count_rows = |table: &str| {
        rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row(&format!("SELECT count(*) FROM {table} WHERE value >= 0"), [], |r| r.get(0)))
            .unwrap_or(0i64)
    };
    let probed = |table: &str| {
        rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get::<_, i64>(0)))
            .is_ok_and(|n| n > 0)
    };
    // LorryStream's element names and `location=`, as in its README; then a bare URI per end.
    let pipelines = [
        (
            format!(
                "mqttsrc location=mqtt://localhost/{topic}/%23 ! sqlsink location=sqlite://testdrive.db?table=testdrive"
            ),
            "testdrive",
        ),
        (format!("mqtt://localhost/{topic}/%23 ! map expr=. ! sqlite://testdrive.db?table=bare"), "bare"),
    ];
    for (pipeline, table) in pipelines {
        let fbp = Fbp::start(dir.path(), &["launch", &pipeline], &[]);
        // A probe of the readings' shape (it makes the table), until one is stored.
        let deadline = Instant::now() + Duration::from_secs(15);
        while !probed(table) {
            assert!(Instant::now() < deadline, "{pipeline}: no probe stored: {}", fbp.log());
            publish(1883, vec![(format!("{topic}/probe"), br#"{"value": -1}"#.to_vec())], QoS::AtLeastOnce);
            wait_until(Duration::from_millis(300), || probed(table));
        }
        let readings =
            (0..20u64).map(|i| (format!("{topic}/ch{}", i % 3), format!(r#"{{"value": {i}}}"#).into_bytes()));
        publish(1883, readings.collect(), QoS::AtLeastOnce);
        assert!(wait_until(Duration::from_secs(15), || count_rows(table) == 20), "{pipeline}: {}", count_rows(table));
        let log = fbp.stop();
        assert!(!log.contains("panicked"), "{log}");
    }
}
