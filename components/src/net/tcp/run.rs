//! The `tcp-listen` task: the listener, and a task per connection that reads,
//! frames, decodes and sends, all into the one out-port.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use fbp_runtime::queue::OutPort;
use fbp_runtime::{Context, Failure, Task, TaskFuture};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::TcpListen;
use super::framing::{Deframer, Frame};
use crate::net::payload;

/// Bytes asked of the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

impl Task for TcpListen {
    fn run(self: Box<Self>, ctx: Context) -> TaskFuture {
        Box::pin(async move { Arc::new(*self).serve(Arc::new(ctx)).await })
    }
}

/// Why a connection ended.
enum End {
    /// The client closed it.
    Closed,
    /// The flow is shutting down.
    Shutdown,
    /// Closed by us (idle, too long a frame, a broken stream), with the reason.
    Dropped(String),
}

impl TcpListen {
    async fn serve(self: Arc<Self>, ctx: Arc<Context>) -> Result<(), Failure> {
        let listener = TcpListener::bind(&self.bind)
            .await
            .map_err(|e| crate::net::bind_failure(&ctx, "listen", &self.bind, &e))?;
        let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| self.bind.clone());
        tracing::info!(component = %ctx.name, addr = %local, "Listening.");
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let mut conns = JoinSet::new();
        let result = loop {
            let accepted = tokio::select! {
                biased;
                _ = ctx.shutdown().cancelled() => break Ok(()),
                Some(done) = conns.join_next(), if !conns.is_empty() => match done {
                    Ok(Ok(())) => continue,
                    Ok(Err(failure)) => break Err(failure),
                    Err(e) => break Err(Failure(format!("a connection task failed: {e}"))),
                },
                accepted = accept(&listener, &slots) => accepted,
            };
            match accepted {
                Ok((stream, peer, slot)) => {
                    conns.spawn(self.clone().connection(ctx.clone(), stream, peer, slot));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(component = %ctx.name, error = %e, "Cannot accept a connection; retrying.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        drop(listener);
        if result.is_err() {
            conns.abort_all();
        }
        // Every connection stops reading at shutdown; wait for them to finish what they hold.
        while let Some(done) = conns.join_next().await {
            if let Ok(Err(failure)) = done {
                tracing::debug!(component = %ctx.name, error = %failure.0, "Connection ended with an error.");
            }
        }
        result
    }

    /// Reads one client until it leaves, is dropped, or the flow shuts down.
    async fn connection(
        self: Arc<Self>,
        ctx: Arc<Context>,
        mut stream: TcpStream,
        peer: String,
        _slot: OwnedSemaphorePermit,
    ) -> Result<(), Failure> {
        tracing::debug!(component = %ctx.name, peer = %peer, "Client connected.");
        let out = ctx.output("out");
        let mut deframer = Deframer::new(self.framing, self.max_frame);
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut eof = false;
        let end = loop {
            match deframer.next(&mut buf, eof) {
                Ok(Some(Frame::Data(frame))) => {
                    if !self.deliver(&ctx, &out, frame, &peer).await? {
                        break End::Shutdown;
                    }
                    continue;
                }
                Ok(Some(Frame::TooLong { head, resync })) => {
                    let error = format!("frame longer than max_frame_size ({} bytes)", self.max_frame);
                    ctx.reject(&payload::too_long(&ctx, &head, &peer), &error).await?;
                    if !resync {
                        break End::Dropped(format!("{error}; a length-prefixed stream cannot resynchronise"));
                    }
                    continue;
                }
                Ok(None) if eof => break End::Closed,
                Ok(None) => {}
                Err(e) => break End::Dropped(e),
            }
            buf.reserve(READ_CHUNK);
            let read = tokio::select! {
                biased;
                _ = ctx.shutdown().cancelled() => break End::Shutdown,
                read = tokio::time::timeout(self.idle_timeout, stream.read_buf(&mut buf)) => read,
            };
            match read {
                Ok(Ok(0)) => eof = true,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => break End::Dropped(format!("read failed: {e}")),
                Err(_) => break End::Dropped(format!("idle for {}", humantime::format_duration(self.idle_timeout))),
            }
        };
        match end {
            End::Closed => tracing::debug!(component = %ctx.name, peer = %peer, "Client disconnected."),
            End::Shutdown => {}
            End::Dropped(reason) => {
                tracing::info!(component = %ctx.name, peer = %peer, reason = %reason, "Client disconnected by the server.")
            }
        }
        Ok(())
    }

    /// Decodes a frame and sends it, or sends it to `err`; `false` when the
    /// flow shut down while the out-port was full.
    async fn deliver(&self, ctx: &Context, out: &OutPort, frame: bytes::Bytes, peer: &str) -> Result<bool, Failure> {
        if self.format.skips(&frame) && self.framing == super::Framing::Lines {
            return Ok(true);
        }
        match self.format.decode(frame.clone()) {
            Ok(value) => tokio::select! {
                biased;
                sent = out.send(payload::message(ctx, value, peer)) => sent.map(|()| true).map_err(Failure::from),
                _ = ctx.shutdown().cancelled() => Ok(false),
            },
            Err(e) => ctx.reject(&payload::bad_frame(ctx, &frame, peer), &e).await.map(|()| true),
        }
    }
}

/// Waits for a free slot, then for a client.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> std::io::Result<(TcpStream, String, OwnedSemaphorePermit)> {
    let slot = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
    let (stream, addr) = listener.accept().await?;
    Ok((stream, payload::peer(&addr), slot))
}
