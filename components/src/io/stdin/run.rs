//! The `stdin` task: lines in, messages out in batches, bad lines to `err`.

use fbp_runtime::value;
use fbp_runtime::{Context, Failure, Message, Task, TaskFuture};
use tokio::sync::mpsc;

use super::lines::Line;
use super::{Format, Stdin};
use crate::codec::envelope::{self, Envelope};

/// Messages sent at a time while lines come without waiting.
const BATCH: usize = 256;

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
