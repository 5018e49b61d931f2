//! Unit tests of the disk buffer: order, restart, commits, bounds, damage.

use super::*;

/// A directory of its own for a test, removed when dropped.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    let dir = std::env::temp_dir().join(format!("fbp-buffer-{}-{}", std::process::id(), fastrand::u64(..)));
    fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

fn config(dir: &Path, max_size: u64, when_full: WhenFull) -> Config {
    Config { path: dir.to_path_buf(), max_size, when_full }
}

fn open(dir: &Path) -> DiskBuffer {
    DiskBuffer::open(&config(dir, 64 << 10, WhenFull::Block)).unwrap()
}

fn payload(i: usize) -> Vec<u8> {
    format!("message number {i:05} with some padding to fill segments").into_bytes()
}

fn append_all(buffer: &mut DiskBuffer, range: std::ops::Range<usize>) {
    for i in range {
        assert!(matches!(buffer.append(&payload(i)).unwrap(), Append::Written(_)), "append {i}");
    }
    buffer.sync().unwrap();
}

/// Reads everything, committing each record; the payloads in order.
fn drain(buffer: &mut DiskBuffer) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(r) = buffer.read().unwrap() {
        buffer.commit(r.token).unwrap();
        out.push(r.payload);
    }
    buffer.sync().unwrap();
    out
}

fn expected(range: std::ops::Range<usize>) -> Vec<Vec<u8>> {
    range.map(payload).collect()
}

fn segment_files(dir: &Path) -> Vec<(u64, u64)> {
    segment::list(dir).unwrap()
}

#[test]
fn records_come_back_in_order_and_committed_segments_are_removed() {
    let dir = tempdir();
    let mut buffer = open(&dir);
    append_all(&mut buffer, 0..900);
    assert!(segment_files(&dir).len() > 3, "a small segment size spreads 900 records over segments");
    assert_eq!(drain(&mut buffer), expected(0..900));
    assert_eq!(segment_files(&dir).len(), 1, "only the segment being written is left");
    assert_eq!(buffer.stats(), Stats::default());
}

#[test]
fn uncommitted_records_are_replayed_first_after_a_restart() {
    let dir = tempdir();
    let mut buffer = open(&dir);
    append_all(&mut buffer, 0..300);
    for _ in 0..100 {
        let r = buffer.read().unwrap().unwrap();
        buffer.commit(r.token).unwrap();
    }
    // Read but not committed: must come back.
    for _ in 0..50 {
        buffer.read().unwrap().unwrap();
    }
    buffer.sync().unwrap();
    drop(buffer);
    let mut buffer = open(&dir);
    append_all(&mut buffer, 300..310);
    assert_eq!(drain(&mut buffer), expected(100..310));
}

#[test]
fn the_position_advances_only_over_the_committed_prefix() {
    let dir = tempdir();
    let mut buffer = open(&dir);
    append_all(&mut buffer, 0..3);
    let reads: Vec<Read> = (0..3).map(|_| buffer.read().unwrap().unwrap()).collect();
    buffer.commit(reads[2].token).unwrap();
    buffer.commit(reads[0].token).unwrap();
    buffer.sync().unwrap();
    drop(buffer);
    let mut buffer = open(&dir);
    assert_eq!(drain(&mut buffer), expected(1..3), "the second was not committed: it and all after it replay");
}

#[test]
fn block_refuses_appends_past_max_size_until_records_are_committed() {
    let dir = tempdir();
    let mut buffer = DiskBuffer::open(&config(&dir, 32 << 10, WhenFull::Block)).unwrap();
    let mut written = 0;
    while buffer.append(&payload(written)).unwrap() != Append::Full {
        written += 1;
        assert!(written < 10_000, "the buffer never filled");
    }
    assert!(buffer.bytes() <= 32 << 10);
    assert_eq!(drain(&mut buffer), expected(0..written));
    assert!(matches!(buffer.append(&payload(written)).unwrap(), Append::Written(_)), "room again once committed");
}

#[test]
fn drop_oldest_removes_the_oldest_records_and_counts_them() {
    let dir = tempdir();
    let max = 32 << 10;
    let mut buffer = DiskBuffer::open(&config(&dir, max, WhenFull::DropOldest)).unwrap();
    append_all(&mut buffer, 0..5000);
    assert!(buffer.bytes() <= max + buffer.segment_size, "{} bytes on disk", buffer.bytes());
    let got = drain(&mut buffer);
    let dropped = buffer.stats().dropped as usize;
    assert!(dropped > 0);
    assert_eq!(got.len() + dropped, 5000, "every record delivered or counted as dropped");
    assert_eq!(got, expected(dropped..5000), "the oldest are the ones dropped");
}

/// A buffer closed with ten records in one segment: its directory, that
/// segment's path and size.
fn ten_records_written() -> (TempDir, PathBuf, u64) {
    let dir = tempdir();
    let mut buffer = open(&dir);
    append_all(&mut buffer, 0..10);
    drop(buffer);
    let (id, len) = segment_files(&dir)[0];
    let file = segment::path(&dir, id);
    (dir, file, len)
}

#[test]
fn a_flipped_byte_skips_one_record_and_delivers_the_rest() {
    let (dir, file, _) = ten_records_written();
    let mut bytes = fs::read(&file).unwrap();
    let third = HEADER_LEN as usize + 2 * record::encoded_len(payload(0).len()) + record::HEAD + 5;
    bytes[third] ^= 0x20;
    fs::write(&file, bytes).unwrap();
    let mut buffer = open(&dir);
    let mut want = expected(0..10);
    want.remove(2);
    assert_eq!(drain(&mut buffer), want);
    assert_eq!(buffer.stats().damaged, 1);
}

#[test]
fn a_truncated_last_segment_delivers_what_is_whole() {
    let (dir, file, len) = ten_records_written();
    fs::OpenOptions::new().write(true).open(file).unwrap().set_len(len - 7).unwrap();
    let mut buffer = open(&dir);
    append_all(&mut buffer, 10..12);
    let mut want = expected(0..9);
    want.extend(expected(10..12));
    assert_eq!(drain(&mut buffer), want);
    assert_eq!(buffer.stats().damaged, 1);
}

#[test]
fn empty_and_missing_segments_are_skipped_and_counted() {
    let dir = tempdir();
    let mut buffer = DiskBuffer::open(&config(&dir, 32 << 10, WhenFull::Block)).unwrap();
    append_all(&mut buffer, 0..300);
    drop(buffer);
    let files = segment_files(&dir);
    assert!(files.len() >= 4);
    fs::remove_file(segment::path(&dir, files[1].0)).unwrap();
    fs::write(segment::path(&dir, files[2].0), b"").unwrap();
    let mut buffer = DiskBuffer::open(&config(&dir, 32 << 10, WhenFull::Block)).unwrap();
    assert_eq!(buffer.stats().bad_files, 2, "one missing, one empty");
    let got = drain(&mut buffer);
    let per_segment = (files[0].1 - HEADER_LEN) as usize / record::encoded_len(payload(0).len());
    let mut want = expected(0..per_segment);
    want.extend(expected(3 * per_segment..300));
    assert_eq!(got, want);
}

#[test]
fn a_damaged_position_replays_from_the_oldest_segment() {
    let dir = tempdir();
    let mut buffer = open(&dir);
    append_all(&mut buffer, 0..5);
    let r = buffer.read().unwrap().unwrap();
    buffer.commit(r.token).unwrap();
    buffer.sync().unwrap();
    drop(buffer);
    fs::write(dir.join("position"), b"junk").unwrap();
    let mut buffer = open(&dir);
    assert_eq!(drain(&mut buffer), expected(0..5));
}

#[test]
fn a_path_that_is_a_file_is_an_error_naming_it() {
    let dir = tempdir();
    let file = dir.join("not-a-dir");
    fs::write(&file, "x").unwrap();
    let err = DiskBuffer::open(&config(&file, 1 << 20, WhenFull::Block)).unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
    let inside = DiskBuffer::open(&config(&file.join("sub"), 1 << 20, WhenFull::Block)).unwrap_err();
    assert!(inside.to_string().contains("not-a-dir/sub"), "{inside}");
}

#[test]
fn a_message_larger_than_the_buffer_is_refused() {
    let dir = tempdir();
    let mut buffer = DiskBuffer::open(&config(&dir, 4096, WhenFull::Block)).unwrap();
    assert!(matches!(buffer.append(&[0; 8192]), Err(Error::TooLarge { .. })));
}

#[test]
fn appends_are_durable_after_a_sync() {
    let dir = tempdir();
    let mut buffer = open(&dir);
    let Append::Written(n) = buffer.append(b"x").unwrap() else { panic!("full") };
    buffer.sync().unwrap();
    assert!(buffer.synced() >= n);
    assert!(!buffer.sync_pending());
}
