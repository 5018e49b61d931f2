//! The JSON reader every payload goes through (`value::parse_json`).
//!
//! Properties: no bytes make it panic; what it accepts nests at most
//! `max_depth` levels; printing what it read and reading the print gives
//! the same print (the print is a fixed point) and the same value, where
//! "the same" number means the same `f64` (or, past `f64`, the same digits:
//! `2.50` prints `2.5`, `NaN` prints `null`, `1e400` stays `1e400`); a
//! document nested past the limit is an error that names the limit.

use std::time::Duration;

use fbp_runtime::value::{self, Value};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::support::{self, Budget};

const TOKENS: &[&[u8]] = &[
    b"[",
    b"]",
    b"{",
    b"}",
    b"\"",
    b":",
    b",",
    b"\\",
    b"\\u",
    b"\\ud800",
    b"-",
    b"+",
    b"e",
    b".",
    b"0",
    b"#",
    b"\n",
    b"NaN",
    b"Infinity",
    b"null",
    b"1e400",
    b"\xff",
];

const BUDGET: Budget = Budget { cases: 2000, time: Duration::from_secs(4) };

fn seeds() -> Vec<Vec<u8>> {
    support::seeds(env!("CARGO_MANIFEST_DIR"), "json", &[])
}

/// Whether `a` and `b` hold the same JSON: numbers by their `f64` (a NaN or
/// an infinity printed as `null` matches `null`), strings by their text,
/// object keys by their print.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Num(_), Value::Null) => value::as_f64(a).is_some_and(|f| !f.is_finite()),
        (Value::Num(_), Value::Num(_)) => {
            let (x, y) = (value::as_f64(a), value::as_f64(b));
            x == y || x.is_some_and(f64::is_nan) && y.is_some_and(f64::is_nan)
        }
        (Value::Arr(x), Value::Arr(y)) => x.len() == y.len() && x.iter().zip(y.iter()).all(|(a, b)| same(a, b)),
        (Value::Obj(x), Value::Obj(y)) => {
            x.len() == y.len()
                && x.iter().zip(y.iter()).all(|((ka, va), (kb, vb))| printed_key(ka) == printed_key(kb) && same(va, vb))
        }
        _ if value::as_str(a).is_some() => value::as_str(a) == value::as_str(b),
        _ => a == b,
    }
}

/// An object key as the printer writes it (a key that is not a string is
/// written as its JSON text).
fn printed_key(k: &Value) -> String {
    value::as_str(k).map_or_else(|| value::to_json_string(k), |s| s.into_owned())
}

/// What must hold of any input: no panic, and if it reads, the limit and
/// the round trip.
fn reads_safely(bytes: &[u8]) -> Result<(), TestCaseError> {
    let Ok(v) = value::parse_json(bytes) else { return Ok(()) };
    prop_assert!(!value::deeper_than(&v, value::max_depth()), "accepted past the limit");
    let printed = value::to_json_string(&v);
    let again = value::parse_json(printed.as_bytes());
    prop_assert!(again.is_ok(), "the print does not read back: {printed} ({:?})", again.err());
    let again = again.unwrap_or(Value::Null);
    prop_assert_eq!(&value::to_json_string(&again), &printed, "printing is not stable");
    prop_assert!(same(&v, &again), "the print means another value: {}", printed);
    Ok(())
}

#[test]
fn fuzz_json_mutated_seeds_read_safely() {
    let strategy = support::mutated(seeds(), TOKENS);
    support::check(env!("CARGO_MANIFEST_DIR"), "json_mutated", BUDGET, strategy, |b| reads_safely(&b));
}

#[test]
fn fuzz_json_any_bytes_read_safely() {
    let strategy = proptest::collection::vec(any::<u8>(), 0..256);
    support::check(env!("CARGO_MANIFEST_DIR"), "json_bytes", BUDGET, strategy, |b| reads_safely(&b));
}

#[test]
fn fuzz_json_documents_read_and_round_trip() {
    support::check(env!("CARGO_MANIFEST_DIR"), "json_documents", BUDGET, support::json_text(), |text| {
        prop_assert!(value::parse_json(text.as_bytes()).is_ok(), "valid JSON refused");
        reads_safely(text.as_bytes())
    });
}

/// A document opened `depth` times with `[` or `{"k":`, in the order
/// `kinds` gives, then closed (or cut short, when `closed` is false).
fn nested(depth: usize, kinds: &[bool], closed: bool) -> Vec<u8> {
    let kind = |i: usize| kinds.get(i % kinds.len().max(1)).copied().unwrap_or(true);
    let mut out = Vec::new();
    for i in 0..depth {
        out.extend_from_slice(if kind(i) { b"[" } else { br#"{"k":"# });
    }
    out.push(b'1');
    for i in (0..depth).rev().filter(|_| closed) {
        out.push(if kind(i) { b']' } else { b'}' });
    }
    out
}

#[test]
fn fuzz_json_past_the_limit_is_an_error_naming_it() {
    let limit = value::max_depth();
    let strategy = (0..limit * 4, proptest::collection::vec(any::<bool>(), 1..8), any::<bool>());
    support::check(env!("CARGO_MANIFEST_DIR"), "json_deep", BUDGET, strategy, |(depth, kinds, closed)| {
        let got = value::parse_json(&nested(depth, &kinds, closed));
        match (depth > limit, got) {
            (true, Err(e)) => prop_assert!(e.contains(&format!("{limit} levels")) && e.contains("max_depth"), "{e}"),
            (true, Ok(_)) => prop_assert!(false, "{depth} levels read under a limit of {limit}"),
            (false, got) => prop_assert_eq!(got.is_ok(), closed || depth == 0),
        }
        Ok(())
    });
}

#[test]
fn fuzz_json_a_hundred_thousand_levels_are_refused_without_recursing() {
    for kinds in [&[true][..], &[false], &[true, false]] {
        let e = value::parse_json(&nested(100_000, kinds, true)).expect_err("refused");
        assert!(e.contains("max_depth"), "{e}");
    }
}
