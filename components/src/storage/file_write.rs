//! `file-write`: append messages to a file, one per line, rotating it by size.
//!
//! - this file: the declaration, the config and the task;
//! - `rotate`: where a batch crosses `max_size`, and the renames.

mod rotate;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use fbp_runtime::link::Backoff;
use fbp_runtime::queue::InPort;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::units::positive_size;
use fbp_runtime::value::{self, Value};
use fbp_runtime::{
    Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, PortSpec, Task, TaskFuture,
};
use serde::Deserialize;
use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;

use crate::sink_retry::{Fault, Retry, give_up};

/// The pause between attempts while writes fail for a while.
const RETRY: Backoff = Backoff { min: Duration::from_millis(100), max: Duration::from_secs(5) };

/// The `file-write` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "file-write",
    summary: "Write messages to a file, one per line.",
    doc: "Writes each message as one line: `json` writes the wire envelope `{\"data\": .., \
          \"metadata\": {..}}` (JSON lines), `lines` writes the payload as JSON, or as is when it \
          is a string or bytes (adding a newline unless it ends with one). Lines are written whole, \
          a batch at a time; each batch is flushed before its messages are acknowledged. \
          Creates missing parent folders. With `max_size`, the file is rotated before a line \
          would take it past that size: `PATH` becomes `PATH.1`, `PATH.1` becomes `PATH.2` and so \
          on, keeping `max_files` old files, and a new `PATH` is started; a line is never split \
          across files (a line bigger than `max_size` gets a file of its own). A write to a \
          regular file that fails for a while (the disk full or over quota, an I/O error) keeps \
          the batch: what the failed write left is cut off and the batch goes on from the first \
          line not written, after a pause (100ms doubling to 5s), until it is in, logged once \
          per episode; at shutdown the pause ends at once and the batch is rejected, not \
          acknowledged. Another write or rotation error (no permission, a device such as \
          `/dev/full`) is a failure: the batch is rejected and the component is restarted.",
    kind: Kind::Sink,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "messages to write" }],
    outputs: &[],
    config: &[
        KeySpec::required(
            "path",
            KeyType::String,
            "The file to write; a relative path is taken from the flow file's folder.",
        ),
        KeySpec::new(
            "format",
            KeyType::Enum(&["json", "lines"]),
            "\"json\"",
            "`json`: one envelope with metadata per line; `lines`: the payload per line, as JSON or as \
             raw text when it is a string.",
        ),
        KeySpec::new(
            "append",
            KeyType::Bool,
            "true",
            "Append to the file; `false` empties it each time the component starts (restarts \
             included).",
        ),
        KeySpec::optional(
            "max_size",
            KeyType::String,
            "Rotate the file before it would pass this size, e.g. `\"10MiB\"` or `\"1GB\"`. Unset: \
             the file grows without limit.",
        ),
        KeySpec::new(
            "max_files",
            KeyType::Integer,
            "5",
            "With `max_size`: how many rotated files to keep, `PATH.1` (the newest) to `PATH.N`; \
             older ones are deleted. 0 keeps none.",
        ),
    ],
    delivery: Delivery::AtLeastOnce,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.archive]\ntype = \"file-write\"\nconfig = { path = \"out/readings.jsonl\", format = \"json\", max_size = \"10MiB\", max_files = 3 }\n",
    build,
    ports: None,
    probe: Some(crate::probe::FILE_WRITE),
};

/// Messages taken from the input at a time.
const BATCH: usize = 256;

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Format {
    Json,
    Lines,
}

#[derive(Deserialize)]
struct Config {
    path: String,
    format: Format,
    append: bool,
    max_size: Option<String>,
    max_files: i64,
}

struct FileWrite {
    path: PathBuf,
    format: Format,
    append: bool,
    rotation: Option<Rotation>,
}

/// When to rotate, and how many old files to keep.
#[derive(Clone, Copy, Debug)]
struct Rotation {
    max_size: u64,
    max_files: u64,
}

/// The open file and its size.
struct Out {
    file: File,
    size: u64,
    /// A regular file (not a device such as `/dev/full`, which never gains room).
    regular: bool,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    if config.path.is_empty() {
        return Err("`path` is empty".into());
    }
    let rotation = config.max_size.as_deref().map(|s| rotation(s, config.max_files)).transpose()?;
    Ok(Instance::task(FileWrite {
        path: ctx.path(&config.path),
        format: config.format,
        append: config.append,
        rotation,
    }))
}

fn rotation(max_size: &str, max_files: i64) -> Result<Rotation, String> {
    let max_size = positive_size("max_size", max_size)? as u64;
    let max_files =
        u64::try_from(max_files).map_err(|_| format!("`max_files` must be 0 or more, found {max_files}"))?;
    Ok(Rotation { max_size, max_files })
}

impl Task for FileWrite {
    fn run(self: Box<Self>, mut ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let mut input = ctx.input("in");
            let mut out = self.open().await.map_err(|e| self.failure("open", e))?;
            self.write_all(&mut input, &mut out, &ctx).await
        })
    }
}

impl FileWrite {
    async fn open(&self) -> std::io::Result<Out> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut options = OpenOptions::new();
        options.create(true);
        if self.append {
            options.append(true);
        } else {
            options.write(true).truncate(true);
        }
        let file = options.open(&self.path).await?;
        let meta = file.metadata().await?;
        Ok(Out { file, size: meta.len(), regular: meta.is_file() })
    }

    /// Writes batch after batch; a batch is dropped (acknowledged) only once
    /// flushed. A write that fails for a while (a full disk, an I/O error) is
    /// tried again after a pause from where it stopped; any other is a failure.
    async fn write_all(&self, input: &mut InPort, out: &mut Out, ctx: &Context) -> Result<(), Failure> {
        let mut batch = Vec::with_capacity(BATCH);
        let (mut text, mut ends) = (Vec::new(), Vec::new());
        let mut retry = Retry::new(ctx.name.clone(), format!("file {}", self.path.display()), RETRY);
        while input.recv_many(&mut batch, BATCH).await {
            text.clear();
            ends.clear();
            for msg in &batch {
                self.render(msg, &mut text);
                ends.push(text.len());
            }
            let mut done = 0;
            while let Err(e) = self.write(out, &text, &ends, &mut done).await {
                let fault = self.fault(e, out.regular);
                if let Err(stop) = retry.failed(fault, ctx.shutdown()).await {
                    give_up(stop, &batch, ctx)?;
                    break;
                }
            }
            retry.written();
            batch.clear();
        }
        Ok(())
    }

    /// Writes a batch's lines (ending at `ends`) from offset `done`, rotating
    /// where the file would pass `max_size`; `done` is how far it got.
    async fn write(&self, out: &mut Out, text: &[u8], ends: &[usize], done: &mut usize) -> std::io::Result<()> {
        let Some(rotation) = self.rotation else {
            out.write(&text[*done..]).await?;
            *done = text.len();
            return Ok(());
        };
        for cut in rotate::rotation_points(out.size, rotation.max_size, ends, *done) {
            out.write(&text[*done..cut]).await?;
            *done = cut;
            rotate::rotate(&self.path, rotation.max_files)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("rotating: {e}")))?;
            *out = self.open().await?;
        }
        out.write(&text[*done..]).await?;
        *done = text.len();
        Ok(())
    }

    /// A write error as a fault: transient when, writing a regular file, the
    /// disk is full (or over quota) or reports an I/O error, which may pass;
    /// else permanent.
    fn fault(&self, e: std::io::Error, regular: bool) -> Fault {
        let passing = regular && passes(&e);
        let why = self.failure("write to", e).0;
        if passing { Fault::Transient(why) } else { Fault::Permanent(why) }
    }

    fn render(&self, msg: &Message, text: &mut Vec<u8>) {
        let start = text.len();
        match (self.format, &msg.payload) {
            (Format::Json, _) => text.extend_from_slice(msg.to_envelope().as_bytes()),
            (Format::Lines, Value::TStr(raw) | Value::BStr(raw)) => text.extend_from_slice(raw),
            (Format::Lines, other) => text.extend_from_slice(value::to_json_string(other).as_bytes()),
        }
        if !text[start..].ends_with(b"\n") {
            text.push(b'\n');
        }
    }

    fn failure(&self, doing: &str, e: std::io::Error) -> Failure {
        Failure(format!("cannot {doing} `{}`: {e}", self.path.display()))
    }
}

/// Whether a write error may pass: the disk full or over quota, an I/O
/// error of the device (EIO), an interrupted or timed-out write.
fn passes(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    /// EIO on Linux and the BSDs.
    const EIO: i32 = 5;
    matches!(e.kind(), K::StorageFull | K::QuotaExceeded | K::Interrupted | K::TimedOut | K::ResourceBusy)
        || e.raw_os_error() == Some(EIO)
}

impl Out {
    /// Writes and flushes `text`. If that fails, what it wrote of `text` is
    /// cut off again (as far as the file allows), so a retry writes no line twice.
    async fn write(&mut self, text: &[u8]) -> std::io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.write_flushed(text).await {
            let _ = self.file.set_len(self.size).await;
            return Err(e);
        }
        self.size += text.len() as u64;
        Ok(())
    }

    async fn write_flushed(&mut self, text: &[u8]) -> std::io::Result<()> {
        self.file.write_all(text).await?;
        self.file.flush().await
    }
}
