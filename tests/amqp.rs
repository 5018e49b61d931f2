//! `amqp-subscribe` and `amqp-publish` against the RabbitMQ on 127.0.0.1:5672
//! (guest/guest): every message arrives and is acknowledged, confirms gate
//! the upstream acknowledgement, a SIGKILL or a cut connection loses nothing,
//! bad bodies go to the dead letter, and the `amqp://` relay URIs work.
//!
//! Queue and exchange names are unique per test (pid and a counter) and are
//! deleted when the test's [`Rabbit`] is dropped.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fbp_runtime::testbed::{Proxy, Server};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::util::{fbp, lines, signal, summary, tempdir, wait_until, write};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Info logs, and the reconnection attempts of links (debug).
const LINK_DEBUG: &str = "info,fbp_runtime::link=debug";

/// A client of the test's own, and the names it made (deleted on drop).
struct Rabbit {
    rt: tokio::runtime::Runtime,
    _conn: Connection,
    channel: Channel,
    queues: Vec<String>,
}

impl Rabbit {
    fn new() -> Rabbit {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (conn, channel) = rt.block_on(async {
            let conn = Connection::connect(URL, ConnectionProperties::default()).await.expect("RabbitMQ on 5672");
            let channel = conn.create_channel().await.unwrap();
            channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
            (conn, channel)
        });
        Rabbit { rt, _conn: conn, channel, queues: Vec::new() }
    }

    /// A name unique to this test run.
    fn name(what: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        format!("fbp-test-{what}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// Declares a fresh durable queue, bound to `exchange` with `key` if given.
    fn queue(&mut self, bind: Option<(&str, &str)>) -> String {
        let name = Rabbit::name("q");
        self.rt.block_on(async {
            let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
            self.channel.queue_declare(name.as_str().into(), options, FieldTable::default()).await.unwrap();
            if let Some((exchange, key)) = bind {
                let (q, e, k) = (name.as_str().into(), exchange.into(), key.into());
                self.channel.queue_bind(q, e, k, QueueBindOptions::default(), FieldTable::default()).await.unwrap();
            }
        });
        self.queues.push(name.clone());
        name
    }

    /// Declares `name` as fbp does: a durable topic exchange, left in place.
    fn exchange(&mut self, name: &str) {
        self.rt.block_on(async {
            let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
            self.channel
                .exchange_declare(name.into(), ExchangeKind::Topic, options, FieldTable::default())
                .await
                .unwrap();
        });
        // Not deleted afterwards: `testdrive` is shared by tests running at the same time.
    }

    /// Publishes `bodies` to `exchange` with `key`, persistent, and waits for the confirms.
    fn publish(&self, exchange: &str, key: &str, bodies: impl IntoIterator<Item = Vec<u8>>) {
        self.publish_with(exchange, key, bodies, FieldTable::default());
    }

    /// Publishes as [`Rabbit::publish`] does, with AMQP `headers`.
    fn publish_with(&self, exchange: &str, key: &str, bodies: impl IntoIterator<Item = Vec<u8>>, headers: FieldTable) {
        self.rt.block_on(async {
            let props = BasicProperties::default().with_delivery_mode(2).with_headers(headers);
            for body in bodies {
                // Confirms are awaited all together below.
                drop(
                    self.channel
                        .basic_publish(
                            exchange.into(),
                            key.into(),
                            BasicPublishOptions::default(),
                            &body,
                            props.clone(),
                        )
                        .await
                        .unwrap(),
                );
            }
            self.channel.wait_for_confirms().await.unwrap();
        });
    }

    /// Messages ready in `queue`.
    fn count(&self, queue: &str) -> u32 {
        self.rt.block_on(async {
            let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            self.channel.queue_declare(queue.into(), options, FieldTable::default()).await.unwrap().message_count()
        })
    }

    /// Takes every message from `queue` (acknowledged): their bodies.
    fn drain(&self, queue: &str) -> Vec<Vec<u8>> {
        self.rt.block_on(async {
            let mut bodies = Vec::new();
            let options = BasicGetOptions { no_ack: true };
            while let Some(m) = self.channel.basic_get(queue.into(), options).await.unwrap() {
                bodies.push(m.delivery.data.clone());
            }
            bodies
        })
    }
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        self.rt.block_on(async {
            for q in &self.queues {
                let _ = self.channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await;
            }
        });
    }
}

/// `{"i": N}` bodies for `range`.
fn numbered(range: std::ops::Range<u32>) -> impl Iterator<Item = Vec<u8>> {
    range.map(|i| format!(r#"{{"i": {i}}}"#).into_bytes())
}

/// An `fbp` this test started: killed (by its PID) if the test ends without stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `fbp` with `args` in `dir`, its log (JSON) in `dir/fbp.log`.
fn start(dir: &Path, args: &[&str]) -> Running {
    let log = File::create(dir.join("fbp.log")).unwrap();
    let cmd =
        fbp().current_dir(dir).args(["--log-format", "json"]).args(args).stdout(Stdio::null()).stderr(log).spawn();
    Running(cmd.unwrap())
}

/// Stops `fbp` with SIGTERM and returns its log.
fn stop(mut running: Running, dir: &Path) -> String {
    signal(&running.0, "TERM");
    let status = running.0.wait().unwrap();
    assert!(status.success(), "fbp exited with {status}");
    log(dir)
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("fbp.log")).unwrap_or_default()
}

/// How many times each `i` of the envelopes in `path` arrived. A line still
/// being written is skipped (fbp may be writing); `complete` checks there is
/// none once fbp has stopped.
fn counts(path: &Path) -> HashMap<u64, u32> {
    let mut seen = HashMap::new();
    for line in lines(path) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
            *seen.entry(v["data"]["i"].as_u64().expect("an `i`")).or_default() += 1;
        }
    }
    seen
}

/// Every line of `path` is a whole envelope: the counts add up to the lines.
fn complete(path: &Path) -> HashMap<u64, u32> {
    let seen = counts(path);
    assert_eq!(seen.values().sum::<u32>() as usize, lines(path).len(), "every line is a whole envelope");
    seen
}

/// Cuts the connections through `proxy` until fbp has lost its connection and
/// failed to reconnect three times (its link logs attempts at debug level),
/// checks it is still running, and restores them.
fn outage(proxy: &Proxy, running: &mut Running, dir: &Path) {
    proxy.cut();
    assert!(wait_until(Duration::from_secs(10), || log(dir).contains("Connection lost")), "{}", log(dir));
    let attempts = || log(dir).matches("Still unreachable").count();
    assert!(wait_until(Duration::from_secs(10), || attempts() >= 3), "{}", log(dir));
    assert!(running.0.try_wait().unwrap().is_none(), "fbp keeps running while the broker is away");
    proxy.restore();
}

/// A flow: `amqp-subscribe` with `config` -> (throttle) -> `file-write` to out.jsonl.
fn subscribe_flow(config: &str, throttle: Option<u32>) -> String {
    let (wiring, pace) = match throttle {
        Some(rate) => (
            r#""amqp -> pace", "pace -> out""#,
            format!("[components.pace]\ntype = \"throttle\"\nconfig = {{ rate = {rate}, per = \"100ms\" }}\n"),
        ),
        None => (r#""amqp -> out""#, String::new()),
    };
    format!(
        "[flow]\nname = \"amqp\"\nconnections = [{wiring}]\ndead_letter = \"file:dead.jsonl\"\n\
         [components.amqp]\ntype = \"amqp-subscribe\"\nconfig = {{ {config} }}\n{pace}\
         [components.out]\ntype = \"file-write\"\nconfig = {{ path = \"out.jsonl\" }}\n"
    )
}

#[test]
fn every_message_of_a_queue_arrives_and_is_acknowledged() {
    let mut rabbit = Rabbit::new();
    let queue = rabbit.queue(None);
    rabbit.publish("", &queue, numbered(0..5000));
    let dir = tempdir();
    write(dir.path(), "flow.toml", &subscribe_flow(&format!(r#"queue = "{queue}", prefetch = 500"#), None));
    let child = start(dir.path(), &["run", "flow.toml"]);
    let out = dir.path().join("out.jsonl");
    assert!(wait_until(Duration::from_secs(20), || lines(&out).len() >= 5000), "{}", log(dir.path()));
    let log = stop(child, dir.path());
    let seen = complete(&out);
    assert_eq!(seen.len(), 5000, "every message arrived");
    assert_eq!(lines(&out).len(), 5000, "and none twice");
    assert_eq!(rabbit.count(&queue), 0, "all acknowledged: nothing returned to the queue\n{log}");
    let first: serde_json::Value = serde_json::from_str(&lines(&out)[0]).unwrap();
    assert_eq!(first["metadata"]["topic"], queue.as_str(), "the routing key is the topic");
}

#[test]
fn published_messages_are_all_in_the_queue_once_fbp_is_done() {
    let mut rabbit = Rabbit::new();
    let queue = rabbit.queue(None);
    let dir = tempdir();
    let input: String = (0..2000).map(|i| format!("{{\"i\": {i}}}\n")).collect();
    write(dir.path(), "in.jsonl", &input);
    let flow = format!(
        "[flow]\nname = \"pub\"\nconnections = [\"in -> amqp\"]\n\
         [components.in]\ntype = \"file-read\"\nconfig = {{ path = \"in.jsonl\" }}\n\
         [components.amqp]\ntype = \"amqp-publish\"\nconfig = {{ routing_key = \"{queue}\", batch_size = 100 }}\n"
    );
    write(dir.path(), "flow.toml", &flow);
    let out = fbp().current_dir(dir.path()).args(["run", "flow.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // fbp finished only once every message was confirmed: all are there now.
    let bodies = rabbit.drain(&queue);
    let mut ids: Vec<u64> =
        bodies.iter().map(|b| serde_json::from_slice::<serde_json::Value>(b).unwrap()["i"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..2000).collect::<Vec<u64>>());
}

#[test]
fn a_subscriber_killed_mid_stream_loses_nothing_after_a_restart() {
    let mut rabbit = Rabbit::new();
    let queue = rabbit.queue(None);
    rabbit.publish("", &queue, numbered(0..3000));
    let dir = tempdir();
    // 200 per 100 ms: about 1.5 s for all, so the kill lands mid-stream.
    write(dir.path(), "flow.toml", &subscribe_flow(&format!(r#"queue = "{queue}", prefetch = 100"#), Some(200)));
    let out = dir.path().join("out.jsonl");
    let mut child = start(dir.path(), &["run", "flow.toml"]);
    assert!(wait_until(Duration::from_secs(20), || lines(&out).len() >= 600), "{}", log(dir.path()));
    signal(&child.0, "KILL");
    child.0.wait().unwrap();
    let before = lines(&out).len();
    assert!(before < 3000, "killed mid-stream ({before} of 3000)");
    let child = start(dir.path(), &["run", "flow.toml"]);
    assert!(wait_until(Duration::from_secs(25), || counts(&out).len() == 3000), "{}", log(dir.path()));
    stop(child, dir.path());
    let seen = complete(&out);
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    assert_eq!(seen.len(), 3000, "nothing lost");
    assert!(duplicates <= 100 + 1000, "duplicates bounded by what was in flight: {duplicates}");
    eprintln!("killed after {before} lines; {duplicates} duplicates after the restart");
    assert_eq!(rabbit.count(&queue), 0);
}

#[test]
fn a_cut_connection_is_logged_once_and_nothing_is_lost() {
    let mut rabbit = Rabbit::new();
    let queue = rabbit.queue(None);
    rabbit.publish("", &queue, numbered(0..2000));
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).unwrap();
    let dir = tempdir();
    let config = format!(
        r#"url = "amqp://guest:guest@127.0.0.1:{}/%2f", queue = "{queue}", prefetch = 50, reconnect = "50ms..500ms""#,
        proxy.port()
    );
    write(dir.path(), "flow.toml", &subscribe_flow(&config, Some(100)));
    let out = dir.path().join("out.jsonl");
    let mut child = start(dir.path(), &["--log-level", LINK_DEBUG, "run", "flow.toml"]);
    assert!(wait_until(Duration::from_secs(20), || lines(&out).len() >= 300), "{}", log(dir.path()));
    outage(&proxy, &mut child, dir.path());
    assert!(wait_until(Duration::from_secs(25), || counts(&out).len() == 2000), "{}", log(dir.path()));
    let log = stop(child, dir.path());
    assert_eq!(log.matches("Connection lost").count(), 1, "one warning per outage\n{log}");
    assert_eq!(log.matches("Reconnected.").count(), 1, "{log}");
    assert_eq!(summary(&log, "amqp", "restarts"), Some(0));
    assert_eq!(complete(&out).len(), 2000, "nothing lost");
    assert_eq!(rabbit.count(&queue), 0);
}

#[test]
fn malformed_json_goes_to_the_dead_letter_and_nothing_restarts() {
    let mut rabbit = Rabbit::new();
    let queue = rabbit.queue(None);
    let bodies = (0..300u32).map(|i| {
        if i % 3 == 2 { format!("{{\"i\": {i}, broken").into_bytes() } else { format!("{{\"i\": {i}}}").into_bytes() }
    });
    rabbit.publish("", &queue, bodies);
    let dir = tempdir();
    write(dir.path(), "flow.toml", &subscribe_flow(&format!(r#"queue = "{queue}""#), None));
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let child = start(dir.path(), &["run", "flow.toml"]);
    let done = || lines(&out).len() >= 200 && lines(&dead).len() >= 100;
    assert!(wait_until(Duration::from_secs(20), done), "{}", log(dir.path()));
    let log = stop(child, dir.path());
    assert_eq!(complete(&out).len(), 200);
    let dead = lines(&dead);
    assert_eq!(dead.len(), 100);
    let first: serde_json::Value = serde_json::from_str(&dead[0]).unwrap();
    assert!(first["data"]["error"].as_str().unwrap().contains("not JSON"), "{first}");
    assert_eq!(first["data"]["data"], "{\"i\": 2, broken", "the body is kept as text");
    assert_eq!(summary(&log, "amqp", "restarts"), Some(0));
    assert_eq!(summary(&log, "amqp", "errors"), Some(100));
    assert_eq!(rabbit.count(&queue), 0, "dead-lettered messages are acknowledged too");
}

#[test]
fn large_empty_and_invalid_utf8_bodies_with_text_format() {
    let mut rabbit = Rabbit::new();
    let queue = rabbit.queue(None);
    let large = "x".repeat(1 << 20).into_bytes();
    rabbit.publish("", &queue, [large, Vec::new(), b"ok\xff\xfe".to_vec(), b"after".to_vec()]);
    let dir = tempdir();
    write(dir.path(), "flow.toml", &subscribe_flow(&format!(r#"queue = "{queue}", format = "text""#), None));
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let child = start(dir.path(), &["run", "flow.toml"]);
    assert!(wait_until(Duration::from_secs(20), || lines(&out).len() >= 3 && !lines(&dead).is_empty()));
    stop(child, dir.path());
    let out: Vec<serde_json::Value> = lines(&out).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(out[0]["data"].as_str().unwrap().len(), 1 << 20, "1 MiB arrives whole");
    assert_eq!(out[1]["data"], "", "an empty body is an empty text");
    assert_eq!(out[2]["data"], "after");
    let dead: serde_json::Value = serde_json::from_str(&lines(&dead)[0]).unwrap();
    assert!(dead["data"]["error"].as_str().unwrap().contains("not UTF-8"), "{dead}");
    assert_eq!(dead["data"]["data"], "b2v//g==", "the raw bytes are kept (base64)");
    assert_eq!(rabbit.count(&queue), 0);
}

#[test]
fn relay_amqp_to_amqp_through_named_queues() {
    let mut rabbit = Rabbit::new();
    let (from, to) = (Rabbit::name("from"), Rabbit::name("to"));
    rabbit.exchange(&from);
    rabbit.exchange(&to);
    let source_queue = rabbit.queue(Some((&from, "demo")));
    let sink_queue = rabbit.queue(Some((&to, "demo")));
    rabbit.publish(&from, "demo", numbered(0..500));
    let dir = tempdir();
    let source = format!("amqp://127.0.0.1/{from}/demo?queue={source_queue}");
    let sink = format!("amqp://127.0.0.1/{to}/demo");
    let child = start(dir.path(), &["relay", &source, &sink]);
    assert!(wait_until(Duration::from_secs(20), || rabbit.count(&sink_queue) >= 500), "{}", log(dir.path()));
    stop(child, dir.path());
    assert_eq!(rabbit.count(&source_queue), 0);
    assert_eq!(rabbit.drain(&sink_queue).len(), 500);
}

#[test]
fn relay_the_lorrystream_uri_to_a_file() {
    let mut rabbit = Rabbit::new();
    let dir = tempdir();
    let out = dir.path().join("out.jsonl");
    let child = start(dir.path(), &["relay", "amqp://127.0.0.1/testdrive/demo", "file:out.jsonl"]);
    // The exclusive queue is bound once the source says it is connected.
    assert!(wait_until(Duration::from_secs(10), || log(dir.path()).contains("Connected.")), "{}", log(dir.path()));
    // fbp declared `testdrive` as a durable topic exchange: declaring it so again succeeds.
    rabbit.exchange("testdrive");
    let mut headers = FieldTable::default();
    headers.insert("sensor".into(), AMQPValue::LongString("s-1".into()));
    headers.insert("n".into(), AMQPValue::LongLongInt(7));
    rabbit.publish_with("testdrive", "demo", numbered(0..100), headers);
    assert!(wait_until(Duration::from_secs(10), || lines(&out).len() >= 100), "{}", log(dir.path()));
    stop(child, dir.path());
    assert_eq!(complete(&out).len(), 100);
    let first: serde_json::Value = serde_json::from_str(&lines(&out)[0]).unwrap();
    assert_eq!(first["metadata"]["topic"], "demo");
    assert_eq!(first["metadata"]["headers"], serde_json::json!({"sensor": "s-1", "n": "7"}), "AMQP headers");
}

/// LorryStream's example, `fbp relay "amqp://127.0.0.1/testdrive/demo"
/// "mqtt://127.0.0.1/testdrive/demo"`, against this test's own Mosquitto (its
/// port in the URI) and a routing key of its own (the exchange is shared).
#[test]
fn relay_the_lorrystream_example_from_amqp_to_mqtt() {
    let mut rabbit = Rabbit::new();
    let dir = tempdir();
    let broker = Server::mosquitto(&dir.path().join("mosquitto")).expect("mosquitto starts");
    let key = format!("demo-{}", std::process::id());
    let sub = crate::mqtt::Collector::start(broker.port(), &format!("testdrive/{key}"));
    let source = format!("amqp://127.0.0.1/testdrive/{key}");
    let sink = format!("mqtt://127.0.0.1:{}/testdrive/{key}", broker.port());
    let child = start(dir.path(), &["relay", &source, &sink]);
    let connected = || log(dir.path()).matches("Connected.").count() >= 2;
    assert!(wait_until(Duration::from_secs(10), connected), "{}", log(dir.path()));
    rabbit.exchange("testdrive");
    let bodies = (0..500u64).map(|i| format!(r#"{{"id": {i}}}"#).into_bytes());
    rabbit.publish_with("testdrive", &key, bodies, FieldTable::default());
    assert!(wait_until(Duration::from_secs(15), || sub.ids().len() == 500), "{} of 500 arrived", sub.ids().len());
    stop(child, dir.path());
    assert!(sub.topics().iter().all(|t| *t == format!("testdrive/{key}")));
}

#[test]
fn unroutable_and_untemplatable_messages_go_to_the_dead_letter() {
    let mut rabbit = Rabbit::new();
    let queue = rabbit.queue(None);
    let nowhere = Rabbit::name("nowhere");
    let dir = tempdir();
    let flow = format!(
        "[flow]\nname = \"pub\"\nconnections = [\"in -> amqp\"]\ndead_letter = \"file:dead.jsonl\"\n\
         [components.in]\ntype = \"inject\"\n\
         config = {{ messages = [{{ q = \"{queue}\" }}, {{ q = \"{nowhere}\" }}, {{ other = 1 }}, {{ q = \"{queue}\" }}] }}\n\
         [components.amqp]\ntype = \"amqp-publish\"\nconfig = {{ routing_key = \"{{{{ .q }}}}\", mandatory = true }}\n"
    );
    write(dir.path(), "flow.toml", &flow);
    let out = fbp().current_dir(dir.path()).args(["run", "flow.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(rabbit.drain(&queue).len(), 2, "the routable messages arrive");
    let dead: Vec<serde_json::Value> =
        lines(&dir.path().join("dead.jsonl")).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let errors: Vec<&str> = dead.iter().map(|d| d["data"]["error"].as_str().unwrap()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("gave null")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("unroutable")), "{errors:?}");
}

#[test]
fn a_publisher_cut_off_republishes_what_was_not_confirmed() {
    let mut rabbit = Rabbit::new();
    let queue = rabbit.queue(None);
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).unwrap();
    let dir = tempdir();
    let input: String = (0..3000).map(|i| format!("{{\"i\": {i}}}\n")).collect();
    write(dir.path(), "in.jsonl", &input);
    let flow = format!(
        "[flow]\nname = \"pub\"\nconnections = [\"in -> pace\", \"pace -> amqp\"]\n\
         [components.in]\ntype = \"file-read\"\nconfig = {{ path = \"in.jsonl\" }}\n\
         [components.pace]\ntype = \"throttle\"\nconfig = {{ rate = 200, per = \"100ms\" }}\n\
         [components.amqp]\ntype = \"amqp-publish\"\nconfig = {{ url = \"amqp://guest:guest@127.0.0.1:{}/%2f\", \
         routing_key = \"{queue}\", batch_size = 50, reconnect = \"50ms..500ms\" }}\n",
        proxy.port()
    );
    write(dir.path(), "flow.toml", &flow);
    let mut child = start(dir.path(), &["--log-level", LINK_DEBUG, "run", "flow.toml"]);
    assert!(wait_until(Duration::from_secs(20), || rabbit.count(&queue) >= 500), "{}", log(dir.path()));
    outage(&proxy, &mut child, dir.path());
    assert!(wait_until(Duration::from_secs(25), || child.0.try_wait().unwrap().is_some()), "{}", log(dir.path()));
    assert!(child.0.wait().unwrap().success(), "{}", log(dir.path()));
    let log = log(dir.path());
    assert_eq!(log.matches("Connection lost").count(), 1, "one warning per outage\n{log}");
    let mut seen: HashMap<u64, u32> = HashMap::new();
    for body in rabbit.drain(&queue) {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        *seen.entry(v["i"].as_u64().unwrap()).or_default() += 1;
    }
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!("publisher: {duplicates} duplicates after the cut");
    assert_eq!(seen.len(), 3000, "nothing lost");
    assert!(duplicates <= 50, "only the unconfirmed batch is published again: {duplicates}");
}

#[test]
fn a_graceful_stop_acknowledges_everything_written_and_nothing_else() {
    let mut rabbit = Rabbit::new();
    let queue = rabbit.queue(None);
    rabbit.publish("", &queue, numbered(0..3000));
    let dir = tempdir();
    write(dir.path(), "flow.toml", &subscribe_flow(&format!(r#"queue = "{queue}", prefetch = 200"#), Some(100)));
    let out = dir.path().join("out.jsonl");
    let child = start(dir.path(), &["run", "flow.toml"]);
    assert!(wait_until(Duration::from_secs(20), || lines(&out).len() >= 500), "{}", log(dir.path()));
    stop(child, dir.path());
    let written = complete(&out).len() as u32;
    assert!(written < 3000, "stopped mid-stream");
    // What was in flight at SIGTERM drained to the file and was acknowledged
    // on the way out; the rest is back in the queue: no loss, no duplicate.
    // (The broker requeues the unacknowledged once it has seen the connection close.)
    let _ = wait_until(Duration::from_secs(5), || written + rabbit.count(&queue) >= 3000);
    assert_eq!(written + rabbit.count(&queue), 3000, "{written} written");
}

#[test]
fn a_queue_at_prefetch_behind_a_window_warns_once_naming_it() {
    let mut rabbit = Rabbit::new();
    let queue = rabbit.queue(None);
    rabbit.publish("", &queue, numbered(0..50));
    let dir = tempdir();
    let flow = format!(
        "[flow]\nname = \"held\"\nconnections = [\"amqp -> avg\", \"avg -> out\"]\n\
         [components.amqp]\ntype = \"amqp-subscribe\"\nconfig = {{ queue = \"{queue}\", prefetch = 10 }}\n\
         [components.avg]\ntype = \"window\"\nconfig = {{ every = \"1h\", field = \"i\", ack = \"on_emit\" }}\n\
         [components.out]\ntype = \"file-write\"\nconfig = {{ path = \"windows.jsonl\", format = \"lines\" }}\n"
    );
    write(dir.path(), "flow.toml", &flow);
    let child = start(dir.path(), &["run", "flow.toml"]);
    let warnings = |log: &str| crate::util::logged(log, "Messages stay unacknowledged");
    let warned = wait_until(Duration::from_secs(20), || !warnings(&log(dir.path())).is_empty());
    assert!(warned, "no warning:\n{}", log(dir.path()));
    let log = stop(child, dir.path());
    let w = warnings(&log);
    assert_eq!(w.len(), 1, "{log}");
    assert_eq!((&w[0]["component"], &w[0]["unacknowledged"]), (&serde_json::json!("amqp"), &serde_json::json!(10)));
    assert!(w[0]["held_by"].as_str().unwrap().contains("`avg` (window) holds them up to 1h"), "{w:?}");
}

#[test]
fn a_window_behind_a_prefetch_of_100_counts_every_amqp_message_once() {
    let mut rabbit = Rabbit::new();
    let queue = rabbit.queue(None);
    let total = 2_000;
    rabbit.publish("", &queue, numbered(0..total));
    let dir = tempdir();
    // Twenty times more messages than the broker lets out unacknowledged:
    // with acknowledgements held by the 2 s window, it would stop at 100.
    let flow = format!(
        "[flow]\nname = \"windowed\"\nconnections = [\"amqp -> avg\", \"avg -> out\"]\n\
         [components.amqp]\ntype = \"amqp-subscribe\"\nconfig = {{ queue = \"{queue}\", prefetch = 100 }}\n\
         [components.avg]\ntype = \"window\"\nconfig = {{ every = \"2s\", field = \"i\" }}\n\
         [components.out]\ntype = \"file-write\"\nconfig = {{ path = \"windows.jsonl\", format = \"lines\" }}\n"
    );
    write(dir.path(), "flow.toml", &flow);
    let child = start(dir.path(), &["run", "flow.toml"]);
    let counted = || -> u64 {
        lines(&dir.path().join("windows.jsonl"))
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["count"].as_u64())
            .sum()
    };
    let all = wait_until(Duration::from_secs(30), || counted() >= u64::from(total));
    assert!(all, "{} of {total} counted\n{}", counted(), log(dir.path()));
    stop(child, dir.path());
    assert_eq!(counted(), u64::from(total), "every message counted once");
}

/// 15 small bodies around one of 100 KiB, past `max_payload_size = "64KiB"`:
/// the 15 arrive, the big one is dead-lettered with its queue, size and limit
/// and acknowledged, and nothing restarts or reconnects.
#[test]
fn an_oversized_body_is_dead_lettered_acknowledged_and_the_rest_flows() {
    let mut rabbit = Rabbit::new();
    let queue = rabbit.queue(None);
    let big = format!("{{\"i\": 99, \"pad\": \"{}\"}}", "x".repeat(100 * 1024)).into_bytes();
    let size = big.len();
    rabbit.publish("", &queue, numbered(0..8).chain([big]).chain(numbered(8..15)));
    let dir = tempdir();
    let config = format!(r#"queue = "{queue}", max_payload_size = "64KiB""#);
    write(dir.path(), "flow.toml", &subscribe_flow(&config, None));
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let child = start(dir.path(), &["run", "flow.toml"]);
    let done = || lines(&out).len() >= 15 && !lines(&dead).is_empty();
    assert!(wait_until(Duration::from_secs(20), done), "{}", log(dir.path()));
    let log = stop(child, dir.path());
    let seen = complete(&out);
    assert_eq!(seen, (0..15).map(|i| (i, 1)).collect::<HashMap<u64, u32>>());
    let dead = lines(&dead);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let dead: serde_json::Value = serde_json::from_str(&dead[0]).unwrap();
    let about = serde_json::json!({"queue": queue, "routing_key": queue, "size": size, "limit": 65536});
    assert_eq!(dead["data"]["data"], about, "{dead}");
    let error = dead["data"]["error"].as_str().unwrap();
    let expected = format!(
        "body of {size} bytes from queue `{queue}` (routing key `{queue}`) is over `max_payload_size` (65536 bytes)"
    );
    assert_eq!(error, expected);
    assert_eq!(summary(&log, "amqp", "restarts"), Some(0), "{log}");
    assert_eq!(summary(&log, "amqp", "errors"), Some(1), "{log}");
    assert_eq!(log.matches("Connected.").count(), 1, "no reconnect: {log}");
    assert_eq!(rabbit.count(&queue), 0, "the big one is acknowledged too");
}
