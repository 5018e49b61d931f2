//! Property tests of `read_line` on streams of `tests/fuzz/corpus/framing/`
//! (mutated) and any bytes, arriving in any pieces: the lines are the
//! `\n`-split of the stream whatever the pieces, each without its `\n` and a
//! last `\r`, cut to the limit and flagged when longer.

use std::io::{self, BufRead, Read};
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;

use super::read_line;
use crate::fuzz_support::{self, Budget};

const TOKENS: &[&[u8]] = &[b"\n", b"\r\n", b"\r", b"\xff"];

const BUDGET: Budget = Budget { cases: 1000, time: Duration::from_secs(3) };

/// An input that hands out its bytes in the pieces given, as a pipe does.
struct Pieces {
    bytes: Vec<u8>,
    cuts: Vec<usize>,
    at: usize,
    piece: usize,
}

impl Read for Pieces {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.fill_buf()?.len().min(out.len());
        out[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Pieces {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let cut = self.cuts[self.piece % self.cuts.len()];
        let end = (self.at + cut).min(self.bytes.len());
        Ok(&self.bytes[self.at..end])
    }

    fn consume(&mut self, n: usize) {
        self.at += n;
        self.piece += 1;
    }
}

/// The lines `read_line` should give: the `\n`-split of `bytes`.
fn lines_of(bytes: &[u8], max: usize) -> Vec<(Vec<u8>, bool)> {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let line = |l: &[u8]| {
        let mut cut = l[..l.len().min(max)].to_vec();
        if cut.last() == Some(&b'\r') {
            cut.pop();
        }
        (cut, l.len() > max)
    };
    lines.into_iter().map(line).collect()
}

#[test]
fn fuzz_stdin_lines_in_any_pieces_are_the_lines_of_the_stream() {
    let seeds = fuzz_support::seeds(env!("CARGO_MANIFEST_DIR"), "framing", &[]);
    let bytes = prop_oneof![fuzz_support::mutated(seeds, TOKENS), vec(any::<u8>(), 0..200)];
    let strategy = (0..48usize, bytes, vec(1..32usize, 1..8));
    let name = "stdin_lines";
    fuzz_support::check(env!("CARGO_MANIFEST_DIR"), name, BUDGET, strategy, |(max, bytes, cuts)| {
        let want = lines_of(&bytes, max);
        let mut input = Pieces { bytes, cuts, at: 0, piece: 0 };
        let got: Vec<_> = std::iter::from_fn(|| read_line(&mut input, max).expect("no I/O error")).collect();
        prop_assert_eq!(got, want);
        Ok(())
    });
}
