//! Segment files and the committed-position file of a disk buffer: names,
//! headers, listing a directory, and the position written atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The format version written in the header.
pub const VERSION: u16 = 1;
/// The first bytes of every segment file: magic `FBPS`, format version
/// (little-endian), two zero bytes.
pub const HEADER: [u8; 8] = [b'F', b'B', b'P', b'S', VERSION.to_le_bytes()[0], VERSION.to_le_bytes()[1], 0, 0];
/// Size of [`HEADER`], where the first record of a segment starts.
pub const HEADER_LEN: u64 = HEADER.len() as u64;
const POSITION: &str = "position";

/// Where the buffer resumes reading: a segment and an offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The segment's number.
    pub id: u64,
    /// The offset of the next record to read.
    pub offset: u64,
}

/// The path of segment `id` in `dir`.
pub fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// The numbers of the segment files in `dir`, in order, with their sizes.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, u64)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".seg")).and_then(|n| n.parse().ok()) else {
            continue;
        };
        found.push((id, entry.metadata()?.len()));
    }
    found.sort_unstable();
    Ok(found)
}

/// Creates segment `id` with its header, durably (the file and its entry).
pub fn create(dir: &Path, id: u64) -> io::Result<File> {
    let mut file = OpenOptions::new().create_new(true).append(true).open(path(dir, id))?;
    file.write_all(&HEADER)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(file)
}

/// Whether segment `id` starts with a header of this format.
pub fn header_ok(dir: &Path, id: u64) -> io::Result<bool> {
    let mut head = [0; HEADER.len()];
    File::open(path(dir, id))?.read_exact(&mut head)?;
    Ok(head == HEADER)
}

/// Reads segment `id` from `from` to `to`.
pub fn read_range(dir: &Path, id: u64, from: u64, to: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    read_into(&mut File::open(path(dir, id))?, from, to, &mut out)?;
    Ok(out)
}

/// Appends the bytes of `file` from `from` to `to` (or its end) to `out`.
pub fn read_into(file: &mut File, from: u64, to: u64, out: &mut Vec<u8>) -> io::Result<()> {
    file.seek(SeekFrom::Start(from))?;
    out.reserve(to.saturating_sub(from) as usize);
    file.take(to.saturating_sub(from)).read_to_end(out)?;
    Ok(())
}

/// Makes the directory's entries (created or removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes the committed position durably: a temporary file, synced, renamed.
pub fn write_position(dir: &Path, at: Position) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&at.id.to_le_bytes());
    bytes.extend_from_slice(&at.offset.to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    let tmp = dir.join("position.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(POSITION))?;
    sync_dir(dir)
}

/// The committed position last written, `Ok(None)` when there is none, and
/// an error naming the damage when the file is unreadable or damaged.
pub fn read_position(dir: &Path) -> Result<Option<Position>, String> {
    let bytes = match fs::read(dir.join(POSITION)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let word = |i: usize| bytes.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let sum = bytes.get(16..20).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    match (word(0), word(8), sum) {
        (Some(id), Some(offset), Some(sum)) if bytes.len() == 20 && sum == crc32fast::hash(&bytes[..16]) => {
            Ok(Some(Position { id, offset }))
        }
        _ => Err(format!("{} bytes that are not a valid position", bytes.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_reads_back_and_damage_is_an_error() {
        let dir = tempdir();
        assert_eq!(read_position(&dir), Ok(None));
        let at = Position { id: 3, offset: 77 };
        write_position(&dir, at).unwrap();
        assert_eq!(read_position(&dir), Ok(Some(at)));
        let mut bytes = fs::read(dir.join(POSITION)).unwrap();
        bytes[2] ^= 1;
        fs::write(dir.join(POSITION), bytes).unwrap();
        assert!(read_position(&dir).is_err());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn segments_list_in_order_and_ignore_other_files() {
        let dir = tempdir();
        create(&dir, 10).unwrap();
        create(&dir, 2).unwrap();
        fs::write(dir.join("notes.txt"), "x").unwrap();
        assert_eq!(list(&dir).unwrap(), vec![(2, HEADER_LEN), (10, HEADER_LEN)]);
        assert!(header_ok(&dir, 2).unwrap());
        fs::remove_dir_all(dir).unwrap();
    }

    pub(crate) fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fbp-segment-{}-{}", std::process::id(), fastrand::u64(..)));
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
