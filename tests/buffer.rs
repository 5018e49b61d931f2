//! Disk buffers on connections (store and forward) through the real binary:
//! a relay through a buffer, `check` on the `buffer` key, a damaged buffer
//! replayed at start, `drop_oldest` counting what it dropped, and a long
//! outage of the target's broker with fbp's memory bounded.

use std::fs;
use std::path::Path;
use std::time::Duration;

use fbp_runtime::buffer::{Config, DiskBuffer, WhenFull, codec, segment};
use fbp_runtime::message::{Message, Meta};
use fbp_runtime::testbed::{Server, UNLIMITED_QUEUE};
use fbp_runtime::value;

use crate::mqtt::{Collector, file_ids, numbered, publish};
use crate::sockets::Running;
use crate::util::{fbp, rss_kib, stderr, summary, tempdir, wait_until, write};

/// A flow: `source` -> buffered connection -> `sink`, both given as inline tables.
fn buffered_flow(source: &str, sink: &str, buffer: &str) -> String {
    format!(
        "[flow]\nname = \"buffered\"\nconnections = [{{ from = \"source\", to = \"sink\", buffer = {buffer} }}]\n\n\
         [components.source]\n{source}\n\n[components.sink]\n{sink}\n"
    )
}

fn file_source(path: &str) -> String {
    format!("type = \"file-read\"\nconfig = {{ path = \"{path}\" }}")
}

fn file_sink(path: &str) -> String {
    format!("type = \"file-write\"\nconfig = {{ path = \"{path}\", format = \"lines\" }}")
}

fn numbered_lines(ids: std::ops::Range<u64>) -> String {
    ids.map(|i| format!("{{\"id\": {i}}}\n")).collect()
}

fn run_flow(dir: &Path, flow: &str) -> std::process::Output {
    let path = write(dir, "flow.toml", flow);
    fbp().current_dir(dir).args(["--log-format", "json", "run"]).arg(path).output().unwrap()
}

#[test]
fn a_file_relayed_through_a_disk_buffer_arrives_whole_and_the_buffer_is_committed() {
    let dir = tempdir();
    write(dir.path(), "in.jsonl", &numbered_lines(0..3000));
    let flow = buffered_flow(&file_source("in.jsonl"), &file_sink("out.jsonl"), r#"{ type = "disk", path = "buf" }"#);
    let out = run_flow(dir.path(), &flow);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let (ids, lines) = file_ids(&dir.path().join("out.jsonl"));
    assert_eq!((ids.len(), lines), (3000, 3000), "every line once, in a run that ends normally");
    // Everything was committed: a new start replays nothing.
    write(dir.path(), "in.jsonl", "");
    let again = run_flow(dir.path(), &flow);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(file_ids(&dir.path().join("out.jsonl")).1, 3000, "nothing replayed");
}

#[test]
fn check_reports_bad_buffer_keys_with_their_place() {
    let dir = tempdir();
    write(dir.path(), "a-file", "x");
    let conn = |buffer: &str| format!("{{ from = \"a\", to = \"b\", buffer = {buffer} }}");
    let flow = format!(
        "[flow]\nname = \"f\"\nconnections = [{}, {}, {}, {}, {}, {}]\n\n[components.a]\n{}\n\n[components.b]\n{}\n",
        conn(r#"{ type = "memory", path = "x" }"#),
        conn(r#"{ type = "disk", path = "y", max_size = "0" }"#),
        conn(r#"{ type = "disk", path = "a-file" }"#),
        conn(r#"{ type = "disk", path = "z", when_full = "drop_newest" }"#),
        conn(r#"{ type = "disk", path = "same" }"#),
        conn(r#"{ type = "disk", path = "same", max_size = "1MiB" }"#),
        file_source("in.jsonl"),
        file_sink("out.jsonl"),
    );
    let path = write(dir.path(), "flow.toml", &flow);
    let out = fbp().current_dir(dir.path()).arg("check").arg(path).output().unwrap();
    let text = stderr(&out);
    assert!(!out.status.success());
    for expected in [
        "buffer `type` must be `disk`, found `memory`",
        "buffer `max_size` must be more than 0",
        "a-file is not a directory",
        "buffer `when_full` must be block or drop_oldest",
        "is used by another connection",
        "first used here",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn a_buffer_path_that_cannot_be_a_directory_stops_the_start_naming_it() {
    let dir = tempdir();
    write(dir.path(), "in.jsonl", &numbered_lines(0..10));
    write(dir.path(), "a-file", "x");
    let buffer = r#"{ type = "disk", path = "a-file/buf" }"#;
    let out = run_flow(dir.path(), &buffered_flow(&file_source("in.jsonl"), &file_sink("out.jsonl"), buffer));
    let log = stderr(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("a-file/buf"), "the path is named:\n{log}");
    assert!(!dir.path().join("out.jsonl").exists(), "nothing ran");
}

/// A buffer directory holding the messages `{"id": i}` for `ids`, in segments of 4 KiB.
fn prepared_buffer(dir: &Path, ids: std::ops::Range<u64>) {
    let config = Config { path: dir.to_path_buf(), max_size: 32 << 10, when_full: WhenFull::Block };
    let mut buffer = DiskBuffer::open(&config).unwrap();
    for i in ids {
        let payload = value::parse_json(format!("{{\"id\": {i}}}").as_bytes()).unwrap();
        let record = codec::encode(&Message::new(payload, Meta::new("source".into(), i)));
        buffer.append(&record).unwrap();
    }
    buffer.sync().unwrap();
}

#[test]
fn a_damaged_buffer_is_replayed_around_the_damage_and_the_damage_is_logged() {
    let dir = tempdir();
    let buf = dir.path().join("buf");
    prepared_buffer(&buf, 0..200);
    let segments = segment::list(&buf).unwrap();
    assert!(segments.len() >= 4, "{segments:?}");
    // A flipped byte in the middle of the first segment, the last segment
    // cut short, and an empty file in the sequence.
    let first = segment::path(&buf, segments[0].0);
    let mut bytes = fs::read(&first).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    fs::write(&first, bytes).unwrap();
    let (last, last_len) = segments[segments.len() - 1];
    fs::OpenOptions::new().write(true).open(segment::path(&buf, last)).unwrap().set_len(last_len - 5).unwrap();
    fs::write(segment::path(&buf, segments[1].0), b"").unwrap();

    write(dir.path(), "in.jsonl", "");
    let flow = buffered_flow(&file_source("in.jsonl"), &file_sink("out.jsonl"), r#"{ type = "disk", path = "buf" }"#);
    let out = run_flow(dir.path(), &flow);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let (ids, lines) = file_ids(&dir.path().join("out.jsonl"));
    assert_eq!(ids.len(), lines, "no duplicates");
    // Lost: the empty segment's records, one at the flip, one at the cut.
    let lost = 200 - ids.len();
    assert!(ids.contains(&0) && ids.contains(&198) && !ids.contains(&199), "the rest is delivered: {} ids", ids.len());
    assert!(lost > 2 && lost < 100, "{} of 200 delivered", ids.len());
    assert_eq!(log.matches("Disk buffer: skipped damaged bytes").count(), 2, "the flip and the cut:\n{log}");
    assert_eq!(log.matches("Disk buffer: skipped a segment too short for its header.").count(), 1, "{log}");
}

#[test]
fn drop_oldest_keeps_the_newest_and_counts_the_dropped_in_the_summary() {
    let dir = tempdir();
    let mut broker = Server::mosquitto(&dir.path().join("broker")).unwrap();
    let port = broker.port();
    broker.stop();
    write(dir.path(), "in.jsonl", &numbered_lines(0..5000));
    let sink = format!("type = \"mqtt-publish\"\nconfig = {{ url = \"mqtt://127.0.0.1:{port}\", topic = \"out\" }}");
    let buffer = r#"{ type = "disk", path = "buf", max_size = "32KiB", when_full = "drop_oldest" }"#;
    let flow = buffered_flow(&file_source("in.jsonl"), &sink, buffer);
    let running = Running::start(dir.path(), &flow);
    let buf = dir.path().join("buf");
    let bytes = || segment::list(&buf).map(|s| s.iter().map(|x| x.1).sum::<u64>()).unwrap_or(0);
    // The last line reaches the buffer, which keeps only the newest within its bound.
    let holds_last = || {
        let segments = segment::list(&buf).unwrap_or_default();
        segments.iter().any(|s| fs::read(segment::path(&buf, s.0)).is_ok_and(|b| contains(&b, br#""id":4999"#)))
    };
    assert!(wait_until(Duration::from_secs(30), holds_last), "{}", running.log());
    assert!(bytes() <= (32 << 10) + (4 << 10), "{} bytes on disk", bytes());
    let kill = std::process::Command::new("kill").args(["-TERM", &running.pid().to_string()]).status();
    assert!(kill.unwrap().success());
    let (_, log) = running.wait();
    let dropped = summary(&log, "source", "dropped").unwrap_or(0);
    assert!(dropped > 3000 && dropped < 5000, "dropped {dropped}:\n{log}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A persistent QoS 1 subscription on `source` -> disk buffer -> QoS 1 publish to `target`.
fn mqtt_relay_flow(source: &Server, target: &Server, client_id: &str) -> String {
    let subscribe = format!(
        "type = \"mqtt-subscribe\"\nconfig = {{ url = \"mqtt://{}\", topics = [\"in/#\"], qos = 1, client_id = \"{client_id}\", clean_session = false }}",
        source.addr()
    );
    let publish_to = format!(
        "type = \"mqtt-publish\"\nconfig = {{ url = \"mqtt://{}\", topic = \"out/x\", qos = 1, reconnect = \"50ms..500ms\" }}",
        target.addr()
    );
    buffered_flow(&subscribe, &publish_to, r#"{ type = "disk", path = "buf" }"#)
}

#[test]
fn a_long_outage_of_the_target_broker_queues_to_disk_with_memory_bounded() {
    let dir = tempdir();
    let source = Server::mosquitto_with(&dir.path().join("a"), UNLIMITED_QUEUE).unwrap();
    let mut target = Server::mosquitto_with(&dir.path().join("b"), UNLIMITED_QUEUE).unwrap();
    let far = Collector::persistent(target.port(), "out/#");
    let flow = mqtt_relay_flow(&source, &target, "fbp-outage");
    let running = Running::start(dir.path(), &flow);
    assert!(running.wait_log("Connected.", 2), "{}", running.log());
    target.stop();
    publish(source.port(), numbered(|_| "in/a".into(), 0..20_000), rumqttc::QoS::AtLeastOnce);
    let buf = dir.path().join("buf");
    let bytes = || segment::list(&buf).map(|s| s.iter().map(|x| x.1).sum::<u64>()).unwrap_or(0);
    assert!(wait_until(Duration::from_secs(30), || bytes() > 20_000 * 12), "buffer at {} bytes", bytes());
    let rss = rss_kib(running.pid()).unwrap();
    println!("20000 messages buffered to disk: {} bytes on disk, fbp RSS {rss} KiB", bytes());
    assert!(rss < 200 * 1024, "RSS {rss} KiB");
    target.restart().unwrap();
    let all = wait_until(Duration::from_secs(60), || far.ids().len() == 20_000);
    assert!(all, "{} of 20000 arrived:\n{}", far.ids().len(), running.log());
    running.stop();
}

#[test]
fn fbp_killed_again_and_again_mid_stream_loses_nothing_through_its_buffer() {
    let dir = tempdir();
    let source = Server::mosquitto_with(&dir.path().join("a"), UNLIMITED_QUEUE).unwrap();
    let target = Server::mosquitto_with(&dir.path().join("b"), UNLIMITED_QUEUE).unwrap();
    let far = Collector::persistent(target.port(), "out/#");
    let flow = mqtt_relay_flow(&source, &target, "fbp-killed");
    let mut running = Running::start(dir.path(), &flow);
    assert!(running.wait_log("Connected.", 2), "{}", running.log());
    let port = source.port();
    let publisher = std::thread::spawn(move || {
        for chunk in 0..20 {
            publish(port, numbered(|_| "in/a".into(), chunk * 1000..(chunk + 1) * 1000), rumqttc::QoS::AtLeastOnce);
        }
    });
    let received = || far.received();
    for kill in 0..5 {
        // A random moment: after some hundreds more messages arrived (or a few seconds).
        let target_count = received() + random_below(1400) + 100;
        wait_until(Duration::from_secs(5), || received() >= target_count);
        let killed = std::process::Command::new("kill").args(["-KILL", &running.pid().to_string()]).status();
        assert!(killed.unwrap().success(), "kill {kill}");
        let _ = running.wait();
        running = Running::start(dir.path(), &flow);
    }
    publisher.join().unwrap();
    let all = wait_until(Duration::from_secs(60), || far.ids().len() == 20_000);
    let duplicates = received() - far.ids().len();
    println!("fbp SIGKILLed 5 times mid-stream: {} of 20000 arrived, {duplicates} duplicates", far.ids().len());
    assert!(all, "{} of 20000 arrived:\n{}", far.ids().len(), running.log());
    running.stop();
}

/// A number below `n`, from the clock: moments that differ from run to run.
fn random_below(n: usize) -> usize {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    nanos as usize % n
}
