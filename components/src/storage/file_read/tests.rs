//! Tests of `file-read`: whole reads through the harness, following with
//! real files and time (bounded by deadlines), and the line reader itself.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fbp_runtime::metrics::Metrics;
use fbp_runtime::testing::{Harness, Output};
use fbp_runtime::value::{self, Value};
use serde_json::json;

use super::lines::{Line, LineReader, Next};
use crate::storage::test_support::TempDir;

/// Runs a non-following read to its end.
async fn read(config: serde_json::Value) -> Output {
    Harness::new(&super::SPEC, config).run().await
}

fn errors(out: &Output) -> Vec<String> {
    out.payloads("err").iter().map(|e| value::as_str(value::get(e, "error").unwrap()).unwrap().into()).collect()
}

fn texts(out: &Output) -> Vec<String> {
    out.payloads("out").iter().map(|p| value::as_str(p).unwrap().into_owned()).collect()
}

fn append(path: &str, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).create(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Polls `cond` until it holds; fails the test after 10 s.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A following reader running in the background.
struct Following {
    metrics: Arc<Metrics>,
    stop: Box<dyn FnOnce() + Send>,
    task: tokio::task::JoinHandle<Output>,
}

impl Following {
    fn start(config: serde_json::Value) -> Self {
        let mut h = Harness::new(&super::SPEC, config);
        let (metrics, token) = (h.metrics(), h.shutdown());
        let stop = Box::new(move || token.cancel());
        Following { metrics, stop, task: tokio::spawn(async move { h.run().await }) }
    }

    fn sent(&self) -> u64 {
        self.metrics.sent.load(Ordering::Relaxed)
    }

    async fn until_sent(&self, n: u64) {
        until(&format!("{n} messages"), || self.sent() >= n).await;
    }

    /// Shuts the flow down; the reader must end within 5 s.
    async fn stop(self) -> Output {
        (self.stop)();
        let out = tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("stops promptly").unwrap();
        assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
        out
    }
}

#[tokio::test]
async fn json_lines_unwrap_envelopes_and_send_bad_lines_to_err() {
    let dir = TempDir::new("file-read");
    let path = dir.join("in.jsonl");
    let env = r#"{"data": [1], "metadata": {"topic": "t/9", "headers": {"h": "v"}}}"#;
    std::fs::write(&path, format!("{{\"a\": 1}}\n\n{env}\nnot json\n2")).unwrap();
    let out = read(json!({"path": path})).await;
    assert!(matches!(out.result, Some(Ok(()))));
    assert_eq!(out.json("out"), [r#"{"a":1}"#, "[1]", "2"]);
    let topics: Vec<_> = out.messages("out").iter().map(|m| m.meta.topic.as_deref().unwrap().to_string()).collect();
    assert_eq!(topics, [path.as_str(), "t/9", path.as_str()]);
    assert_eq!(out.messages("out")[1].meta.headers["h"], "v");
    assert!(errors(&out)[0].starts_with("not JSON"), "{:?}", errors(&out));
    assert_eq!(value::to_json_string(value::get(&out.payloads("err")[0], "data").unwrap()), r#""not json""#);
}

#[tokio::test]
async fn csv_reads_the_header_then_rows_as_objects() {
    let dir = TempDir::new("file-read");
    let path = dir.join("in.csv");
    std::fs::write(&path, "\u{feff}sensor,value\r\ns1,21.5\r\n\r\ns2\r\n\"s,3\",7\r\n").unwrap();
    let out = read(json!({"path": path, "format": "csv", "infer_types": true})).await;
    assert_eq!(out.json("out"), [r#"{"sensor":"s1","value":21.5}"#, r#"{"sensor":"s,3","value":7}"#]);
    assert_eq!(errors(&out), ["the record has 1 fields, expected 2 (one per column)"]);
    assert_eq!(value::as_str(value::get(&out.payloads("err")[0], "data").unwrap()).unwrap(), "s2");
}

#[tokio::test]
async fn csv_with_columns_has_no_header_line() {
    let dir = TempDir::new("file-read");
    let path = dir.join("in.csv");
    std::fs::write(&path, "a;1\nb;2\n").unwrap();
    let out = read(json!({"path": path, "format": "csv", "columns": ["k", "v"], "delimiter": ";"})).await;
    assert_eq!(out.json("out"), [r#"{"k":"a","v":1}"#, r#"{"k":"b","v":2}"#]);
}

#[tokio::test]
async fn lines_sends_every_line_as_text_and_the_unterminated_last_one() {
    let dir = TempDir::new("file-read");
    let path = dir.join("in.log");
    std::fs::write(&path, b"first\r\n\nbad \xff\nlast").unwrap();
    let out = read(json!({"path": path, "format": "lines"})).await;
    assert!(matches!(out.payloads("out")[0], Value::TStr(_)));
    assert_eq!(texts(&out), ["first", "", "last"]);
    assert!(errors(&out)[0].starts_with("not UTF-8 text"));
}

#[tokio::test]
async fn many_lines_arrive_in_order_across_batches() {
    let dir = TempDir::new("file-read");
    let path = dir.join("in.jsonl");
    std::fs::write(&path, (0..1000).map(|i| format!("{i}\n")).collect::<String>()).unwrap();
    let out = read(json!({"path": path})).await;
    let want: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    assert_eq!(out.json("out"), want);
    let seqs: Vec<u64> = out.messages("out").iter().map(|m| m.meta.seq).collect();
    assert_eq!(seqs, (0..1000).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_line_longer_than_max_line_size_goes_to_err_cut() {
    let dir = TempDir::new("file-read");
    let path = dir.join("in.log");
    std::fs::write(&path, format!("short\n{}\nnext\n", "x".repeat(100_000))).unwrap();
    let out = read(json!({"path": path, "format": "lines", "max_line_size": "1KiB"})).await;
    assert_eq!(texts(&out), ["short", "next"]);
    assert_eq!(errors(&out), ["line longer than max_line_size (1024 bytes); cut and skipped"]);
    assert_eq!(value::as_str(value::get(&out.payloads("err")[0], "data").unwrap()).unwrap().len(), 1024);
}

#[tokio::test]
async fn a_missing_file_is_a_failure_without_follow() {
    let dir = TempDir::new("file-read");
    let out = read(json!({"path": dir.join("nope.jsonl")})).await;
    let err = out.result.unwrap().unwrap_err().0;
    assert!(err.starts_with("cannot open") && err.contains("nope.jsonl"), "{err}");
}

#[tokio::test]
async fn bad_config_fails_at_build_with_the_key_named() {
    for (extra, want) in [
        (json!({"poll_interval": "0s"}), "`poll_interval`"),
        (json!({"max_line_size": "huge"}), "`max_line_size`"),
        (json!({"max_line_size": "0"}), "`max_line_size` must be more"),
        (json!({"format": "csv", "delimiter": ""}), "`delimiter`"),
        (json!({"format": "csv", "columns": []}), "`columns` is empty"),
    ] {
        let mut config = json!({"path": "x"});
        config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let err = read(config).await.result.unwrap().unwrap_err().0;
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn out_port_type_follows_the_format() {
    let ty = |format| super::SPEC.resolve_ports(&json!({"format": format})).1[0].ty.clone();
    assert_eq!([ty("json"), ty("csv"), ty("lines")], ["json", "object", "text"]);
}

#[tokio::test]
async fn follow_reads_appends_holds_partial_lines_and_survives_rotation_and_truncation() {
    let dir = TempDir::new("file-read");
    let path = dir.join("app.log");
    std::fs::write(&path, "1\n2\n").unwrap();
    let f = Following::start(json!({"path": path, "format": "lines", "follow": true, "poll_interval": "10ms"}));
    f.until_sent(2).await;
    append(&path, "3\n4");
    f.until_sent(3).await;
    append(&path, "5\n");
    f.until_sent(4).await;
    // Rotation: the old file gets one more line after the rename, then a new file appears.
    std::fs::rename(&path, dir.join("app.log.1")).unwrap();
    append(&dir.join("app.log.1"), "6\n");
    std::fs::write(&path, "seven-seven\n").unwrap();
    f.until_sent(6).await;
    // Truncation: the file starts again, shorter than what was read.
    std::fs::write(&path, "8\n").unwrap();
    f.until_sent(7).await;
    let out = f.stop().await;
    assert_eq!(texts(&out), ["1", "2", "3", "45", "6", "seven-seven", "8"]);
}

#[tokio::test]
async fn follow_from_end_skips_what_was_there() {
    let dir = TempDir::new("file-read");
    let path = dir.join("in.jsonl");
    std::fs::write(&path, "\"old\"\n").unwrap();
    let f = Following::start(json!({"path": path, "follow": true, "from": "end", "poll_interval": "10ms"}));
    // The reader may open the file at any moment: append until something arrives.
    let mut n = 0;
    until("a new line", || {
        append(&path, &format!("{n}\n"));
        n += 1;
        f.sent() > 0
    })
    .await;
    let out = f.stop().await;
    assert!(!out.json("out").contains(&"\"old\"".to_string()), "{:?}", out.json("out"));
}

#[tokio::test]
async fn follow_from_end_of_a_csv_file_keeps_its_header() {
    let dir = TempDir::new("file-read");
    let path = dir.join("in.csv");
    std::fs::write(&path, "k,v\nold,0\n").unwrap();
    let f = Following::start(
        json!({"path": path, "format": "csv", "follow": true, "from": "end", "poll_interval": "10ms"}),
    );
    until("a new row", || {
        append(&path, "new,1\n");
        f.sent() > 0
    })
    .await;
    let out = f.stop().await;
    assert_eq!(out.json("out")[0], r#"{"k":"new","v":1}"#);
    assert!(out.payloads("err").is_empty());
}

#[tokio::test]
async fn follow_waits_for_the_file_to_appear() {
    let dir = TempDir::new("file-read");
    let path = dir.join("later.jsonl");
    let f = Following::start(json!({"path": path, "follow": true, "poll_interval": "10ms"}));
    std::fs::write(&path, "1\n").unwrap();
    f.until_sent(1).await;
    assert_eq!(f.stop().await.json("out"), ["1"]);
}

#[tokio::test]
async fn follow_stops_promptly_on_shutdown_even_mid_pause() {
    let dir = TempDir::new("file-read");
    let path = dir.join("idle.jsonl");
    std::fs::write(&path, "1\n").unwrap();
    let f = Following::start(json!({"path": path, "follow": true, "poll_interval": "1h"}));
    f.until_sent(1).await;
    let started = Instant::now();
    f.stop().await;
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// The line reader alone: a line cut at the limit, and the flags it sets.
#[tokio::test]
async fn line_reader_marks_first_lines_and_cuts_long_ones() {
    let dir = TempDir::new("file-read");
    let path = dir.join("x");
    std::fs::write(&path, "abcdef\ngh\n").unwrap();
    let mut r = LineReader::open(std::path::Path::new(&path), false, false, 4).await.unwrap();
    let line = |bytes: &[u8], first, too_long| Next::Line(Line { bytes: bytes.to_vec(), first, too_long });
    assert_eq!(r.next().await.unwrap(), line(b"abcd", true, true));
    assert_eq!(r.next().await.unwrap(), line(b"gh", false, false));
    assert_eq!(r.next().await.unwrap(), Next::End);
    assert_eq!(r.next().await.unwrap(), Next::End);
}

#[tokio::test]
async fn line_reader_following_is_idle_at_the_end_and_resumes() {
    let dir = TempDir::new("file-read");
    let path = dir.join("x");
    std::fs::write(&path, "a\npart").unwrap();
    let mut r = LineReader::open(std::path::Path::new(&path), true, false, 100).await.unwrap();
    assert!(matches!(r.next().await.unwrap(), Next::Line(l) if l.bytes == b"a"));
    assert_eq!(r.next().await.unwrap(), Next::Idle);
    append(&path, "ial\n");
    r.check().await.unwrap();
    assert!(matches!(r.next().await.unwrap(), Next::Line(l) if l.bytes == b"partial" && !l.first));
    assert_eq!(r.next().await.unwrap(), Next::Idle);
}
