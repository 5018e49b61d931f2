//! Cutting a TCP byte stream into frames with tokio-util's codecs: lines
//! (`\n`, a trailing `\r` removed) or a 4-byte big-endian length prefix. No
//! socket here: the connection task feeds a buffer and asks for frames, so
//! framing and its limits are tested on byte strings.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, Decoder, LengthDelimitedCodec};

/// How a stream is cut into frames.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Framing {
    /// `\n`-delimited, `\r\n` accepted.
    Lines,
    /// A 4-byte big-endian length, then that many bytes.
    Length,
}

/// What the buffer gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A whole frame.
    Data(Bytes),
    /// A frame longer than the limit; `head` is what was buffered of it, at
    /// most the limit. With
    /// lines the rest of it is skipped and the next line read; a length-prefixed
    /// stream cannot resync, so `resync` is false and the connection must close.
    TooLong { head: Bytes, resync: bool },
}

/// A codec for one connection.
#[derive(Debug)]
pub(crate) enum Deframer {
    Lines(AnyDelimiterCodec),
    Length(LengthDelimitedCodec),
}

impl Deframer {
    /// A deframer refusing frames longer than `max` bytes (without the `\n` or the prefix).
    pub(crate) fn new(framing: Framing, max: usize) -> Self {
        match framing {
            // Bytes, not `LinesCodec`'s `String`: a line of `format = "bytes"`
            // need not be UTF-8, and the format decides what is an error.
            Framing::Lines => Deframer::Lines(AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), max)),
            Framing::Length => Deframer::Length(
                LengthDelimitedCodec::builder().big_endian().length_field_length(4).max_frame_length(max).new_codec(),
            ),
        }
    }

    /// The next frame in `buf`, `None` when more bytes are needed; at the end
    /// of the stream (`eof`) a last line without `\n` is a frame. `Err` when
    /// the stream ended inside a length-prefixed frame.
    pub(crate) fn next(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Option<Frame>, String> {
        match self {
            Deframer::Lines(codec) => {
                let got = if eof { codec.decode_eof(buf) } else { codec.decode(buf) };
                match got {
                    Ok(line) => Ok(line.map(|l| Frame::Data(strip_cr(l)))),
                    // The codec left the line in the buffer and skips it from the next call on.
                    Err(AnyDelimiterCodecError::MaxChunkLengthExceeded) => {
                        let head = Bytes::copy_from_slice(&buf[..buf.len().min(codec.max_length())]);
                        Ok(Some(Frame::TooLong { head, resync: true }))
                    }
                    Err(AnyDelimiterCodecError::Io(e)) => Err(e.to_string()),
                }
            }
            Deframer::Length(codec) => {
                let got = if eof { codec.decode_eof(buf) } else { codec.decode(buf) };
                match got {
                    Ok(frame) => Ok(frame.map(|f| Frame::Data(f.freeze()))),
                    Err(e)
                        if e.get_ref()
                            .is_some_and(|inner| inner.is::<tokio_util::codec::LengthDelimitedCodecError>()) =>
                    {
                        // What has arrived of the frame, at most the limit of it:
                        // the buffer may hold a whole read past the prefix.
                        let arrived = buf.get(4..).unwrap_or_default();
                        let head = Bytes::copy_from_slice(&arrived[..arrived.len().min(codec.max_frame_length())]);
                        Ok(Some(Frame::TooLong { head, resync: false }))
                    }
                    Err(_) => Err(format!("the stream ended inside a frame ({} bytes of it received)", buf.len())),
                }
            }
        }
    }
}

fn strip_cr(line: Bytes) -> Bytes {
    match line.last() {
        Some(b'\r') => line.slice(..line.len() - 1),
        _ => line,
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame of `input` fed in pieces of `step` bytes, then the end.
    fn frames(framing: Framing, max: usize, input: &[u8], step: usize) -> Vec<Result<Frame, String>> {
        frames_in(framing, max, input.chunks(step))
    }

    /// Every frame of a stream fed in `pieces`, then the end; a frame that
    /// cannot be resynchronised after, or an error, ends the list.
    pub(super) fn frames_in<'a>(
        framing: Framing,
        max: usize,
        pieces: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<Result<Frame, String>> {
        let mut d = Deframer::new(framing, max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in pieces.into_iter().map(Some).chain([None]) {
            if let Some(p) = piece {
                buf.extend_from_slice(p);
            }
            loop {
                match d.next(&mut buf, piece.is_none()) {
                    Ok(Some(f @ Frame::TooLong { resync: false, .. })) => {
                        out.push(Ok(f));
                        return out;
                    }
                    Ok(Some(f)) => out.push(Ok(f)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e));
                        return out;
                    }
                }
            }
        }
        out
    }

    fn data(s: &str) -> Result<Frame, String> {
        Ok(Frame::Data(Bytes::copy_from_slice(s.as_bytes())))
    }

    #[test]
    fn lines_strip_crlf_and_keep_a_last_line_without_newline() {
        for step in [1, 3, 100] {
            let got = frames(Framing::Lines, 64, b"a\r\nbb\n\nlast", step);
            assert_eq!(got, [data("a"), data("bb"), data(""), data("last")], "step {step}");
        }
    }

    #[test]
    fn a_long_line_is_reported_once_and_the_next_line_still_arrives() {
        for step in [1, 4, 1000] {
            let input = [b"ok\n".as_slice(), &[b'x'; 40], b"\nnext\n"].concat();
            let got = frames(Framing::Lines, 10, &input, step);
            assert_eq!(got.len(), 3, "step {step}: {got:?}");
            assert_eq!(got[0], data("ok"));
            assert!(matches!(&got[1], Ok(Frame::TooLong { head, resync: true }) if head.starts_with(b"xxxxxxxxxx")));
            assert_eq!(got[2], data("next"), "step {step}");
        }
    }

    #[test]
    fn lines_are_bytes_not_necessarily_utf8() {
        assert_eq!(frames(Framing::Lines, 8, b"\xff\xfe\n", 8), [Ok(Frame::Data(Bytes::from_static(b"\xff\xfe")))]);
    }

    pub(super) fn prefixed(payload: &[u8]) -> Vec<u8> {
        [&(payload.len() as u32).to_be_bytes()[..], payload].concat()
    }

    #[test]
    fn length_prefixed_frames_in_any_pieces() {
        let input = [prefixed(b"{\"a\":1}"), prefixed(b""), prefixed(b"two\nlines")].concat();
        for step in [1, 5, 1000] {
            assert_eq!(frames(Framing::Length, 64, &input, step), [data("{\"a\":1}"), data(""), data("two\nlines")]);
        }
    }

    #[test]
    fn a_long_length_prefixed_frame_ends_the_stream() {
        let input = [prefixed(b"ok"), prefixed(&[b'y'; 100]), prefixed(b"never")].concat();
        let got = frames(Framing::Length, 10, &input, 1000);
        assert_eq!(got[0], data("ok"));
        assert!(matches!(&got[1], Ok(Frame::TooLong { head, resync: false }) if head.starts_with(b"yyyy")), "{got:?}");
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn a_refused_length_prefixed_frame_gives_at_most_the_limit_of_itself() {
        let input = [prefixed(&[b'y'; 100]), prefixed(b"next")].concat();
        let got = frames(Framing::Length, 10, &input, 1000);
        assert!(matches!(&got[..], [Ok(Frame::TooLong { head, .. })] if head[..] == [b'y'; 10]), "{got:?}");
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_an_error() {
        let input = &prefixed(b"abcdef")[..6];
        let got = frames(Framing::Length, 64, input, 100);
        assert!(matches!(&got[..], [Err(e)] if e.contains("ended inside a frame")), "{got:?}");
    }
}
