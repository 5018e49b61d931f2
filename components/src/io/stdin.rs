//! `stdin`: a source that reads messages from standard input, one per line.
//!
//! Standard input belongs to the process, not to one instance: a single
//! reader thread (started by the first instance that runs, never by `fbp
//! check`) reads lines into a bounded channel, so a full out-port stalls the
//! reader, and an instance restarted by its supervisor goes on from the next
//! line. A plain thread, because a blocked read of stdin cannot be cancelled
//! and must not hold up the runtime's shutdown.

use std::io::{self, BufRead};
use std::sync::{Arc, OnceLock};

use fbp_runtime::spec::{KeySpec, KeyType, Port};
use fbp_runtime::units::parse_size;
use fbp_runtime::value;
use fbp_runtime::{
    BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, PortSpec, Task, TaskFuture,
};
use serde::Deserialize;
use tokio::sync::{Mutex, mpsc};

use crate::codec::envelope::{self, Envelope};

/// The `stdin` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "stdin",
    summary: "Read messages from standard input, one per line (JSON lines or text).",
    doc: "Reads standard input line by line and sends a message per line. `json`: each line is \
          a JSON value, or the wire envelope `{\"data\": .., \"metadata\": {..}}` (what `console` \
          with `format = \"json\"` and `file-write` write), whose data becomes the payload and \
          whose topic and headers are kept; blank lines are skipped. `lines`: each line as text. \
          `\\r\\n` endings are removed. A line that does not parse goes to `err` as text and \
          reading goes on; so does a line longer than `max_line_size` (cut to that size). The component finishes at the end of input and stops at once when the \
          flow shuts down. Delivery is at-most-once: standard input cannot be read again, so \
          lines in flight when the process dies are lost.",
    kind: Kind::Source,
    inputs: &[],
    outputs: &[PortSpec { name: "out", ty: "json", doc: "one message per line; text with `format = \"lines\"`" }],
    config: &[
        KeySpec::new(
            "format",
            KeyType::Enum(&["json", "lines"]),
            "\"json\"",
            "`json`: JSON lines, envelopes unwrapped; `lines`: each line as text.",
        ),
        KeySpec::new(
            "max_line_size",
            KeyType::String,
            "\"1MiB\"",
            "The longest line read whole, as a size (`\"64KiB\"`, `\"1MiB\"`); a longer one is cut to \
             this size and sent to `err`, so memory stays bounded. The first instance to run sets it.",
        ),
    ],
    delivery: Delivery::AtMostOnce,
    stateless: false,
    example: "[components.input]\ntype = \"stdin\"\nconfig = { format = \"json\" }\n",
    build,
    ports: Some(ports),
};

/// Messages sent at a time while lines come without waiting.
const BATCH: usize = 256;

/// Lines read ahead of the out-port at most.
const READ_AHEAD: usize = 1024;

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Format {
    Json,
    Lines,
}

#[derive(Deserialize)]
struct Config {
    format: Format,
    max_line_size: String,
}

/// A line read: its bytes (at most the limit), and whether it was cut.
type Line = io::Result<(Vec<u8>, bool)>;

/// Lines of an input, shared by the instances that read it one after another.
type Lines = Arc<Mutex<mpsc::Receiver<Line>>>;

/// A built `stdin`.
struct Stdin {
    format: Format,
    /// The longest line read whole.
    max_line: usize,
    /// Where its lines come from (standard input, or a test's text), given the limit.
    open: fn(usize) -> Lines,
}

/// The out-port's type for this config.
fn ports(config: &serde_json::Value) -> (Vec<Port>, Vec<Port>) {
    let ty = match config.get("format").and_then(serde_json::Value::as_str) {
        Some("lines") => "text",
        _ => "json",
    };
    (Vec::new(), vec![Port { name: "out".into(), ty: ty.into() }])
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    let max_line = max_line(&config.max_line_size)?;
    Ok(Instance::task(Stdin { format: config.format, max_line, open: stdin_lines }))
}

fn max_line(size: &str) -> Result<usize, String> {
    match parse_size(size) {
        Ok(0) => Err("`max_line_size` must be more than 0 bytes".into()),
        Ok(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        Err(e) => Err(format!("`max_line_size`: {e}")),
    }
}

/// The process's standard input, read by one thread for the whole run.
fn stdin_lines(max_line: usize) -> Lines {
    static LINES: OnceLock<Lines> = OnceLock::new();
    LINES.get_or_init(|| read_lines(io::BufReader::new(io::stdin()), max_line)).clone()
}

/// Starts a thread that reads `input` line by line (without `\n` or `\r\n`)
/// into a bounded channel; the channel closes at the end or after an error.
fn read_lines(mut input: impl BufRead + Send + 'static, max_line: usize) -> Lines {
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
            return Ok(any.then_some((line, too_long)));
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
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some((line, too_long)));
        }
    }
}

impl Task for Stdin {
    fn run(self: Box<Self>, ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let lines = (self.open)(self.max_line);
            let mut lines = lines.lock().await;
            self.read(&ctx, &mut lines).await
        })
    }
}

impl Stdin {
    async fn read(&self, ctx: &Context, lines: &mut mpsc::Receiver<Line>) -> Result<(), Failure> {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let next = tokio::select! {
                biased;
                _ = ctx.shutdown().cancelled() => return Ok(()),
                next = lines.recv() => next,
            };
            let Some(line) = next else { break };
            let (line, too_long) = line.map_err(|e| Failure(format!("cannot read standard input: {e}")))?;
            let parsed = if too_long {
                Err(format!("line longer than max_line_size ({} bytes); cut and skipped", self.max_line))
            } else {
                self.parse(&line)
            };
            match parsed {
                Ok(Some(Envelope { payload, topic, headers })) => {
                    let mut meta = ctx.meta();
                    meta.topic = topic.map(Into::into);
                    meta.headers = headers;
                    batch.push(Message::new(payload, meta));
                }
                Ok(None) => {}
                Err(e) => {
                    if !flush(ctx, &mut batch).await? {
                        return Ok(());
                    }
                    let msg = Message::new(value::string(String::from_utf8_lossy(&line)), ctx.meta());
                    ctx.reject(&msg, &e).await?;
                }
            }
            if (batch.len() >= BATCH || lines.is_empty()) && !flush(ctx, &mut batch).await? {
                return Ok(());
            }
        }
        flush(ctx, &mut batch).await.map(drop)
    }

    /// What a line gives; `None` for a blank JSON line.
    fn parse(&self, line: &[u8]) -> Result<Option<Envelope>, String> {
        match self.format {
            Format::Lines => match std::str::from_utf8(line) {
                Ok(text) => {
                    Ok(Some(Envelope { payload: value::string(text), topic: None, headers: Default::default() }))
                }
                Err(e) => Err(format!("not UTF-8 text: {e}")),
            },
            Format::Json if line.iter().all(u8::is_ascii_whitespace) => Ok(None),
            Format::Json => {
                let v = value::parse_json(line).map_err(|e| format!("not JSON: {e}"))?;
                Ok(Some(match envelope::unwrap(&v)? {
                    Some(envelope) => envelope,
                    None => Envelope { payload: v, topic: None, headers: Default::default() },
                }))
            }
        }
    }
}

/// Sends the batch; `false` when the flow shuts down while the port is full.
async fn flush(ctx: &Context, batch: &mut Vec<Message>) -> Result<bool, Failure> {
    if batch.is_empty() {
        return Ok(true);
    }
    let out = ctx.output("out");
    let msgs = std::mem::take(batch);
    tokio::select! {
        biased;
        sent = out.send_all(msgs) => sent.map(|()| true).map_err(Failure::from),
        _ = ctx.shutdown().cancelled() => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use fbp_runtime::testing::Harness;
    use serde_json::json;

    use super::*;

    thread_local! {
        /// What the next test instance reads as its standard input.
        static INPUT: RefCell<&'static str> = const { RefCell::new("") };
    }

    /// `stdin` reading the thread's `INPUT` instead of the process's stdin.
    static TEST_SPEC: ComponentSpec = ComponentSpec { build: build_test, ..SPEC };

    fn build_test(ctx: &BuildContext) -> Result<Instance, String> {
        let config: Config = ctx.parse()?;
        let open = |max| read_lines(io::Cursor::new(INPUT.with(|i| *i.borrow()).as_bytes()), max);
        Ok(Instance::task(Stdin { format: config.format, max_line: max_line(&config.max_line_size)?, open }))
    }

    async fn read(format: &str, input: &'static str) -> fbp_runtime::testing::Output {
        read_with(json!({ "format": format }), input).await
    }

    async fn read_with(config: serde_json::Value, input: &'static str) -> fbp_runtime::testing::Output {
        INPUT.with(|i| *i.borrow_mut() = input);
        Harness::new(&TEST_SPEC, config).run().await
    }

    #[tokio::test]
    async fn json_lines_and_envelopes_are_read_until_the_end() {
        let input = "{\"a\": 1}\n\n{\"data\": 2, \"metadata\": {\"topic\": \"t\", \"headers\": {\"k\": \"v\"}}}\r\n3";
        let out = read("json", input).await;
        assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
        assert_eq!(out.json("out"), [r#"{"a":1}"#, "2", "3"]);
        let meta = &out.messages("out")[1].meta;
        assert_eq!(meta.topic.as_deref(), Some("t"));
        assert_eq!(meta.headers.get("k").map(String::as_str), Some("v"));
        assert_eq!(out.messages("out")[0].meta.topic, None);
    }

    #[tokio::test]
    async fn a_bad_line_goes_to_err_and_reading_goes_on() {
        let out = read("json", "1\n{nope\n2\n").await;
        assert_eq!(out.json("out"), ["1", "2"]);
        let err = out.json("err");
        assert_eq!(err.len(), 1);
        assert!(err[0].contains("not JSON") && err[0].contains("{nope"), "{err:?}");
    }

    #[tokio::test]
    async fn lines_are_text() {
        let out = read("lines", "a b\n\n{\"x\": 1}\n").await;
        assert_eq!(out.json("out"), [r#""a b""#, r#""""#, r#""{\"x\": 1}""#]);
    }

    #[tokio::test]
    async fn stops_on_shutdown() {
        let (_tx, rx) = mpsc::channel(1);
        let lines: Lines = Arc::new(Mutex::new(rx));
        static PENDING: OnceLock<Lines> = OnceLock::new();
        PENDING.set(lines).ok();
        static WAITING: ComponentSpec = ComponentSpec { build: build_waiting, ..SPEC };
        fn build_waiting(_: &BuildContext) -> Result<Instance, String> {
            Ok(Instance::task(Stdin {
                format: Format::Json,
                max_line: 10,
                open: |_| PENDING.get().expect("set").clone(),
            }))
        }
        let mut h = Harness::new(&WAITING, json!({}));
        h.shutdown().cancel();
        let out = tokio::time::timeout(std::time::Duration::from_secs(5), h.run()).await.expect("stops");
        assert!(matches!(out.result, Some(Ok(()))));
    }

    #[tokio::test]
    async fn a_line_longer_than_the_limit_goes_to_err_cut() {
        let out = read_with(json!({ "format": "lines", "max_line_size": "4B" }), "abcd\nabcdefgh\nxy").await;
        assert_eq!(out.json("out"), [r#""abcd""#, r#""xy""#]);
        let err = out.json("err");
        assert!(err.len() == 1 && err[0].contains("longer than max_line_size (4 bytes)"), "{err:?}");
        assert!(err[0].contains(r#""data":"abcd""#), "{err:?}");
    }

    #[test]
    fn a_zero_or_bad_max_line_size_is_refused() {
        assert!(max_line("0B").unwrap_err().contains("more than 0"));
        assert!(max_line("lots").unwrap_err().starts_with("`max_line_size`"));
    }

    #[test]
    fn the_port_type_follows_the_format() {
        assert_eq!(ports(&json!({ "format": "lines" })).1[0].ty, "text");
        assert_eq!(ports(&json!({})).1[0].ty, "json");
    }
}
