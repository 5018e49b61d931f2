//! The `file-read` task: lines in, messages out in batches, errors to `err`.

use std::io::ErrorKind;

use fbp_runtime::queue::OutPort;
use fbp_runtime::value;
use fbp_runtime::{Context, Failure, Message, Task, TaskFuture};

use super::FileRead;
use super::lines::{Line, LineReader, Next, first_line};
use super::parse::{Parsed, Parser};

/// Messages sent at a time while lines come without waiting.
const BATCH: usize = 256;

impl Task for FileRead {
    fn run(self: Box<Self>, ctx: Context) -> TaskFuture {
        Box::pin(async move { self.read(&ctx).await })
    }
}

/// Where the task sends: its out-port, with a batch of messages not yet sent.
struct Sender {
    out: OutPort,
    batch: Vec<Message>,
}

impl FileRead {
    async fn read(&self, ctx: &Context) -> Result<(), Failure> {
        let mut reader =
            LineReader::open_with_grace(&self.path, self.follow, self.from_end, self.max_line, self.rotate_grace)
                .await
                .map_err(|e| self.open_failure(ctx, e))?;
        let mut parser = self.parser();
        if self.from_end && parser.wants_header() {
            self.read_header(&mut parser).await?;
        }
        let mut sender = Sender { out: ctx.output("out"), batch: Vec::with_capacity(BATCH) };
        while !ctx.shutdown().is_cancelled() {
            match reader.next().await.map_err(|e| self.failure("read", e))? {
                Next::Line(line) => self.line(ctx, &mut parser, &mut sender, line).await?,
                Next::End => break,
                Next::Idle => {
                    if !sender.flush(ctx).await? || !self.pause(ctx).await {
                        return Ok(());
                    }
                    reader.check().await.map_err(|e| self.failure("read", e))?;
                }
            }
            if sender.batch.len() >= BATCH && !sender.flush(ctx).await? {
                return Ok(());
            }
        }
        sender.flush(ctx).await.map(drop)
    }

    /// Following from the end of a CSV file: its header is its first line.
    async fn read_header(&self, parser: &mut Parser) -> Result<(), Failure> {
        if let Some(line) = first_line(&self.path, self.max_line).await.map_err(|e| self.failure("read", e))? {
            // A bad header is reported with the first row it spoils.
            let _ = parser.parse(&line);
        }
        Ok(())
    }

    /// Parses a line into the batch; a line that does not parse goes to `err`.
    async fn line(&self, ctx: &Context, parser: &mut Parser, sender: &mut Sender, line: Line) -> Result<(), Failure> {
        if line.too_long {
            let error = format!("line longer than max_line_size ({} bytes); cut and skipped", self.max_line);
            return self.reject(ctx, sender, &line.bytes, &error).await;
        }
        match parser.parse(&line) {
            Ok(Parsed::Skip) => Ok(()),
            Ok(Parsed::Payload { payload, topic, headers }) => {
                let mut meta = ctx.meta();
                meta.topic = Some(topic.map_or_else(|| self.topic.clone(), Into::into));
                meta.headers = headers;
                sender.batch.push(Message::new(payload, meta));
                Ok(())
            }
            Err(e) => self.reject(ctx, sender, &line.bytes, &e).await,
        }
    }

    /// Sends what is batched (to keep the order), then the bad line to `err` as text.
    async fn reject(&self, ctx: &Context, sender: &mut Sender, bytes: &[u8], error: &str) -> Result<(), Failure> {
        if !sender.flush(ctx).await? {
            return Ok(());
        }
        let mut meta = ctx.meta();
        meta.topic = Some(self.topic.clone());
        let msg = Message::new(value::string(String::from_utf8_lossy(bytes)), meta);
        ctx.reject(&msg, error).await
    }

    /// Waits `poll_interval`; `false` when the flow shuts down first.
    async fn pause(&self, ctx: &Context) -> bool {
        tokio::select! {
            _ = ctx.shutdown().cancelled() => false,
            _ = tokio::time::sleep(self.poll_interval) => true,
        }
    }

    /// A file that is not there (without `follow`) or may not be read is
    /// permanent: waiting will not make it appear.
    fn open_failure(&self, ctx: &Context, e: std::io::Error) -> Failure {
        let path = self.path.display();
        match e.kind() {
            ErrorKind::NotFound => ctx.permanent(format!(
                "cannot open `{path}`: no such file; check `path` (a relative path is taken from the flow \
                 file's folder), or set `follow = true` to wait for it to appear"
            )),
            ErrorKind::PermissionDenied => ctx
                .permanent(format!("cannot open `{path}`: permission denied; fbp runs as a user who may not read it")),
            _ => self.failure("open", e),
        }
    }

    fn failure(&self, doing: &str, e: std::io::Error) -> Failure {
        Failure(format!("cannot {doing} `{}`: {e}", self.path.display()))
    }
}

impl Sender {
    /// Sends the batch; `false` when the flow shuts down while the port is full.
    async fn flush(&mut self, ctx: &Context) -> Result<bool, Failure> {
        if self.batch.is_empty() {
            return Ok(true);
        }
        let batch = std::mem::take(&mut self.batch);
        tokio::select! {
            biased;
            sent = self.out.send_all(batch) => sent.map(|()| true).map_err(Failure::from),
            _ = ctx.shutdown().cancelled() => Ok(false),
        }
    }
}
