//! Files and databases: the sinks that keep data (`file-write`, `sqlite`,
//! `postgres`), `file-read`, a source that reads (and can follow) a file, and
//! `postgres-read`, which polls a query or listens to a channel.
//!
//! The sinks take a batch of what is queued (the database sinks also what
//! arrives within `flush_interval`), write it whole, flush or commit it,
//! and only then drop the batch's messages, which acknowledges them. A write
//! that fails for a while keeps the batch and writes it again
//! (`crate::sink_retry`); if it fails for good, the batch's acknowledgements
//! are marked rejected before the component fails, so no source is told that
//! lost data was delivered.

pub mod file_read;
pub mod file_write;
pub mod postgres;
pub mod postgres_read;
pub mod sqlite;

use std::time::Duration;

use fbp_runtime::Message;
use fbp_runtime::queue::InPort;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::value::{self, Value};
use tokio::time::Instant;

/// The database sinks' `flush_interval` key.
pub(crate) const FLUSH_INTERVAL_KEY: KeySpec = KeySpec::new(
    "flush_interval",
    KeyType::Duration,
    "\"50ms\"",
    "How long a batch that is not full waits for more records after its first; `0s` \
     writes what is queued at once.",
);

/// Takes what is queued, up to `size`, then what arrives within `linger`
/// of the first message. `false` once the input has ended and is drained.
pub(crate) async fn next_batch(input: &mut InPort, batch: &mut Vec<Message>, size: usize, linger: Duration) -> bool {
    if !input.recv_many(batch, size).await {
        return false;
    }
    let deadline = Instant::now() + linger;
    while batch.len() < size && !linger.is_zero() {
        match tokio::time::timeout_at(deadline, input.recv_many(batch, size - batch.len())).await {
            Ok(true) => {}
            Ok(false) | Err(_) => break,
        }
    }
    true
}

/// Marks every message of a batch that could not be written as rejected.
pub(crate) fn reject_all(batch: &[Message]) {
    batch.iter().filter_map(|m| m.ack.as_ref()).for_each(|ack| ack.reject());
}

/// Columns for a table made from a record: its fields (named by something
/// SQL can quote), typed by `column_type` from their values.
pub(crate) fn record_columns(record: &Value, column_type: fn(&Value) -> &'static str) -> Vec<(String, String)> {
    let Value::Obj(fields) = record else {
        return Vec::new();
    };
    fields
        .iter()
        .filter_map(|(k, v)| Some((value::as_str(k)?.into_owned(), column_type(v).to_string())))
        .filter(|(name, _)| !name.is_empty() && !name.contains('\0'))
        .collect()
}

#[cfg(test)]
pub(crate) mod test_support {
    //! A temporary folder per test, removed when dropped.

    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("fbp-{name}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            TempDir(dir)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }

        /// `self/rel` as a string, for configs.
        pub(crate) fn join(&self, rel: &str) -> String {
            self.0.join(rel).to_string_lossy().into_owned()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
