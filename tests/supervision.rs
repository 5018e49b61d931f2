//! Supervision through the real binary: message errors flow around, panics
//! restart only the component that panicked, restart limits, stalls.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::util::{fbp, lines, signal, stderr, summary, tempdir, wait_until, write};

const TWO_BRANCHES: &str = r#"[flow]
name = "branches"
dead_letter = "file:dead.jsonl"
connections = ["src -> chaos", "chaos -> a", "src -> b"]

[components.src]
type = "counter"
config = { interval = "0s", max_count = 100000 }

[components.chaos]
type = "fault"
config = FAULT
RESTART

[components.a]
type = "file-write"
config = { path = "a.jsonl", format = "lines" }

[components.b]
type = "file-write"
config = { path = "b.jsonl", format = "lines" }
"#;

fn run_flow(dir: &Path, fault: &str, restart: &str) -> Output {
    let text = TWO_BRANCHES.replace("FAULT", fault).replace("RESTART", restart);
    let flow = write(dir, "flow.toml", &text);
    fbp().args(["--log-format", "json", "run"]).arg(&flow).output().unwrap()
}

fn counts(path: &Path) -> Vec<u64> {
    lines(path)
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["count"].as_u64().unwrap())
        .collect()
}

/// Compares sequences without printing 100 000 numbers.
fn assert_seq(got: &[u64], want: impl Iterator<Item = u64>, what: &str) {
    let want: Vec<u64> = want.collect();
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!("{what}: first difference at index {i}: got {}, want {}", got[i], want[i]);
    }
    assert_eq!(got.len(), want.len(), "{what}: lengths differ (last got: {:?})", got.last());
}

fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    lines(&dir.join("dead.jsonl")).iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn message_errors_go_to_the_dead_letter_and_nothing_restarts() {
    let dir = tempdir();
    let o = run_flow(dir.path(), "{ every = 1000, mode = \"error\" }", "");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_seq(&counts(&dir.path().join("b.jsonl")), 1..=100_000, "B: all, in order");
    let a = counts(&dir.path().join("a.jsonl"));
    assert_seq(&a, (1..=100_000).filter(|n| n % 1000 != 0), "A: all but the failing ones");
    let dead = dead_letters(dir.path());
    assert_eq!(dead.len(), 100);
    for (i, d) in dead.iter().enumerate() {
        let data = &d["data"];
        assert_eq!(data["component"], "chaos");
        assert_eq!(data["type"], "fault");
        assert_eq!(data["data"]["count"].as_u64(), Some((i as u64 + 1) * 1000));
        assert!(data["error"].as_str().unwrap().contains("injected fault at position"), "{d}");
        assert_eq!(d["metadata"]["source"], "src", "original metadata kept");
    }
    let err = stderr(&o);
    assert_eq!(summary(&err, "chaos", "restarts"), Some(0));
    assert_eq!(summary(&err, "chaos", "errors"), Some(100));
}

#[test]
fn a_panic_restarts_the_component_twice_per_poison_message_and_loses_nothing() {
    let dir = tempdir();
    let restart = "restart = { max_restarts = 30, within = \"1m\", backoff = \"1ms..10ms\" }";
    let o = run_flow(dir.path(), "{ every = 10000, mode = \"panic\" }", restart);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_seq(&counts(&dir.path().join("b.jsonl")), 1..=100_000, "B: all, in order");
    let a = counts(&dir.path().join("a.jsonl"));
    assert_seq(&a, (1..=100_000).filter(|n| n % 10_000 != 0), "A: no gap, no duplicate");
    let dead = dead_letters(dir.path());
    assert_eq!(dead.len(), 10);
    for d in &dead {
        assert_eq!(d["data"]["attempts"], 2, "dead-lettered after its retry: {d}");
        assert!(d["data"]["error"].as_str().unwrap().contains("injected panic at position"), "{d}");
    }
    let err = stderr(&o);
    assert_eq!(summary(&err, "chaos", "restarts"), Some(20), "two restarts per failing message");
    assert_eq!(summary(&err, "b", "restarts"), Some(0));
    assert_eq!(summary(&err, "src", "restarts"), Some(0));
}

#[test]
fn past_the_restart_limit_stop_ends_the_flow_with_exit_1() {
    let dir = tempdir();
    let restart = "restart = { max_restarts = 3, within = \"1m\", backoff = \"1ms..5ms\" }";
    let o = run_flow(dir.path(), "{ every = 10, mode = \"panic\" }", restart);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("component `chaos` failed"), "{err}");
    assert!(err.contains("Component failed; stopping the flow."), "{err}");
    assert_eq!(summary(&err, "chaos", "restarts"), Some(3));
}

#[test]
fn past_the_restart_limit_isolate_keeps_the_rest_delivering() {
    let dir = tempdir();
    let text = TWO_BRANCHES
        .replace("FAULT", "{ every = 10, mode = \"panic\" }")
        .replace("RESTART", "restart = { max_restarts = 3, within = \"1m\", backoff = \"1ms..5ms\" }")
        .replace("dead_letter = ", "on_component_failure = \"isolate\"\ndead_letter = ");
    let flow = write(dir.path(), "flow.toml", &text);
    let o = fbp().args(["--log-format", "json", "run"]).arg(&flow).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "a failure at run time is reported at exit");
    assert_seq(&counts(&dir.path().join("b.jsonl")), 1..=100_000, "B: all, in order");
    let err = stderr(&o);
    assert!(err.contains("isolating it"), "{err}");
    let dead = dead_letters(dir.path());
    assert!(dead.len() > 90_000, "the isolated component's input went to the dead letter: {}", dead.len());
    let a = counts(&dir.path().join("a.jsonl"));
    assert_eq!(a.len() + dead.len(), 100_000, "each message was delivered to A or dead-lettered, none lost");
}

#[test]
fn a_stalled_component_blocks_only_its_upstream() {
    let dir = tempdir();
    let flow = write(
        dir.path(),
        "stall.toml",
        "[flow]\nname = \"stall\"\nconnections = [\"one -> stuck\", \"stuck -> w1\", \"two -> w2\"]\n\
         [components.one]\ntype = \"counter\"\nconfig = { interval = \"0s\" }\n\
         [components.stuck]\ntype = \"fault\"\nconfig = { every = 50, mode = \"stall\" }\n\
         [components.w1]\ntype = \"file-write\"\nconfig = { path = \"w1.jsonl\", format = \"lines\" }\n\
         [components.two]\ntype = \"counter\"\nconfig = { interval = \"0s\", max_count = 20000 }\n\
         [components.w2]\ntype = \"file-write\"\nconfig = { path = \"w2.jsonl\", format = \"lines\" }\n",
    );
    let mut child = fbp()
        .args(["--log-format", "json", "run", "--shutdown-timeout", "1s"])
        .arg(&flow)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let w2 = dir.path().join("w2.jsonl");
    assert!(wait_until(Duration::from_secs(30), || lines(&w2).len() == 20_000), "the other branch kept flowing");
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "the stalled component cannot drain: {err}");
    assert!(err.contains("shutdown timed out") && err.contains("stuck"), "{err}");
    assert_eq!(lines(&dir.path().join("w1.jsonl")).len(), 49, "messages before the stall went through");
    let sent = summary(&err, "one", "sent").unwrap();
    assert!(sent < 2_000, "back-pressure held the upstream source: it sent {sent}");
    assert_eq!(summary(&err, "two", "sent"), Some(20_000));
}
