//! `fbp check --connect` and `fbp run --require-healthy` against the real
//! servers on loopback: Mosquitto 1883, NATS 4222, PostgreSQL 5432 (database
//! `test`), RabbitMQ 5672. A probe tries once and changes nothing.

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;

use fbp_runtime::testbed::free_port;

use crate::postgres::{Table, sql};
use crate::util::{run_in, stderr, stdout, tempdir, write};

/// The line `fbp check --connect` wrote for component `name`.
fn line<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no line for `{name}` in:\n{text}"))
}

/// The status (`ok`, `FAIL`, `-`) of component `name`.
fn status<'a>(text: &'a str, name: &str) -> &'a str {
    line(text, name).split_whitespace().next().unwrap()
}

/// Whether PostgreSQL has a table of that name.
fn table_exists(name: &str) -> bool {
    sql(&format!("SELECT to_regclass('{name}') IS NOT NULL AS there"))[0].contains("true")
}

/// A flow file with these connections and components, each `(name, type, config)`,
/// the config the inside of an inline TOML table.
fn flow(connections: &[&str], components: &[(&str, &str, &str)]) -> String {
    let mut text = format!("[flow]\nname = \"probe\"\nconnections = {connections:?}\n");
    for (name, ty, config) in components {
        text += &format!("\n[components.{name}]\ntype = \"{ty}\"\nconfig = {{ {config} }}\n");
    }
    text
}

/// A NATS subscriber on the test server.
const NATS: (&str, &str, &str) = ("n", "nats-subscribe", r#"url = "nats://127.0.0.1:4222", subject = "fbp.probe""#);

/// A file-write sink (its folder is writable; the file is not created by a check).
const KEEP: (&str, &str, &str) = ("keep", "file-write", r#"path = "kept.jsonl""#);

fn check(dir: &Path, flow: &str) -> Output {
    write(dir, "flow.toml", flow);
    run_in(dir, &["check", "--connect", "--connect-timeout", "20s", "flow.toml"])
}

#[test]
fn every_good_connector_checks_ok_and_nothing_is_created() {
    let dir = tempdir();
    let table = Table::new("probe_ok");
    write(dir.path(), "in.jsonl", "{\"n\": 1}\n");
    let db = format!(r#"url = "postgresql://postgres@127.0.0.1:5432/test", table = "{}""#, table.0);
    let js = r#"url = "nats://127.0.0.1:4222", subject = "fbp.probe.made", stream = "FBP_PROBE_NOT_YET", create_stream = true"#;
    let connections = ["m -> p", "n -> p", "a -> p", "f -> p", "f -> db", "f -> out", "f -> keep", "f -> js"];
    let components = [
        ("m", "mqtt-subscribe", r#"url = "mqtt://127.0.0.1:1883", topics = ["fbp/probe/#"]"#),
        NATS,
        ("a", "amqp-subscribe", r#"url = "amqp://guest:guest@127.0.0.1:5672/%2f", queue = "fbp-probe-q""#),
        ("f", "file-read", r#"path = "in.jsonl""#),
        ("p", "map", r#"expr = ".""#),
        ("db", "postgres", &db),
        ("out", "sqlite", r#"path = "out.db", table = "t""#),
        KEEP,
        ("js", "nats-publish", js),
    ];
    let o = check(dir.path(), &flow(&connections, &components));
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}{}", stderr(&o));
    for name in ["m", "n", "a", "f", "db", "out", "keep", "js"] {
        assert_eq!(status(&text, name), "ok", "{text}");
    }
    assert_eq!(status(&text, "p"), "-", "{text}");
    assert!(line(&text, "db").contains("will be created"), "{text}");
    assert!(line(&text, "js").contains("will create it"), "{text}");
    assert!(text.contains("8 checked, 0 failed"), "{text}");
    assert!(!dir.path().join("out.db").exists(), "the check created the SQLite file");
    assert!(!dir.path().join("kept.jsonl").exists(), "the check created the output file");
    assert!(!table_exists(&table.0), "the check created the PostgreSQL table");
}

#[test]
fn failing_connectors_are_named_with_their_cause_and_the_good_ones_stay_ok() {
    let dir = tempdir();
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let mqtt = format!(r#"url = "mqtt://127.0.0.1:{}", topics = ["fbp/probe/#"]"#, free_port());
    let tcp = format!(r#"bind = "127.0.0.1:{}""#, held.local_addr().unwrap().port());
    let db = r#"url = "postgresql://postgres:hunter2@127.0.0.1:5432/fbp_probe_no_such_db", table = "t""#;
    let connections =
        ["m -> keep", "f -> keep", "t -> keep", "n -> db", "n -> run", "n -> keep", "n -> js", "n -> amqp"];
    let components = [
        ("m", "mqtt-subscribe", &*mqtt),
        NATS,
        ("f", "file-read", r#"path = "missing.jsonl""#),
        ("t", "tcp-listen", &tcp),
        ("db", "postgres", db),
        ("run", "exec", r#"command = "fbp-probe-no-such-program", mode = "sink""#),
        KEEP,
        (
            "js",
            "nats-publish",
            r#"url = "nats://127.0.0.1:4222", subject = "fbp.probe.none", stream = "FBP_PROBE_NO_STREAM""#,
        ),
        (
            "amqp",
            "amqp-publish",
            r#"url = "amqp://guest:wrong@127.0.0.1:5672/%2f", exchange = "fbp-probe-x", routing_key = "k""#,
        ),
    ];
    let o = check(dir.path(), &flow(&connections, &components));
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}{}", stderr(&o));
    let causes = [
        ("m", "Connection refused"),
        ("f", "No such file"),
        ("t", "in use"),
        ("db", "does not exist"),
        ("run", "not found in PATH"),
        ("js", "does not exist"),
        ("amqp", "ACCESS_REFUSED"),
    ];
    for (name, cause) in causes {
        assert_eq!(status(&text, name), "FAIL", "{text}");
        assert!(line(&text, name).contains(cause), "`{name}` should say `{cause}`:\n{text}");
    }
    assert!(line(&text, "db").contains("create the database"), "{text}");
    assert_eq!(status(&text, "n"), "ok", "{text}");
    assert_eq!(status(&text, "keep"), "ok", "{text}");
    assert!(text.contains("9 checked, 7 failed"), "{text}");
    assert!(!text.contains("hunter2"), "a password shown:\n{text}");
    drop(held);
}

/// A counter writing to a file, and an MQTT sink at `mqtt_port`.
fn run_flow(mqtt_port: u16) -> String {
    let publish = format!(r#"url = "mqtt://127.0.0.1:{mqtt_port}", topic = "fbp/probe/run", qos = 0"#);
    let components = [("c", "counter", r#"interval = "0s", max_count = 3"#), KEEP, ("pub", "mqtt-publish", &publish)];
    flow(&["c -> keep", "c -> pub"], &components)
}

#[test]
fn require_healthy_refuses_to_start_when_a_probe_fails() {
    let dir = tempdir();
    write(dir.path(), "flow.toml", &run_flow(free_port()));
    let o = run_in(dir.path(), &["run", "--require-healthy", "--connect-timeout", "20s", "flow.toml"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(status(&err, "pub"), "FAIL", "{err}");
    assert_eq!(status(&err, "keep"), "ok", "{err}");
    assert!(err.contains("not starting"), "{err}");
    assert!(!dir.path().join("kept.jsonl").exists(), "the flow ran though a probe failed");
}

#[test]
fn require_healthy_starts_when_every_probe_passes() {
    let dir = tempdir();
    write(dir.path(), "flow.toml", &run_flow(1883));
    let o = run_in(dir.path(), &["run", "--require-healthy", "--connect-timeout", "20s", "flow.toml"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("2 checked, 0 failed"), "{err}");
    assert_eq!(crate::util::lines(&dir.path().join("kept.jsonl")).len(), 3, "{err}");
}

#[test]
fn a_server_that_never_answers_fails_within_the_timeout() {
    let dir = tempdir();
    // The kernel completes the connection; nobody ever sends a CONNACK.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let mqtt = format!(r#"url = "mqtt://127.0.0.1:{}", topics = ["fbp/probe/#"]"#, silent.local_addr().unwrap().port());
    write(dir.path(), "flow.toml", &flow(&["m -> keep"], &[("m", "mqtt-subscribe", &mqtt), KEEP]));
    let o = run_in(dir.path(), &["check", "--connect", "--connect-timeout", "1s", "flow.toml"]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}{}", stderr(&o));
    assert_eq!(status(&text, "m"), "FAIL", "{text}");
    assert!(line(&text, "m").contains("no answer within 1s"), "{text}");
    assert_eq!(status(&text, "keep"), "ok", "{text}");
    drop(silent);
}

#[test]
fn a_broker_refusing_the_credentials_is_a_clear_failure() {
    let dir = tempdir();
    let passwords = dir.path().join("passwords");
    let made = std::process::Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&passwords)
        .args(["fbp", "right"])
        .status()
        .expect("mosquitto_passwd runs");
    assert!(made.success());
    let conf = format!("allow_anonymous false\npassword_file {}\n", passwords.display());
    let broker = fbp_runtime::testbed::Server::mosquitto_with(&dir.path().join("broker"), &conf).expect("mosquitto");
    let config = |password: &str| {
        format!(
            r#"url = "mqtt://127.0.0.1:{}", username = "fbp", password = "{password}", topic = "fbp/probe""#,
            broker.port()
        )
    };
    let (right, wrong) = (config("right"), config("wrong"));
    let components = [("c", "counter", ""), ("good", "mqtt-publish", &*right), ("bad", "mqtt-publish", &*wrong)];
    let o = check(dir.path(), &flow(&["c -> good", "c -> bad"], &components));
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}{}", stderr(&o));
    assert_eq!(status(&text, "good"), "ok", "{text}");
    assert_eq!(status(&text, "bad"), "FAIL", "{text}");
    assert!(line(&text, "bad").contains("fix `username`/`password`"), "{text}");
    assert!(!text.contains("wrong"), "a password shown:\n{text}");
}
