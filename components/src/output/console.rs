//! `console`: print messages on standard output.
//!
//! Each batch taken from the input is rendered whole, written to stdout under
//! its lock (so two consoles never interleave their lines) on tokio's
//! blocking pool, flushed, and only then dropped, which acknowledges it.
//!
//! When the reader of stdout goes away (`fbp ... | head -2`), the write fails
//! with a broken pipe: that is the end of the output, not a failure. The
//! console then stops the whole flow as a signal would (sources stop, the
//! rest drains), and takes what still reaches it without printing it,
//! counting it in `dropped`.

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
          and a message is acknowledged once it has been flushed. When the reader of stdout goes \
          away (`| head`), the flow stops as on Ctrl-C and exits 0; what reaches the console after \
          that is counted in `dropped`, not printed.",
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
    probe: None,
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
            let mut batch = Vec::with_capacity(BATCH);
            if print(&mut input, &mut batch, self.format, write_stdout).await? == Printed::ReaderGone {
                tracing::info!(component = %ctx.name, "Stdout was closed by its reader; stopping the flow.");
                ctx.shutdown().cancel();
                discard(&mut input, &mut batch, &ctx).await;
            }
            Ok(())
        })
    }
}

/// How printing ended.
#[derive(Debug, PartialEq, Eq)]
enum Printed {
    /// The input ended and everything was written.
    All,
    /// The reader of stdout went away; the batch that could not be written
    /// is left in `batch`.
    ReaderGone,
}

/// Renders and writes each batch; drops (acknowledges) it once `write` has
/// written and flushed it. `write` hands its buffer back for reuse.
async fn print<W, F>(
    input: &mut InPort,
    batch: &mut Vec<Message>,
    format: Format,
    mut write: W,
) -> Result<Printed, Failure>
where
    W: FnMut(Vec<u8>) -> F,
    F: Future<Output = io::Result<Vec<u8>>>,
{
    let mut text = Vec::new();
    while input.recv_many(batch, BATCH).await {
        text.clear();
        for msg in batch.iter() {
            render(format, msg, &mut text);
        }
        text = match write(text).await {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(Printed::ReaderGone),
            Err(e) => return Err(Failure(format!("cannot write to stdout: {e}"))),
        };
        batch.clear();
    }
    Ok(Printed::All)
}

/// Takes what is left (the batch not written, then the input until it
/// ends), rejecting each message's acknowledgement and counting it dropped.
async fn discard(input: &mut InPort, batch: &mut Vec<Message>, ctx: &Context) {
    loop {
        let n = batch.len() as u64;
        batch.drain(..).filter_map(|m| m.ack).for_each(|ack| ack.reject());
        ctx.metrics().dropped.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        if !input.recv_many(batch, BATCH).await {
            return;
        }
    }
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
        let mut batch = Vec::new();
        print(&mut InPort::new(vec![q.receiver()], Arc::default()), &mut batch, format, write).await.unwrap();
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
        let mut batch = Vec::new();
        print(&mut InPort::new(vec![q.receiver()], Arc::default()), &mut batch, Format::Simple, write).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), [(Outcome::Delivered, b"7\n".to_vec())]);
    }

    /// Prints one message through a `write` that fails with `kind`.
    async fn failing(kind: io::ErrorKind) -> (Result<Printed, Failure>, usize) {
        let q = Queue::new(4, WhenFull::Block);
        q.sender().0.try_send(Message::new(value::int(1), Meta::new("src".into(), 0))).unwrap();
        q.close();
        let write = |_: Vec<u8>| std::future::ready(Err(io::Error::from(kind)));
        let mut batch = Vec::new();
        let printed =
            print(&mut InPort::new(vec![q.receiver()], Arc::default()), &mut batch, Format::Simple, write).await;
        (printed, batch.len())
    }

    #[tokio::test]
    async fn a_write_error_is_a_failure() {
        let err = failing(io::ErrorKind::PermissionDenied).await.0.unwrap_err();
        assert!(err.0.contains("cannot write to stdout"), "{err}");
    }

    #[tokio::test]
    async fn a_reader_gone_ends_the_output_and_keeps_the_batch() {
        assert!(matches!(failing(io::ErrorKind::BrokenPipe).await, (Ok(Printed::ReaderGone), 1)));
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
