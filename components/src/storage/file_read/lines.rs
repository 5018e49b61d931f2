//! Reading a file line by line, and following it as it grows, is truncated
//! or is replaced (rotation), like `tail -F`.
//!
//! Nothing here knows about messages or formats: [`LineReader::next`] gives
//! the next complete line, [`Next::Idle`] when a followed file has nothing
//! more for now, and [`LineReader::check`] (called after a pause) notices a
//! truncated or replaced file. Memory stays bounded: a line longer than the
//! limit is cut and flagged, the rest of it skipped.

use std::io::{ErrorKind, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::fs::File;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};

/// One line, without its `\n` (or `\r\n`).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Line {
    /// The line's bytes (at most the limit; a UTF-8 byte order mark at the
    /// start of a file is removed).
    pub(super) bytes: Vec<u8>,
    /// Whether the line starts the file (a CSV header).
    pub(super) first: bool,
    /// Whether the line was longer than the limit and was cut.
    pub(super) too_long: bool,
}

/// What [`LineReader::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// A complete line (or, without follow, the unterminated last line).
    Line(Line),
    /// Following: nothing more for now; pause, then call [`LineReader::check`].
    Idle,
    /// Not following: the end of the file.
    End,
}

/// Identity of a file on disk, to notice that its path names another one.
type FileId = Option<(u64, u64)>;

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata) -> FileId {
    None
}

/// An open file and how far into it we have read.
struct Open {
    reader: BufReader<File>,
    id: FileId,
    pos: u64,
}

/// The line being read.
#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    start: Option<u64>,
    too_long: bool,
}

impl Pending {
    fn push(&mut self, at: u64, bytes: &[u8], max: usize) {
        self.start.get_or_insert(at);
        let room = max.saturating_sub(self.buf.len());
        self.too_long |= bytes.len() > room;
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn take(&mut self) -> Option<Line> {
        let start = self.start.take()?;
        let mut bytes = std::mem::take(&mut self.buf);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if start == 0 && bytes.starts_with(b"\xEF\xBB\xBF") {
            bytes.drain(..3);
        }
        Some(Line { bytes, first: start == 0, too_long: std::mem::take(&mut self.too_long) })
    }

    fn clear(&mut self) {
        *self = Pending::default();
    }
}

/// Reads lines from one path, optionally following it.
pub(super) struct LineReader {
    path: PathBuf,
    follow: bool,
    max_line: usize,
    file: Option<Open>,
    pending: Pending,
    /// The path now names another file: finish this one, then switch, once
    /// it has given nothing for `rotate_grace` (a writer may go on appending
    /// to it for a while, say until it is told to reopen its log). Holds when
    /// it last gave something, or when the new file was noticed.
    draining: Option<tokio::time::Instant>,
    /// The file the path named when the rotation was noticed, opened then
    /// (so a second rotation during the grace does not skip it).
    next: Option<Open>,
    rotate_grace: Duration,
}

impl LineReader {
    /// Opens `path`, at its end when `from_end`. Following, a missing file is
    /// waited for; otherwise it is an error.
    #[cfg(test)]
    pub(super) async fn open(path: &Path, follow: bool, from_end: bool, max_line: usize) -> std::io::Result<Self> {
        Self::open_with_grace(path, follow, from_end, max_line, Duration::ZERO).await
    }

    /// [`LineReader::open`], a replaced file read on until it has been quiet
    /// for `rotate_grace`.
    pub(super) async fn open_with_grace(
        path: &Path,
        follow: bool,
        from_end: bool,
        max_line: usize,
        rotate_grace: Duration,
    ) -> std::io::Result<Self> {
        let mut file = match open(path).await? {
            Some(f) => Some(f),
            None if follow => {
                tracing::warn!(path = %path.display(), "File to follow does not exist yet; waiting for it.");
                None
            }
            None => return Err(std::io::Error::new(ErrorKind::NotFound, "no such file")),
        };
        if let (Some(f), true) = (&mut file, from_end) {
            f.pos = f.reader.seek(SeekFrom::End(0)).await?;
        }
        Ok(LineReader {
            path: path.to_path_buf(),
            follow,
            max_line,
            file,
            pending: Pending::default(),
            draining: None,
            next: None,
            rotate_grace,
        })
    }

    /// The next line, [`Next::Idle`] or [`Next::End`].
    pub(super) async fn next(&mut self) -> std::io::Result<Next> {
        loop {
            let Some(file) = self.file.as_mut() else {
                return Ok(if self.follow { Next::Idle } else { Next::End });
            };
            if let Some(line) = read_line(file, &mut self.pending, self.max_line).await? {
                if let Some(since) = &mut self.draining {
                    *since = tokio::time::Instant::now();
                }
                return Ok(Next::Line(line));
            }
            if self.draining.is_some_and(|since| since.elapsed() < self.rotate_grace) {
                return Ok(Next::Idle);
            }
            if self.draining.is_some() {
                // The old file is done: its unterminated last line will not be completed.
                self.draining = None;
                let partial = self.pending.take();
                self.file = match self.next.take() {
                    Some(next) => Some(next),
                    None => open(&self.path).await?,
                };
                tracing::info!(path = %self.path.display(), "Followed file was replaced; reading the new one.");
                if let Some(line) = partial {
                    return Ok(Next::Line(line));
                }
            } else if self.follow {
                return Ok(Next::Idle);
            } else {
                return Ok(self.pending.take().map_or(Next::End, Next::Line));
            }
        }
    }

    /// After a pause: notices a file that appeared, was truncated or was replaced.
    pub(super) async fn check(&mut self) -> std::io::Result<()> {
        let meta = match tokio::fs::metadata(&self.path).await {
            Ok(meta) => meta,
            // Moved away or deleted: keep reading what is open until a new file appears.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        match &mut self.file {
            None => self.file = open(&self.path).await?,
            Some(f) if f.id.is_some() && f.id != file_id(&meta) => {
                if self.draining.is_none() {
                    self.draining = Some(tokio::time::Instant::now());
                    self.next = open(&self.path).await?;
                }
            }
            Some(f) if meta.len() < f.pos => {
                tracing::warn!(path = %self.path.display(), "Followed file was truncated; reading it from the start.");
                f.pos = f.reader.seek(SeekFrom::Start(0)).await?;
                self.pending.clear();
            }
            Some(_) => {}
        }
        Ok(())
    }
}

/// Opens `path` for reading; `None` when it does not exist.
async fn open(path: &Path) -> std::io::Result<Option<Open>> {
    let file = match File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let id = file_id(&file.metadata().await?);
    Ok(Some(Open { reader: BufReader::new(file), id, pos: 0 }))
}

/// Reads up to the next `\n`; `None` at the end of the file, with any
/// unterminated line kept in `pending`.
async fn read_line(file: &mut Open, pending: &mut Pending, max: usize) -> std::io::Result<Option<Line>> {
    loop {
        let chunk = file.reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(None);
        }
        let (used, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        pending.push(file.pos, &chunk[..used - usize::from(done)], max);
        file.reader.consume(used);
        file.pos += used as u64;
        if done {
            return Ok(pending.take());
        }
    }
}

/// The first line of the file at `path` (a CSV header), if it has one.
pub(super) async fn first_line(path: &Path, max_line: usize) -> std::io::Result<Option<Line>> {
    let Some(mut file) = open(path).await? else {
        return Ok(None);
    };
    read_line(&mut file, &mut Pending::default(), max_line).await
}

#[cfg(test)]
mod fuzz;
