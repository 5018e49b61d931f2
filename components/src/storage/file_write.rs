//! `file-write`: append messages to a file, one per line.

use std::path::PathBuf;

use fbp_runtime::queue::InPort;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::value::{self, Value};
use fbp_runtime::{
    BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, PortSpec, Task, TaskFuture,
};
use serde::Deserialize;
use tokio::fs::{File, OpenOptions};
use tokio::io::AsyncWriteExt;

use crate::storage::reject_all;

/// The `file-write` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "file-write",
    summary: "Write messages to a file, one per line.",
    doc: "Writes each message as one line: `json` writes the wire envelope `{\"data\": .., \
          \"metadata\": {..}}` (JSON lines), `lines` writes the payload as JSON, or as is when it \
          is a string or bytes (adding a newline unless it ends with one). Lines are written whole, \
          a batch at a time; each batch is flushed before its messages are acknowledged. \
          Creates missing parent folders. A write error is a failure: the component is restarted.",
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
    ],
    delivery: Delivery::AtLeastOnce,
    stateless: false,
    example: "[components.archive]\ntype = \"file-write\"\nconfig = { path = \"out/readings.jsonl\", format = \"json\" }\n",
    build,
    ports: None,
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
}

struct FileWrite {
    path: PathBuf,
    format: Format,
    append: bool,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    if config.path.is_empty() {
        return Err("`path` is empty".into());
    }
    Ok(Instance::task(FileWrite { path: ctx.path(&config.path), format: config.format, append: config.append }))
}

impl Task for FileWrite {
    fn run(self: Box<Self>, mut ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let mut input = ctx.input("in");
            let mut file = self.open().await.map_err(|e| self.failure("open", e))?;
            self.write_all(&mut input, &mut file).await
        })
    }
}

impl FileWrite {
    async fn open(&self) -> std::io::Result<File> {
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
        options.open(&self.path).await
    }

    /// Writes batch after batch; a batch is dropped (acknowledged) only once flushed.
    async fn write_all(&self, input: &mut InPort, file: &mut File) -> Result<(), Failure> {
        let mut batch = Vec::with_capacity(BATCH);
        let mut text = Vec::new();
        while input.recv_many(&mut batch, BATCH).await {
            text.clear();
            batch.iter().for_each(|msg| self.render(msg, &mut text));
            if let Err(e) = write_flush(file, &text).await {
                reject_all(&batch);
                return Err(self.failure("write to", e));
            }
            batch.clear();
        }
        Ok(())
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

async fn write_flush(file: &mut File, text: &[u8]) -> std::io::Result<()> {
    file.write_all(text).await?;
    file.flush().await
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use fbp_runtime::testing::Harness;
    use fbp_runtime::{Ack, Message, Meta, Outcome, value};
    use serde_json::json;

    use crate::storage::test_support::TempDir;

    async fn write(config: serde_json::Value, payloads: &[&str]) -> Result<(), String> {
        let mut h = Harness::new(&super::SPEC, config);
        payloads.iter().for_each(|p| h.push_json(p));
        h.run_to_end().await.result.unwrap().map_err(|e| e.0)
    }

    #[tokio::test]
    async fn json_writes_an_envelope_per_line_and_appends() {
        let dir = TempDir::new("file-write");
        let path = dir.join("out.jsonl");
        write(json!({"path": path}), &[r#"{"a": 1}"#, "2"]).await.unwrap();
        write(json!({"path": path}), &["3"]).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let data: Vec<_> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|env| {
                assert_eq!(env["metadata"]["source"], "test");
                env["data"].clone()
            })
            .collect();
        assert_eq!(data, [json!({"a": 1}), json!(2), json!(3)]);
    }

    #[tokio::test]
    async fn lines_writes_strings_raw_and_the_rest_as_json() {
        let dir = TempDir::new("file-write");
        let path = dir.join("out.txt");
        let payloads = [r#""plain text""#, r#""ends with newline\n""#, r#""""#, r#"{"b": [1, 2]}"#];
        write(json!({"path": path, "format": "lines"}), &payloads).await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "plain text\nends with newline\n\n{\"b\":[1,2]}\n");
    }

    #[tokio::test]
    async fn append_false_starts_the_file_afresh() {
        let dir = TempDir::new("file-write");
        let path = dir.join("out.txt");
        std::fs::write(&path, "old line\n").unwrap();
        write(json!({"path": path, "format": "lines", "append": false}), &["1"]).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
    }

    #[tokio::test]
    async fn creates_missing_parent_folders() {
        let dir = TempDir::new("file-write");
        let path = dir.join("a/b/out.txt");
        write(json!({"path": path, "format": "lines"}), &["1"]).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
    }

    #[tokio::test]
    async fn acknowledges_only_once_the_line_is_in_the_file() {
        let dir = TempDir::new("file-write");
        let path = dir.join("out.txt");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut h = Harness::new(&super::SPEC, json!({"path": path, "format": "lines"}));
        let (s, p) = (seen.clone(), path.clone());
        let mut msg = Message::new(value::int(42), Meta::new("t".into(), 0));
        msg.ack = Some(Ack::new(move |o| s.lock().unwrap().push((o, std::fs::read_to_string(&p).unwrap()))));
        h.push_message("in", msg);
        assert!(matches!(h.run_to_end().await.result, Some(Ok(()))));
        assert_eq!(*seen.lock().unwrap(), [(Outcome::Delivered, "42\n".to_string())]);
    }

    #[tokio::test]
    async fn a_file_it_cannot_open_is_a_failure() {
        let dir = TempDir::new("file-write");
        let err = write(json!({"path": dir.path()}), &["1"]).await.unwrap_err();
        assert!(err.starts_with("cannot open") && err.contains(&*dir.path().to_string_lossy()), "{err}");
    }

    #[tokio::test]
    async fn a_failed_write_rejects_the_batch_and_fails() {
        let full = std::path::Path::new("/dev/full");
        if !full.exists() {
            return;
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut h = Harness::new(&super::SPEC, json!({"path": full}));
        let s = seen.clone();
        let mut msg = Message::new(value::int(1), Meta::new("t".into(), 0));
        msg.ack = Some(Ack::new(move |o| s.lock().unwrap().push(o)));
        h.push_message("in", msg);
        let err = h.run_to_end().await.result.unwrap().unwrap_err().0;
        assert!(err.starts_with("cannot write to `/dev/full`"), "{err}");
        assert_eq!(*seen.lock().unwrap(), [Outcome::Rejected]);
    }
}
