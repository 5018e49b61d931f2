//! MQTT sessions and reconnections through the real binary, against private
//! Mosquitto brokers: a message over `max_payload_size` is dead-lettered and
//! acknowledged while the rest flows; acknowledgements released during an
//! outage are never written on a fresh broker's connection; QoS 1 and 2 with
//! a persistent session lose nothing across a broker restart and `kill -9`.

use std::collections::HashSet;
use std::path::Path;
use std::thread;
use std::time::Duration;

use fbp_runtime::testbed::{Server, free_port, mosquitto_log};
use rumqttc::QoS;

use crate::mqtt::{Collector, OwnBroker, count, file_ids, numbered, publish, wait_flowing};
use crate::sockets::Running;
use crate::util::{lines, summary, tempdir, wait_until};

const LOST: &str = "Connection lost; reconnecting in the background (logged again when back).";

/// A flow: `mqtt-subscribe` (`sub`, on `topics = ["#"]`, with `config` added)
/// into `rest` (which names the connections after `sub`); dead letters to
/// `dead.jsonl`.
fn flow(port: u16, config: &str, connections: &str, rest: &str) -> String {
    format!(
        r##"[flow]
name = "sessions"
dead_letter = "file:dead.jsonl"
connections = [{connections}]

[components.sub]
type = "mqtt-subscribe"
config = {{ port = {port}, topics = ["#"], {config} }}
{rest}"##
    )
}

/// A `file-write` component writing payloads as lines to `path`.
fn file_sink(name: &str, path: &str) -> String {
    format!("\n[components.{name}]\ntype = \"file-write\"\nconfig = {{ path = \"{path}\", format = \"lines\" }}\n")
}

/// The probes (`{"probe": true}`, from `wait_flowing`) in a file of payloads.
fn probes(path: &Path) -> usize {
    lines(path).iter().filter(|l| l.contains("probe")).count()
}

fn envelopes(path: &Path) -> Vec<serde_json::Value> {
    lines(path).iter().map(|l| serde_json::from_str(l).expect("a dead letter is JSON")).collect()
}

#[test]
fn an_oversized_message_is_dead_lettered_acknowledged_and_the_readings_behind_it_arrive() {
    let dir = tempdir();
    let broker = Server::mosquitto(&dir.path().join("broker")).unwrap();
    let config = r#"qos = 1, clean_session = false, client_id = "fbp-camera", max_payload_size = "64KiB", reconnect = "100ms..2s""#;
    let text = flow(broker.port(), config, r#""sub -> out""#, &file_sink("out", "out.jsonl"));
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let run = Running::start(dir.path(), &text);
    assert!(run.wait_log("Connected.", 1), "{}", run.log());
    wait_flowing(broker.port(), "site/probe", || probes(&out) > 0);

    // A camera frame among readings, and payloads at the limit and one byte over.
    let pad = |n: usize| format!(r#"{{"pad":"{}"}}"#, "x".repeat(n - 10));
    let (at_limit, over) = (pad(64 * 1024), pad(64 * 1024 + 1));
    let mut messages = numbered(|i| format!("site/s{i}"), 0..5);
    messages.push(("site/cam".into(), vec![0xff; 1 << 20]));
    messages.push(("site/edge".into(), at_limit.clone().into_bytes()));
    messages.push(("site/over".into(), over.into_bytes()));
    messages.extend(numbered(|i| format!("site/s{i}"), 5..15));
    publish(broker.port(), messages, QoS::AtLeastOnce);

    let done = || file_ids(&out).0.len() == 15 && lines(&dead).len() == 2;
    assert!(
        wait_until(Duration::from_secs(20), done),
        "{} of 15 readings, dead letters {:?}",
        file_ids(&out).0.len(),
        lines(&dead)
    );
    assert!(lines(&out).contains(&at_limit), "a payload of exactly `max_payload_size` passes");
    let letters = envelopes(&dead);
    let by_topic =
        |t: &str| letters.iter().find(|e| e["metadata"]["topic"] == t).unwrap_or_else(|| panic!("{letters:?}"));
    let (cam, edge) = (by_topic("site/cam"), by_topic("site/over"));
    let error = |e: &serde_json::Value| e["data"]["error"].as_str().unwrap().to_string();
    assert!(error(cam).contains("payload of 1048576 bytes") && error(cam).contains("(65536 bytes)"), "{cam}");
    assert!(error(edge).contains("payload of 65537 bytes"), "{edge}");
    assert_eq!(cam["data"]["data"], serde_json::Value::Null, "the payload is not kept");
    let log = run.stop();
    assert_eq!((count(&log, LOST), count(&log, "Reconnected.")), (0, 0), "no reconnection:\n{log}");
    assert_eq!(summary(&log, "sub", "errors"), Some(2), "{log}");

    // Acknowledged once dead-lettered: the session gives nothing back.
    let again = Running::start(dir.path(), &text);
    assert!(again.wait_log("Connected.", 1), "{}", again.log());
    let before = probes(&out);
    wait_flowing(broker.port(), "site/probe", || probes(&out) > before);
    let log = again.stop();
    assert_eq!(lines(&dead).len(), 2, "redelivered:\n{log}");
    assert_eq!(file_ids(&out).1, 15, "readings delivered twice:\n{log}");
}

/// A Mosquitto on `port` logging everything (`log_type all`) to `dir/mosquitto.log`.
fn chatty_broker(dir: &Path, port: u16) -> OwnBroker {
    std::fs::create_dir_all(dir).unwrap();
    OwnBroker::start(dir, port, "log_type all\nlog_dest stderr\n")
}

/// Messages arrive, the broker is killed, the flow releases their
/// acknowledgements (a `delay` holds them) while it is down, and a fresh
/// broker without persistence takes the port: nothing of the old connection
/// may be written on the new one. `qos` is 1 or 2.
fn no_stale_acknowledgement_reaches_a_fresh_broker(qos: u8) {
    let dir = tempdir();
    let port = free_port();
    let first = chatty_broker(&dir.path().join("first"), port);
    let client = format!("fbp-stale-{qos}");
    let config = format!(r#"qos = {qos}, clean_session = false, client_id = "{client}", reconnect = "100ms..1s""#);
    let rest = format!(
        "\n[components.later]\ntype = \"delay\"\nconfig = {{ duration = \"3s\" }}\n{}{}",
        file_sink("out", "out.jsonl"),
        file_sink("seen", "seen.jsonl")
    );
    let text = flow(port, &config, r#""sub -> later", "later -> out", "sub -> seen""#, &rest);
    let (out, seen) = (dir.path().join("out.jsonl"), dir.path().join("seen.jsonl"));
    let run = Running::start(dir.path(), &text);
    assert!(run.wait_log("Connected.", 1), "{}", run.log());
    wait_flowing(port, "t/probe", || probes(&out) > 0);

    let q = if qos == 1 { QoS::AtLeastOnce } else { QoS::ExactlyOnce };
    publish(port, numbered(|_| "t/a".into(), 0..20), q);
    assert!(wait_until(Duration::from_secs(10), || file_ids(&seen).0.len() == 20), "{}", run.log());
    drop(first);
    // The delay lets them go while the broker is away: their acknowledgements are released now.
    assert!(wait_until(Duration::from_secs(15), || file_ids(&out).0.len() == 20), "{}", run.log());
    let fresh_dir = dir.path().join("fresh");
    let _fresh = chatty_broker(&fresh_dir, port);
    assert!(run.wait_log("Reconnected.", 1), "{}", run.log());
    let control = Collector::start(port, "t/#");
    let before = probes(&seen);
    wait_flowing(port, "t/probe", || probes(&seen) > before);

    publish(port, numbered(|_| "t/b".into(), 100..130), q);
    let phase2 = |ids: &HashSet<u64>| ids.iter().filter(|i| **i >= 100).count();
    let all = wait_until(Duration::from_secs(20), || phase2(&file_ids(&out).0) == 30 && phase2(&control.ids()) == 30);
    assert!(all, "fbp {} and the control {} of 30:\n{}", phase2(&file_ids(&out).0), phase2(&control.ids()), run.log());
    // The probes' (QoS 1) and the 30 messages' acknowledgements, once each, no other.
    let fresh_probes = probes(&seen) - before;
    let acked = |broker_log: &str| {
        let from = |kind: &str| format!("Received {kind} from {client} ");
        broker_log.lines().filter(|l| l.contains(&from("PUBACK")) || l.contains(&from("PUBREC"))).count()
    };
    let want = 30 + fresh_probes;
    let all_acked = wait_until(Duration::from_secs(10), || acked(&mosquitto_log(&fresh_dir)) == want);
    assert!(all_acked, "{want} acknowledgements expected:\n{}", mosquitto_log(&fresh_dir));
    let log = run.stop();
    let broker_log = mosquitto_log(&fresh_dir);
    let stale: Vec<&str> = broker_log.lines().filter(|l| l.contains("unknown packet identifier")).collect();
    assert!(stale.is_empty(), "acknowledgements of the dead connection reached the fresh broker: {stale:?}");
    assert_eq!(acked(&broker_log), want, "{broker_log}");
    let (ids, total) = file_ids(&out);
    assert_eq!((ids.len(), total), (50, 50), "each message once:\n{log}");
    assert_eq!((count(&log, LOST), count(&log, "Reconnected.")), (1, 1), "one outage:\n{log}");
}

#[test]
fn qos1_acknowledgements_released_during_an_outage_are_not_written_on_a_fresh_broker() {
    no_stale_acknowledgement_reaches_a_fresh_broker(1);
}

#[test]
fn qos2_acknowledgements_released_during_an_outage_are_not_written_on_a_fresh_broker() {
    no_stale_acknowledgement_reaches_a_fresh_broker(2);
}

/// A persistent session at `qos` across a broker restart (SIGTERM, so it
/// saves its store) with messages in flight, then across `kill -9` of fbp
/// mid-stream and a restart with the same client id: every published id
/// arrives. Returns the duplicates.
fn a_persistent_session_loses_nothing(qos: u8) -> usize {
    let dir = tempdir();
    let mut broker = Server::mosquitto(&dir.path().join("broker")).unwrap();
    let config =
        format!(r#"qos = {qos}, clean_session = false, client_id = "fbp-keep-{qos}", reconnect = "50ms..500ms""#);
    let text = flow(broker.port(), &config, r#""sub -> out""#, &file_sink("out", "out.jsonl"));
    let out = dir.path().join("out.jsonl");
    let q = if qos == 1 { QoS::AtLeastOnce } else { QoS::ExactlyOnce };
    let first = Running::start(dir.path(), &text);
    assert!(first.wait_log("Connected.", 1), "{}", first.log());
    wait_flowing(broker.port(), "s/probe", || probes(&out) > 0);

    publish(broker.port(), numbered(|_| "s/a".into(), 0..200), q);
    broker.stop();
    broker.restart().unwrap();
    publish(broker.port(), numbered(|_| "s/b".into(), 200..400), q);
    let got = |n: usize| wait_until(Duration::from_secs(25), || file_ids(&out).0.len() >= n);
    let broker_log = || mosquitto_log(&dir.path().join("broker"));
    assert!(got(400), "{} of 400 after the broker restart:\n{}\n{}", file_ids(&out).0.len(), first.log(), broker_log());

    let after_restart = file_ids(&out).1 - 400;
    let port = broker.port();
    let publisher = thread::spawn(move || publish(port, numbered(|_| "s/c".into(), 400..600), q));
    assert!(got(420), "{}", first.log());
    let log = first.log();
    drop(first); // SIGKILL
    publisher.join().unwrap();
    let second = Running::start(dir.path(), &text);
    let all = got(600);
    let (ids, total) = file_ids(&out);
    assert!(all, "{} of 600 after fbp was killed:\n{}", ids.len(), second.log());
    assert_eq!(ids, (0..600).collect::<HashSet<u64>>());
    let log2 = second.stop();
    assert_eq!((count(&log, LOST), count(&log, "Reconnected.")), (1, 1), "one outage, no loop:\n{log}");
    assert_eq!(count(&log2, LOST), 0, "{log2}");
    let broker_log = mosquitto_log(&dir.path().join("broker"));
    assert!(!broker_log.contains("unknown packet identifier"), "{broker_log}");
    let duplicates = total - ids.len();
    println!(
        "QoS {qos}, persistent session: 600 of 600 across a broker restart and kill -9, {duplicates} duplicates \
         ({after_restart} after the broker restart)"
    );
    duplicates
}

#[test]
fn qos2_with_a_persistent_session_loses_nothing_across_a_broker_restart_and_kill_9() {
    a_persistent_session_loses_nothing(2);
}

#[test]
fn qos1_with_a_persistent_session_loses_nothing_across_a_broker_restart_and_kill_9() {
    a_persistent_session_loses_nothing(1);
}

#[test]
fn a_broker_that_refuses_the_credentials_fails_the_flow_at_once_saying_so() {
    let dir = tempdir();
    let port = free_port();
    let _broker = OwnBroker::start(dir.path(), port, "allow_anonymous false");
    for pipeline in [
        format!("mqtt-subscribe url=mqtt://127.0.0.1:{port} topics=a ! console"),
        format!("counter ! mqtt-publish url=mqtt://127.0.0.1:{port} topic=a"),
    ] {
        let start = std::time::Instant::now();
        let o = crate::util::fbp().current_dir(dir.path()).args(["launch", &pipeline]).output().unwrap();
        let log = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{pipeline}: {log}");
        assert!(start.elapsed() < Duration::from_secs(5), "{pipeline}: not retried: {log}");
        let last = log.lines().last().unwrap_or_default();
        assert!(last.contains("the broker refused the connection (NotAuthorized)"), "{pipeline}: {log}");
    }
}
