//! Test support: run the `fbp` binary, temp folders, polling with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `fbp` binary under test.
pub(crate) fn fbp() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fbp"));
    c.env_remove("RUST_LOG").env("NO_COLOR", "1").stdin(Stdio::null());
    c
}

/// Runs `fbp` with `args` in `dir` and waits for it.
pub(crate) fn run_in(dir: &Path, args: &[&str]) -> Output {
    fbp().current_dir(dir).args(args).output().expect("fbp runs")
}

/// The repository root (flows/ lives there).
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Text of a process's stdout.
pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Text of a process's stderr.
pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh temporary folder, removed on drop.
pub(crate) fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns whether it held.
pub(crate) fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Sends a signal to a child we started.
pub(crate) fn signal(child: &std::process::Child, sig: &str) {
    let status = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().expect("kill runs");
    assert!(status.success(), "kill -{sig} failed");
}

/// Whether process `pid` catches signal `sig` (its bit in `SigCgt`).
pub(crate) fn catches(pid: u32, sig: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:")).map(str::trim).unwrap_or("0");
    u64::from_str_radix(mask, 16).is_ok_and(|m| m & (1 << (sig - 1)) != 0)
}

/// Writes `text` to `dir/name` and returns the path.
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write fixture");
    p
}

/// A counter from the `Component summary.` log line of `component` (JSON logs).
pub(crate) fn summary(stderr: &str, component: &str, field: &str) -> Option<u64> {
    stderr.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find_map(|v| {
        let f = &v["fields"];
        (f["message"] == "Component summary." && f["component"] == component).then(|| f[field].as_u64()).flatten()
    })
}

/// The fields of each JSON log line whose message starts with `message`.
pub(crate) fn logged(log: &str, message: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["fields"].clone())
        .filter(|f| f["message"].as_str().is_some_and(|m| m.starts_with(message)))
        .collect()
}

/// The lines of a text file (empty when it does not exist).
pub(crate) fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

/// The resident memory of process `pid`, in KiB (Linux).
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}
