//! Tests over the one list of component declarations.

use std::collections::HashSet;
use std::path::Path;

use fbp_components::CATALOGUE;
use fbp_runtime::docs;
use fbp_runtime::flow::check::check_source;
use fbp_runtime::port::PortType;
use fbp_runtime::spec::Kind;

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
