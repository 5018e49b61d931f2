//! `exec` through the binary: the example providers, a program that crashes in
//! the middle of a stream, garbage on stdout, a missing program, a refused start.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::util::{fbp, lines, root, signal, stderr, summary, tempdir, wait_until, write};

/// Runs the flow `dir/flow.toml` with JSON logs; the output.
fn run_flow(dir: &Path, flow: &str) -> std::process::Output {
    write(dir, "flow.toml", flow);
    fbp().current_dir(dir).args(["run", "flow.toml", "--log-format", "json"]).output().expect("fbp runs")
}

#[test]
fn the_example_providers_run_through_fbp() {
    let dir = tempdir();
    let out = dir.path().join("counts.txt");
    let flow = root().join("flows/examples/exec-providers.toml");
    let check = fbp().arg("check").arg(&flow).output().unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    let o = fbp()
        .arg("run")
        .arg(&flow)
        .env("EXEC_INTERVAL", "0")
        .env("EXEC_MAX_COUNT", "50")
        .env("EXEC_OUT", &out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let expected: Vec<String> = (1..=50).map(|n| format!("{{\"count\": {n}}}")).collect();
    assert_eq!(lines(&out), expected);
    assert!(stderr(&o).contains("counter: counting every 0.0s up to 50"), "the provider's stderr is logged");
}

#[test]
fn an_endless_provider_is_stopped_with_sigterm_when_the_flow_is_interrupted() {
    let dir = tempdir();
    let out = dir.path().join("counts.txt");
    let mut child = fbp()
        .arg("run")
        .arg(root().join("flows/examples/exec-providers.toml"))
        .env("EXEC_INTERVAL", "0.01")
        .env("EXEC_MAX_COUNT", "0")
        .env("EXEC_OUT", &out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || lines(&out).len() >= 3), "no counts arrived");
    signal(&child, "INT");
    assert!(wait_until(Duration::from_secs(20), || child.try_wait().unwrap().is_some()), "fbp did not stop");
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let counts = lines(&out);
    let expected: Vec<String> = (1..=counts.len()).map(|n| format!("{{\"count\": {n}}}")).collect();
    assert_eq!(counts, expected, "every count written, in order, none lost on the way out");
}

#[test]
fn a_crashed_program_is_restarted_and_loses_nothing_it_had_not_answered() {
    let dir = tempdir();
    // Reads 3000 envelopes, answering 2999 of them, then dies; its next run answers everything.
    let crash = r#"
import os, sys
sys.stdin.readline()
first = not os.path.exists("crashed")
open("crashed", "w").close()
for n, line in enumerate(sys.stdin, 1):
    if first and n == 3000:
        os._exit(1)
    sys.stdout.write(line)
    sys.stdout.flush()
"#;
    write(dir.path(), "crash.py", crash);
    let flow = r#"
[flow]
connections = ["count -> crash", "crash -> store"]

[components.count]
type = "counter"
config = { interval = "0s", max_count = 10000 }

[components.crash]
type = "exec"
config = { command = "python3", args = ["crash.py"], replies = "one" }
restart = { backoff = "10ms..100ms" }

[components.store]
type = "file-write"
config = { path = "out.txt", format = "lines" }
"#;
    let o = run_flow(dir.path(), flow);
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    assert_eq!(summary(&log, "crash", "restarts"), Some(1), "{log}");
    let counts: BTreeSet<u64> = lines(&dir.path().join("out.txt"))
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["count"].as_u64().unwrap())
        .collect();
    assert_eq!(
        counts.len(),
        10000,
        "missing: {:?}",
        (1..=10000).filter(|n| !counts.contains(n)).take(10).collect::<Vec<_>>()
    );
    assert_eq!(lines(&dir.path().join("out.txt")).len(), 10000, "no duplicates either");
}

#[test]
fn a_garbage_line_goes_to_the_dead_letter_and_the_stream_goes_on() {
    let dir = tempdir();
    let script = r#"IFS= read -r command
while IFS= read -r line; do
    case "$line" in
        *'"count":5}'*) echo 'this is not JSON' ;;
        *) printf '%s\n' "$line" ;;
    esac
done
"#;
    write(dir.path(), "garble.sh", script);
    let flow = r#"
[flow]
connections = ["count -> garble", "garble -> store"]
dead_letter = "file:dead.jsonl"

[components.count]
type = "counter"
config = { interval = "0s", max_count = 10 }

[components.garble]
type = "exec"
config = { command = "sh", args = ["garble.sh"] }

[components.store]
type = "file-write"
config = { path = "out.txt", format = "lines" }
"#;
    let o = run_flow(dir.path(), flow);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = lines(&dir.path().join("out.txt"));
    assert_eq!(out.len(), 9);
    assert!(!out.contains(&r#"{"count":5}"#.to_string()));
    let dead = lines(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1);
    let dead: serde_json::Value = serde_json::from_str(&dead[0]).unwrap();
    assert_eq!(dead["data"]["data"], "this is not JSON");
    assert!(dead["data"]["error"].as_str().unwrap().contains("not JSON"), "{dead}");
}

#[test]
fn a_program_that_does_not_exist_is_named_in_the_error() {
    let dir = tempdir();
    let flow = r#"
[flow]
connections = ["count -> missing"]

[components.count]
type = "counter"
config = { interval = "0s", max_count = 1 }

[components.missing]
type = "exec"
config = { command = "no-such-program-for-fbp", mode = "sink" }
restart = "never"
"#;
    let o = run_flow(dir.path(), flow);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(log.contains("cannot start `no-such-program-for-fbp`"), "{log}");
    assert!(log.contains("No such file or directory"), "{log}");
}

#[test]
fn a_handshake_error_is_reported_with_its_message_and_stderr() {
    let dir = tempdir();
    let script = r#"IFS= read -r command
echo 'cannot listen: port 80 is in use' >&2
echo '{"status": "error", "message": "cannot open port 80"}'
exit 1
"#;
    write(dir.path(), "refuse.sh", script);
    let flow = r#"
[flow]
connections = ["refuse -> sink"]

[components.refuse]
type = "exec"
config = { command = "sh", args = ["refuse.sh"], mode = "source" }
restart = "never"

[components.sink]
type = "null"
"#;
    let o = run_flow(dir.path(), flow);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(
        log.contains("`sh` reported an error: cannot open port 80; stderr: cannot listen: port 80 is in use"),
        "{log}"
    );
}
