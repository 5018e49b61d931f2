//! What every fuzz target shares: its seeds (the files of
//! `tests/fuzz/corpus/<target>/`), byte-level mutations of them, JSON texts
//! made from scratch, and a runner bounded in cases and in time.
//!
//! The same file serves the integration tests (`tests/fuzz/`) and the
//! crate-private targets of `fbp-components`, which include it by path, so
//! it depends on `std` and `proptest` only.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};

/// The repository's root, from the manifest folder of the crate including this file.
fn root(manifest_dir: &str) -> PathBuf {
    let dir = Path::new(manifest_dir);
    match dir.join("tests/fuzz").is_dir() {
        true => dir.to_path_buf(),
        false => dir.parent().expect("a workspace member sits in the repository").to_path_buf(),
    }
}

/// Every file under `tests/fuzz/corpus/<target>/` and under `extra`
/// (folders relative to the repository), sorted by path so that a run is
/// reproducible from its seed.
pub(crate) fn seeds(manifest_dir: &str, target: &str, extra: &[&str]) -> Vec<Vec<u8>> {
    let root = root(manifest_dir);
    let mut files = Vec::new();
    for dir in std::iter::once(format!("tests/fuzz/corpus/{target}")).chain(extra.iter().map(|d| d.to_string())) {
        walk(&root.join(dir), &mut files);
    }
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).expect("a readable seed")).collect();
    assert!(!seeds.is_empty(), "no seeds for `{target}`");
    seeds
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a folder entry").path();
        match path.is_dir() {
            true => walk(&path, out),
            false => out.push(path),
        }
    }
}

/// One change to a byte string; positions are fractions of its length, so
/// that an edit means something whatever the length is when it applies.
#[derive(Clone, Debug)]
enum Edit {
    /// Flips one bit.
    Flip(Index, u8),
    /// Inserts bytes (a token of the target's syntax, or any byte).
    Insert(Index, Vec<u8>),
    /// Removes up to this many bytes.
    Delete(Index, usize),
    /// Repeats a stretch in place.
    Duplicate(Index, usize),
    /// Replaces the tail with the tail of another seed.
    Splice(Index, Index, Index),
}

fn edit(tokens: &'static [&'static [u8]]) -> impl Strategy<Value = Edit> {
    let insert = prop_oneof![proptest::sample::select(tokens).prop_map(<[u8]>::to_vec), vec(any::<u8>(), 1..4),];
    prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        (any::<Index>(), insert).prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        (any::<Index>(), 1..16usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<Index>(), 1..64usize).prop_map(|(at, n)| Edit::Duplicate(at, n)),
        (any::<Index>(), any::<Index>(), any::<Index>()).prop_map(|(a, s, b)| Edit::Splice(a, s, b)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit, seeds: &[Vec<u8>]) {
    let at = |i: &Index, len: usize| i.index(len + 1);
    match edit {
        Edit::Flip(i, bit) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        Edit::Flip(..) => {}
        Edit::Insert(i, new) => {
            let i = at(i, bytes.len());
            bytes.splice(i..i, new.iter().copied());
        }
        Edit::Delete(i, n) => {
            let i = at(i, bytes.len());
            bytes.drain(i..(i + n).min(bytes.len()));
        }
        Edit::Duplicate(i, n) => {
            let i = at(i, bytes.len());
            let stretch = bytes[i..(i + n).min(bytes.len())].to_vec();
            bytes.splice(i..i, stretch);
        }
        Edit::Splice(i, seed, from) => {
            let other = seed.get(seeds);
            bytes.truncate(at(i, bytes.len()));
            bytes.extend_from_slice(&other[at(from, other.len())..]);
        }
    }
}

/// A seed (unchanged now and then), or a seed after a few edits; `tokens`
/// are bits of the target's syntax worth inserting (`{`, `"`, `\n`, ...).
pub(crate) fn mutated(seeds: Vec<Vec<u8>>, tokens: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    let seeds = Arc::new(seeds);
    (any::<Index>(), vec(edit(tokens), 0..8)).prop_map(move |(seed, edits)| {
        let mut bytes = seed.get(&seeds).clone();
        for e in &edits {
            apply(&mut bytes, e, &seeds);
        }
        bytes
    })
}

/// Numbers that readers get wrong: signs, exponents, zeros, the edges of
/// i64 and f64, and integers and decimals that fit neither.
pub(crate) const ODD_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "0.0",
    "-0.0",
    "1e400",
    "-1e400",
    "1e-400",
    "2.50",
    "1E+2",
    "1.5e-7",
    "9007199254740993",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "123456789012345678901234567890",
    "0.1000000000000000055511151231257827",
    "1.7976931348623157e308",
    "5e-324",
];

/// A JSON string literal: plain text, escapes, and characters outside ASCII.
fn json_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z/+#. ]{0,6}".prop_map(String::from),
        proptest::sample::select(&[r"\n", r#"\""#, r"\\", r"\u0000", r"\u00e9", r"\ud83d\ude00", "é", "\u{2028}"][..])
            .prop_map(String::from),
    ];
    vec(piece, 0..4).prop_map(|parts| format!("\"{}\"", parts.concat()))
}

fn json_leaf() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
        proptest::sample::select(ODD_NUMBERS).prop_map(String::from),
        json_string(),
    ]
}

/// The text of a JSON document made from scratch, nested a few levels, with
/// odd numbers and strings, and whitespace where JSON allows it.
pub(crate) fn json_text() -> impl Strategy<Value = String> {
    json_leaf().prop_recursive(6, 64, 6, |inner| {
        let ws = proptest::sample::select(&["", " ", "\n\t"][..]);
        prop_oneof![
            (vec(inner.clone(), 0..6), ws.clone()).prop_map(|(items, ws)| format!("[{ws}{}]", items.join(","))),
            (vec((json_string(), inner), 0..6), ws).prop_map(|(pairs, ws)| {
                let pairs: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}:{ws}{v}")).collect();
                format!("{{{}{ws}}}", pairs.join(","))
            }),
        ]
    })
}

/// How long a target runs in `cargo test`: at most `cases` cases and at
/// most `time`. `PROPTEST_CASES` overrides the count and lifts the time limit
/// (a longer campaign, `tests/fuzz/README.md`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    /// Cases to run.
    pub(crate) cases: u32,
    /// Wall-clock limit for the cases (shrinking a failure has its own).
    pub(crate) time: Duration,
}

/// Checks `property` on values of `strategy` within `budget`. A failure is
/// shrunk, recorded in `tests/fuzz/regressions/<name>.txt` (replayed first
/// on every later run) and reported with its smallest input.
pub(crate) fn check<S>(
    manifest_dir: &str,
    name: &str,
    budget: Budget,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let campaign = std::env::var_os("PROPTEST_CASES").is_some();
    let regressions = root(manifest_dir).join(format!("tests/fuzz/regressions/{name}.txt"));
    // proptest wants a `&'static str`; one small string per target and run.
    let regressions: &'static str = Box::leak(regressions.display().to_string().into_boxed_str());
    let config = Config {
        cases: if campaign { Config::default().cases } else { budget.cases },
        max_shrink_time: 20_000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        ..Config::default()
    };
    let deadline = (!campaign).then(|| Instant::now() + budget.time);
    let mut runner = TestRunner::new(config);
    let (started, tried) = (Instant::now(), std::cell::Cell::new(0u32));
    // Past the deadline the remaining cases pass untried: the runner has
    // no way to stop early, and making a value costs little.
    let result = runner.run(&strategy, |v| match deadline {
        Some(d) if Instant::now() > d => Ok(()),
        _ => {
            tried.set(tried.get() + 1);
            property(v)
        }
    });
    // Seen with `--nocapture`: how far a run got.
    eprintln!("{name}: {} cases tried in {:.1?}", tried.get(), started.elapsed());
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => panic!("{name}: {why}\nminimal failing input: {input:#?}"),
        Err(TestError::Abort(why)) => panic!("{name}: aborted: {why}"),
    }
}
