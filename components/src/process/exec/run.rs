//! The `exec` task: the program, its three pipes, and how it ends.
//!
//! Two loops share the program: the writer takes batches from `in`, writes
//! them to stdin and flushes (waiting while the pipe is full: a slow program
//! stalls its upstream); the reader turns stdout lines into messages and sends
//! each before reading the next (a slow downstream stalls the program). The
//! messages written but not yet done with are kept in [`InFlight`]: until the
//! flush with `replies = "any"`, until their answer with `replies = "one"`;
//! what is left there when the program fails goes to the next instance. What
//! the writer has taken from `in` and not yet written lives in [`Intake`],
//! outside the writer, so that stopping the writer mid-take loses nothing.

use std::collections::VecDeque;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The variables of fbp's own environment a child gets.
const KEPT_ENV: &[&str] = &["PATH", "HOME", "LANG"];

use fbp_runtime::queue::{InPort, OutPort};
use fbp_runtime::value;
use fbp_runtime::{Context, Failure, Message, Task, TaskFuture};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

use super::carry::{self, Kept};
use super::config::{Exec, Handshake, Mode, Replies};
use super::protocol::{self, Line};
use crate::codec::envelope::Envelope;

/// Messages taken from `in` and written at a time.
const BATCH: usize = 64;
/// With `replies = "one"`: messages written and not yet answered, at most.
const MAX_IN_FLIGHT: usize = 1024;
/// stderr lines quoted in a failure.
const TAIL: usize = 10;
/// Programs that may fail with one message the oldest in flight before it goes to `err`.
const MAX_ATTEMPTS: u32 = 2;
/// How long to wait for the end of stderr once the program has exited.
const STDERR_GRACE: Duration = Duration::from_secs(1);

impl Task for Exec {
    fn run(self: Box<Self>, mut ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let mut intake = Intake { port: ctx.input("in"), taken: Vec::with_capacity(BATCH) };
            let out = ctx.output("out");
            let flight = InFlight::new(carry::take(&ctx), self.replies);
            let result = self.session(&ctx, &mut intake, &out, &flight).await;
            self.count_unconfirmed(&ctx, &flight);
            self.hand_over(&ctx, flight, intake.taken, result.as_ref().err()).await?;
            result
        })
    }
}

/// The in-port, and what was taken from it and not yet handed to [`InFlight`].
///
/// `recv_many` leaves what it took in `taken` when its future is dropped (the
/// writer is dropped when the program's stdout closes first), so `taken` is
/// the instance's, not the writer's: what it holds at the end is kept.
struct Intake {
    port: InPort,
    taken: Vec<Message>,
}

/// The messages written to the program (or about to be) and not yet done with.
struct InFlight {
    pending: Mutex<VecDeque<Kept>>,
    /// With `replies = "one"`: room for more messages in flight.
    room: Semaphore,
    replies: Replies,
    input_ended: AtomicBool,
    /// The program read its input to the end and exited well: it handled all it was written.
    finished: AtomicBool,
    /// With `replies = "any"`: messages written since the program's last stdout line.
    unconfirmed: AtomicU64,
}

impl InFlight {
    fn new(kept: Vec<Kept>, replies: Replies) -> Self {
        let room = Semaphore::new(MAX_IN_FLIGHT.saturating_sub(kept.len()));
        InFlight {
            pending: Mutex::new(kept.into()),
            room,
            replies,
            input_ended: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            unconfirmed: AtomicU64::new(0),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, VecDeque<Kept>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// With `replies = "one"`: waits until `n` more messages may be in flight.
    async fn make_room(&self, n: usize) {
        if self.replies == Replies::One
            && let Ok(permits) = self.room.acquire_many(u32::try_from(n).unwrap_or(u32::MAX)).await
        {
            permits.forget();
        }
    }

    /// The batch has been written and flushed: with `replies = "any"` it is done (acknowledged).
    fn written(&self) {
        if self.replies == Replies::Any {
            let mut pending = self.pending();
            self.unconfirmed.fetch_add(pending.len() as u64, Ordering::Relaxed);
            pending.clear();
        }
    }

    /// The program wrote a line: with `replies = "any"`, what it was written before is taken as handled.
    fn heard(&self) {
        self.unconfirmed.store(0, Ordering::Relaxed);
    }

    /// With `replies = "one"`: the message a line of the program answers.
    fn answered(&self) -> Option<Message> {
        if self.replies != Replies::One {
            return None;
        }
        let (msg, _) = self.pending().pop_front()?;
        self.room.add_permits(1);
        Some(msg)
    }
}

/// How the exchange with the program ended.
enum Ending {
    /// Its stdout closed: it exits (or has exited) on its own.
    Closed,
    /// fbp stopped it: the flow shuts down, or it outlived `stop_timeout`.
    Stopped,
    /// It did not get ready: the reason, for a failure.
    Refused(String),
    /// It said `{"status": "error", "message": ..}`: the message. A restart
    /// would hear the same, so the failure is permanent.
    Reported(String),
    /// The component cannot go on (its out-port or err route has gone, stdout broke).
    Failed(Failure),
}

impl Exec {
    async fn session(
        &self,
        ctx: &Context,
        intake: &mut Intake,
        out: &OutPort,
        flight: &InFlight,
    ) -> Result<(), Failure> {
        let mut child = self.spawn(ctx)?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Failure(format!("`{}` started without its pipes", self.command)));
        };
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let logger = tokio::spawn(log_stderr(stderr, ctx.name.clone(), tail.clone()));
        // A program already gone shows in its exit status.
        let _ = write_flush(&mut stdin, self.command_line.as_bytes()).await;
        let mut lines = Lines { reader: BufReader::new(stdout), max: self.max_line };
        let ending = match self.handshake(&mut lines).await {
            Some(refused) => refused,
            None => self.exchange(ctx, intake, out, flight, stdin, &mut lines, &mut child).await,
        };
        let status = match ending {
            Ending::Closed => match tokio::time::timeout(self.stop_timeout, child.wait()).await {
                Ok(status) => status,
                Err(_) => self.stop(&mut child, &ctx.name).await,
            },
            _ => self.stop(&mut child, &ctx.name).await,
        };
        let _ = tokio::time::timeout(STDERR_GRACE, logger).await;
        let tail = stderr_tail(&tail);
        let finished = matches!((&ending, &status), (Ending::Closed, Ok(s)) if s.success());
        flight.finished.store(finished && flight.input_ended.load(Ordering::Relaxed), Ordering::Relaxed);
        match (ending, status) {
            (Ending::Refused(why), _) => Err(Failure(format!("`{}` {why}{tail}", self.command))),
            (Ending::Reported(message), _) => Err(ctx.permanent(format!(
                "`{}` reported an error: {message}{tail}; restarting it would hear the same, so fix what it says",
                self.command
            ))),
            (Ending::Failed(f), _) => Err(f),
            (Ending::Stopped, _) => Ok(()),
            (Ending::Closed, Ok(s)) if s.success() => Ok(()),
            (Ending::Closed, Ok(s)) => Err(Failure(format!("`{}` failed: {s}{tail}", self.command))),
            (Ending::Closed, Err(e)) => Err(Failure(format!("cannot wait for `{}`: {e}", self.command))),
        }
    }

    fn spawn(&self, ctx: &Context) -> Result<Child, Failure> {
        // Only `PATH`, `HOME` and `LANG` of fbp's environment, `PYTHONUNBUFFERED`,
        // and what `env` gives: a child never sees the secrets fbp was started with.
        let kept = KEPT_ENV.iter().filter_map(|k| std::env::var_os(k).map(|v| (*k, v)));
        Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(kept)
            // Python buffers a pipe's output: without this, a provider that
            // forgets `flush=True` is silent until it exits. `env` may override it.
            .env("PYTHONUNBUFFERED", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                let what = format!("cannot start `{}` in `{}`: {e}", self.command, self.cwd.display());
                // Not there, not allowed, or not a program (ENOEXEC: no `#!` line): no restart finds it.
                let not_a_program = e.raw_os_error() == Some(8);
                match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                        ctx.permanent(format!("{what}; check `command` (a bare name is looked up in `PATH`)"))
                    }
                    _ if not_a_program => ctx.permanent(format!("{what}; a script needs a `#!` line")),
                    _ => Failure(what),
                }
            })
    }

    /// Reads the ready line where it is required; `Some` when the program refused or did not answer.
    async fn handshake(&self, lines: &mut Lines) -> Option<Ending> {
        if self.handshake != Handshake::Required {
            return None;
        }
        let refused = match tokio::time::timeout(self.ready_timeout, lines.next()).await {
            Err(_) => format!(
                "did not answer {{\"status\": \"ready\"}} within {}",
                humantime::format_duration(self.ready_timeout)
            ),
            Ok(Ok(Some(line))) => match protocol::parse(&line.bytes) {
                Line::Ready => return None,
                Line::Error(message) => return Some(Ending::Reported(message)),
                _ => format!(
                    "answered `{}` where {{\"status\": \"ready\"}} was expected",
                    String::from_utf8_lossy(&line.bytes)
                ),
            },
            Ok(_) => "exited before answering {\"status\": \"ready\"}".into(),
        };
        Some(Ending::Refused(refused))
    }

    /// Runs the writer and the reader until the program closes its stdout, or is stopped.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        ctx: &Context,
        intake: &mut Intake,
        out: &OutPort,
        flight: &InFlight,
        stdin: ChildStdin,
        lines: &mut Lines,
        child: &mut Child,
    ) -> Ending {
        let writer = self.write_loop(stdin, intake, flight);
        let reader = self.read_loop(ctx, lines, out, flight);
        tokio::pin!(writer, reader);
        tokio::select! {
            ending = &mut reader => ending,
            () = &mut writer => match tokio::time::timeout(self.stop_timeout, &mut reader).await {
                // stdin is closed (the input ended, or the program is gone): it has `stop_timeout` to finish.
                Ok(ending) => ending,
                Err(_) => {
                    let _ = self.stop(child, &ctx.name).await;
                    stopped(reader.await)
                }
            },
            () = ctx.shutdown().cancelled(), if self.mode == Mode::Source => {
                let _ = self.stop(child, &ctx.name).await;
                // What it wrote before it exited is still sent.
                stopped(reader.await)
            }
        }
    }

    /// Writes batches from `in` to stdin; returns (closing stdin) when the input ends or the pipe breaks.
    async fn write_loop(&self, mut stdin: ChildStdin, intake: &mut Intake, flight: &InFlight) {
        if self.mode == Mode::Source {
            // A source's stdin stays open until the program is stopped.
            let _stdin = stdin;
            return std::future::pending().await;
        }
        // What the last instance left is written first.
        let kept: Vec<Message> = flight.pending().iter().map(|(m, _)| m.clone()).collect();
        if !kept.is_empty() && write_flush(&mut stdin, &render(&kept)).await.is_err() {
            return;
        }
        flight.written();
        loop {
            // Until `recv_many` returns, what it took is in `intake.taken`; from then
            // on there is no await before it is in flight.
            if !intake.port.recv_many(&mut intake.taken, BATCH).await {
                flight.input_ended.store(true, Ordering::Relaxed);
                return;
            }
            let text = render(&intake.taken);
            let n = intake.taken.len();
            flight.pending().extend(intake.taken.drain(..).map(|m| (m, 0)));
            flight.make_room(n).await;
            if write_flush(&mut stdin, &text).await.is_err() {
                // The program is gone; the batch stays in flight for the next one.
                return;
            }
            flight.written();
        }
    }

    /// Turns stdout lines into messages until stdout closes.
    async fn read_loop(&self, ctx: &Context, lines: &mut Lines, out: &OutPort, flight: &InFlight) -> Ending {
        loop {
            let line = match lines.next().await {
                Ok(Some(line)) => line,
                Ok(None) => return Ending::Closed,
                Err(e) => return Ending::Failed(Failure(format!("cannot read the stdout of `{}`: {e}", self.command))),
            };
            flight.heard();
            if line.too_long {
                let error = format!("line longer than max_line_size ({} bytes); cut", self.max_line);
                if let Err(f) = self.reject_line(ctx, &line.bytes, flight, &error).await {
                    return Ending::Failed(f);
                }
                continue;
            }
            let sent = match protocol::parse(&line.bytes) {
                Line::Blank | Line::Ready => continue,
                Line::Error(message) => return Ending::Reported(message),
                Line::Data(env) => out.send(message(ctx, env, flight.answered())).await.map_err(Failure::from),
                Line::Garbage(e) if line.cut_short && self.replies == Replies::One => {
                    // What a program killed mid-line left: not an answer, so the
                    // message it was for stays in hand for the next program.
                    let error = format!("last line from `{}` cut short by the end of its stdout: {e}", self.command);
                    self.reject_text(ctx, &line.bytes, None, &error).await
                }
                Line::Garbage(e) => {
                    self.reject_line(ctx, &line.bytes, flight, &format!("bad line from `{}`: {e}", self.command)).await
                }
            };
            if let Err(f) = sent {
                return Ending::Failed(f);
            }
        }
    }

    /// Sends a stdout line to `err` as text (with the answered message's acknowledgement).
    async fn reject_line(&self, ctx: &Context, bytes: &[u8], flight: &InFlight, error: &str) -> Result<(), Failure> {
        self.reject_text(ctx, bytes, flight.answered(), error).await
    }

    /// Sends a stdout line to `err` as text, with `answered`'s metadata and acknowledgement if given.
    async fn reject_text(
        &self,
        ctx: &Context,
        bytes: &[u8],
        answered: Option<Message>,
        error: &str,
    ) -> Result<(), Failure> {
        let text = value::string(String::from_utf8_lossy(bytes));
        let env = Envelope { payload: text, topic: None, headers: Default::default() };
        ctx.reject(&message(ctx, env, answered), error).await
    }

    /// SIGTERM, then SIGKILL after `stop_timeout`; the exit status.
    async fn stop(&self, child: &mut Child, name: &str) -> io::Result<ExitStatus> {
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            // It may have exited already; then there is nothing to stop.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        match tokio::time::timeout(self.stop_timeout, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                tracing::warn!(component = %name, command = %self.command, "Program ignored SIGTERM; killing it.");
                child.kill().await?;
                child.wait().await
            }
        }
    }

    /// With `replies = "any"`: counts as dropped, with a warning, the messages a program
    /// that did not finish well was written since its last stdout line (it may have
    /// handled them or not: fbp cannot know).
    fn count_unconfirmed(&self, ctx: &Context, flight: &InFlight) {
        let n = flight.unconfirmed.load(Ordering::Relaxed);
        if self.replies != Replies::Any || n == 0 || flight.finished.load(Ordering::Relaxed) {
            return;
        }
        ctx.metrics().dropped.fetch_add(n, Ordering::Relaxed);
        tracing::warn!(
            component = %ctx.name,
            command = %self.command,
            possibly_lost = n,
            "Program ended with messages written since its last stdout line; what it had not handled \
             of them is lost (replies = \"any\" is at-most-once; replies = \"one\" retries them)."
        );
    }

    /// Leaves what is still in flight, and what was taken but not written, to the
    /// next instance (or to `err`).
    async fn hand_over(
        &self,
        ctx: &Context,
        flight: InFlight,
        taken: Vec<Message>,
        failure: Option<&Failure>,
    ) -> Result<(), Failure> {
        let input_ended = flight.input_ended.load(Ordering::Relaxed);
        let mut kept: Vec<Kept> = flight.pending.into_inner().unwrap_or_else(|p| p.into_inner()).into();
        match failure {
            Some(failure) => self.blame_the_oldest(ctx, &mut kept, failure).await?,
            None if input_ended => {
                // The program ended well with its input: nothing will write these again.
                for (msg, _) in &kept {
                    ctx.reject(msg, &format!("`{}` exited without answering it", self.command)).await?;
                }
                return Ok(());
            }
            // It stopped while its input is open: the supervisor starts it again.
            None => {}
        }
        // Taken and never written: no program has seen these, none is to blame.
        kept.extend(taken.into_iter().map(|m| (m, 0)));
        carry::leave(ctx, kept);
        Ok(())
    }

    /// With `replies = "one"`: the oldest message in flight is the one the failed
    /// program was working on; it counts an attempt, and goes to `err` at the last.
    async fn blame_the_oldest(&self, ctx: &Context, kept: &mut Vec<Kept>, failure: &Failure) -> Result<(), Failure> {
        if self.replies != Replies::One || kept.is_empty() {
            return Ok(());
        }
        kept[0].1 += 1;
        if kept[0].1 >= MAX_ATTEMPTS {
            let (msg, attempts) = kept.remove(0);
            let error = format!("`{}` failed {attempts} times with this message in flight: {failure}", self.command);
            ctx.reject(&msg, &error).await?;
        }
        Ok(())
    }
}

/// After a stop, what the reader says unless it ended well.
fn stopped(ending: Ending) -> Ending {
    match ending {
        Ending::Closed => Ending::Stopped,
        other => other,
    }
}

/// A message from an envelope: the answered message's metadata and acknowledgement
/// where there is one, else fresh metadata; the envelope's topic and headers win.
fn message(ctx: &Context, env: Envelope, answered: Option<Message>) -> Message {
    let (mut meta, ack) = match answered {
        Some(m) => ((*m.meta).clone(), m.ack),
        None => (ctx.meta(), None),
    };
    if let Some(topic) = env.topic {
        meta.topic = Some(topic.into());
    }
    if !env.headers.is_empty() {
        meta.headers = env.headers;
    }
    Message { payload: env.payload, meta: Arc::new(meta), ack }
}

/// Envelopes, one per line.
fn render(batch: &[Message]) -> Vec<u8> {
    let mut text = Vec::new();
    for msg in batch {
        text.extend_from_slice(msg.to_envelope().as_bytes());
        text.push(b'\n');
    }
    text
}

async fn write_flush(stdin: &mut ChildStdin, bytes: &[u8]) -> io::Result<()> {
    stdin.write_all(bytes).await?;
    stdin.flush().await
}

/// stdout, line by line, each at most `max` bytes.
struct Lines {
    reader: BufReader<ChildStdout>,
    max: usize,
}

/// A line of stdout without its line ending, cut to `max` bytes when `too_long`.
struct StdoutLine {
    bytes: Vec<u8>,
    too_long: bool,
    /// stdout ended before its newline.
    cut_short: bool,
}

impl Lines {
    /// The next line; `None` at the end. A longer line than `max` is cut and the rest skipped.
    async fn next(&mut self) -> io::Result<Option<StdoutLine>> {
        let mut line = StdoutLine { bytes: Vec::new(), too_long: false, cut_short: false };
        loop {
            let chunk = self.reader.fill_buf().await?;
            if chunk.is_empty() {
                let end = line.bytes.is_empty() && !line.too_long;
                line.cut_short = true;
                return Ok((!end).then_some(line));
            }
            let newline = chunk.iter().position(|&b| b == b'\n');
            let part = newline.map_or(chunk, |i| &chunk[..i]);
            let room = self.max.saturating_sub(line.bytes.len());
            line.too_long |= part.len() > room;
            line.bytes.extend_from_slice(&part[..part.len().min(room)]);
            let used = newline.map_or(chunk.len(), |i| i + 1);
            self.reader.consume(used);
            if newline.is_some() {
                if line.bytes.last() == Some(&b'\r') {
                    line.bytes.pop();
                }
                return Ok(Some(line));
            }
        }
    }
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Logs each stderr line, keeping the last few for a failure.
async fn log_stderr(stderr: ChildStderr, name: Arc<str>, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(trim_newline(&buf)).into_owned();
        tracing::info!(component = %name, stderr = %line, "Program wrote to stderr.");
        let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
        if tail.len() == TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// The last stderr lines, for a failure; empty when there were none.
fn stderr_tail(tail: &Mutex<VecDeque<String>>) -> String {
    let tail = tail.lock().unwrap_or_else(|p| p.into_inner());
    if tail.is_empty() {
        return String::new();
    }
    format!("; stderr: {}", tail.iter().map(String::as_str).collect::<Vec<_>>().join(" | "))
}
