//! Tests over the one list of component declarations.

use std::collections::HashSet;
use std::path::Path;

use fbp_components::CATALOGUE;
use fbp_runtime::docs;
use fbp_runtime::flow::check::check_source;
use fbp_runtime::port::PortType;
use fbp_runtime::spec::{Acks, Kind};

use crate::util::root;

#[test]
fn component_names_are_unique_and_kebab_case() {
    let mut seen = HashSet::new();
    for s in CATALOGUE.0 {
        assert!(seen.insert(s.name), "`{}` is declared twice", s.name);
        assert!(
            s.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "`{}` is not kebab-case",
            s.name
        );
    }
}

#[test]
fn every_port_is_typed_and_documented() {
    for s in CATALOGUE.0 {
        for p in s.inputs.iter().chain(s.outputs) {
            assert!(PortType::parse(p.ty).is_ok(), "{}.{}: bad type `{}`", s.name, p.name, p.ty);
            assert!(!p.doc.is_empty(), "{}.{} has no doc", s.name, p.name);
            assert_ne!(p.name, "err", "{}: `err` is implicit, do not declare it", s.name);
        }
        match s.kind {
            Kind::Source => assert!(s.inputs.is_empty(), "source {} has inputs", s.name),
            Kind::Sink => assert!(s.outputs.is_empty(), "sink {} has outputs", s.name),
            Kind::Transform => assert!(!s.inputs.is_empty() && !s.outputs.is_empty(), "transform {}", s.name),
        }
    }
}

#[test]
fn every_config_key_is_documented_snake_case_and_defaults_parse() {
    for s in CATALOGUE.0 {
        assert!(!s.summary.is_empty() && !s.doc.is_empty(), "{} lacks docs", s.name);
        for k in s.config {
            assert!(k.doc.len() > 10, "{}.{} is not documented", s.name, k.name);
            assert!(
                k.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}.{} is not snake_case",
                s.name,
                k.name
            );
            assert!(
                !k.name.ends_with("_secs") && !k.name.ends_with("_ms"),
                "{}.{}: use a duration string",
                s.name,
                k.name
            );
            if let Some(d) = k.default {
                assert!(
                    toml::from_str::<toml::Table>(&format!("v = {d}")).is_ok(),
                    "{}.{} default `{d}`",
                    s.name,
                    k.name
                );
            }
        }
    }
}

#[test]
fn every_example_passes_check() {
    for s in CATALOGUE.0 {
        assert!(s.example.contains(&format!("type = \"{}\"", s.name)), "{}: example does not use the type", s.name);
        let text = format!("[flow]\nname = \"example\"\n\n{}", s.example);
        if let Err(d) = check_source("<example>", &text, Path::new("."), &CATALOGUE, &|_| None) {
            panic!("example of `{}` does not check:\n{}", s.name, d.render());
        }
    }
}

#[test]
fn components_md_is_fresh() {
    let path = root().join("docs/components.md");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = docs::markdown(&CATALOGUE);
    assert!(
        on_disk == generated,
        "docs/components.md is stale; regenerate it with `cargo run -q -- components --format markdown > docs/components.md`"
    );
}

#[test]
fn writing_components_guide_matches_the_code() {
    let guide = std::fs::read_to_string(root().join("docs/writing-components.md")).unwrap();
    let mut checked = 0;
    for part in guide.split("<!-- file: ").skip(1) {
        let (path, rest) = part.split_once(" -->").unwrap();
        // The fenced block after the marker, whatever its language.
        let fenced = rest.split_once("```").unwrap().1;
        let block = fenced.split_once('\n').unwrap().1.split("\n```").next().unwrap();
        let code = std::fs::read_to_string(root().join(path)).unwrap();
        assert!(code.contains(block), "docs/writing-components.md quotes {path}, but the code changed:\n{block}");
        checked += 1;
    }
    assert!(checked >= 5, "the guide quotes the walk-through component and an exec provider");
}

#[test]
fn components_that_hold_messages_say_when_they_acknowledge() {
    for name in ["window", "delay", "throttle", "batch", "kv-state", "exec"] {
        let s = CATALOGUE.get(name).unwrap();
        assert!(matches!(s.acks, Acks::Holds { .. }), "`{name}` holds messages but does not say when it acknowledges");
        assert!(docs::describe(s).contains("\nAcknowledgements: "), "`{name}`: describe does not say");
    }
    for name in ["mqtt-subscribe", "nats-subscribe", "amqp-subscribe"] {
        let s = CATALOGUE.get(name).unwrap();
        assert!(matches!(s.acks, Acks::Budget { .. }), "`{name}` does not state its broker's budget");
    }
}

#[test]
fn how_long_acknowledgements_are_held_follows_the_config() {
    let hold = |name: &str, config: serde_json::Value| CATALOGUE.get(name).unwrap().acks.hold(&config);
    let secs = |s| Some(std::time::Duration::from_secs(s));
    let window = serde_json::json!({"every": "5s", "size": null, "count": null, "ack": "on_fold"});
    assert_eq!(hold("window", window.clone()), None, "on_fold holds nothing");
    let on_emit = serde_json::json!({"every": "5s", "size": null, "count": null, "ack": "on_emit"});
    assert_eq!(hold("window", on_emit), secs(5));
    let sliding = serde_json::json!({"every": "5s", "size": "1m", "ack": "on_emit"});
    assert_eq!(hold("window", sliding), secs(60));
    assert_eq!(hold("window", serde_json::json!({"count": 10, "ack": "on_emit"})), Some(std::time::Duration::MAX));
    assert_eq!(hold("delay", serde_json::json!({"duration": "3s"})), secs(3));
    assert_eq!(hold("throttle", serde_json::json!({"per": "1m", "drop": true})), None);
    assert_eq!(hold("batch", serde_json::json!({"timeout": "0s"})), None);
    let budgeted = |name: &str, config: serde_json::Value| CATALOGUE.get(name).unwrap().acks.budgeted(&config);
    assert!(budgeted("mqtt-subscribe", serde_json::json!({"qos": 1})));
    assert!(!budgeted("mqtt-subscribe", serde_json::json!({"qos": 0})));
    assert!(!budgeted("nats-subscribe", serde_json::json!({"subject": "a", "durable": null})));
}

#[test]
fn every_row_of_the_limits_table_names_a_test_that_exists() {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let table = doc.split("## What each broker and database does at its limits").nth(1).expect("the section");
    let table = table.split("\n## ").next().unwrap();
    let mut named = 0;
    for row in table.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| server") && !l.starts_with("| ---")) {
        let tests = row.rsplit('|').nth(1).unwrap();
        let names: Vec<&str> = tests.split('`').skip(1).step_by(2).collect();
        assert!(!names.is_empty(), "a row without its test: {row}");
        for name in names.iter().filter(|n| n.contains("::") && !n.ends_with("::") && !n.contains("...")) {
            let (module, test) = name.rsplit_once("::").unwrap();
            let file = match module.split("::").next().unwrap() {
                "storage" => root().join("components/src/storage/file_write/tests.rs"),
                first => root().join(format!("tests/{first}.rs")),
            };
            let source = std::fs::read_to_string(&file).unwrap_or_default();
            assert!(source.contains(&format!("fn {test}(")), "{name} is not in {}", file.display());
            named += 1;
        }
    }
    assert!(named >= 25, "{named}");
}
