//! Property tests of topic templates on mutated templates of
//! `tests/fuzz/corpus/template/` and templates put together from pieces of
//! their syntax, rendered with generated JSON payloads and topics: a
//! template compiles or is refused with an error naming `topic`; rendering
//! never panics, and what it gives is a topic one can publish to (not
//! empty, no `+`, `#` or NUL, at most 65535 bytes), whatever the message
//! holds; the shared template under it renders any message without panic.

use std::time::Duration;

use fbp_runtime::{Message, Meta, value};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::Template;
use crate::fuzz_support::{self, Budget};

const TOKENS: &[&[u8]] = &[b"{{", b"}}", b"{", b"}", b" .a ", b"$meta.topic", b"/", b"+", b"#", b"\0", b"|", b"\""];

/// Pieces of a template: text, holes, and jq that gives every kind of value.
const PIECES: &[&str] = &[
    "a",
    "/",
    "é",
    "+",
    "#",
    "\0",
    "{{",
    "}}",
    "{{ . }}",
    "{{ .a }}",
    "{{ .[0] }}",
    "{{ .a.b }}",
    "{{ $meta.topic }}",
    "{{ $meta.seq }}",
    "{{ .a | tostring }}",
    "{{ .a // \"#\" }}",
    "{{ \"+\" }}",
    "{{ \"\\u0000\" }}",
    "{{ empty }}",
    "{{ error(\"x\") }}",
    "{{ .a, .b }}",
    "{{ keys }}",
    "{{ .. }}",
    "{{ .a > }}",
];

/// Compiling a jq program costs milliseconds (jaq's standard library with
/// it), so fewer cases than the other targets.
const BUDGET: Budget = Budget { cases: 400, time: Duration::from_secs(6) };

fn template_text() -> impl Strategy<Value = String> {
    let seeds = fuzz_support::seeds(env!("CARGO_MANIFEST_DIR"), "template", &[]);
    prop_oneof![
        fuzz_support::mutated(seeds, TOKENS).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        vec(proptest::sample::select(PIECES), 0..6).prop_map(|p| p.concat()),
    ]
}

/// A message with a generated payload (an object with `a` and `b` half
/// the time) and topic.
fn message() -> impl Strategy<Value = Message> {
    let payload = prop_oneof![
        fuzz_support::json_text(),
        (fuzz_support::json_text(), fuzz_support::json_text()).prop_map(|(a, b)| format!(r#"{{"a":{a},"b":{b}}}"#)),
    ];
    (payload, proptest::option::of("[a-z/+#\0]{0,8}")).prop_map(|(json, topic)| {
        let mut meta = Meta::new("fuzz".into(), 7);
        meta.topic = topic.map(Into::into);
        Message::new(value::parse_json(json.as_bytes()).unwrap_or(value::Value::Null), meta)
    })
}

fn renders_a_topic(text: &str, msg: &Message) -> Result<(), TestCaseError> {
    if let Ok(shared) = crate::net::template::Template::parse("subject", text) {
        let _ = shared.render(msg);
    }
    let template = match Template::parse(text) {
        Ok(t) => t,
        Err(e) => {
            prop_assert!(e.starts_with("`topic`: "), "an error that does not name the key: {e}");
            return Ok(());
        }
    };
    match template.render(msg) {
        Ok(topic) => {
            prop_assert!(!topic.is_empty() && topic.len() <= 65_535, "{topic:?}");
            prop_assert!(!topic.contains(['+', '#', '\0']), "not a topic to publish to: {topic:?}");
        }
        Err(e) => prop_assert!(!e.is_empty()),
    }
    Ok(())
}

#[test]
fn fuzz_template_any_template_and_message_give_a_topic_or_an_error() {
    let strategy = (template_text(), message());
    let name = "template_topic";
    fuzz_support::check(env!("CARGO_MANIFEST_DIR"), name, BUDGET, strategy, |(text, msg)| renders_a_topic(&text, &msg));
}
