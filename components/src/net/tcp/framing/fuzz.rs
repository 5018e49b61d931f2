//! Property tests of the deframer on mutated streams of
//! `tests/fuzz/corpus/framing/` and on any bytes: a stream cut into any
//! pieces gives the frames it gives in one piece; lines are the `\n`-split
//! of the stream; no frame, and no head of a refused frame, is longer than
//! the limit; a length prefix over the limit is refused before anything is
//! allocated for it.

use std::time::Duration;

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::tests::{frames_in, prefixed};
use super::{Deframer, Frame, Framing};
use crate::fuzz_support::{self, Budget};

const TOKENS: &[&[u8]] = &[b"\n", b"\r\n", b"\r", b"\0\0\0\x04", b"\0\0\0\0", b"\xff\xff\xff\xff", b"\0\0\x10\0"];

const BUDGET: Budget = Budget { cases: 1000, time: Duration::from_secs(3) };

type Frames = Vec<Result<Frame, String>>;

/// A stream: a mutated seed or any bytes.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let seeds = fuzz_support::seeds(env!("CARGO_MANIFEST_DIR"), "framing", &[]);
    prop_oneof![fuzz_support::mutated(seeds, TOKENS), vec(any::<u8>(), 0..200)]
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![Just(Framing::Lines), Just(Framing::Length)]
}

/// `bytes` cut at the lengths in `cuts`, taken in turn.
fn pieces<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let (mut rest, mut out) = (bytes, Vec::new());
    for n in cuts.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((*n).min(rest.len()));
        out.push(piece);
        rest = tail;
    }
    out
}

/// The frames of the stream in pieces against the frames in one piece: the
/// same, except that a refused length-prefixed frame's head is what had
/// arrived of it, so a prefix of the head in one piece.
fn same_frames(pieces: &Frames, whole: &Frames) -> bool {
    pieces.len() == whole.len()
        && pieces.iter().zip(whole).all(|(p, w)| match (p, w) {
            (Ok(Frame::TooLong { head: p, resync: false }), Ok(Frame::TooLong { head: w, resync: false })) => {
                w.starts_with(p)
            }
            _ => p == w,
        })
}

/// Lines as the `\n`-split of the stream: each without its `\n` and a last
/// `\r`, or refused with its first `max` bytes when longer than `max`.
fn lines_of(bytes: &[u8], max: usize) -> Frames {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let line = |l: &[u8]| match l.len() > max {
        true => Frame::TooLong { head: bytes::Bytes::copy_from_slice(&l[..max]), resync: true },
        false => Frame::Data(bytes::Bytes::copy_from_slice(l.strip_suffix(b"\r").unwrap_or(l))),
    };
    lines.into_iter().map(|l| Ok(line(l))).collect()
}

fn within(frames: &Frames, max: usize) -> Result<(), TestCaseError> {
    for f in frames {
        let len = match f {
            Ok(Frame::Data(d)) => d.len(),
            Ok(Frame::TooLong { head, .. }) => head.len(),
            Err(_) => 0,
        };
        prop_assert!(len <= max, "a frame of {len} bytes under a limit of {max}: {f:?}");
    }
    Ok(())
}

#[test]
fn fuzz_framing_any_pieces_give_the_frames_of_one_piece() {
    let strategy = (framing(), 0..48usize, stream(), vec(1..32usize, 1..8));
    let name = "framing_pieces";
    fuzz_support::check(env!("CARGO_MANIFEST_DIR"), name, BUDGET, strategy, |(framing, max, bytes, cuts)| {
        let whole = frames_in(framing, max, [bytes.as_slice()]);
        let cut = frames_in(framing, max, pieces(&bytes, &cuts));
        prop_assert!(same_frames(&cut, &whole), "in pieces {cut:?}\nin one piece {whole:?}");
        within(&whole, max)?;
        within(&cut, max)?;
        if framing == Framing::Lines {
            prop_assert_eq!(whole, lines_of(&bytes, max));
        }
        Ok(())
    });
}

#[test]
fn fuzz_framing_a_length_over_the_limit_is_refused_unallocated() {
    let strategy = (2..4096usize, any::<u32>(), vec(any::<u8>(), 0..64));
    let name = "framing_huge_length";
    fuzz_support::check(env!("CARGO_MANIFEST_DIR"), name, BUDGET, strategy, |(max, declared, tail)| {
        let declared = (declared as usize).max(max + 1).min(u32::MAX as usize);
        let mut input = prefixed(b"ok");
        input.extend_from_slice(&(declared as u32).to_be_bytes());
        input.extend_from_slice(&tail);
        let mut buf = BytesMut::from(input.as_slice());
        let mut d = Deframer::new(Framing::Length, max);
        prop_assert!(matches!(d.next(&mut buf, false), Ok(Some(Frame::Data(_)))));
        let refused = d.next(&mut buf, false);
        prop_assert!(matches!(refused, Ok(Some(Frame::TooLong { resync: false, .. }))), "{refused:?}");
        prop_assert!(buf.capacity() <= input.len(), "{} bytes reserved for a refused frame", buf.capacity());
        Ok(())
    });
}
