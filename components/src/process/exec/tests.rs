//! `exec` with real programs (`sh`, `cat`, `sleep`) through the test harness.

use std::time::{Duration, Instant};

use fbp_runtime::testing::Harness;
use fbp_runtime::value;
use serde_json::json;

use super::SPEC;

fn sh(script: &str, extra: serde_json::Value) -> Harness {
    let mut config = json!({"command": "sh", "args": ["-c", script]});
    if let (Some(c), serde_json::Value::Object(more)) = (config.as_object_mut(), extra) {
        c.extend(more);
    }
    Harness::new(&SPEC, config)
}

fn error_text(out: &fbp_runtime::testing::Output) -> String {
    match &out.result {
        Some(Err(f)) => f.0.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn ports_follow_the_mode() {
    let names = |mode: &str| {
        let (i, o) = SPEC.resolve_ports(&json!({ "mode": mode }));
        (
            i.iter().map(|p| p.name.to_string()).collect::<Vec<_>>(),
            o.iter().map(|p| p.name.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(names("source"), (vec![], vec!["out".into(), "err".into()]));
    assert_eq!(names("transform"), (vec!["in".into()], vec!["out".into(), "err".into()]));
    assert_eq!(names("sink"), (vec!["in".into()], vec!["err".into()]));
}

#[tokio::test]
async fn env_must_be_a_table_of_strings() {
    let out = sh("true", json!({"env": {"A": "x", "B": 1}})).run_to_end().await;
    assert_eq!(error_text(&out), "`env` values must be strings; not so for `B`");
}

#[tokio::test]
async fn a_child_gets_path_home_lang_and_its_env_and_nothing_else_of_fbps() {
    let script = r#"read -r cmd; echo "{\"data\": \"$(env | cut -d= -f1 | sort | tr '\n' ' ')\", \"metadata\": {}}""#;
    let out = sh(script, json!({"mode": "source", "env": {"LEVEL": "debug"}})).run().await;
    let names = out.json("out").join(" ");
    assert!(names.contains("PATH ") && names.contains("LEVEL "), "{names} {:?}", out.json("err"));
    assert!(std::env::var_os("CARGO_PKG_NAME").is_some() && !names.contains("CARGO"), "{names}");
}

#[tokio::test]
async fn a_transform_echoes_envelopes_and_sees_the_command_line_first() {
    let script = r#"read -r cmd; [ "$cmd" = '{"command":"run","config":{"k":1}}' ] || exit 9; cat"#;
    let mut h = sh(script, json!({"provider_config": {"k": 1}}));
    for i in 0..3 {
        h.push("in", value::int(i));
    }
    let out = h.run_to_end().await;
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    assert_eq!(out.json("out"), ["0", "1", "2"]);
}

#[tokio::test]
async fn a_garbage_line_goes_to_err_and_the_stream_goes_on() {
    let script = r#"read -r cmd; echo hello; echo '{"count": 1}'; echo '{"data": 2, "metadata": {"topic": "t"}}'"#;
    let out = sh(script, json!({})).run_to_end().await;
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    assert_eq!(out.json("out"), ["2"]);
    assert_eq!(out.messages("out")[0].meta.topic.as_deref(), Some("t"));
    let errors = out.json("err");
    assert_eq!(errors.len(), 2);
    assert!(errors[0].contains("not JSON") && errors[0].contains("\"data\":\"hello\""), "{}", errors[0]);
    assert!(errors[1].contains("not an envelope"), "{}", errors[1]);
}

#[tokio::test]
async fn a_handshake_error_is_a_failure_with_the_message_and_stderr() {
    let script =
        r#"read -r cmd; echo 'cannot bind port 80' >&2; echo '{"status": "error", "message": "no port"}'; exit 3"#;
    let text = error_text(&sh(script, json!({})).run_to_end().await);
    assert!(text.contains("reported an error: no port") && text.contains("cannot bind port 80"), "{text}");
}

#[tokio::test]
async fn a_required_handshake_times_out() {
    let started = Instant::now();
    let text = error_text(&sh("exec sleep 30", json!({"handshake": "required", "ready_timeout": "100ms"})).run().await);
    assert!(text.contains("did not answer {\"status\": \"ready\"} within 100ms"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10), "the program was not stopped");
}

#[tokio::test]
async fn a_ready_program_runs_as_a_source() {
    let script = r#"read -r cmd; echo '{"status":"ready"}'; for i in 1 2 3; do echo "{\"data\": {\"count\": $i}, \"metadata\": {}}"; done"#;
    let out = sh(script, json!({"mode": "source", "handshake": "required"})).run().await;
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    assert_eq!(out.json("out"), [r#"{"count":1}"#, r#"{"count":2}"#, r#"{"count":3}"#]);
}

#[tokio::test]
async fn a_source_is_stopped_with_sigterm_at_shutdown() {
    let mut h = sh("read -r cmd; exec sleep 30", json!({"mode": "source"}));
    h.shutdown().cancel();
    let started = Instant::now();
    let out = h.run().await;
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_missing_program_is_named_in_the_failure() {
    let out = Harness::new(&SPEC, json!({"command": "no-such-program-for-fbp"})).run_to_end().await;
    let text = error_text(&out);
    assert!(text.starts_with("cannot start `no-such-program-for-fbp`") && text.contains("No such file"), "{text}");
}

#[tokio::test]
async fn a_non_zero_exit_is_a_failure() {
    let text = error_text(&sh("read -r cmd; echo dying >&2; exit 1", json!({})).run_to_end().await);
    assert_eq!(text, "`sh` failed: exit status: 1; stderr: dying");
}

#[tokio::test]
async fn with_one_reply_per_line_a_restarted_program_gets_what_was_not_answered() {
    let marker = std::env::temp_dir().join(format!("fbp-exec-crashed-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let script = format!(
        r#"read -r cmd; if [ -e '{m}' ]; then exec cat; fi; touch '{m}'; read -r first; echo "$first"; exit 1"#,
        m = marker.display()
    );
    let mut h = sh(&script, json!({"replies": "one"}));
    for i in 0..5 {
        h.push("in", value::int(i));
    }
    let first = h.run_to_end().await;
    assert!(error_text(&first).contains("exit status: 1"));
    assert_eq!(first.json("out"), ["0"]);
    let second = h.run_to_end().await;
    let _ = std::fs::remove_file(&marker);
    assert!(matches!(second.result, Some(Ok(()))), "{:?}", second.result);
    assert_eq!(second.json("out"), ["1", "2", "3", "4"]);
}

#[tokio::test]
async fn with_one_reply_per_line_a_last_line_cut_short_is_not_an_answer() {
    let marker = std::env::temp_dir().join(format!("fbp-exec-cut-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let script = format!(
        r#"read -r cmd; if [ -e '{m}' ]; then exec cat; fi; touch '{m}'; read -r first; printf '{{"data": 0, "meta'; exit 1"#,
        m = marker.display()
    );
    let mut h = sh(&script, json!({"replies": "one"}));
    for i in 0..3 {
        h.push("in", value::int(i));
    }
    let first = h.run_to_end().await;
    assert!(error_text(&first).contains("exit status: 1"));
    let errors = first.json("err");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("cut short by the end of its stdout"), "{}", errors[0]);
    let second = h.run_to_end().await;
    let _ = std::fs::remove_file(&marker);
    assert!(matches!(second.result, Some(Ok(()))), "{:?}", second.result);
    assert_eq!(second.json("out"), ["0", "1", "2"], "the message the cut line was for is written again");
}

#[tokio::test]
async fn with_one_reply_per_line_a_message_that_crashes_the_program_twice_goes_to_err() {
    let script =
        r#"read -r cmd; read -r line; case "$line" in *'"data":0,'*) exit 1;; esac; printf '%s\n' "$line"; exec cat"#;
    let mut h = sh(script, json!({"replies": "one"}));
    for i in 0..3 {
        h.push("in", value::int(i));
    }
    let first = h.run_to_end().await;
    assert!(first.json("err").is_empty() && first.json("out").is_empty());
    let second = h.run_to_end().await;
    let errors = second.json("err");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("failed 2 times with this message in flight") && errors[0].contains("\"data\":0"),
        "{}",
        errors[0]
    );
    let third = h.run_to_end().await;
    assert!(matches!(third.result, Some(Ok(()))), "{:?}", third.result);
    assert_eq!(third.json("out"), ["1", "2"]);
}

#[tokio::test]
async fn a_program_that_does_not_read_stalls_its_input() {
    let mut h = sh("read -r cmd; exec sleep 30", json!({}));
    for i in 0..60_000 {
        h.push("in", value::int(i));
    }
    // The run cannot end: the program reads nothing, so fbp stops taking input once the pipe is full.
    let stalled = tokio::time::timeout(Duration::from_millis(500), h.run_to_end()).await;
    assert!(stalled.is_err());
    let taken = h.metrics().received.load(std::sync::atomic::Ordering::Relaxed);
    assert!(taken < 5_000, "took {taken} of 60000 messages into a pipe nobody reads");
}

#[tokio::test]
async fn a_stdout_line_longer_than_max_line_size_is_cut_and_goes_to_err() {
    let script = r#"read -r cmd; printf '%0100d\n' 0; echo '{"data":1,"metadata":{}}'"#;
    let out = sh(script, json!({"max_line_size": "32B"})).run_to_end().await;
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    assert_eq!(out.json("out"), ["1"]);
    let errors = out.json("err");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("longer than max_line_size (32 bytes)"), "{}", errors[0]);
    assert!(errors[0].contains(&format!("\"data\":\"{}\"", "0".repeat(32))), "{}", errors[0]);
}
