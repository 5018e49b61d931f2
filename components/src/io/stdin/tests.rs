use std::cell::RefCell;
use std::io;
use std::sync::{Arc, OnceLock};

use fbp_runtime::testing::Harness;
use fbp_runtime::{BuildContext, ComponentSpec, Instance};
use serde_json::json;
use tokio::sync::{Mutex, mpsc};

use super::lines::{Lines, read_lines};
use super::*;

thread_local! {
    /// What the next test instance reads as its standard input.
    static INPUT: RefCell<&'static str> = const { RefCell::new("") };
}

/// `stdin` reading the thread's `INPUT` instead of the process's stdin.
static TEST_SPEC: ComponentSpec = ComponentSpec { build: build_test, ..SPEC };

fn build_test(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    let open = |max| read_lines(io::Cursor::new(INPUT.with(|i| *i.borrow()).as_bytes()), max);
    Ok(Instance::task(Stdin { format: config.format, max_line: max_line(&config.max_line_size)?, open }))
}

async fn read(format: &str, input: &'static str) -> fbp_runtime::testing::Output {
    read_with(json!({ "format": format }), input).await
}

async fn read_with(config: serde_json::Value, input: &'static str) -> fbp_runtime::testing::Output {
    INPUT.with(|i| *i.borrow_mut() = input);
    Harness::new(&TEST_SPEC, config).run().await
}

#[tokio::test]
async fn json_lines_and_envelopes_are_read_until_the_end() {
    let input = "{\"a\": 1}\n\n{\"data\": 2, \"metadata\": {\"topic\": \"t\", \"headers\": {\"k\": \"v\"}}}\r\n3";
    let out = read("json", input).await;
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    assert_eq!(out.json("out"), [r#"{"a":1}"#, "2", "3"]);
    let meta = &out.messages("out")[1].meta;
    assert_eq!(meta.topic.as_deref(), Some("t"));
    assert_eq!(meta.headers.get("k").map(String::as_str), Some("v"));
    assert_eq!(out.messages("out")[0].meta.topic, None);
}

#[tokio::test]
async fn a_bad_line_goes_to_err_and_reading_goes_on() {
    let out = read("json", "1\n{nope\n2\n").await;
    assert_eq!(out.json("out"), ["1", "2"]);
    let err = out.json("err");
    assert_eq!(err.len(), 1);
    assert!(err[0].contains("not JSON") && err[0].contains("{nope"), "{err:?}");
}

#[tokio::test]
async fn lines_are_text() {
    let out = read("lines", "a b\n\n{\"x\": 1}\n").await;
    assert_eq!(out.json("out"), [r#""a b""#, r#""""#, r#""{\"x\": 1}""#]);
}

#[tokio::test]
async fn stops_on_shutdown() {
    let (_tx, rx) = mpsc::channel(1);
    let lines: Lines = Arc::new(Mutex::new(rx));
    static PENDING: OnceLock<Lines> = OnceLock::new();
    PENDING.set(lines).ok();
    static WAITING: ComponentSpec = ComponentSpec { build: build_waiting, ..SPEC };
    fn build_waiting(_: &BuildContext) -> Result<Instance, String> {
        Ok(Instance::task(Stdin { format: Format::Json, max_line: 10, open: |_| PENDING.get().expect("set").clone() }))
    }
    let mut h = Harness::new(&WAITING, json!({}));
    h.shutdown().cancel();
    let out = tokio::time::timeout(std::time::Duration::from_secs(5), h.run()).await.expect("stops");
    assert!(matches!(out.result, Some(Ok(()))));
}

#[tokio::test]
async fn a_line_longer_than_the_limit_goes_to_err_cut() {
    let out = read_with(json!({ "format": "lines", "max_line_size": "4B" }), "abcd\nabcdefgh\nxy").await;
    assert_eq!(out.json("out"), [r#""abcd""#, r#""xy""#]);
    let err = out.json("err");
    assert!(err.len() == 1 && err[0].contains("longer than max_line_size (4 bytes)"), "{err:?}");
    assert!(err[0].contains(r#""data":"abcd""#), "{err:?}");
}

#[test]
fn a_zero_or_bad_max_line_size_is_refused() {
    assert!(max_line("0B").unwrap_err().contains("more than 0"));
    assert!(max_line("lots").unwrap_err().starts_with("`max_line_size`"));
}

#[test]
fn the_port_type_follows_the_format() {
    assert_eq!(ports(&json!({ "format": "lines" })).1[0].ty, "text");
    assert_eq!(ports(&json!({})).1[0].ty, "json");
}
