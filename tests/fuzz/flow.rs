//! The flow loader and checker (`flow::load`) on mutated flow files; the
//! seeds are `tests/fuzz/corpus/flow/`, every flow in `flows/` and every
//! fixture in `tests/fixtures/`.
//!
//! Properties: no file makes it panic; every diagnostic, error or warning,
//! points into the text it is shown against (a span within it, on character
//! boundaries, so its line and column exist), and renders.

use std::path::Path;
use std::time::Duration;

use fbp_components::CATALOGUE;
use fbp_runtime::flow::{self, Diagnostics};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::support::{self, Budget};

const TOKENS: &[&[u8]] = &[
    b"[",
    b"]",
    b"{",
    b"}",
    b"[[",
    b"\"",
    b"'''",
    b"\"\"\"",
    b"=",
    b".",
    b",",
    b"\n",
    b"\r\n",
    b"#",
    b"\\",
    b"\\u",
    b"${",
    b"$${",
    b":-",
    b"}",
    b"->",
    b"type = ",
    b"config = ",
    b"[components.x]",
    b"flow:",
    b"\xff",
    b"\xc3",
    b"\t",
    b"1",
    b"-1",
    b"1e999",
    b"\"1s\"",
];

const BUDGET: Budget = Budget { cases: 600, time: Duration::from_secs(8) };

/// Whatever a variable is asked for: set for a few names, unset for the rest.
fn env(name: &str) -> Option<String> {
    matches!(name, "FBP_TEST_INTERVAL" | "SECRET_WIRE").then(|| "1s".to_string())
}

/// The spans of `d` lie in its text, and it renders.
fn points_into_its_text(d: &Diagnostics) -> Result<(), TestCaseError> {
    for (e, position) in d.errors.iter().zip(d.positions()) {
        let Some(span) = &e.span else { continue };
        prop_assert!(span.start <= span.end && span.end <= d.source.len(), "span {span:?} of `{}`", e.message);
        let on_chars = d.source.is_char_boundary(span.start) && d.source.is_char_boundary(span.end);
        prop_assert!(on_chars, "span {span:?} of `{}` cuts a character", e.message);
        let (line, column) = position.unwrap_or_default();
        let text = d.source.split('\n').nth(line - 1);
        prop_assert!(text.is_some_and(|t| column <= t.chars().count() + 1), "{line}:{column} of `{}`", e.message);
    }
    prop_assert!(!d.render().is_empty());
    Ok(())
}

/// Loads `bytes` as the flow file `path`; checks its diagnostics.
fn loads_safely(path: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    std::fs::write(path, bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    match flow::load_with_env(path, &CATALOGUE, &env) {
        Ok(f) => f.warnings.as_ref().map_or(Ok(()), points_into_its_text),
        Err(d) => {
            let text = String::from_utf8_lossy(bytes);
            prop_assert!(text.starts_with(&d.source), "the diagnostics are shown against another text");
            points_into_its_text(&d)
        }
    }
}

#[test]
fn fuzz_flow_mutated_files_load_or_point_into_the_file() {
    let seeds = support::seeds(env!("CARGO_MANIFEST_DIR"), "flow", &["flows", "tests/fixtures"]);
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("flow.toml");
    let strategy = support::mutated(seeds, TOKENS);
    support::check(env!("CARGO_MANIFEST_DIR"), "flow_mutated", BUDGET, strategy, |bytes| loads_safely(&path, &bytes));
}
