//! A connection's disk buffer (store and forward, DESIGN §9).
//!
//! Layout of a buffer directory:
//!
//! - segment files `00000000000000000001.seg`, ... : an 8-byte header (magic
//!   `FBPS`, format version) then records ([`record`]: magic, length, CRC32,
//!   payload). Only the newest segment is appended to; a new one is started
//!   when it would pass the segment size (an eighth of `max_size`, 4 KiB to
//!   8 MiB) and at every start.
//! - `position`: the committed position (segment and offset), checksummed,
//!   replaced atomically. After a restart reading resumes there, so every
//!   record not yet committed by the target is replayed first, in order.
//!
//! Durability: [`DiskBuffer::append`] writes the record to the file; it is
//! synced at the latest [`SYNC_RECORDS`] records later, or by a
//! [`DiskBuffer::sync`] the caller makes within [`SYNC_INTERVAL`].
//! [`DiskBuffer::synced`] tells how many appends are durable: a message is
//! acknowledged upstream only once its append is.
//!
//! A record is committed ([`DiskBuffer::commit`]) once the target committed
//! it; commits may come in any order, the position advances over the
//! committed prefix, and a segment is deleted once the position has passed
//! it. Damage (a flipped byte, a torn or truncated segment, a missing or
//! empty file, a bad position file) is skipped, counted in [`Stats`] and
//! logged once with the file and offset; the rest is delivered.
//!
//! The buffer is a plain synchronous struct; the task around it decides when
//! to wait (see [`Append::Full`]).

pub mod codec;
pub mod forward;
pub mod record;
pub mod segment;

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use segment::{HEADER_LEN, Position};

/// Appends that may be written but not yet synced.
pub const SYNC_RECORDS: u64 = 256;
/// The longest a written record should stay unsynced: the caller syncs at
/// this interval while appends are pending.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(10);
const MIN_SEGMENT: u64 = 4 << 10;
const MAX_SEGMENT: u64 = 8 << 20;

/// What to do when an append would pass `max_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuse the append ([`Append::Full`]): the caller waits for commits.
    Block,
    /// Delete the oldest segment, counting its unread records as dropped.
    DropOldest,
}

/// What a buffer is opened with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The buffer's directory, created if missing.
    pub path: PathBuf,
    /// The most bytes on disk (plus one segment).
    pub max_size: u64,
    /// What an append does when the buffer is full.
    pub when_full: WhenFull,
}

/// Why a buffer cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path exists and is not a directory.
    #[error("disk buffer path {0} is not a directory")]
    NotADirectory(PathBuf),
    /// The directory cannot be created, read or written.
    #[error("disk buffer directory {path}: {source}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// One message is larger than the buffer may ever hold.
    #[error("a message of {len} bytes does not fit a disk buffer of max_size {max_size} bytes")]
    TooLarge {
        /// The record's size on disk.
        len: u64,
        /// The buffer's bound.
        max_size: u64,
    },
}

/// The outcome of an append.
#[derive(Debug, PartialEq, Eq)]
pub enum Append {
    /// Written as the `n`-th append since the buffer was opened (from 1);
    /// durable once [`DiskBuffer::synced`] reaches `n`.
    Written(u64),
    /// The buffer is full (`when_full = "block"`): nothing was written.
    Full,
}

/// Counters of what the buffer skipped or dropped since it was opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Damaged regions skipped (each counts once, whatever its length).
    pub damaged: u64,
    /// Bytes in damaged regions.
    pub damaged_bytes: u64,
    /// Files skipped: empty, too short for a header, or missing from the sequence.
    pub bad_files: u64,
    /// Unread records dropped by `when_full = "drop_oldest"`.
    pub dropped: u64,
}

/// A record handed to the target, to be committed by its token.
#[derive(Debug)]
pub struct Read {
    /// Pass to [`DiskBuffer::commit`] once the target committed the record.
    pub token: u64,
    /// The record's payload.
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct InFlight {
    /// Where reading resumes once this and all before it are committed.
    after: Position,
    done: bool,
}

/// The segment the reader is in, loaded up to what the writer has written.
#[derive(Debug)]
struct Reader {
    id: u64,
    /// The segment file, opened at the first read.
    file: Option<File>,
    /// File offset of `data[0]`.
    start: u64,
    data: Vec<u8>,
    pos: usize,
}

impl Reader {
    fn at(at: Position) -> Reader {
        Reader { id: at.id, file: None, start: at.offset, data: Vec::new(), pos: 0 }
    }

    fn offset(&self) -> u64 {
        self.start + self.pos as u64
    }
}

/// An open disk buffer. See the module docs.
#[derive(Debug)]
pub struct DiskBuffer {
    dir: PathBuf,
    max_size: u64,
    segment_size: u64,
    when_full: WhenFull,
    /// Segments on disk, oldest first, with their sizes.
    segments: VecDeque<(u64, u64)>,
    writer: File,
    appended: u64,
    synced: u64,
    last_sync: Instant,
    reader: Reader,
    inflight: VecDeque<InFlight>,
    /// Token of `inflight[0]`.
    first_token: u64,
    committed: Position,
    persisted: Option<Position>,
    stats: Stats,
}

impl DiskBuffer {
    /// Opens (or creates) the buffer in `config.path`, skipping and logging
    /// whatever it finds damaged; fails only when the directory is unusable.
    pub fn open(config: &Config) -> Result<DiskBuffer, Error> {
        let dir = config.path.clone();
        prepare_dir(&dir)?;
        let io = |source| Error::Io { path: dir.clone(), source };
        let mut stats = Stats::default();
        let segments = usable_segments(&dir, &mut stats).map_err(io)?;
        let next_id = segments.back().map_or(1, |s| s.0 + 1);
        let writer = segment::create(&dir, next_id).map_err(io)?;
        let mut segments = segments;
        segments.push_back((next_id, HEADER_LEN));
        let committed = start_position(&dir, &segments);
        let segment_size = (config.max_size / 8).clamp(MIN_SEGMENT, MAX_SEGMENT);
        let mut buffer = DiskBuffer {
            dir,
            max_size: config.max_size,
            segment_size,
            when_full: config.when_full,
            segments,
            writer,
            appended: 0,
            synced: 0,
            last_sync: Instant::now(),
            reader: Reader::at(committed),
            inflight: VecDeque::new(),
            first_token: 0,
            committed,
            persisted: None,
            stats,
        };
        buffer.delete_passed().map_err(|source| Error::Io { path: buffer.dir.clone(), source })?;
        Ok(buffer)
    }

    /// Appends one record. Syncs when [`SYNC_RECORDS`] appends are pending or
    /// [`SYNC_INTERVAL`] has passed since the last sync.
    pub fn append(&mut self, payload: &[u8]) -> Result<Append, Error> {
        let len = record::encoded_len(payload.len()) as u64;
        if len + HEADER_LEN > self.max_size || payload.len() > record::MAX_PAYLOAD {
            return Err(Error::TooLarge { len, max_size: self.max_size });
        }
        if !self.make_room(len).map_err(|e| self.io_error(e))? {
            return Ok(Append::Full);
        }
        if self.current_len() + len > self.segment_size && self.current_len() > HEADER_LEN {
            self.roll().map_err(|e| self.io_error(e))?;
        }
        let mut bytes = Vec::with_capacity(len as usize);
        record::encode(payload, &mut bytes);
        self.writer.write_all(&bytes).map_err(|e| self.io_error(e))?;
        if let Some(last) = self.segments.back_mut() {
            last.1 += len;
        }
        self.appended += 1;
        if self.appended - self.synced >= SYNC_RECORDS || self.last_sync.elapsed() >= SYNC_INTERVAL {
            self.sync()?;
        }
        Ok(Append::Written(self.appended))
    }

    /// Makes every append so far durable, and writes the committed position
    /// if it moved.
    pub fn sync(&mut self) -> Result<(), Error> {
        if self.synced < self.appended {
            self.writer.sync_data().map_err(|e| self.io_error(e))?;
            self.synced = self.appended;
        }
        self.last_sync = Instant::now();
        self.persist().map_err(|e| self.io_error(e))
    }

    /// Writes the committed position if it moved, then deletes the segments
    /// it has passed (never before: a crash in between only replays more).
    fn persist(&mut self) -> io::Result<()> {
        if self.persisted != Some(self.committed) {
            segment::write_position(&self.dir, self.committed)?;
            self.persisted = Some(self.committed);
        }
        self.delete_passed()
    }

    /// How many appends are durable (compare with [`Append::Written`]).
    pub fn synced(&self) -> u64 {
        self.synced
    }

    /// Whether appends are written but not yet synced.
    pub fn sync_pending(&self) -> bool {
        self.synced < self.appended || self.persisted != Some(self.committed)
    }

    /// The next record for the target, or `None` when it has read everything
    /// written so far.
    pub fn read(&mut self) -> Result<Option<Read>, Error> {
        loop {
            if !self.load().map_err(|e| self.io_error(e))? {
                return Ok(None);
            }
            let rest = &self.reader.data[self.reader.pos..];
            match record::decode(rest) {
                record::Decoded::Record { payload, len } => {
                    let payload = payload.to_vec();
                    self.reader.pos += len;
                    let after = Position { id: self.reader.id, offset: self.reader.offset() };
                    return Ok(Some(Read { token: self.track(after, false), payload }));
                }
                _ => self.skip_damage(),
            }
        }
    }

    /// Marks the record read with `token` as committed by the target; the
    /// committed position advances over every committed record before it,
    /// and is written (and passed segments deleted) at the next sync.
    pub fn commit(&mut self, token: u64) -> Result<(), Error> {
        let Some(i) = token.checked_sub(self.first_token) else { return Ok(()) };
        if let Some(entry) = self.inflight.get_mut(i as usize) {
            entry.done = true;
        }
        self.advance().map_err(|e| self.io_error(e))
    }

    /// Whether every record read has been committed and the position written.
    pub fn settled(&self) -> bool {
        self.inflight.iter().all(|e| e.done) && !self.sync_pending()
    }

    /// Bytes on disk in segment files.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.1).sum()
    }

    /// What was skipped or dropped so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The buffer's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io_error(&self, source: io::Error) -> Error {
        Error::Io { path: self.dir.clone(), source }
    }

    fn current_len(&self) -> u64 {
        self.segments.back().map_or(0, |s| s.1)
    }

    fn writing_id(&self) -> u64 {
        self.segments.back().map_or(0, |s| s.0)
    }

    fn segment_len(&self, id: u64) -> Option<u64> {
        self.segments.iter().find(|s| s.0 == id).map(|s| s.1)
    }

    fn track(&mut self, after: Position, done: bool) -> u64 {
        self.inflight.push_back(InFlight { after, done });
        let token = self.first_token + self.inflight.len() as u64 - 1;
        if done {
            // Advancing is in memory only: it cannot fail.
            let _ = self.advance();
        }
        token
    }

    /// Loads unread bytes of the reader's segment, moving to the next
    /// segment when this one is read to its end; false when caught up.
    fn load(&mut self) -> io::Result<bool> {
        loop {
            let Some(limit) = self.segment_len(self.reader.id) else {
                match self.segments.iter().find(|s| s.0 > self.reader.id) {
                    Some(&(next, _)) => self.move_reader(next),
                    None => return Ok(false),
                }
                continue;
            };
            let loaded = self.reader.start + self.reader.data.len() as u64;
            if loaded < limit {
                self.compact();
                let file = match self.reader.file.take() {
                    Some(file) => file,
                    None => File::open(segment::path(&self.dir, self.reader.id))?,
                };
                let file = self.reader.file.insert(file);
                segment::read_into(file, loaded, limit, &mut self.reader.data)?;
            }
            if self.reader.pos < self.reader.data.len() {
                return Ok(true);
            }
            if self.reader.id == self.writing_id() {
                return Ok(false);
            }
            let next = self.segments.iter().find(|s| s.0 > self.reader.id).map_or(self.reader.id + 1, |s| s.0);
            self.move_reader(next);
        }
    }

    fn move_reader(&mut self, id: u64) {
        let start = Position { id, offset: HEADER_LEN };
        self.reader = Reader::at(start);
        self.track(start, true);
    }

    fn compact(&mut self) {
        if self.reader.pos > 0 {
            self.reader.data.drain(..self.reader.pos);
            self.reader.start += self.reader.pos as u64;
            self.reader.pos = 0;
        }
    }

    /// Skips the damaged bytes at the reader's position up to the next
    /// intact record, counting and logging them once.
    fn skip_damage(&mut self) {
        let data = &self.reader.data;
        let next = record::next_record(data, self.reader.pos);
        let skipped = (next - self.reader.pos) as u64;
        tracing::warn!(
            file = %segment::path(&self.dir, self.reader.id).display(),
            offset = self.reader.offset(),
            bytes = skipped,
            "Disk buffer: skipped damaged bytes, reading on at the next intact record."
        );
        self.stats.damaged += 1;
        self.stats.damaged_bytes += skipped;
        self.reader.pos = next;
    }

    /// Pops the committed prefix of in-flight records, moving the committed
    /// position.
    fn advance(&mut self) -> io::Result<()> {
        while self.inflight.front().is_some_and(|e| e.done) {
            if let Some(e) = self.inflight.pop_front() {
                self.committed = e.after;
            }
            self.first_token += 1;
        }
        Ok(())
    }

    fn delete_passed(&mut self) -> io::Result<()> {
        while let Some(&(id, len)) = self.segments.front() {
            if id >= self.committed.id {
                break;
            }
            remove_segment(&self.dir, id)?;
            self.segments.pop_front();
            tracing::trace!(segment = id, bytes = len, "Disk buffer: segment committed and removed.");
        }
        Ok(())
    }

    /// Whether `len` more bytes fit, dropping the oldest segments first when
    /// `when_full = "drop_oldest"`.
    fn make_room(&mut self, len: u64) -> io::Result<bool> {
        while self.bytes() + len > self.max_size {
            if self.when_full == WhenFull::Block {
                self.release_caught_up()?;
                self.persist()?;
                return Ok(self.bytes() + len <= self.max_size);
            }
            if self.segments.len() == 1 {
                self.roll()?;
            }
            self.drop_oldest()?;
        }
        Ok(true)
    }

    /// When the reader has committed all of the segment being written, seals
    /// it and moves the reader on, so that the segment can be deleted.
    fn release_caught_up(&mut self) -> io::Result<()> {
        let caught_up = self.reader.id == self.writing_id()
            && self.reader.offset() == self.current_len()
            && self.inflight.iter().all(|e| e.done)
            && self.current_len() > HEADER_LEN;
        if caught_up {
            self.roll()?;
            self.move_reader(self.writing_id());
        }
        Ok(())
    }

    /// Deletes the oldest segment, counting the records in it not yet read.
    fn drop_oldest(&mut self) -> io::Result<()> {
        let Some(&(id, len)) = self.segments.front() else { return Ok(()) };
        let unread_from = match self.reader.id.cmp(&id) {
            std::cmp::Ordering::Equal => Some(self.reader.offset()),
            std::cmp::Ordering::Less => Some(HEADER_LEN),
            std::cmp::Ordering::Greater => None,
        };
        let unread = match unread_from {
            Some(from) => record::walk(&segment::read_range(&self.dir, id, from, len)?).records.len() as u64,
            None => 0,
        };
        self.stats.dropped += unread;
        remove_segment(&self.dir, id)?;
        self.segments.pop_front();
        self.inflight.iter_mut().filter(|e| e.after.id <= id).for_each(|e| e.done = true);
        if self.reader.id <= id {
            let next = self.segments.front().map_or(id + 1, |s| s.0);
            self.move_reader(next);
        }
        tracing::debug!(segment = id, dropped = unread, "Disk buffer full: dropped the oldest segment.");
        self.advance()
    }

    /// Starts a new segment for appends, syncing the one it seals.
    fn roll(&mut self) -> io::Result<()> {
        self.writer.sync_data()?;
        self.synced = self.appended;
        let id = self.writing_id() + 1;
        self.writer = segment::create(&self.dir, id)?;
        self.segments.push_back((id, HEADER_LEN));
        Ok(())
    }
}

fn remove_segment(dir: &Path, id: u64) -> io::Result<()> {
    match fs::remove_file(segment::path(dir, id)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Creates the directory if needed; a path that is not a directory, or a
/// directory that cannot be written, is an error naming it.
fn prepare_dir(dir: &Path) -> Result<(), Error> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::NotADirectory(dir.to_path_buf()));
    }
    let io = |source| Error::Io { path: dir.to_path_buf(), source };
    fs::create_dir_all(dir).map_err(io)?;
    let probe = dir.join("position.tmp");
    File::create(&probe).and_then(|_| fs::remove_file(&probe)).map_err(io)
}

/// The segments worth reading, oldest first: files too short for a header
/// are logged, counted and removed; a gap in the numbers, or a bad header,
/// is logged and counted (the records after a bad header are still read).
fn usable_segments(dir: &Path, stats: &mut Stats) -> io::Result<VecDeque<(u64, u64)>> {
    let mut kept = VecDeque::new();
    let mut prev = None;
    for (id, len) in segment::list(dir)? {
        let file = segment::path(dir, id);
        if let Some(prev) = prev.filter(|&p| id != p + 1) {
            tracing::warn!(dir = %dir.display(), from = prev + 1, to = id - 1, "Disk buffer: segments missing, reading on after them.");
            stats.bad_files += id - prev - 1;
        }
        prev = Some(id);
        if len < HEADER_LEN {
            tracing::warn!(file = %file.display(), bytes = len, "Disk buffer: skipped a segment too short for its header.");
            stats.bad_files += 1;
            fs::remove_file(&file)?;
            continue;
        }
        if !segment::header_ok(dir, id)? {
            tracing::warn!(file = %file.display(), offset = 0, "Disk buffer: segment header damaged, reading its records.");
            stats.damaged += 1;
        }
        kept.push_back((id, len));
    }
    Ok(kept)
}

/// Where reading starts: the committed position if it names a segment still
/// on disk, else the start of the oldest segment after it.
fn start_position(dir: &Path, segments: &VecDeque<(u64, u64)>) -> Position {
    let saved = segment::read_position(dir).unwrap_or_else(|damage| {
        tracing::warn!(file = %dir.join("position").display(), damage, "Disk buffer: position damaged, replaying from the oldest segment.");
        None
    });
    let oldest = |after: u64| {
        let id = segments.iter().find(|s| s.0 >= after).map_or(after, |s| s.0);
        Position { id, offset: HEADER_LEN }
    };
    match saved {
        Some(at) if segments.iter().any(|s| s.0 == at.id) => Position { offset: at.offset.max(HEADER_LEN), ..at },
        Some(at) => oldest(at.id),
        None => oldest(0),
    }
}

#[cfg(test)]
mod tests;
