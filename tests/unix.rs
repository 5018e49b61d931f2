//! fbp as a Unix tool: a reader that goes away ends the output cleanly, the
//! signals `timeout` sends are one request, and a shutdown does not wait out
//! a restart's backoff.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::util::{catches, fbp, signal, summary, tempdir, wait_until, write};

/// Waits for `child` to exit within `limit`; its status and stderr.
fn finish(mut child: Child, limit: Duration) -> (ExitStatus, String, Duration) {
    let start = Instant::now();
    let exited = wait_until(limit, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(exited, "fbp did not exit within {limit:?}: {log}");
    (status, log, start.elapsed())
}

/// Starts `fbp args`, reads `n` lines of its stdout and closes the pipe.
fn read_then_close(args: &[&str], n: usize) -> (Child, Vec<String>) {
    let mut child = fbp().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("fbp starts");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let lines = (0..n)
        .map(|_| {
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line
        })
        .collect();
    drop(out);
    (child, lines)
}

#[test]
fn a_closed_pipe_ends_a_flow_cleanly() {
    let (child, lines) = read_then_close(&["launch", "counter interval=0s ! console"], 2);
    assert_eq!(lines, ["{\"count\":1}\n", "{\"count\":2}\n"]);
    let (status, log, _) = finish(child, Duration::from_secs(20));
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("Stdout was closed by its reader; stopping the flow."), "{log}");
    for never in ["restarting", "panic", "Flow failed"] {
        assert!(!log.contains(never), "{never}: {log}");
    }
}

#[test]
fn a_closed_pipe_ends_a_commands_output_without_a_panic() {
    // The catalogue in markdown is far more than a pipe holds.
    let (child, lines) = read_then_close(&["components", "--format", "markdown"], 1);
    assert_eq!(lines, ["# Components\n"]);
    let (status, log, _) = finish(child, Duration::from_secs(20));
    assert!(status.success(), "{status}: {log}");
    assert!(log.is_empty(), "{log}");
}

#[test]
fn the_two_signals_timeout_sends_are_one_request_to_drain() {
    let dir = two_components(
        "ticks",
        "type = \"counter\"\nconfig = { interval = \"10ms\" }",
        "keep",
        "type = \"file-write\"\nconfig = { path = \"out.jsonl\" }",
    );
    // Without --foreground, timeout signals fbp and then its whole process group.
    let child = std::process::Command::new("timeout")
        .args(["--preserve-status", "2", env!("CARGO_BIN_EXE_fbp"), "--log-format", "json", "run", "flow.toml"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("timeout runs");
    let (status, log, _) = finish(child, Duration::from_secs(30));
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("Signal received; draining."), "{log}");
    assert!(!log.contains("second signal"), "{log}");
    let written = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let sent = summary(&log, "ticks", "sent");
    assert_eq!(Some(written.lines().count() as u64), sent, "every message sent was written: {log}");
}

#[test]
fn a_shutdown_does_not_wait_out_a_restart_backoff() {
    let dir = two_components(
        "input",
        "type = \"exec\"\nconfig = { command = \"sh\", args = [\"-c\", \"exit 3\"], mode = \"source\" }\n\
         restart = { backoff = \"30s..30s\" }",
        "show",
        "type = \"console\"",
    );
    let mut child = fbp()
        .current_dir(dir.path())
        .args(["run", "flow.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fbp starts");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("restarting") {
        assert!(err.read_line(&mut log).unwrap() > 0, "fbp ended before restarting: {log}");
    }
    child.stderr = Some(err.into_inner());
    let pid = child.id();
    assert!(wait_until(Duration::from_secs(10), || catches(pid, 2)), "fbp never handled SIGINT");
    signal(&child, "INT");
    let (status, rest, took) = finish(child, Duration::from_secs(20));
    assert!(status.success(), "{status}: {log}{rest}");
    assert!(took < Duration::from_secs(5), "took {took:?}: {log}{rest}");
    assert!(rest.contains("the restart it waited for is cancelled"), "{rest}");
}

/// A folder with `flow.toml`: component `a` (its table's body) sending to `b`.
fn two_components(a: &str, a_body: &str, b: &str, b_body: &str) -> tempfile::TempDir {
    let dir = tempdir();
    let flow = format!(
        "[flow]\nconnections = [\"{a}.out -> {b}.in\"]\n\n[components.{a}]\n{a_body}\n\n[components.{b}]\n{b_body}\n"
    );
    write(dir.path(), "flow.toml", &flow);
    dir
}

#[test]
fn permanent_failures_end_the_flow_at_once_saying_what_to_change() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let cases = [
        ("file-read path=nope.jsonl ! console".to_string(), "no such file; check `path`"),
        (format!("tcp-listen bind=127.0.0.1:{port} ! console"), "another program listens there"),
        ("counter ! exec command=./refuses.sh ! console".to_string(), "reported an error: no such table"),
        ("counter ! exec command=no-such-program-here ! console".to_string(), "check `command`"),
        (
            "amqp-subscribe url=amqp://guest:wrong@127.0.0.1:5672/%2f queue=fbp_refused ! console".to_string(),
            "ACCESS_REFUSED - Login was refused",
        ),
        (
            "counter ! postgres url=postgresql://postgres@127.0.0.1:5432/fbp_no_such_db table=t".to_string(),
            "database \"fbp_no_such_db\" does not exist; create the database",
        ),
    ];
    for (pipeline, cause) in cases {
        let start = Instant::now();
        let dir = tempdir();
        let script = write(
            dir.path(),
            "refuses.sh",
            "#!/bin/sh\nread -r c\necho '{\"status\": \"error\", \"message\": \"no such table\"}'\n",
        );
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let o = fbp().current_dir(dir.path()).args(["launch", &pipeline]).output().unwrap();
        let log = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{pipeline}: {log}");
        assert!(start.elapsed() < Duration::from_secs(5), "{pipeline}: not retried: {log}");
        assert!(log.contains("restarting cannot fix this"), "{pipeline}: {log}");
        assert!(!log.contains("Component failed; restarting."), "{pipeline}: {log}");
        let last = log.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: component `") && last.contains(cause), "{pipeline}: {log}");
    }
}

#[test]
fn a_permanent_failure_of_a_flow_file_points_at_the_key_to_change() {
    let dir = two_components(
        "input",
        "type = \"file-read\"\nconfig = { path = \"nope.jsonl\" }",
        "show",
        "type = \"console\"",
    );
    let o = fbp().current_dir(dir.path()).args(["run", "flow.toml"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let log = String::from_utf8_lossy(&o.stderr);
    let shown = log.split("error: component `input` failed: ").nth(1).unwrap_or_else(|| panic!("{log}"));
    assert!(shown.contains(" --> flow.toml:6:19\n"), "{log}");
    assert!(
        shown.contains(
            "6 | config = { path = \"nope.jsonl\" }\n  |                   ^^^^^^^^^^^^ restarting cannot fix this"
        ),
        "{log}"
    );
}
