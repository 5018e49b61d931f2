//! Property test of `LineReader` on files made of the streams of
//! `tests/fuzz/corpus/framing/` (mutated) and any bytes: the lines are the
//! `\n`-split of the file, each without its `\n` and a last `\r`, cut to the
//! limit and flagged when longer, the first without a byte order mark.

use std::path::Path;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;

use super::{Line, LineReader, Next};
use crate::fuzz_support::{self, Budget};

const TOKENS: &[&[u8]] = &[b"\n", b"\r\n", b"\r", b"\xef\xbb\xbf"];

const BUDGET: Budget = Budget { cases: 500, time: Duration::from_secs(3) };

/// The lines `LineReader` should give for a file of `bytes`.
fn lines_of(bytes: &[u8], max: usize) -> Vec<Line> {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let line = |(i, l): (usize, &[u8])| {
        let mut cut = l[..l.len().min(max)].to_vec();
        if cut.last() == Some(&b'\r') {
            cut.pop();
        }
        if i == 0 && cut.starts_with(b"\xEF\xBB\xBF") {
            cut.drain(..3);
        }
        Line { bytes: cut, first: i == 0, too_long: l.len() > max }
    };
    lines.into_iter().enumerate().map(line).collect()
}

/// Every line of the file at `path`, read to its end.
async fn read_all(path: &Path, max: usize) -> std::io::Result<Vec<Line>> {
    let mut reader = LineReader::open(path, false, false, max).await?;
    let mut out = Vec::new();
    while let Next::Line(line) = reader.next().await? {
        out.push(line);
    }
    Ok(out)
}

#[test]
fn fuzz_file_read_lines_are_the_lines_of_the_file() {
    let seeds = fuzz_support::seeds(env!("CARGO_MANIFEST_DIR"), "framing", &[]);
    let bytes = prop_oneof![fuzz_support::mutated(seeds, TOKENS), vec(any::<u8>(), 0..200)];
    let path = std::env::temp_dir().join(format!("fbp-fuzz-file-read-{}.txt", std::process::id()));
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("a runtime");
    let name = "file_read_lines";
    fuzz_support::check(env!("CARGO_MANIFEST_DIR"), name, BUDGET, (0..48usize, bytes), |(max, bytes)| {
        std::fs::write(&path, &bytes).expect("a temp file");
        let got = rt.block_on(read_all(&path, max)).expect("no I/O error");
        prop_assert_eq!(got, lines_of(&bytes, max));
        Ok(())
    });
    let _ = std::fs::remove_file(&path);
}
