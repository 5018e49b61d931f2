//! Standard input read line by line on a thread of its own, into a bounded
//! channel that the instances of `stdin` take their lines from in turn.

use std::io::{self, BufRead};
use std::sync::{Arc, OnceLock};

use tokio::sync::{Mutex, mpsc};

/// Lines read ahead of the out-port at most.
const READ_AHEAD: usize = 1024;

/// A line read: its bytes (at most the limit), and whether it was cut.
pub(super) type Line = io::Result<(Vec<u8>, bool)>;

/// Lines of an input, shared by the instances that read it one after another.
pub(super) type Lines = Arc<Mutex<mpsc::Receiver<Line>>>;

/// The process's standard input, read by one thread for the whole run.
pub(super) fn stdin_lines(max_line: usize) -> Lines {
    static LINES: OnceLock<Lines> = OnceLock::new();
    LINES.get_or_init(|| read_lines(io::BufReader::new(io::stdin()), max_line)).clone()
}

/// Starts a thread that reads `input` line by line (without `\n` or `\r\n`)
/// into a bounded channel; the channel closes at the end or after an error.
pub(super) fn read_lines(mut input: impl BufRead + Send + 'static, max_line: usize) -> Lines {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let spawned = std::thread::Builder::new().name("fbp-stdin".into()).spawn(move || {
        loop {
            let next = match read_line(&mut input, max_line) {
                Ok(None) => break,
                Ok(Some(line)) => Ok(line),
                Err(e) => Err(e),
            };
            let failed = next.is_err();
            if tx.blocking_send(next).is_err() || failed {
                break;
            }
        }
    });
    if let Err(e) = spawned {
        let (tx, rx) = mpsc::channel(1);
        let _ = tx.try_send(Err(e));
        return Arc::new(Mutex::new(rx));
    }
    Arc::new(Mutex::new(rx))
}

/// The next line, cut to `max` bytes (the rest skipped) and flagged when
/// longer; an unterminated last line counts; `None` at the end.
fn read_line(input: &mut impl BufRead, max: usize) -> io::Result<Option<(Vec<u8>, bool)>> {
    let (mut line, mut too_long, mut any) = (Vec::new(), false, false);
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Ok(any.then(|| (without_cr(line), too_long)));
        }
        any = true;
        let (used, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let body = &chunk[..used - usize::from(done)];
        let room = max.saturating_sub(line.len());
        too_long |= body.len() > room;
        line.extend_from_slice(&body[..body.len().min(room)]);
        input.consume(used);
        if done {
            return Ok(Some((without_cr(line), too_long)));
        }
    }
}

/// A line without its last `\r`: `\r\n` ends a line as `\n` does, and an
/// unterminated last line loses it too, as `tcp-listen` and `file-read` do.
fn without_cr(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    line
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str, max: usize) -> Vec<(String, bool)> {
        let mut input = io::Cursor::new(text.as_bytes());
        std::iter::from_fn(|| read_line(&mut input, max).unwrap())
            .map(|(bytes, cut)| (String::from_utf8(bytes).unwrap(), cut))
            .collect()
    }

    #[test]
    fn lines_lose_their_endings_and_an_unterminated_last_line_counts() {
        let want = [("a".to_string(), false), (String::new(), false), ("b".to_string(), false)];
        assert_eq!(all("a\r\n\nb", 10), want);
        assert_eq!(all("", 10), []);
    }

    #[test]
    fn an_unterminated_last_line_loses_its_cr_too() {
        assert_eq!(all("a\r\nlast\r", 10), [("a".to_string(), false), ("last".to_string(), false)]);
    }

    #[test]
    fn a_long_line_is_cut_flagged_and_the_next_read_whole() {
        assert_eq!(all("abcdef\nxy\n", 3), [("abc".to_string(), true), ("xy".to_string(), false)]);
    }
}
