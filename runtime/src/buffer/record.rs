//! One record of a segment file, as bytes: encoding, decoding and
//! resynchronisation after damage. Pure functions over byte slices, so the
//! reader's behaviour on arbitrary bytes is unit- and property-tested here.
//!
//! Layout, little-endian:
//!
//! ```text
//! magic "FBPR" (4) | length of payload (u32) | CRC32 of length and payload (u32) | payload
//! ```
//!
//! The magic lets a reader find the next record after a damaged one; the
//! checksum covers the length too, so a flipped length byte is caught.

/// Marks the start of every record.
pub const MAGIC: [u8; 4] = *b"FBPR";
/// Bytes before the payload: magic, length, checksum.
pub const HEAD: usize = 12;
/// The largest payload a record may hold; a longer length is damage.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// What the bytes at a position hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, intact record; `len` is its size on disk.
    Record {
        /// The record's payload.
        payload: &'a [u8],
        /// Header plus payload.
        len: usize,
    },
    /// Too few bytes for the record the header announces (or for a header).
    Incomplete,
    /// Not a record: wrong magic, impossible length or bad checksum.
    Damaged,
}

/// Appends the record holding `payload` to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    let len = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(&len, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Size on disk of a record holding `payload_len` bytes.
pub fn encoded_len(payload_len: usize) -> usize {
    HEAD + payload_len
}

/// Decodes the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < HEAD {
        return if MAGIC.starts_with(&buf[..buf.len().min(4)]) { Decoded::Incomplete } else { Decoded::Damaged };
    }
    if buf[..4] != MAGIC {
        return Decoded::Damaged;
    }
    let len_bytes: [u8; 4] = buf[4..8].try_into().unwrap_or_default();
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len > MAX_PAYLOAD {
        return Decoded::Damaged;
    }
    let Some(payload) = buf.get(HEAD..HEAD + len) else { return Decoded::Incomplete };
    let sum = u32::from_le_bytes(buf[8..12].try_into().unwrap_or_default());
    if sum != checksum(&len_bytes, payload) {
        return Decoded::Damaged;
    }
    Decoded::Record { payload, len: HEAD + len }
}

/// The index, after `from`, where the next record may start (the next magic),
/// or `None` when `buf` holds none past `from`.
pub fn resync(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.checked_add(1)?;
    buf.get(start..)?.windows(MAGIC.len()).position(|w| w == MAGIC).map(|i| start + i)
}

fn checksum(len: &[u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(payload);
    h.finalize()
}

/// What a walk over a whole byte range found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Walk {
    /// Intact records, as (offset, size on disk).
    pub records: Vec<(usize, usize)>,
    /// Damaged regions skipped, as (offset, bytes skipped).
    pub damaged: Vec<(usize, usize)>,
    /// Where an unfinished record starts at the end, if one does.
    pub torn_at: Option<usize>,
}

/// Walks `buf` from its start: every intact record, every damaged region
/// skipped up to the next intact record, and an unfinished record at the end.
pub fn walk(buf: &[u8]) -> Walk {
    let mut w = Walk::default();
    let mut pos = 0;
    while pos < buf.len() {
        match decode(&buf[pos..]) {
            Decoded::Record { len, .. } => {
                w.records.push((pos, len));
                pos += len;
            }
            incomplete_or_damaged => {
                let next = next_record(buf, pos);
                if next == buf.len() && incomplete_or_damaged == Decoded::Incomplete {
                    w.torn_at = Some(pos);
                    break;
                }
                w.damaged.push((pos, next - pos));
                pos = next;
            }
        }
    }
    w
}

/// The offset of the first intact record after `pos`, or the end of `buf`.
/// A header whose length runs past the end but is followed by an intact
/// record is damage, not an unfinished record.
pub fn next_record(buf: &[u8], mut pos: usize) -> usize {
    while let Some(next) = resync(buf, pos) {
        if matches!(decode(&buf[next..]), Decoded::Record { .. }) {
            return next;
        }
        pos = next;
    }
    buf.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn records(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        payloads.iter().for_each(|p| encode(p, &mut out));
        out
    }

    #[test]
    fn a_record_decodes_to_its_payload() {
        let buf = records(&[b"hello"]);
        assert_eq!(decode(&buf), Decoded::Record { payload: b"hello", len: encoded_len(5) });
    }

    #[test]
    fn a_short_buffer_is_incomplete_not_damaged() {
        let buf = records(&[b"hello"]);
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Decoded::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let buf = records(&[b"some payload"]);
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(!matches!(decode(&bad), Decoded::Record { .. }), "flip at {i} not caught");
        }
    }

    #[test]
    fn a_walk_skips_a_damaged_record_and_keeps_the_rest() {
        let mut buf = records(&[b"one", b"two", b"three"]);
        let second = encoded_len(3);
        buf[second + HEAD] ^= 0xff; // inside the payload of "two"
        let w = walk(&buf);
        assert_eq!(w.records, vec![(0, encoded_len(3)), (2 * encoded_len(3), encoded_len(5))]);
        assert_eq!(w.damaged, vec![(second, encoded_len(3))]);
        assert_eq!(w.torn_at, None);
    }

    #[test]
    fn a_walk_reports_a_torn_last_record() {
        let buf = records(&[b"one", b"two"]);
        let w = walk(&buf[..buf.len() - 1]);
        assert_eq!(w.records, vec![(0, encoded_len(3))]);
        assert_eq!(w.torn_at, Some(encoded_len(3)));
    }

    #[test]
    fn a_length_past_the_end_followed_by_records_is_damage() {
        let mut buf = records(&[b"one", b"two"]);
        buf[5] = 0x7f; // the length of "one" now runs past the end
        let w = walk(&buf);
        assert_eq!(w.damaged, vec![(0, encoded_len(3))]);
        assert_eq!(w.records, vec![(encoded_len(3), encoded_len(3))]);
        assert_eq!(w.torn_at, None);
    }

    #[test]
    fn garbage_before_records_is_one_damaged_region() {
        let mut buf = b"garbage!".to_vec();
        buf.extend(records(&[b"x"]));
        let w = walk(&buf);
        assert_eq!(w.damaged, vec![(0, 8)]);
        assert_eq!(w.records, vec![(8, encoded_len(1))]);
    }

    proptest! {
        #[test]
        fn walking_arbitrary_bytes_never_panics_and_covers_them(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let w = walk(&bytes);
            let covered: usize = w.records.iter().chain(&w.damaged).map(|r| r.1).sum::<usize>()
                + w.torn_at.map_or(0, |t| bytes.len() - t);
            prop_assert_eq!(covered, bytes.len());
        }

        #[test]
        fn records_survive_a_flipped_byte_elsewhere(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..20),
            at in any::<prop::sample::Index>(),
        ) {
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let mut buf = records(&refs);
            let i = at.index(buf.len());
            buf[i] ^= 0x01;
            let w = walk(&buf);
            // At most the record holding the flipped byte is lost.
            prop_assert!(w.records.len() + 1 >= payloads.len());
        }
    }
}
