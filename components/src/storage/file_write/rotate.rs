//! Size-based rotation: where in a batch to start a new file, and the
//! renames that keep `max_files` old files (`out.jsonl.1` the newest).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Offsets in a batch's text at which a new file starts, given the size of
/// the current file and where each line of the batch ends, the lines before
/// `from` being written already. A file passes `max` only when one line alone
/// does; a line is never split.
pub(super) fn rotation_points(mut size: u64, max: u64, line_ends: &[usize], from: usize) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut start = from;
    for &end in line_ends.iter().filter(|&&end| end > from) {
        let len = (end - start) as u64;
        if size > 0 && size.saturating_add(len) > max {
            cuts.push(start);
            size = 0;
        }
        size += len;
        start = end;
    }
    cuts
}

/// `path` with `.n` appended: `out.jsonl.1`.
pub(super) fn rotated_name(path: &Path, n: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Shifts `path.1` to `path.2` and so on (the one past `max_files` is
/// overwritten, so dropped), then `path` to `path.1`. With `max_files = 0`
/// the file is removed.
pub(super) async fn rotate(path: &Path, max_files: u64) -> std::io::Result<()> {
    if max_files == 0 {
        return ignore_missing(tokio::fs::remove_file(path).await);
    }
    for n in (1..max_files).rev() {
        ignore_missing(tokio::fs::rename(rotated_name(path, n), rotated_name(path, n + 1)).await)?;
    }
    ignore_missing(tokio::fs::rename(path, rotated_name(path, 1)).await)
}

fn ignore_missing(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_support::TempDir;

    #[test]
    fn lines_that_fit_stay_in_the_current_file() {
        assert_eq!(rotation_points(0, 10, &[3, 6, 9], 0), Vec::<usize>::new());
        assert_eq!(rotation_points(1, 10, &[3, 6, 9], 0), Vec::<usize>::new());
    }

    #[test]
    fn a_new_file_starts_before_the_line_that_would_pass_the_limit() {
        assert_eq!(rotation_points(0, 10, &[4, 8, 12, 16, 20], 0), [8, 16]);
        // The current file is already near the limit: the first line goes to a new file.
        assert_eq!(rotation_points(8, 10, &[4], 0), [0]);
    }

    #[test]
    fn a_line_longer_than_the_limit_gets_a_file_of_its_own() {
        assert_eq!(rotation_points(0, 10, &[2, 30, 32], 0), [2, 30]);
        assert_eq!(rotation_points(0, 10, &[25], 0), Vec::<usize>::new());
    }

    #[test]
    fn lines_written_already_are_left_out() {
        // The first two lines went to a file of 8 bytes before a failure.
        assert_eq!(rotation_points(8, 10, &[4, 8, 12, 16, 20], 8), [8, 16]);
        assert_eq!(rotation_points(0, 10, &[4, 8, 12, 16, 20], 16), Vec::<usize>::new());
    }

    #[test]
    fn rotated_names_append_the_number() {
        assert_eq!(rotated_name(Path::new("a/out.jsonl"), 3), Path::new("a/out.jsonl.3"));
    }

    #[tokio::test]
    async fn rotate_shifts_the_old_files_and_drops_the_oldest() {
        let dir = TempDir::new("rotate");
        let path = dir.path().join("out.log");
        let read = |n| std::fs::read_to_string(rotated_name(&path, n)).ok();
        for round in 1..=4 {
            std::fs::write(&path, format!("{round}")).unwrap();
            rotate(&path, 2).await.unwrap();
        }
        assert!(!path.exists());
        assert_eq!((read(1), read(2), read(3)), (Some("4".into()), Some("3".into()), None));
    }

    #[tokio::test]
    async fn rotate_with_no_files_kept_removes_the_file() {
        let dir = TempDir::new("rotate");
        let path = dir.path().join("out.log");
        std::fs::write(&path, "x").unwrap();
        rotate(&path, 0).await.unwrap();
        assert!(!path.exists() && !rotated_name(&path, 1).exists());
    }
}
