//! `udp-listen`: datagrams (or the lines in them) as messages.
//!
//! UDP cannot push back: a sender never learns that the flow is full. So the
//! socket is read at once into a bounded buffer, and when the buffer is full
//! a datagram is dropped and counted (the component's `dropped` metric, and a
//! warning at most every [`REPORT_EVERY`] with the count), rather than left
//! to overflow the kernel's receive buffer, where nobody would count it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fbp_runtime::spec::{KeySpec, KeyType, Port};
use fbp_runtime::units::positive_size;
use fbp_runtime::{
    Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, PortSpec, Task, TaskFuture,
};
use serde::Deserialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::payload::{self, FORMAT_KEY, Format};

/// How often dropped datagrams are reported (when there were any).
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The largest UDP payload over IPv4.
const MAX_UDP: usize = 65_507;

/// The `udp-listen` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "udp-listen",
    summary: "Receive UDP datagrams, each (or each line in it) a message; drops and counts what the flow cannot take.",
    doc: "Binds `bind` and sends each datagram as a message (`framing = \"datagram\"`), or each \
          line of it (`lines`: `\\n`-delimited, `\\r\\n` accepted, blank lines skipped), decoded per \
          `format`, with the sender's address in header `peer`. A frame that does not decode goes \
          to `err`, and so does a datagram longer than `max_datagram_size` (its first bytes). UDP \
          cannot push back: the socket is read at once into a buffer of `buffer` datagrams, and \
          while the flow is saturated and that buffer is full, new datagrams are DROPPED and \
          counted (the `dropped` figure of the run summary), with a warning at most every 10 s \
          giving the count, never one per datagram. Datagrams the kernel drops because the \
          socket's receive buffer overflowed (a flood faster than the component reads) are \
          counted too, on Linux (from `/proc/net/udp`). Delivery is at-most-once: dropped datagrams \
          and those buffered at shutdown are lost. For lossless input from devices that can use \
          it, prefer `tcp-listen`.",
    kind: Kind::Source,
    inputs: &[],
    outputs: &[PortSpec {
        name: "out",
        ty: "json",
        doc: "one message per datagram or line; text or bytes per `format`",
    }],
    config: &[
        KeySpec::required("bind", KeyType::String, "The address to listen on, `HOST:PORT` (`\"0.0.0.0:5514\"`)."),
        FORMAT_KEY,
        KeySpec::new(
            "framing",
            KeyType::Enum(&["datagram", "lines"]),
            "\"datagram\"",
            "`datagram`: a message per datagram; `lines`: a message per line of a datagram.",
        ),
        KeySpec::new(
            "max_datagram_size",
            KeyType::String,
            "\"64KiB\"",
            "The longest datagram taken (at most 65507 bytes are read); a longer one goes to `err`.",
        ),
        KeySpec::new(
            "buffer",
            KeyType::Integer,
            "1024",
            "Datagrams held while the flow is busy; when full, new ones are dropped and counted.",
        ),
    ],
    delivery: Delivery::AtMostOnce,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.daq]\ntype = \"udp-listen\"\nconfig = { bind = \"0.0.0.0:5514\", framing = \"lines\", format = \"json\" }\n",
    build,
    ports: Some(ports),
    probe: Some(crate::probe::UDP_BIND),
};

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Framing {
    Datagram,
    Lines,
}

#[derive(Deserialize)]
struct Config {
    bind: String,
    format: Format,
    framing: Framing,
    max_datagram_size: String,
    buffer: i64,
}

/// A built `udp-listen`.
#[derive(Debug)]
struct UdpListen {
    bind: String,
    format: Format,
    framing: Framing,
    max_datagram: usize,
    buffer: usize,
}

fn ports(config: &serde_json::Value) -> (Vec<Port>, Vec<Port>) {
    (Vec::new(), vec![Port { name: "out".into(), ty: Format::port_type(config).into() }])
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    super::check_bind(&config.bind)?;
    if config.buffer < 1 {
        return Err("`buffer` must be at least 1".into());
    }
    Ok(Instance::task(UdpListen {
        max_datagram: positive_size("max_datagram_size", &config.max_datagram_size)?.min(MAX_UDP),
        bind: config.bind,
        format: config.format,
        framing: config.framing,
        buffer: usize::try_from(config.buffer).unwrap_or(usize::MAX),
    }))
}

/// A datagram as received: its bytes (at most `max_datagram + 1`) and its sender.
type Datagram = (Bytes, SocketAddr);

impl Task for UdpListen {
    fn run(self: Box<Self>, ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let socket =
                UdpSocket::bind(&self.bind).await.map_err(|e| super::bind_failure(&ctx, "bind UDP", &self.bind, &e))?;
            let local = socket.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| self.bind.clone());
            tracing::info!(component = %ctx.name, addr = %local, "Listening.");
            let (tx, mut rx) = mpsc::channel(self.buffer);
            let drops = Drops::new(&socket);
            let result = tokio::select! {
                biased;
                _ = ctx.shutdown().cancelled() => Ok(()),
                failed = self.receive(&socket, &tx, &ctx, &drops) => failed,
                ended = self.forward(&ctx, &mut rx) => ended,
                () = drops.report_every(&ctx) => Ok(()),
            };
            // What is still buffered is lost: counted with the rest.
            (0..rx.len()).for_each(|_| drops.count(&ctx));
            drops.report(&ctx);
            result
        })
    }
}

impl UdpListen {
    /// Reads datagrams as fast as they come; a full buffer drops and counts them.
    async fn receive(
        &self,
        socket: &UdpSocket,
        tx: &mpsc::Sender<Datagram>,
        ctx: &Context,
        drops: &Drops,
    ) -> Result<(), Failure> {
        // One byte more than the limit, to tell a datagram that fits from one cut short.
        let mut buf = vec![0u8; self.max_datagram + 1];
        loop {
            let (n, from) = match socket.recv_from(&mut buf).await {
                Ok(got) => got,
                // An ICMP error for an earlier send, and the like: not fatal for a listener.
                Err(e) => {
                    tracing::debug!(component = %ctx.name, error = %e, "UDP receive error.");
                    continue;
                }
            };
            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send((Bytes::copy_from_slice(&buf[..n]), from)) {
                drops.count(ctx);
            }
        }
    }

    /// Sends what was received, as fast as the out-port takes it.
    async fn forward(&self, ctx: &Context, rx: &mut mpsc::Receiver<Datagram>) -> Result<(), Failure> {
        let out = ctx.output("out");
        while let Some((datagram, from)) = rx.recv().await {
            let peer = payload::peer(&from);
            if datagram.len() > self.max_datagram {
                let error = format!("datagram longer than max_datagram_size ({} bytes)", self.max_datagram);
                ctx.reject(&payload::too_long(ctx, &datagram, &peer), &error).await?;
                continue;
            }
            for frame in frames(self.framing, &datagram) {
                if self.framing == Framing::Lines && self.format.skips(&frame) {
                    continue;
                }
                match self.format.decode(frame.clone()) {
                    Ok(v) => out.send(payload::message(ctx, v, &peer)).await?,
                    Err(e) => ctx.reject(&payload::bad_frame(ctx, &frame, &peer), &e).await?,
                }
            }
        }
        Ok(())
    }
}

/// The frames of a datagram: itself, or its lines without `\r\n` (a final
/// newline does not make an empty last line).
fn frames(framing: Framing, datagram: &Bytes) -> Vec<Bytes> {
    match framing {
        Framing::Datagram => vec![datagram.clone()],
        Framing::Lines => {
            let body = datagram.strip_suffix(b"\n").unwrap_or(datagram);
            let mut start = 0;
            let mut lines = Vec::new();
            for piece in body.split(|b| *b == b'\n') {
                let line = datagram.slice(start..start + piece.len());
                start += piece.len() + 1;
                lines.push(if line.ends_with(b"\r") { line.slice(..line.len() - 1) } else { line });
            }
            lines
        }
    }
}

/// Datagrams lost before the out-port: dropped because the buffer was full,
/// or by the kernel because the socket's receive buffer was (Linux counts
/// those per socket; read from `/proc/net/udp{,6}`). Counted in the
/// component's `dropped` metric and reported together.
#[derive(Default)]
struct Drops {
    /// Dropped by this component: the buffer was full (or still held at shutdown).
    buffer: AtomicU64,
    /// The kernel's count for the socket, as last read.
    kernel: AtomicU64,
    /// The total at the last report.
    reported: AtomicU64,
    /// The socket's inode, to find it in `/proc/net/udp`; `None` where unknown.
    inode: Option<u64>,
}

impl Drops {
    fn new(socket: &UdpSocket) -> Self {
        Drops { inode: socket_inode(socket), ..Drops::default() }
    }

    fn count(&self, ctx: &Context) {
        self.buffer.fetch_add(1, Ordering::Relaxed);
        ctx.metrics().dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds what the kernel dropped since the last look to the metric.
    fn poll_kernel(&self, ctx: &Context) {
        let Some(now) = self.inode.and_then(kernel_drops) else { return };
        let before = self.kernel.swap(now, Ordering::Relaxed);
        ctx.metrics().dropped.fetch_add(now.saturating_sub(before), Ordering::Relaxed);
    }

    /// Reports new drops every [`REPORT_EVERY`]; never returns.
    async fn report_every(&self, ctx: &Context) {
        let mut tick = tokio::time::interval(REPORT_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.report(ctx);
        }
    }

    /// One warning with the drops since the last one, if any.
    fn report(&self, ctx: &Context) {
        self.poll_kernel(ctx);
        let (buffer, kernel) = (self.buffer.load(Ordering::Relaxed), self.kernel.load(Ordering::Relaxed));
        let total = buffer + kernel;
        let new = total.saturating_sub(self.reported.swap(total, Ordering::Relaxed));
        if new > 0 {
            tracing::warn!(
                component = %ctx.name,
                dropped = new,
                dropped_total = total,
                buffer = buffer,
                kernel = kernel,
                "Datagrams dropped: the flow is not keeping up and UDP cannot push back."
            );
        }
    }
}

/// The inode of a socket, from `/proc/self/fd` (Linux).
fn socket_inode(socket: &UdpSocket) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd())).ok()?;
    link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The kernel's drop count of the UDP socket with this inode: the last
/// column of its row in `/proc/net/udp` or `/proc/net/udp6`.
fn kernel_drops(inode: u64) -> Option<u64> {
    ["/proc/net/udp", "/proc/net/udp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(table).ok()?;
        text.lines().skip(1).find_map(|row| drops_in_row(row, inode))
    })
}

/// `drops` of a `/proc/net/udp` row whose inode (the tenth column) is `inode`.
fn drops_in_row(row: &str, inode: u64) -> Option<u64> {
    let cols: Vec<&str> = row.split_whitespace().collect();
    (cols.get(9)?.parse::<u64>().ok()? == inode).then(|| cols.last()?.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use fbp_runtime::testing::Harness;
    use serde_json::json;

    fn lines(datagram: &'static [u8]) -> Vec<Bytes> {
        frames(Framing::Lines, &Bytes::from_static(datagram))
    }

    #[test]
    fn a_datagram_splits_into_lines_without_crlf() {
        assert_eq!(lines(b"a\r\nb\nc"), ["a", "b", "c"].map(|s| Bytes::from_static(s.as_bytes())));
        assert_eq!(lines(b"one\n"), [Bytes::from_static(b"one")]);
        assert_eq!(lines(b"x\n\ny\n"), ["x", "", "y"].map(|s| Bytes::from_static(s.as_bytes())));
        assert_eq!(frames(Framing::Datagram, &Bytes::from_static(b"a\nb")), [Bytes::from_static(b"a\nb")]);
    }

    #[test]
    fn kernel_drops_are_read_from_the_row_of_the_socket() {
        let row = "  12: 0100007F:15BA 00000000:0000 07 00000000:00034000 00:00000000 00000000  1000        0 918273 2 0000000000000000 4711";
        assert_eq!(drops_in_row(row, 918273), Some(4711));
        assert_eq!(drops_in_row(row, 1), None);
        assert_eq!(drops_in_row("sl local_address", 1), None);
    }

    #[tokio::test]
    async fn a_fresh_socket_is_found_with_no_drops() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let inode = socket_inode(&socket).expect("Linux /proc");
        assert_eq!(kernel_drops(inode), Some(0));
    }

    #[tokio::test]
    async fn config_errors_are_build_errors() {
        for (config, want) in [
            (json!({"bind": "5514"}), "HOST:PORT"),
            (json!({"bind": "127.0.0.1:0", "buffer": 0}), "at least 1"),
            (json!({"bind": "127.0.0.1:0", "max_datagram_size": "0B"}), "more than 0"),
        ] {
            let err = Harness::new(&SPEC, config).run().await.result.unwrap().unwrap_err().0;
            assert!(err.contains(want), "{err}");
        }
    }

    #[tokio::test]
    async fn datagrams_become_messages_with_their_peer_and_bad_ones_go_to_err() {
        let port = fbp_runtime::testbed::free_port();
        let mut h = Harness::new(
            &SPEC,
            json!({"bind": format!("127.0.0.1:{port}"), "framing": "lines", "max_datagram_size": "32B"}),
        );
        let stop = h.shutdown();
        let sender = tokio::spawn(async move {
            let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let me = s.local_addr().unwrap().to_string();
            for _ in 0..100 {
                // Until the listener is up; then once more is harmless (counted below).
                s.send_to(b"{\"n\":1}\n{\"n\":2}\r\nnot json\n", ("127.0.0.1", port)).await.unwrap();
                s.send_to(&[b'x'; 40], ("127.0.0.1", port)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            stop.cancel();
            me
        });
        let out = h.run().await;
        let me = sender.await.unwrap();
        let got = out.json("out");
        assert!(got.len() >= 2 && got.len() % 2 == 0, "{got:?}");
        assert_eq!(&got[..2], [r#"{"n":1}"#, r#"{"n":2}"#]);
        assert!(out.messages("out").iter().all(|m| m.meta.headers["peer"] == me));
        let errs = out.messages("err");
        assert_eq!(errs.len(), got.len(), "one bad line and one long datagram per round");
    }
}
