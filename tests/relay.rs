//! `fbp relay`: round trips through the real binary, `--print-flow`, `--set`
//! and the errors for URIs it cannot use.

use std::io::Write;
use std::process::Stdio;

use crate::util::{fbp, lines, run_in, stderr, stdout, tempdir, write};

fn envelopes(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}

#[test]
fn relay_file_to_sqlite_inserts_every_record() {
    let dir = tempdir();
    write(dir.path(), "in.jsonl", "{\"sensor\": \"a\", \"value\": 1.5}\n{\"sensor\": \"b\", \"value\": 2}\n");
    let o = run_in(dir.path(), &["relay", "file:in.jsonl", "sqlite://out.db?table=readings"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let db = rusqlite::Connection::open(dir.path().join("out.db")).unwrap();
    let mut stmt = db.prepare("SELECT sensor, value FROM readings ORDER BY sensor").unwrap();
    let rows: Vec<(String, f64)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect();
    assert_eq!(rows, [("a".to_string(), 1.5), ("b".to_string(), 2.0)]);
}

#[test]
fn relay_stdin_to_file_writes_envelopes_and_bare_values() {
    let dir = tempdir();
    let mut child = fbp()
        .current_dir(dir.path())
        .args(["relay", "-", "file://out/copy.jsonl"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"{\"n\": 1}\n{\"data\": {\"n\": 2}, \"metadata\": {\"topic\": \"t/2\"}}\n\"three\"\n").unwrap();
    drop(input);
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let written = envelopes(&lines(&dir.path().join("out/copy.jsonl")).join("\n"));
    let data: Vec<_> = written.iter().map(|e| e["data"].clone()).collect();
    assert_eq!(data, [serde_json::json!({"n": 1}), serde_json::json!({"n": 2}), serde_json::json!("three")]);
    assert_eq!(written[1]["metadata"]["topic"], "t/2");
}

#[test]
fn relay_csv_file_to_stdout_prints_one_envelope_per_row() {
    let dir = tempdir();
    write(dir.path(), "in.csv", "sensor,value\na,1\nb,2\n");
    let o = run_in(dir.path(), &["--log-level", "error", "relay", "file:in.csv?format=csv", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = envelopes(&stdout(&o));
    let data: Vec<_> = printed.iter().map(|e| e["data"].clone()).collect();
    assert_eq!(data, [serde_json::json!({"sensor": "a", "value": 1}), serde_json::json!({"sensor": "b", "value": 2})]);
    assert_eq!(printed[0]["metadata"]["topic"], "in.csv");
    assert_eq!(printed[0]["metadata"]["source"], "source");
    let o = run_in(dir.path(), &["--log-level", "error", "relay", "file:in.csv?format=csv&infer_types=false", "-"]);
    assert_eq!(envelopes(&stdout(&o))[0]["data"], serde_json::json!({"sensor": "a", "value": "1"}), "kept as text");
}

#[test]
fn a_csv_relay_into_sqlite_stores_numbers_as_numbers() {
    let dir = tempdir();
    write(dir.path(), "in.csv", "sensor,value,ok\na,1,true\nb,2.5,false\n");
    let o = run_in(dir.path(), &["--log-level", "error", "relay", "file:in.csv?format=csv", "sqlite://out.db?table=t"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let db = rusqlite::Connection::open(dir.path().join("out.db")).unwrap();
    let types: Vec<(String, String, String)> = db
        .prepare("SELECT typeof(sensor), typeof(value), typeof(ok) FROM t ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let row = |a: &str, b: &str| (String::from("text"), a.to_string(), b.to_string());
    assert_eq!(types, [row("integer", "integer"), row("real", "integer")]);
}

#[test]
fn relay_print_flow_output_passes_check() {
    let dir = tempdir();
    write(dir.path(), "in.jsonl", "{}\n");
    let o = run_in(
        dir.path(),
        &[
            "relay",
            "file:in.jsonl?follow=true",
            "sqlite://out.db?table=t",
            "--set",
            "sink.batch_size=50",
            "--print-flow",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("\"source -> sink\""), "{text}");
    assert!(text.contains("config = { path = \"in.jsonl\", follow = true }"), "{text}");
    assert!(text.contains("config = { path = \"out.db\", table = \"t\", batch_size = 50 }"), "{text}");
    write(dir.path(), "relay.toml", &text);
    let checked = run_in(dir.path(), &["check", "relay.toml"]);
    assert!(checked.status.success(), "{}", stderr(&checked));
    assert!(stdout(&checked).contains("ok (2 components, 1 connection)"), "{}", stdout(&checked));
    assert!(!dir.path().join("out.db").exists(), "--print-flow runs nothing");
}

#[test]
fn relay_set_overrides_what_the_uri_says() {
    let dir = tempdir();
    write(dir.path(), "in.txt", "one\ntwo\n");
    let o = run_in(
        dir.path(),
        &[
            "--log-level",
            "error",
            "relay",
            "file:in.txt",
            "stdout:",
            "--set",
            "source.format=lines",
            "--set",
            "sink.format=simple",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "\"one\"\n\"two\"\n");
}

#[test]
fn relay_refuses_an_unknown_scheme_pointing_at_the_list_in_its_help() {
    let dir = tempdir();
    let o = run_in(dir.path(), &["relay", "gopher://x/y", "-"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "error: source URI: unknown URI scheme `gopher:` in `gopher://x/y`\n  \
         = help: `fbp relay --help` lists every scheme\n"
    );
    let o = run_in(dir.path(), &["relay", "mqt://127.0.0.1/x", "-"]);
    assert!(
        stderr(&o).contains("= help: did you mean `mqtt:`? `fbp relay --help` lists every scheme"),
        "{}",
        stderr(&o)
    );
    let help = stdout(&run_in(dir.path(), &["relay", "--help"]));
    assert!(help.contains("sqlite://PATH?table=T") && help.contains("sink (sqlite)"), "{help}");
    assert!(help.contains("postgresql://"), "{help}");
    assert!(help.contains("mqtt://HOST:PORT/TOPIC") && help.contains("nats://HOST:PORT/SUBJECT"), "{help}");
}

#[test]
fn relay_refuses_sqlite_as_a_source_and_a_bad_set() {
    let dir = tempdir();
    let o = run_in(dir.path(), &["relay", "sqlite://x.db?table=t", "-"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`sqlite:` is not supported as a source"), "{}", stderr(&o));
    let o = run_in(dir.path(), &["relay", "-", "-", "--set", "format=json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("write `source.KEY=VALUE` or `sink.KEY=VALUE`"), "{}", stderr(&o));
}

#[test]
fn relay_reports_a_bad_setting_like_a_flow_file_error() {
    let dir = tempdir();
    let o = run_in(dir.path(), &["relay", "file:in.jsonl?folow=true", "-"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("follow"), "{}", stderr(&o));
}

#[test]
fn relay_exec_to_stdout_prints_what_the_program_writes() {
    let dir = tempdir();
    let provider = write(
        dir.path(),
        "count.sh",
        "#!/bin/sh\nread command\nfor i in 1 2 3; do echo \"{\\\"data\\\": {\\\"n\\\": $i}, \\\"metadata\\\": {\\\"topic\\\": \\\"$1\\\"}}\"; done\n",
    );
    std::fs::set_permissions(&provider, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = run_in(dir.path(), &["--log-level", "error", "relay", "exec:./count.sh?arg=counts", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = envelopes(&stdout(&o));
    let data: Vec<_> = printed.iter().map(|e| e["data"]["n"].clone()).collect();
    assert_eq!(data, [1, 2, 3]);
    assert!(printed.iter().all(|e| e["metadata"]["topic"] == "counts"), "{printed:?}");
}

#[test]
fn relay_file_to_exec_writes_the_command_then_one_envelope_per_line() {
    let dir = tempdir();
    write(dir.path(), "in.jsonl", "{\"a\": 1}\n{\"a\": 2}\n");
    let o = run_in(dir.path(), &["relay", "file:in.jsonl", "exec:sh?arg=-c&arg=cat%20>%20got.jsonl"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = envelopes(&lines(&dir.path().join("got.jsonl")).join("\n"));
    assert_eq!(got[0], serde_json::json!({"command": "run", "config": {}}));
    let data: Vec<_> = got[1..].iter().map(|e| e["data"].clone()).collect();
    assert_eq!(data, [serde_json::json!({"a": 1}), serde_json::json!({"a": 2})]);
}

#[test]
fn relay_takes_lorrystreams_crate_uri_as_the_postgres_sink_over_cratedbs_postgresql_port() {
    let dir = tempdir();
    let o = run_in(dir.path(), &["relay", "--print-flow", "file:in.jsonl", "crate://localhost/?table=testdrive"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let flow = stdout(&o);
    assert!(flow.contains("type = \"postgres\""), "{flow}");
    assert!(flow.contains("url = \"postgresql://crate@localhost:5432/doc\", table = \"testdrive\""), "{flow}");
}

#[test]
fn relay_and_launch_buffer_on_disk_what_goes_to_the_sink() {
    let dir = tempdir();
    let input: String = (0..500).map(|i| format!("{{\"n\": {i}}}\n")).collect();
    write(dir.path(), "in.jsonl", &input);
    let o = run_in(dir.path(), &["relay", "--buffer", "buf", "file:in.jsonl", "file:out.jsonl"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(lines(&dir.path().join("out.jsonl")).len(), 500);
    assert!(dir.path().join("buf").is_dir(), "the buffer's directory");
    let o = run_in(dir.path(), &["launch", "--buffer", "buf2", "--print-flow", "counter max_count=3 ! console"]);
    assert!(stdout(&o).contains(r#"{ from = "counter", to = "console", buffer = { type = "disk", path = "buf2" } }"#));
    let o = run_in(
        dir.path(),
        &["--log-level", "error", "launch", "--buffer", "buf2", "counter max_count=3 interval=0s ! console"],
    );
    assert_eq!(stdout(&o), "{\"count\":1}\n{\"count\":2}\n{\"count\":3}\n", "{}", stderr(&o));
}
