//! Tests of `file-write` through the harness.

use std::sync::{Arc, Mutex};

use fbp_runtime::testing::Harness;
use fbp_runtime::{Ack, Message, Meta, Outcome, value};
use serde_json::json;

use crate::storage::test_support::TempDir;

async fn write(config: serde_json::Value, payloads: &[&str]) -> Result<(), String> {
    let mut h = Harness::new(&super::SPEC, config);
    payloads.iter().for_each(|p| h.push_json(p));
    h.run_to_end().await.result.unwrap().map_err(|e| e.0)
}

#[tokio::test]
async fn json_writes_an_envelope_per_line_and_appends() {
    let dir = TempDir::new("file-write");
    let path = dir.join("out.jsonl");
    write(json!({"path": path}), &[r#"{"a": 1}"#, "2"]).await.unwrap();
    write(json!({"path": path}), &["3"]).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let data: Vec<_> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|env| {
            assert_eq!(env["metadata"]["source"], "test");
            env["data"].clone()
        })
        .collect();
    assert_eq!(data, [json!({"a": 1}), json!(2), json!(3)]);
}

#[tokio::test]
async fn lines_writes_strings_raw_and_the_rest_as_json() {
    let dir = TempDir::new("file-write");
    let path = dir.join("out.txt");
    let payloads = [r#""plain text""#, r#""ends with newline\n""#, r#""""#, r#"{"b": [1, 2]}"#];
    write(json!({"path": path, "format": "lines"}), &payloads).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, "plain text\nends with newline\n\n{\"b\":[1,2]}\n");
}

#[tokio::test]
async fn append_false_starts_the_file_afresh() {
    let dir = TempDir::new("file-write");
    let path = dir.join("out.txt");
    std::fs::write(&path, "old line\n").unwrap();
    write(json!({"path": path, "format": "lines", "append": false}), &["1"]).await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
}

#[tokio::test]
async fn creates_missing_parent_folders() {
    let dir = TempDir::new("file-write");
    let path = dir.join("a/b/out.txt");
    write(json!({"path": path, "format": "lines"}), &["1"]).await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
}

#[tokio::test]
async fn acknowledges_only_once_the_line_is_in_the_file() {
    let dir = TempDir::new("file-write");
    let path = dir.join("out.txt");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut h = Harness::new(&super::SPEC, json!({"path": path, "format": "lines"}));
    let (s, p) = (seen.clone(), path.clone());
    let mut msg = Message::new(value::int(42), Meta::new("t".into(), 0));
    msg.ack = Some(Ack::new(move |o| s.lock().unwrap().push((o, std::fs::read_to_string(&p).unwrap()))));
    h.push_message("in", msg);
    assert!(matches!(h.run_to_end().await.result, Some(Ok(()))));
    assert_eq!(*seen.lock().unwrap(), [(Outcome::Delivered, "42\n".to_string())]);
}

#[tokio::test]
async fn a_file_it_cannot_open_is_a_failure() {
    let dir = TempDir::new("file-write");
    let err = write(json!({"path": dir.path()}), &["1"]).await.unwrap_err();
    assert!(err.starts_with("cannot open") && err.contains(&*dir.path().to_string_lossy()), "{err}");
}

#[tokio::test]
async fn a_failed_write_rejects_the_batch_and_fails() {
    let full = std::path::Path::new("/dev/full");
    if !full.exists() {
        return;
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut h = Harness::new(&super::SPEC, json!({"path": full}));
    let s = seen.clone();
    let mut msg = Message::new(value::int(1), Meta::new("t".into(), 0));
    msg.ack = Some(Ack::new(move |o| s.lock().unwrap().push(o)));
    h.push_message("in", msg);
    let err = h.run_to_end().await.result.unwrap().unwrap_err().0;
    assert!(err.starts_with("cannot write to `/dev/full`"), "{err}");
    assert_eq!(*seen.lock().unwrap(), [Outcome::Rejected]);
}

/// The contents of `path`, `path.1`, `path.2`, ... while they exist.
fn generations(path: &str) -> Vec<String> {
    let mut all = vec![std::fs::read_to_string(path).unwrap_or_default()];
    for n in 1.. {
        match std::fs::read_to_string(format!("{path}.{n}")) {
            Ok(text) => all.push(text),
            Err(_) => return all,
        }
    }
    all
}

#[tokio::test]
async fn rotates_before_a_line_would_pass_max_size_without_splitting_lines() {
    let dir = TempDir::new("file-write");
    let path = dir.join("out.log");
    let config = json!({"path": path, "format": "lines", "max_size": "10B"});
    write(config, &["1111", "2222", "3333", "4444", "5555"]).await.unwrap();
    assert_eq!(generations(&path), ["5555\n", "3333\n4444\n", "1111\n2222\n"]);
}

#[tokio::test]
async fn keeps_max_files_old_files_and_drops_older_ones() {
    let dir = TempDir::new("file-write");
    let path = dir.join("out.log");
    let config = json!({"path": path, "format": "lines", "max_size": "5B", "max_files": 2});
    write(config, &["1111", "2222", "3333", "4444", "5555"]).await.unwrap();
    assert_eq!(generations(&path), ["5555\n", "4444\n", "3333\n"]);
    let config = json!({"path": path, "format": "lines", "max_size": "5B", "max_files": 0});
    write(config, &["6666", "7777"]).await.unwrap();
    assert_eq!(generations(&path)[0], "7777\n");
    assert_eq!(generations(&path)[1], "4444\n", "max_files = 0 deletes rather than shifts");
}

#[tokio::test]
async fn counts_what_the_file_already_holds_and_gives_a_big_line_its_own_file() {
    let dir = TempDir::new("file-write");
    let path = dir.join("out.log");
    std::fs::write(&path, "12345678\n").unwrap();
    let config = json!({"path": path, "format": "lines", "max_size": "10B"});
    write(config, &[r#""a""#, r#""a line longer than ten bytes""#, r#""b""#]).await.unwrap();
    assert_eq!(generations(&path), ["b\n", "a line longer than ten bytes\n", "a\n", "12345678\n"]);
}

#[tokio::test]
async fn acknowledges_every_message_of_a_batch_that_rotated() {
    let dir = TempDir::new("file-write");
    let path = dir.join("out.log");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut h = Harness::new(&super::SPEC, json!({"path": path, "format": "lines", "max_size": "4B"}));
    for i in 0..3 {
        let s = seen.clone();
        let mut msg = Message::new(value::int(100 + i), Meta::new("t".into(), 0));
        msg.ack = Some(Ack::new(move |o| s.lock().unwrap().push(o)));
        h.push_message("in", msg);
    }
    assert!(matches!(h.run_to_end().await.result, Some(Ok(()))));
    assert_eq!(*seen.lock().unwrap(), [Outcome::Delivered; 3]);
    assert_eq!(generations(&path), ["102\n", "101\n", "100\n"]);
}

#[tokio::test]
async fn bad_rotation_settings_fail_at_build_with_the_key_named() {
    for (config, want) in [
        (json!({"max_size": "huge"}), "`max_size`: `huge` is not a size"),
        (json!({"max_size": "0KiB"}), "`max_size` must be more than 0 bytes"),
        (json!({"max_size": "1MiB", "max_files": -1}), "`max_files` must be 0 or more"),
    ] {
        let mut config = config;
        config["path"] = json!("unused.log");
        let err = write(config, &[]).await.unwrap_err();
        assert!(err.contains(want), "{err}");
    }
}

#[test]
fn a_full_disk_or_an_io_error_may_pass_other_errors_do_not() {
    use std::io::{Error, ErrorKind};
    assert!(super::passes(&Error::from(ErrorKind::StorageFull)));
    assert!(super::passes(&Error::from(ErrorKind::QuotaExceeded)));
    assert!(super::passes(&Error::from_raw_os_error(5)));
    assert!(!super::passes(&Error::from(ErrorKind::PermissionDenied)));
    assert!(!super::passes(&Error::from(ErrorKind::IsADirectory)));
}
