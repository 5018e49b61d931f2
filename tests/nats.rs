//! NATS end to end: `fbp` processes against a real `nats-server` (JetStream
//! on, one per test, killed by PID), fed and checked with async-nats.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use fbp_runtime::testbed::Server;
use futures_util::StreamExt;

use crate::util::{fbp, lines, root, signal, summary, tempdir, wait_until, write};

/// A NATS server and a client of the test's own.
struct Bus {
    server: Server,
    rt: tokio::runtime::Runtime,
    client: async_nats::Client,
    js: jetstream::Context,
}

impl Bus {
    fn start(dir: &Path) -> Bus {
        let server = Server::nats(&dir.join("nats")).expect("nats-server runs");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let client = rt
            .block_on(async_nats::ConnectOptions::new().max_reconnects(None).connect(server.addr()))
            .expect("test client connects");
        let js = rt.block_on(async { jetstream::new(client.clone()) });
        Bus { server, rt, client, js }
    }

    fn url(&self) -> String {
        format!("nats://{}", self.server.addr())
    }

    fn stream(&self, name: &str, subject: &str) {
        let config =
            jetstream::stream::Config { name: name.into(), subjects: vec![subject.into()], ..Default::default() };
        self.rt.block_on(self.js.create_stream(config)).expect("stream created");
    }

    /// A JetStream publish, retried until the stream confirms it (20 s at most).
    fn js_publish(&self, subject: &str, payload: Vec<u8>) {
        let end = Instant::now() + Duration::from_secs(20);
        self.rt.block_on(async {
            loop {
                let confirmed = match self.js.publish(subject.to_string(), payload.clone().into()).await {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                };
                match confirmed {
                    true => return,
                    false if Instant::now() > end => panic!("publish to {subject} not confirmed within 20 s"),
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
    }

    /// A core publish, flushed.
    fn publish(&self, subject: &str, payload: Vec<u8>) {
        self.rt.block_on(async {
            self.client.publish(subject.to_string(), payload.into()).await.unwrap();
            self.client.flush().await.unwrap();
        })
    }

    /// Every payload published on `subject` from now on.
    fn collect(&self, subject: &str) -> Arc<Mutex<Vec<Vec<u8>>>> {
        self.collect_with(subject, |m| m.payload.to_vec())
    }

    /// The subject of every message published on `subject` from now on.
    fn collect_subjects(&self, subject: &str) -> Arc<Mutex<Vec<String>>> {
        self.collect_with(subject, |m| m.subject.to_string())
    }

    /// `what` of every message published on `subject` from now on.
    fn collect_with<T: Send + 'static>(
        &self,
        subject: &str,
        what: fn(&async_nats::Message) -> T,
    ) -> Arc<Mutex<Vec<T>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut sub = self.rt.block_on(async {
            let sub = self.client.subscribe(subject.to_string()).await.unwrap();
            self.client.flush().await.unwrap();
            sub
        });
        let s = seen.clone();
        self.rt.spawn(async move {
            while let Some(m) = sub.next().await {
                s.lock().unwrap().push(what(&m));
            }
        });
        seen
    }

    /// (delivered but not acknowledged, not delivered yet) of a durable consumer.
    /// A durable consumer's (unacknowledged, not yet delivered, delivered
    /// again), once it exists.
    fn consumer_state(&self, stream: &str, durable: &str) -> Option<(usize, u64, usize)> {
        self.rt.block_on(async {
            let info = self.js.get_stream(stream).await.ok()?.consumer_info(durable).await.ok()?.clone();
            Some((info.num_ack_pending, info.num_pending, info.num_redelivered))
        })
    }

    fn consumer(&self, stream: &str, durable: &str) -> (usize, u64) {
        self.rt.block_on(async {
            let stream = self.js.get_stream(stream).await.unwrap();
            let info = stream.consumer_info(durable).await.unwrap();
            (info.num_ack_pending, info.num_pending)
        })
    }
}

/// Starts `fbp` with JSON logs into `dir/log`.
fn start(dir: &Path, log: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
    let log = File::create(dir.join(log)).unwrap();
    fbp()
        .current_dir(dir)
        .arg("--log-format")
        .arg("json")
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("fbp starts")
}

/// SIGTERM, then the exit status (within 15 s).
fn stop(child: &mut Child) -> ExitStatus {
    signal(child, "TERM");
    exited(child, Duration::from_secs(15))
}

fn exited(child: &mut Child, limit: Duration) -> ExitStatus {
    let mut status = None;
    wait_until(limit, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("fbp did not exit within {limit:?}")
    })
}

fn job(id: usize) -> Vec<u8> {
    format!(r#"{{"id": {id}, "n": {id}}}"#).into_bytes()
}

/// The `field` of each JSON line (or payload), as numbers.
fn numbers<'a>(jsons: impl IntoIterator<Item = &'a [u8]>, field: &str) -> Vec<i64> {
    jsons.into_iter().filter_map(|j| serde_json::from_slice::<serde_json::Value>(j).ok()?[field].as_i64()).collect()
}

fn ids_in(path: &Path) -> Vec<i64> {
    let lines = lines(path);
    numbers(lines.iter().map(|l| l.as_bytes()), "id")
}

/// How many times each id was seen.
fn tally(ids: &[i64]) -> BTreeMap<i64, usize> {
    let mut t = BTreeMap::new();
    for id in ids {
        *t.entry(*id).or_default() += 1;
    }
    t
}

/// `name.toml` in `dir`: a JetStream `nats-subscribe` (`sub`, its config
/// after `url`) into a `window` (`window`, its config) into `windows.jsonl`.
fn windowed_flow(bus: &Bus, dir: &Path, name: &str, sub: &str, window: &str) -> std::path::PathBuf {
    let flow = format!(
        "[flow]\nname = \"{name}\"\nconnections = [\"sub -> avg\", \"avg -> out\"]\n\
         [components.sub]\ntype = \"nats-subscribe\"\nconfig = {{ url = \"{}\", {sub} }}\n\
         [components.avg]\ntype = \"window\"\nconfig = {{ {window} }}\n\
         [components.out]\ntype = \"file-write\"\nconfig = {{ path = \"windows.jsonl\", format = \"lines\" }}\n",
        bus.url()
    );
    write(dir, &format!("{name}.toml"), &flow)
}

/// The messages the windows in `dir/windows.jsonl` counted, in all.
fn counted(dir: &Path) -> u64 {
    let windows = lines(&dir.join("windows.jsonl"));
    windows.iter().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["count"].as_u64()).sum()
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

#[test]
fn queue_group_workers_split_the_stream_and_a_graceful_stop_hands_over() {
    let dir = tempdir();
    let bus = Bus::start(dir.path());
    let results = bus.collect("results");
    let flow = root().join("flows/nats-worker.toml");
    let flow = flow.to_str().unwrap();
    let url = bus.url();
    let mut a = start(dir.path(), "a.log", &["run", flow], &[("NATS_URL", &url), ("WORKER", "a")]);
    let mut b = start(dir.path(), "b.log", &["run", flow], &[("NATS_URL", &url), ("WORKER", "b")]);
    // Probe (id 5000) until both workers answer: core NATS drops what nobody hears.
    let both_up = wait_until(Duration::from_secs(15), || {
        bus.publish("jobs", job(5000));
        let seen = results.lock().unwrap();
        let workers: Vec<String> = seen
            .iter()
            .filter_map(|r| serde_json::from_slice::<serde_json::Value>(r).ok())
            .filter_map(|v| v["worker"].as_str().map(str::to_string))
            .collect();
        workers.iter().any(|w| w == "a") && workers.iter().any(|w| w == "b")
    });
    assert!(both_up, "a: {}\nb: {}", log(dir.path(), "a.log"), log(dir.path(), "b.log"));
    results.lock().unwrap().clear();
    // 1000 jobs at a bounded pace; worker a stops gracefully halfway.
    let mut a_status = None;
    for id in 0..1000 {
        bus.publish("jobs", job(id));
        if id == 500 {
            signal(&a, "TERM");
        }
        if id > 500 && a_status.is_none() {
            a_status = a.try_wait().unwrap();
        }
        thread::sleep(Duration::from_millis(1));
    }
    let a_status = a_status.unwrap_or_else(|| exited(&mut a, Duration::from_secs(15)));
    assert!(a_status.success(), "{}", log(dir.path(), "a.log"));
    let done = |r: &Vec<Vec<u8>>| numbers(r.iter().map(Vec::as_slice), "id").iter().filter(|i| **i < 1000).count();
    wait_until(Duration::from_secs(15), || done(&results.lock().unwrap()) >= 1000);
    let results = results.lock().unwrap().clone();
    let ids: Vec<i64> = numbers(results.iter().map(Vec::as_slice), "id").into_iter().filter(|i| *i < 1000).collect();
    let t = tally(&ids);
    assert_eq!(t.len(), 1000, "lost: {:?}", (0..1000).filter(|i| !t.contains_key(i)).collect::<Vec<_>>());
    assert!(t.values().all(|n| *n == 1), "duplicated: {:?}", t.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>());
    let by = |w: &str| {
        results.iter().filter(|r| serde_json::from_slice::<serde_json::Value>(r).unwrap()["worker"] == w).count()
    };
    assert!(by("a") > 0 && by("b") > by("a"), "a did {}, b did {}", by("a"), by("b"));
    assert!(stop(&mut b).success(), "{}", log(dir.path(), "b.log"));
}

#[test]
fn jetstream_durable_resumes_where_it_stopped_without_redelivering() {
    let dir = tempdir();
    let bus = Bus::start(dir.path());
    bus.stream("ORDERS", "orders");
    (0..1000).for_each(|id| bus.js_publish("orders", job(id)));
    let source = format!("{}/orders?stream=ORDERS&durable=fbp&ack_wait=2s", bus.url());
    let run =
        |log: &str, out: &str| start(dir.path(), log, &["relay", &source, &format!("file:{out}?format=lines")], &[]);
    let mut first = run("1.log", "1.jsonl");
    let out1 = dir.path().join("1.jsonl");
    assert!(wait_until(Duration::from_secs(15), || lines(&out1).len() >= 1000), "{}", log(dir.path(), "1.log"));
    assert!(stop(&mut first).success(), "{}", log(dir.path(), "1.log"));
    assert_eq!(bus.consumer("ORDERS", "fbp"), (0, 0), "every message acknowledged before exit");
    (1000..2000).for_each(|id| bus.js_publish("orders", job(id)));
    let mut second = run("2.log", "2.jsonl");
    let out2 = dir.path().join("2.jsonl");
    assert!(wait_until(Duration::from_secs(15), || lines(&out2).len() >= 1000), "{}", log(dir.path(), "2.log"));
    assert!(wait_until(Duration::from_secs(10), || bus.consumer("ORDERS", "fbp") == (0, 0)));
    assert!(stop(&mut second).success());
    assert_eq!(ids_in(&out1), (0..1000).collect::<Vec<_>>());
    assert_eq!(ids_in(&out2), (1000..2000).collect::<Vec<_>>(), "exactly the new ones, in order");
}

#[test]
fn sigkill_on_a_jetstream_durable_consumer_loses_nothing() {
    let dir = tempdir();
    let bus = Arc::new(Bus::start(dir.path()));
    bus.stream("WORK", "work");
    let source = format!("{}/work?stream=WORK&durable=fbp&ack_wait=1s&max_ack_pending=200&batch=50", bus.url());
    let args = ["relay", source.as_str(), "file:out.jsonl?format=lines"];
    let out = dir.path().join("out.jsonl");
    let mut fbp1 = start(dir.path(), "1.log", &args, &[]);
    let publisher = {
        let bus = bus.clone();
        thread::spawn(move || {
            for id in 0..2000 {
                bus.js_publish("work", job(id));
                thread::sleep(Duration::from_micros(500));
            }
        })
    };
    assert!(wait_until(Duration::from_secs(15), || lines(&out).len() >= 400), "{}", log(dir.path(), "1.log"));
    fbp1.kill().unwrap();
    fbp1.wait().unwrap();
    let at_kill = lines(&out).len();
    let mut fbp2 = start(dir.path(), "2.log", &args, &[]);
    publisher.join().unwrap();
    let all = wait_until(Duration::from_secs(20), || tally(&ids_in(&out)).len() == 2000);
    assert!(wait_until(Duration::from_secs(10), || bus.consumer("WORK", "fbp") == (0, 0)));
    assert!(stop(&mut fbp2).success(), "{}", log(dir.path(), "2.log"));
    let t = tally(&ids_in(&out));
    assert!(all, "lost: {:?}", (0..2000).filter(|i| !t.contains_key(i)).collect::<Vec<_>>());
    let duplicates: usize = t.values().map(|n| n - 1).sum();
    eprintln!("killed after {at_kill} lines; {duplicates} duplicates redelivered");
    assert!(at_kill < 2000, "the kill came mid-stream");
}

#[test]
fn nats_server_restart_mid_stream_reconnects_once_and_loses_nothing() {
    let dir = tempdir();
    let mut bus = Bus::start(dir.path());
    bus.stream("S", "s");
    let source = format!("{}/s?stream=S&durable=fbp&ack_wait=2s", bus.url());
    let out = dir.path().join("out.jsonl");
    let mut child = start(dir.path(), "fbp.log", &["relay", &source, "file:out.jsonl?format=lines"], &[]);
    (0..500).for_each(|id| bus.js_publish("s", job(id)));
    assert!(wait_until(Duration::from_secs(15), || lines(&out).len() >= 500), "{}", log(dir.path(), "fbp.log"));
    bus.server.kill();
    assert!(
        wait_until(Duration::from_secs(10), || log(dir.path(), "fbp.log").contains("Connection lost")),
        "{}",
        log(dir.path(), "fbp.log")
    );
    bus.server.restart().unwrap();
    (500..1000).for_each(|id| bus.js_publish("s", job(id)));
    let all = wait_until(Duration::from_secs(20), || tally(&ids_in(&out)).len() == 1000);
    assert!(child.try_wait().unwrap().is_none(), "fbp keeps running through the outage");
    assert!(stop(&mut child).success());
    let text = log(dir.path(), "fbp.log");
    let t = tally(&ids_in(&out));
    assert!(all, "lost: {:?}\n{text}", (0..1000).filter(|i| !t.contains_key(i)).collect::<Vec<_>>());
    let warnings = |what: &str| {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| {
                v["fields"]["message"].as_str().is_some_and(|m| m.starts_with(what))
                    && v["fields"]["target"].as_str().is_some_and(|t| t.starts_with("nats "))
            })
            .count()
    };
    assert_eq!(warnings("Connection lost"), 1, "one warning per outage:\n{text}");
    assert_eq!(warnings("Reconnected"), 1, "{text}");
}

#[test]
fn malformed_json_goes_to_the_dead_letter_without_a_restart() {
    let dir = tempdir();
    let bus = Bus::start(dir.path());
    bus.stream("IN", "in");
    let flow = format!(
        "[flow]\nname = \"bad-json\"\nconnections = [\"in -> out\"]\ndead_letter = \"file:dead.jsonl\"\n\n\
         [components.in]\ntype = \"nats-subscribe\"\nconfig = {{ url = \"{}\", subject = \"in\", stream = \"IN\", durable = \"d\" }}\n\n\
         [components.out]\ntype = \"file-write\"\nconfig = {{ path = \"out.jsonl\", format = \"lines\" }}\n",
        bus.url()
    );
    write(dir.path(), "flow.toml", &flow);
    for id in 0..20 {
        let payload = if id % 4 == 3 { format!("{{\"id\": {id}, broken").into_bytes() } else { job(id) };
        bus.js_publish("in", payload);
    }
    let mut child = start(dir.path(), "fbp.log", &["run", "flow.toml"], &[]);
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    assert!(wait_until(Duration::from_secs(15), || lines(&out).len() >= 15 && lines(&dead).len() >= 5));
    assert!(wait_until(Duration::from_secs(10), || bus.consumer("IN", "d") == (0, 0)), "dead-lettered ones are acked");
    assert!(stop(&mut child).success());
    assert_eq!(ids_in(&out), (0..20).filter(|i| i % 4 != 3).collect::<Vec<_>>());
    let dead = lines(&dead);
    assert_eq!(dead.len(), 5);
    assert!(dead[0].contains("not JSON") && dead[0].contains("broken"), "{}", dead[0]);
    let text = log(dir.path(), "fbp.log");
    assert_eq!(summary(&text, "in", "restarts"), Some(0), "{text}");
    assert_eq!(summary(&text, "in", "errors"), Some(5), "{text}");
}

#[test]
fn relay_carries_a_1mb_payload_and_an_empty_one_and_rejects_invalid_utf8_as_text() {
    let dir = tempdir();
    let bus = Bus::start(dir.path());
    bus.stream("RAW", "raw");
    let out = bus.collect("out");
    let big = vec![b'x'; 1_000_000];
    for payload in [big.clone(), Vec::new(), vec![0xff, 0xfe, 0xfd], b"last".to_vec()] {
        bus.js_publish("raw", payload);
    }
    let source = format!("{}/raw?stream=RAW&durable=r&format=text", bus.url());
    let sink = format!("{}/out", bus.url());
    let mut child = start(dir.path(), "fbp.log", &["relay", &source, &sink], &[]);
    assert!(wait_until(Duration::from_secs(15), || out.lock().unwrap().len() >= 3), "{}", log(dir.path(), "fbp.log"));
    assert!(stop(&mut child).success());
    let got = out.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].len(), 1_000_000);
    assert!(got[0] == big);
    assert!(got[1].is_empty());
    assert_eq!(got[2], b"last");
    let text = log(dir.path(), "fbp.log");
    assert_eq!(summary(&text, "source", "errors"), Some(1), "{text}");
    assert!(text.contains("not UTF-8"), "{text}");
}

#[test]
fn a_flow_split_over_nats_runs_as_four_processes_and_delivers_each_message_once() {
    let dir = tempdir();
    let bus = Bus::start(dir.path());
    let url = bus.url();
    let flows = root().join("flows/scale-out");
    let flow = |name: &str| flows.join(name).to_string_lossy().into_owned();
    let (c_flow, b_flow, a_flow) = (flow("c-collect.toml"), flow("b-work.toml"), flow("a-produce.toml"));
    let results = dir.path().join("results.jsonl");
    let out = results.to_string_lossy().into_owned();
    let mut c = start(dir.path(), "c.log", &["run", &c_flow], &[("NATS_URL", &url), ("OUT", &out)]);
    let mut b1 = start(dir.path(), "b1.log", &["run", &b_flow], &[("NATS_URL", &url), ("WORKER", "b1")]);
    let mut b2 = start(dir.path(), "b2.log", &["run", &b_flow], &[("NATS_URL", &url), ("WORKER", "b2")]);
    let mut a = start(dir.path(), "a.log", &["run", &a_flow], &[("NATS_URL", &url), ("COUNT", "1000")]);
    assert!(exited(&mut a, Duration::from_secs(20)).success(), "{}", log(dir.path(), "a.log"));
    let arrived = wait_until(Duration::from_secs(20), || lines(&results).len() >= 1000);
    assert!(
        arrived,
        "{} lines\nb1: {}\nc: {}",
        lines(&results).len(),
        log(dir.path(), "b1.log"),
        log(dir.path(), "c.log")
    );
    assert!(wait_until(Duration::from_secs(10), || bus.consumer("DONE", "collector") == (0, 0)));
    for (child, name) in [(&mut b1, "b1.log"), (&mut b2, "b2.log"), (&mut c, "c.log")] {
        assert!(stop(child).success(), "{}", log(dir.path(), name));
    }
    let lines = lines(&results);
    let counts = numbers(lines.iter().map(|l| l.as_bytes()), "count");
    let t = tally(&counts);
    assert_eq!(t.keys().copied().collect::<Vec<_>>(), (1..=1000).collect::<Vec<_>>());
    assert!(t.values().all(|n| *n == 1), "each message exactly once");
    let by = |w: &str| lines.iter().filter(|l| l.contains(&format!("\"worker\":\"{w}\""))).count();
    assert!(by("b1") > 0 && by("b2") > 0, "both workers shared the work: b1 {}, b2 {}", by("b1"), by("b2"));
}

/// `flows/mqtt-to-nats.toml` as shipped: readings published on MQTT under
/// `sensors/<id>/<kind>` reach NATS as `sensors.<id>.<kind>`, every one of them;
/// payloads that are not JSON go to the dead letter.
#[test]
fn the_mqtt_to_nats_flow_forwards_readings_with_subjects_from_topics() {
    let dir = tempdir();
    let bus = Bus::start(dir.path());
    let mqtt = Server::mosquitto(&dir.path().join("mosquitto")).expect("mosquitto runs");
    let seen = bus.collect("sensors.>");
    let subjects = bus.collect_subjects("sensors.>");
    let flow = root().join("flows/mqtt-to-nats.toml");
    let port = mqtt.port().to_string();
    let (url, dead) = (bus.url(), dir.path().join("dead.jsonl"));
    let env = [("MQTT_PORT", port.as_str()), ("NATS_URL", url.as_str()), ("DEAD_LETTER", dead.to_str().unwrap())];
    let mut child = start(dir.path(), "fbp.log", &["run", flow.to_str().unwrap()], &env);
    let connected = || log(dir.path(), "fbp.log").matches("Connected.").count() >= 2;
    assert!(wait_until(Duration::from_secs(15), connected), "{}", log(dir.path(), "fbp.log"));
    let mut readings: Vec<(String, Vec<u8>)> =
        (0..1000).map(|id| (format!("sensors/s{}/temp", id % 7), job(id))).collect();
    readings.push(("sensors/s1/temp".into(), b"not json".to_vec()));
    crate::mqtt::publish(mqtt.port(), readings, rumqttc::QoS::AtLeastOnce);
    let got = || numbers(seen.lock().unwrap().iter().map(Vec::as_slice), "id").len();
    assert!(wait_until(Duration::from_secs(20), || got() >= 1000), "{} of 1000", got());
    assert!(stop(&mut child).success());
    let mut ids = numbers(seen.lock().unwrap().iter().map(Vec::as_slice), "id");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids, (0..1000).collect::<Vec<i64>>(), "every reading once at least");
    let subjects = subjects.lock().unwrap();
    assert!(subjects.iter().all(|s| s.starts_with("sensors.s") && s.ends_with(".temp")), "{subjects:?}");
    assert!(subjects.contains(&"sensors.s3.temp".to_string()));
    let dead = lines(&dead);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].contains("not json"), "{}", dead[0]);
}

#[test]
fn a_nats_relay_with_defaults_forwards_a_burst_of_payloads_byte_for_byte() {
    let dir = tempdir();
    let bus = Bus::start(dir.path());
    let out = bus.collect("out");
    let (source, sink) = (format!("{}/in", bus.url()), format!("{}/out", bus.url()));
    let mut child = start(dir.path(), "fbp.log", &["relay", &source, &sink], &[]);
    // Ready once a probe comes back.
    let ready = wait_until(Duration::from_secs(15), || {
        bus.publish("in", b"probe".to_vec());
        !out.lock().unwrap().is_empty()
    });
    assert!(ready, "{}", log(dir.path(), "fbp.log"));
    out.lock().unwrap().clear();
    // Not JSON, and JSON with spacing a decode and encode would change.
    let payload = |i: usize| match i % 2 {
        0 => vec![0xff, 0x00, (i % 251) as u8],
        _ => format!("{{ \"seq\" : {i} }}").into_bytes(),
    };
    const N: usize = 20_000;
    bus.rt.block_on(async {
        for i in 0..N {
            bus.client.publish("in", payload(i).into()).await.unwrap();
        }
        bus.client.flush().await.unwrap();
    });
    let all =
        wait_until(Duration::from_secs(20), || out.lock().unwrap().iter().filter(|p| *p != b"probe").count() >= N);
    let got: Vec<Vec<u8>> = out.lock().unwrap().iter().filter(|p| *p != b"probe").cloned().collect();
    assert!(all, "{} of {N} arrived\n{}", got.len(), log(dir.path(), "fbp.log"));
    assert_eq!(got.len(), N);
    assert!(got.iter().enumerate().all(|(i, p)| *p == payload(i)), "payloads changed or out of order");
    assert!(stop(&mut child).success());
    let text = log(dir.path(), "fbp.log");
    assert_eq!(summary(&text, "source", "errors"), Some(0), "{text}");
}

#[test]
fn a_jetstream_consumer_at_max_ack_pending_behind_a_window_warns_once_naming_it() {
    let dir = tempdir();
    let bus = Bus::start(dir.path());
    bus.stream("HELD", "held");
    (0..50).for_each(|id| bus.js_publish("held", job(id)));
    let flow = windowed_flow(
        &bus,
        dir.path(),
        "held",
        "subject = \"held\", stream = \"HELD\", durable = \"fbp\", max_ack_pending = 10",
        "every = \"1h\", field = \"n\", ack = \"on_emit\"",
    );
    let mut run = start(dir.path(), "fbp.log", &["run", flow.to_str().unwrap()], &[]);
    let warnings = || crate::util::logged(&log(dir.path(), "fbp.log"), "Messages stay unacknowledged");
    let warned = wait_until(Duration::from_secs(20), || !warnings().is_empty());
    assert!(warned, "no warning:\n{}", log(dir.path(), "fbp.log"));
    assert_eq!(bus.consumer("HELD", "fbp").0, 10, "JetStream stops at max_ack_pending");
    assert!(stop(&mut run).success(), "{}", log(dir.path(), "fbp.log"));
    let w = warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!((&w[0]["component"], &w[0]["unacknowledged"]), (&serde_json::json!("sub"), &serde_json::json!(10)));
    assert!(w[0]["held_by"].as_str().unwrap().contains("`avg` (window) holds them up to 1h"), "{w:?}");
    let windows = lines(&dir.path().join("windows.jsonl"));
    assert_eq!(counted(dir.path()), 10, "the window flushes what it held when the flow stops: {windows:?}");
}

#[test]
fn a_window_longer_than_ack_wait_counts_every_jetstream_message_once() {
    let dir = tempdir();
    let bus = Bus::start(dir.path());
    bus.stream("READINGS", "readings");
    let total = 2_000;
    (0..total).for_each(|id| bus.js_publish("readings", job(id)));
    // The window (3 s) is longer than ack_wait (1 s), and far more messages
    // wait than max_ack_pending lets out: with acknowledgements held by the
    // window, JetStream would stall at 100 and deliver them all again.
    let flow = windowed_flow(
        &bus,
        dir.path(),
        "windowed",
        "subject = \"readings\", stream = \"READINGS\", durable = \"fbp\", max_ack_pending = 100, ack_wait = \"1s\"",
        "every = \"3s\", field = \"n\"",
    );
    let mut run = start(dir.path(), "fbp.log", &["run", flow.to_str().unwrap()], &[]);
    let state = || bus.consumer_state("READINGS", "fbp");
    let drained = wait_until(Duration::from_secs(30), || state() == Some((0, 0, 0)));
    assert!(drained, "{:?}\n{}", state(), log(dir.path(), "fbp.log"));
    assert!(stop(&mut run).success(), "{}", log(dir.path(), "fbp.log"));
    assert_eq!(counted(dir.path()), total as u64, "every message counted once: none lost, none delivered again");
}

#[test]
fn messages_a_window_holds_past_ack_wait_are_kept_in_progress_not_delivered_again() {
    let dir = tempdir();
    let bus = Bus::start(dir.path());
    bus.stream("HELD", "held");
    let total = 200;
    // A count window of 200 holds the first half's acknowledgements until
    // the second half comes: JetStream would deliver them again after each
    // `ack_wait` (1 s) unless they are reported in progress.
    (0..total / 2).for_each(|id| bus.js_publish("held", job(id)));
    let flow = windowed_flow(
        &bus,
        dir.path(),
        "held",
        "subject = \"held\", stream = \"HELD\", durable = \"fbp\", ack_wait = \"1s\"",
        "count = 200, field = \"n\", ack = \"on_emit\"",
    );
    let mut run = start(dir.path(), "fbp.log", &["run", flow.to_str().unwrap()], &[]);
    let state = || bus.consumer_state("HELD", "fbp");
    let held = wait_until(Duration::from_secs(20), || state().is_some_and(|s| s.0 == total / 2));
    assert!(held, "{:?}\n{}", state(), log(dir.path(), "fbp.log"));
    // Three times ack_wait: JetStream would have delivered the held half again by now.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        assert_eq!(state().map(|s| s.2), Some(0), "delivered again while held\n{}", log(dir.path(), "fbp.log"));
        thread::sleep(Duration::from_millis(100));
    }
    (total / 2..total).for_each(|id| bus.js_publish("held", job(id)));
    let all = wait_until(Duration::from_secs(30), || counted(dir.path()) >= total as u64 && state() == Some((0, 0, 0)));
    assert!(all, "counted {}, consumer {:?}\n{}", counted(dir.path()), state(), log(dir.path(), "fbp.log"));
    assert!(stop(&mut run).success(), "{}", log(dir.path(), "fbp.log"));
    assert_eq!(counted(dir.path()), total as u64, "each message counted once");
}

#[test]
fn a_slow_consumer_counts_what_core_nats_dropped_and_warns_once_per_episode() {
    let dir = tempdir();
    let bus = Bus::start(dir.path());
    // A subscription that buffers 500 messages, in front of a flow that takes
    // 2 000 a second: a burst of 50 000 overflows it.
    let flow = format!(
        "[flow]\nname = \"slow\"\nconnections = [\"src -> slow\", \"slow -> out\"]\n\
         [components.src]\ntype = \"nats-subscribe\"\nconfig = {{ url = \"{}\", subject = \"burst\", pending_limit = 500, format = \"bytes\" }}\n\
         [components.slow]\ntype = \"throttle\"\ncapacity = 4\nconfig = {{ rate = 2000, per = \"1s\" }}\n\
         [components.out]\ntype = \"file-write\"\nconfig = {{ path = \"out.txt\", format = \"lines\" }}\n",
        bus.url()
    );
    let flow = write(dir.path(), "slow.toml", &flow);
    let mut run = start(dir.path(), "fbp.log", &["run", flow.to_str().unwrap()], &[]);
    let out = dir.path().join("out.txt");
    let ready = wait_until(Duration::from_secs(15), || {
        bus.publish("burst", b"probe".to_vec());
        !lines(&out).is_empty()
    });
    assert!(ready, "{}", log(dir.path(), "fbp.log"));
    let probes = lines(&out).len() as u64;
    const N: u64 = 50_000;
    bus.rt.block_on(async {
        for i in 0..N {
            bus.client.publish("burst", format!("{i}").into()).await.unwrap();
        }
        bus.client.flush().await.unwrap();
    });
    // The burst is over once the episode is: nothing dropped for a while.
    let over = || log(dir.path(), "fbp.log").contains("no longer dropping");
    assert!(wait_until(Duration::from_secs(60), over), "{}", log(dir.path(), "fbp.log"));
    assert!(stop(&mut run).success(), "{}", log(dir.path(), "fbp.log"));
    let text = log(dir.path(), "fbp.log");
    let received = lines(&out).len() as u64 - probes;
    let dropped = summary(&text, "src", "dropped").unwrap();
    assert!(received < N / 2, "the burst did overflow: {received} of {N} arrived");
    let lost = N - received;
    eprintln!("slow consumer: {N} published, {received} received, {lost} lost, {dropped} counted as dropped");
    assert!(dropped.abs_diff(lost) * 100 <= lost, "dropped {dropped}, lost {lost}\n{text}");
    assert_eq!(text.matches("NATS slow consumer: the flow is slower").count(), 1, "{text}");
}

/// 15 small messages around one of 100 KiB, past `max_payload_size = "64KiB"`,
/// through core NATS or a JetStream durable: the 15 arrive, the big one is
/// dead-lettered with its subject, size and limit (and, from JetStream,
/// acknowledged), and the subscriber neither restarts nor reconnects.
fn an_oversized_message_is_dead_lettered_and_the_rest_flows(jetstream: bool) {
    let dir = tempdir();
    let bus = Bus::start(dir.path());
    let durable = if jetstream {
        bus.stream("BIG", "big");
        ", stream = \"BIG\", durable = \"d\""
    } else {
        ""
    };
    let flow = format!(
        "[flow]\nname = \"big\"\nconnections = [\"in -> out\"]\ndead_letter = \"file:dead.jsonl\"\n\n\
         [components.in]\ntype = \"nats-subscribe\"\nconfig = {{ url = \"{}\", subject = \"big\", max_payload_size = \"64KiB\"{durable} }}\n\n\
         [components.out]\ntype = \"file-write\"\nconfig = {{ path = \"out.jsonl\", format = \"lines\" }}\n",
        bus.url()
    );
    write(dir.path(), "flow.toml", &flow);
    let mut child = start(dir.path(), "fbp.log", &["run", "flow.toml"], &[]);
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    if !jetstream {
        // Core NATS delivers only to a subscription that exists: probe until one arrives.
        let ready = wait_until(Duration::from_secs(15), || {
            bus.publish("big", b"{\"id\": -1}".to_vec());
            !lines(&out).is_empty()
        });
        assert!(ready, "{}", log(dir.path(), "fbp.log"));
    }
    let big = format!("{{\"id\": 99, \"pad\": \"{}\"}}", "x".repeat(100 * 1024)).into_bytes();
    let size = big.len();
    for id in 0..15 {
        let publish = |p: Vec<u8>| if jetstream { bus.js_publish("big", p) } else { bus.publish("big", p) };
        if id == 8 {
            publish(big.clone());
        }
        publish(job(id));
    }
    let arrived = || ids_in(&out).iter().filter(|&&i| i >= 0).count() >= 15 && !lines(&dead).is_empty();
    assert!(wait_until(Duration::from_secs(20), arrived), "{}", log(dir.path(), "fbp.log"));
    if jetstream {
        assert!(wait_until(Duration::from_secs(10), || bus.consumer("BIG", "d") == (0, 0)), "the big one is acked");
    }
    assert!(stop(&mut child).success());
    let ids: Vec<i64> = ids_in(&out).into_iter().filter(|&i| i >= 0).collect();
    assert_eq!(ids, (0..15).collect::<Vec<_>>());
    let dead = lines(&dead);
    assert_eq!(dead.len(), 1, "{dead:?}");
    let dead: serde_json::Value = serde_json::from_str(&dead[0]).unwrap();
    assert_eq!(dead["data"]["data"], serde_json::json!({"subject": "big", "size": size, "limit": 65536}), "{dead}");
    let error = dead["data"]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("payload of {size} bytes on `big` is over `max_payload_size` (65536 bytes)")),
        "{error}"
    );
    let text = log(dir.path(), "fbp.log");
    assert_eq!(summary(&text, "in", "restarts"), Some(0), "{text}");
    assert_eq!(summary(&text, "in", "errors"), Some(1), "{text}");
    // One connection, and for JetStream one consumer set up: none again.
    assert_eq!(text.matches("Connected.").count(), 1 + usize::from(jetstream), "no reconnect: {text}");
}

#[test]
fn an_oversized_core_nats_message_is_dead_lettered_and_the_rest_flows() {
    an_oversized_message_is_dead_lettered_and_the_rest_flows(false);
}

#[test]
fn an_oversized_jetstream_message_is_dead_lettered_acked_and_the_rest_flows() {
    an_oversized_message_is_dead_lettered_and_the_rest_flows(true);
}

#[test]
fn credentials_the_server_refuses_fail_the_flow_at_once_and_those_in_the_url_are_used() {
    let dir = tempdir();
    let port = fbp_runtime::testbed::free_port();
    let exe = fbp_runtime::testbed::program("nats-server").expect("nats-server is installed");
    let server = std::process::Command::new(exe)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "--user", "gw", "--pass", "s3cret"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Killed(server);
    assert!(fbp_runtime::testbed::wait_for_port(port, Duration::from_secs(10)), "nats-server did not start");
    let run = |pipeline: String| {
        let start = std::time::Instant::now();
        let o = fbp().current_dir(dir.path()).args(["launch", "--shutdown-timeout", "2s", &pipeline]).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned(), start.elapsed())
    };
    for pipeline in [
        format!("nats-subscribe url=nats://127.0.0.1:{port} subject=x ! console"),
        format!("counter ! nats-publish url=nats://gw:wrong@127.0.0.1:{port} subject=x"),
    ] {
        let (code, log, took) = run(pipeline.clone());
        assert_eq!(code, Some(1), "{pipeline}: {log}");
        assert!(took < Duration::from_secs(8), "{pipeline}: not retried: {log}");
        assert!(
            log.lines().last().unwrap_or_default().contains("authorization violation; check the credentials"),
            "{log}"
        );
        assert!(!log.contains("wrong"), "the password is never shown: {log}");
    }
    let (code, log, _) =
        run(format!("counter max_count=3 interval=0s ! nats-publish url=nats://gw:s3cret@127.0.0.1:{port} subject=x"));
    assert_eq!(code, Some(0), "credentials in the URL are used: {log}");
}

/// A process of the test's own, killed by PID when dropped (also when the test fails).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
