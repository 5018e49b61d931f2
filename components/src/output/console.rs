//! `console`: print messages on standard output.
//!
//! Each batch taken from the input is rendered whole, written to stdout under
//! its lock (so two consoles never interleave their lines) on tokio's
//! blocking pool, flushed, and only then dropped, which acknowledges it.

use std::future::Future;
use std::io::{self, Write};

use fbp_runtime::queue::InPort;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::value::{self, Json};
use fbp_runtime::{
    Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, PortSpec, Task, TaskFuture,
};
use serde::Deserialize;

/// The `console` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "console",
    summary: "Print messages on standard output.",
    doc: "Prints each message on stdout: `simple` prints the payload as one line of JSON, `json` \
          the wire envelope `{\"data\": .., \"metadata\": {..}}` on one line, `pretty` the payload \
          as indented JSON over several lines. Output is written and flushed a batch at a time, \
          and a message is acknowledged once it has been flushed.",
    kind: Kind::Sink,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "messages to print" }],
    outputs: &[],
    config: &[KeySpec::new(
        "format",
        KeyType::Enum(&["simple", "json", "pretty"]),
        "\"simple\"",
        "`simple`: the payload as one line of JSON; `json`: the envelope with metadata, one line; \
         `pretty`: the payload as indented JSON.",
    )],
    delivery: Delivery::AtLeastOnce,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.alert]\ntype = \"console\"\nconfig = { format = \"json\" }\n",
    build,
    ports: None,
};

/// Messages taken from the input at a time.
const BATCH: usize = 256;

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Format {
    Simple,
    Json,
    Pretty,
}

#[derive(Deserialize)]
struct Config {
    format: Format,
}

struct Console {
    format: Format,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    Ok(Instance::task(Console { format: config.format }))
}

impl Task for Console {
    fn run(self: Box<Self>, mut ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let mut input = ctx.input("in");
            print(&mut input, self.format, write_stdout).await
        })
    }
}

/// Renders and writes each batch; drops (acknowledges) it once `write` has
/// written and flushed it. `write` hands its buffer back for reuse.
async fn print<W, F>(input: &mut InPort, format: Format, mut write: W) -> Result<(), Failure>
where
    W: FnMut(Vec<u8>) -> F,
    F: Future<Output = io::Result<Vec<u8>>>,
{
    let mut batch = Vec::with_capacity(BATCH);
    let mut text = Vec::new();
    while input.recv_many(&mut batch, BATCH).await {
        text.clear();
        for msg in &batch {
            render(format, msg, &mut text);
        }
        text = write(text).await.map_err(|e| Failure(format!("cannot write to stdout: {e}")))?;
        batch.clear();
    }
    Ok(())
}

fn render(format: Format, msg: &Message, text: &mut Vec<u8>) {
    let rendered = match format {
        Format::Simple => value::to_json_string(&msg.payload),
        Format::Json => msg.to_envelope(),
        Format::Pretty => serde_json::to_string_pretty(&Json(&msg.payload)).unwrap_or_else(|_| "null".into()),
    };
    text.extend_from_slice(rendered.as_bytes());
    text.push(b'\n');
}

/// Writes and flushes `text` under the stdout lock, off the async threads.
async fn write_stdout(text: Vec<u8>) -> io::Result<Vec<u8>> {
    tokio::task::spawn_blocking(move || {
        let mut out = io::stdout().lock();
        out.write_all(&text)?;
        out.flush()?;
        Ok(text)
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use fbp_runtime::queue::{Queue, WhenFull};
    use fbp_runtime::{Ack, Meta, Outcome};

    use super::*;

    /// Prints `payloads` (JSON texts) and returns what was written.
    async fn printed(format: Format, payloads: &[&str]) -> String {
        let q = Queue::new(16, WhenFull::Block);
        for (seq, p) in payloads.iter().enumerate() {
            let msg = Message::new(value::parse_json(p.as_bytes()).unwrap(), Meta::new("src".into(), seq as u64));
            q.sender().0.try_send(msg).unwrap();
        }
        q.close();
        let written = Arc::new(Mutex::new(Vec::new()));
        let sink = written.clone();
        let write = move |text: Vec<u8>| {
            sink.lock().unwrap().extend_from_slice(&text);
            std::future::ready(Ok(text))
        };
        print(&mut InPort::new(vec![q.receiver()], Arc::default()), format, write).await.unwrap();
        String::from_utf8(written.lock().unwrap().clone()).unwrap()
    }

    #[tokio::test]
    async fn simple_prints_each_payload_as_one_line() {
        let text = printed(Format::Simple, &[r#"{"a": 1, "b": [true]}"#, r#""x""#]).await;
        assert_eq!(text, "{\"a\":1,\"b\":[true]}\n\"x\"\n");
    }

    #[tokio::test]
    async fn json_prints_the_envelope() {
        let text = printed(Format::Json, &[r#"{"a": 1}"#]).await;
        let env: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(env["data"], serde_json::json!({"a": 1}));
        assert_eq!(env["metadata"]["source"], "src");
        assert_eq!(text.lines().count(), 1);
    }

    #[tokio::test]
    async fn pretty_indents_over_several_lines() {
        let text = printed(Format::Pretty, &[r#"{"a": 1}"#]).await;
        assert_eq!(text, "{\n  \"a\": 1\n}\n");
    }

    #[tokio::test]
    async fn acknowledges_only_after_the_write_is_flushed() {
        let q = Queue::new(4, WhenFull::Block);
        let written = Arc::new(Mutex::new(Vec::<u8>::new()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (w, s) = (written.clone(), seen.clone());
        let mut msg = Message::new(value::int(7), Meta::new("src".into(), 0));
        msg.ack = Some(Ack::new(move |o| s.lock().unwrap().push((o, w.lock().unwrap().clone()))));
        q.sender().0.try_send(msg).unwrap();
        q.close();
        let sink = written.clone();
        let write = move |text: Vec<u8>| {
            sink.lock().unwrap().extend_from_slice(&text);
            std::future::ready(Ok(text))
        };
        print(&mut InPort::new(vec![q.receiver()], Arc::default()), Format::Simple, write).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), [(Outcome::Delivered, b"7\n".to_vec())]);
    }

    #[tokio::test]
    async fn a_write_error_is_a_failure() {
        let q = Queue::new(4, WhenFull::Block);
        q.sender().0.try_send(Message::new(value::int(1), Meta::new("src".into(), 0))).unwrap();
        q.close();
        let write = |_: Vec<u8>| std::future::ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)));
        let err = print(&mut InPort::new(vec![q.receiver()], Arc::default()), Format::Simple, write).await.unwrap_err();
        assert!(err.0.contains("cannot write to stdout"), "{err}");
    }

    #[test]
    fn builds_from_each_format_and_refuses_others() {
        let ctx = |format: &str| BuildContext {
            name: "console".into(),
            config: serde_json::json!({ "format": format }),
            base_dir: ".".into(),
        };
        for format in ["simple", "json", "pretty"] {
            assert!(build(&ctx(format)).is_ok(), "{format}");
        }
        assert!(build(&ctx("fancy")).is_err());
    }
}
