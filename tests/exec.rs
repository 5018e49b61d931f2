//! `exec` through the binary: the example providers, a program that crashes in
//! the middle of a stream, garbage on stdout, a missing program, a refused start.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::util::{fbp, lines, logged, root, signal, stderr, summary, tempdir, wait_until, write};

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

/// Echoes each envelope it reads, one flushed line per line, resting 0.2 s
/// every 100th line so that messages pile up in flight.
const ECHO_PY: &str = r#"
import sys, time
sys.stdin.readline()
for n, line in enumerate(sys.stdin, 1):
    if n % 100 == 0:
        time.sleep(0.2)
    sys.stdout.write(line)
    sys.stdout.flush()
"#;

/// A flow of `count` numbered messages through `echo.py` (with `replies`) into `out.txt`, errors to `dead.jsonl`.
fn echo_flow(count: u64, replies: &str) -> String {
    format!(
        r#"
[flow]
connections = ["count -> echo", "echo -> store"]
dead_letter = "file:dead.jsonl"

[components.count]
type = "counter"
config = {{ interval = "4ms", max_count = {count} }}

[components.echo]
type = "exec"
config = {{ command = "python3", args = ["echo.py"], replies = "{replies}" }}
restart = {{ backoff = "10ms..100ms", max_restarts = 1000, within = "1m" }}

[components.store]
type = "file-write"
config = {{ path = "out.txt", format = "lines" }}
"#
    )
}

/// The `python3` children of `pid` (from `/proc/<pid>/task/*/children`), each
/// with whether it is a zombie (exited, not yet waited for).
fn python_children(pid: u32) -> Vec<(u32, bool)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|c| c.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .filter(|c| std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == "python3"))
        .map(|c| {
            let stat = std::fs::read_to_string(format!("/proc/{c}/stat")).unwrap_or_default();
            // The state follows the command name in parentheses.
            (c, stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
        })
        .collect()
}

/// Runs the flow in `dir` with JSON logs to `dir/log.jsonl`, killing its
/// `python3` child with SIGKILL every 2 s until fbp exits (within 180 s);
/// the log and how many children were killed. Each time, a child killed
/// 2 s before must have been waited for (no zombie) and only one runs.
fn run_killing_the_child(dir: &Path, flow: &str) -> (String, usize) {
    write(dir, "flow.toml", flow);
    let log = std::fs::File::create(dir.join("log.jsonl")).unwrap();
    let mut fbp =
        fbp().current_dir(dir).args(["run", "flow.toml", "--log-format", "json"]).stderr(log).spawn().unwrap();
    let (mut kills, mut zombies, mut crowds) = (0, 0, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while fbp.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        if wait_until(Duration::from_secs(2), || fbp.try_wait().unwrap().is_some()) {
            break;
        }
        let children = python_children(fbp.id());
        zombies += children.iter().filter(|(_, z)| *z).count();
        crowds += usize::from(children.iter().filter(|(_, z)| !*z).count() > 1);
        for (child, _) in children.into_iter().filter(|(_, z)| !*z) {
            // It may have exited on its own meanwhile.
            if std::process::Command::new("kill")
                .args(["-KILL", &child.to_string()])
                .status()
                .is_ok_and(|s| s.success())
            {
                kills += 1;
            }
        }
    }
    let status = fbp.try_wait().unwrap();
    if status.is_none() {
        let _ = fbp.kill();
    }
    let _ = fbp.wait();
    let log = std::fs::read_to_string(dir.join("log.jsonl")).unwrap();
    assert!(status.is_some_and(|s| s.success()), "fbp did not finish well: {status:?}\n{log}");
    assert_eq!((zombies, crowds), (0, 0), "zombies, and times more than one child ran, after {kills} kills");
    (log, kills)
}

/// The `count` of every line of `dir/name` (output lines, or `data.data` of dead letters).
fn counts(dir: &Path, name: &str) -> Vec<u64> {
    let path = dir.join(name);
    if !path.exists() {
        return Vec::new();
    }
    lines(&path)
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| if v["count"].is_u64() { v["count"].as_u64() } else { v["data"]["data"]["count"].as_u64() })
        .map(|c| c.expect("a numbered message"))
        .collect()
}

/// What 4 000 messages through `echo.py` (with `replies`), its child killed every 2 s, gave.
struct Killed {
    log: String,
    kills: usize,
    /// The counts delivered, in order, and those dead-lettered.
    out: Vec<u64>,
    dead: Vec<u64>,
    /// The counts delivered, once each.
    unique: BTreeSet<u64>,
}

fn killed_every_two_seconds(replies: &str) -> Killed {
    let dir = tempdir();
    write(dir.path(), "echo.py", ECHO_PY);
    let (log, kills) = run_killing_the_child(dir.path(), &echo_flow(4000, replies));
    assert!(kills >= 3, "only {kills} kills: the test did not test\n{log}");
    let (out, dead) = (counts(dir.path(), "out.txt"), counts(dir.path(), "dead.jsonl"));
    let unique = out.iter().copied().collect();
    Killed { log, kills, out, dead, unique }
}

#[test]
fn with_one_reply_per_line_a_child_killed_every_two_seconds_loses_and_repeats_nothing() {
    let Killed { log, kills, out, dead, unique } = killed_every_two_seconds("one");
    let missing: Vec<u64> = (1..=4000).filter(|n| !unique.contains(n) && !dead.contains(n)).collect();
    assert!(
        missing.is_empty(),
        "{} lost after {kills} kills, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(out.len(), unique.len(), "{} duplicates after {kills} kills", out.len() - unique.len());
    assert_eq!(unique.len() + dead.len(), 4000, "{} delivered, {} dead", unique.len(), dead.len());
    assert_eq!(summary(&log, "echo", "received"), Some(4000), "{log}");
}

#[test]
fn with_one_reply_per_line_a_message_that_kills_the_child_goes_to_err_after_its_retry_and_the_rest_flow() {
    let dir = tempdir();
    // Dies (without answering) on every `{"count": 57}` it reads, answers the rest.
    let poison = r#"
import os, sys
sys.stdin.readline()
for line in sys.stdin:
    if '"count":57}' in line:
        os._exit(3)
    sys.stdout.write(line)
    sys.stdout.flush()
"#;
    write(dir.path(), "echo.py", poison);
    let flow = echo_flow(400, "one").replace("interval = \"4ms\"", "interval = \"0s\"");
    let o = run_flow(dir.path(), &flow);
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    let out = counts(dir.path(), "out.txt");
    assert_eq!(out, (1..=400).filter(|&n| n != 57).collect::<Vec<_>>(), "the rest flow, in order, once");
    let dead = lines(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    let dead: serde_json::Value = serde_json::from_str(&dead[0]).unwrap();
    assert_eq!(dead["data"]["data"]["count"], 57, "{dead}");
    let error = dead["data"]["error"].as_str().unwrap();
    assert!(
        error.contains("failed 2 times with this message in flight") && error.contains("exit status: 3"),
        "{error}"
    );
    assert_eq!(summary(&log, "echo", "restarts"), Some(2), "one retry, then err: {log}");
    assert_eq!(summary(&log, "echo", "errors"), Some(1), "{log}");
}

#[test]
fn with_any_replies_what_a_killed_child_was_written_since_its_last_line_is_counted_as_dropped() {
    let dir = tempdir();
    // The first run kills itself on `{"count": 50}`, unanswered; the next echoes everything.
    let script = r#"IFS= read -r command
while IFS= read -r line; do
    case "$line" in
        *'"count":50}'*) [ -e killed ] || { touch killed; kill -KILL $$; } ;;
    esac
    printf '%s\n' "$line"
done
"#;
    write(dir.path(), "echo.sh", script);
    // Paced, so that each message is written after the answer to the one before.
    let flow = echo_flow(100, "any")
        .replace("interval = \"4ms\"", "interval = \"50ms\"")
        .replace(r#"command = "python3", args = ["echo.py"]"#, r#"command = "sh", args = ["echo.sh"]"#);
    let o = run_flow(dir.path(), &flow);
    let log = stderr(&o);
    assert!(o.status.success(), "{log}");
    let out: BTreeSet<u64> = counts(dir.path(), "out.txt").into_iter().collect();
    assert!(!out.contains(&50), "the message it died on is lost (at-most-once)");
    let dropped = summary(&log, "echo", "dropped").unwrap();
    let warned: Vec<u64> = logged(&log, "Program ended with messages written since its last stdout line")
        .iter()
        .map(|w| w["possibly_lost"].as_u64().unwrap())
        .collect();
    assert_eq!(warned.iter().sum::<u64>(), dropped, "every drop counted is warned: {log}");
    assert!(dropped >= 1, "{log}");
    assert!(out.len() as u64 + dropped >= 100, "{} delivered, {dropped} counted as dropped", out.len());
    assert_eq!(summary(&log, "echo", "received"), Some(100), "{log}");
}

#[test]
fn with_any_replies_a_child_killed_every_two_seconds_loses_nothing_silently() {
    let Killed { log, kills, out, dead, unique } = killed_every_two_seconds("any");
    let dropped = summary(&log, "echo", "dropped").unwrap();
    let warned: u64 = logged(&log, "Program ended with messages written since its last stdout line")
        .iter()
        .map(|w| w["possibly_lost"].as_u64().unwrap())
        .sum();
    let lost = 4000 - unique.len() as u64 - dead.len() as u64;
    eprintln!(
        "any, {kills} kills: {} delivered ({} twice), {} dead, {lost} lost, {dropped} counted as dropped",
        unique.len(),
        out.len() - unique.len(),
        dead.len()
    );
    assert_eq!(warned, dropped, "every drop counted is warned");
    // What is counted is what was written since the child's last line: all
    // that is lost when the child keeps pace, fewer when it reads ahead.
    assert!(lost == 0 || dropped > 0, "{lost} lost, none counted");
    assert_eq!(summary(&log, "echo", "received"), Some(4000), "{log}");
}

#[test]
fn past_the_restart_limit_every_message_exec_held_is_dead_lettered() {
    let dir = tempdir();
    // Takes the messages and dies without answering any.
    write(dir.path(), "dies.sh", "IFS= read -r command\nIFS= read -r line\nexit 3\n");
    let flow = r#"
[flow]
connections = ["count -> dies", "dies -> store"]
dead_letter = "file:dead.jsonl"

[components.count]
type = "counter"
config = { interval = "0s", max_count = 5 }

[components.dies]
type = "exec"
config = { command = "sh", args = ["dies.sh"], replies = "one" }
restart = { max_restarts = 1, backoff = "10ms..10ms" }

[components.store]
type = "file-write"
config = { path = "out.jsonl" }
"#;
    let o = run_flow(dir.path(), flow);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(lines(&dir.path().join("out.jsonl")).is_empty());
    let dead: BTreeSet<u64> = lines(&dir.path().join("dead.jsonl"))
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["data"]["data"]["count"].as_u64().unwrap())
        .collect();
    assert_eq!(dead, (1..=5).collect(), "every message, once: {}", stderr(&o));
    assert_eq!(summary(&stderr(&o), "dies", "errors"), Some(5), "{}", stderr(&o));
}
