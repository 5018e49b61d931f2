//! Socket components through the binary, with real peers in the test: TCP
//! clients (many at once, oversized frames, length prefixes, bad JSON, a
//! silent client), UDP senders (paced, and a flood into a slow flow), and a
//! WebSocket server that feeds, listens, and goes away and comes back.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fbp_runtime::testbed::{free_port, wait_for_port};

use crate::util::{catches, fbp, lines, rss_kib, signal, summary, tempdir, wait_until, write};

/// `fbp run` of a flow, JSON logs collected as they come; killed on drop.
pub(crate) struct Running {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub(crate) fn start(dir: &Path, flow: &str) -> Running {
        write(dir, "flow.toml", flow);
        let mut cmd = fbp();
        cmd.current_dir(dir).args(["--log-format", "json", "run", "flow.toml"]);
        Running::spawn(cmd)
    }

    /// Spawns `cmd` (an `fbp` command with JSON logs), reading its stderr as it comes.
    pub(crate) fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("fbp starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Running { child, log, reader: Some(reader) }
    }

    /// The process id of the `fbp` it runs.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log holds `n` lines containing `needle`.
    pub(crate) fn wait_log(&self, needle: &str, n: usize) -> bool {
        wait_until(Duration::from_secs(20), || self.log().matches(needle).count() >= n)
    }

    /// Waits for a flow that ends by itself (or was told to); its exit status and whole log.
    pub(crate) fn wait(mut self) -> (std::process::ExitStatus, String) {
        let done = wait_until(Duration::from_secs(90), || self.child.try_wait().unwrap().is_some());
        assert!(done, "fbp did not finish: {}", self.log());
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        (status, self.log())
    }

    /// SIGTERM, wait for the exit (it must be clean); the whole log.
    pub(crate) fn stop(mut self) -> String {
        // fbp installs its SIGTERM handler on a thread of its own, which a
        // loaded machine may start late: signal once it is in place.
        let pid = self.child.id();
        assert!(wait_until(Duration::from_secs(10), || catches(pid, 15)), "fbp never handled SIGTERM");
        signal(&self.child, "TERM");
        assert!(wait_until(Duration::from_secs(15), || self.child.try_wait().unwrap().is_some()), "fbp did not stop");
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        let log = self.log();
        assert!(status.success(), "fbp failed: {log}");
        assert!(!log.contains("panicked"), "{log}");
        log
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The envelopes of a JSON lines file.
pub(crate) fn envelopes(path: &Path) -> Vec<serde_json::Value> {
    lines(path).iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}

/// A flow `src -> out` (file-write `out.jsonl`), `src.err -> bad` (`bad.jsonl`).
pub(crate) fn listen_flow(ty: &str, config: &str) -> String {
    format!(
        "[flow]\nname = \"net\"\nconnections = [\"src.out -> out.in\", \"src.err -> bad.in\"]\n\
         [components.src]\ntype = \"{ty}\"\nconfig = {{ {config} }}\n\
         [components.out]\ntype = \"file-write\"\nconfig = {{ path = \"out.jsonl\" }}\n\
         [components.bad]\ntype = \"file-write\"\nconfig = {{ path = \"bad.jsonl\" }}\n"
    )
}

/// A flow `src -> slow -> out`: `slow` passes `rate` messages a second from
/// an in-port of capacity 4, `out` is `null`.
fn slow_flow(ty: &str, config: &str, rate: u32) -> String {
    format!(
        "[flow]\nname = \"slow\"\nconnections = [\"src -> slow\", \"slow -> out\"]\n\
         [components.src]\ntype = \"{ty}\"\nconfig = {{ {config} }}\n\
         [components.slow]\ntype = \"throttle\"\ncapacity = 4\nconfig = {{ rate = {rate}, per = \"1s\" }}\n\
         [components.out]\ntype = \"null\"\n"
    )
}

fn connect(port: u16) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port)).expect("connects")
}

/// `tcp-listen` on a free port with `config` added, in [`listen_flow`], listening.
fn tcp_listen(dir: &Path, config: &str) -> (Running, u16) {
    let port = free_port();
    let fbp = Running::start(dir, &listen_flow("tcp-listen", &format!("bind = \"127.0.0.1:{port}\"{config}")));
    assert!(wait_for_port(port, Duration::from_secs(20)), "not listening");
    (fbp, port)
}

// ---- tcp-listen ----

#[test]
fn fifty_tcp_clients_at_once_each_line_arrives_exactly_once_with_its_peer() {
    let dir = tempdir();
    let (fbp, port) = tcp_listen(dir.path(), "");
    let (clients, per_client) = (50usize, 200usize);
    let barrier = Arc::new(std::sync::Barrier::new(clients));
    let started = Instant::now();
    let senders: Vec<_> = (0..clients)
        .map(|c| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut s = connect(port);
                let me = s.local_addr().unwrap().to_string();
                barrier.wait(); // all connected at once before anyone sends
                let text: String = (0..per_client).map(|n| format!("{{\"c\":{c},\"n\":{n}}}\r\n")).collect();
                // In uneven pieces, so lines straddle reads.
                for piece in text.as_bytes().chunks(777) {
                    s.write_all(piece).unwrap();
                }
                me
            })
        })
        .collect();
    let peers: Vec<String> = senders.into_iter().map(|t| t.join().unwrap()).collect();
    let out = dir.path().join("out.jsonl");
    let total = clients * per_client;
    assert!(wait_until(Duration::from_secs(25), || lines(&out).len() >= total), "{} of {total}", lines(&out).len());
    eprintln!("tcp: {total} lines from {clients} clients written to the file in {:?}", started.elapsed());
    let log = fbp.stop();
    let mut seen = BTreeMap::new();
    for e in envelopes(&out) {
        let (c, n) = (e["data"]["c"].as_u64().unwrap() as usize, e["data"]["n"].as_u64().unwrap());
        assert_eq!(e["metadata"]["headers"]["peer"], peers[c], "client {c}'s peer");
        *seen.entry((c, n)).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), total, "every line arrived");
    assert!(seen.values().all(|&k| k == 1), "a line arrived twice");
    assert_eq!(summary(&log, "src", "sent"), Some(total as u64));
    assert_eq!(summary(&log, "src", "errors"), Some(0));
}

#[test]
fn an_oversized_line_goes_to_err_and_the_connection_goes_on() {
    let dir = tempdir();
    let (fbp, port) = tcp_listen(dir.path(), ", max_frame_size = \"64B\"");
    let mut s = connect(port);
    let long = "x".repeat(5000);
    s.write_all(format!("{{\"n\":1}}\n{long}\n{{\"n\":2}}\n").as_bytes()).unwrap();
    s.write_all(b"{\"n\":3}\n").unwrap();
    let out = dir.path().join("out.jsonl");
    assert!(wait_until(Duration::from_secs(20), || lines(&out).len() >= 3), "{:?}", lines(&out));
    let log = fbp.stop();
    let ns: Vec<u64> = envelopes(&out).iter().map(|e| e["data"]["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, [1, 2, 3], "the lines after the long one still arrive, in order");
    let bad = envelopes(&dir.path().join("bad.jsonl"));
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0]["data"]["error"].as_str().unwrap().contains("max_frame_size (64 bytes)"), "{bad:?}");
    assert!(bad[0]["data"]["data"].as_str().unwrap().starts_with("xxxx"), "its first bytes are shown");
    assert_eq!(bad[0]["metadata"]["headers"]["peer"], s.local_addr().unwrap().to_string());
    assert_eq!(summary(&log, "src", "errors"), Some(1));
}

fn prefixed(payload: &[u8]) -> Vec<u8> {
    [&(payload.len() as u32).to_be_bytes()[..], payload].concat()
}

#[test]
fn length_prefixed_frames_arrive_whole_and_an_oversized_one_closes_the_connection() {
    let dir = tempdir();
    let (fbp, port) = tcp_listen(dir.path(), ", framing = \"length\", format = \"text\", max_frame_size = \"1KiB\"");
    let mut s = connect(port);
    let frames = [prefixed(b"one"), prefixed(b"two\nlines"), prefixed(b"")].concat();
    for b in &frames {
        s.write_all(&[*b]).unwrap(); // a byte at a time: a frame spans many reads
    }
    let out = dir.path().join("out.jsonl");
    assert!(wait_until(Duration::from_secs(20), || lines(&out).len() >= 3));
    // Too long: reported, and the connection is closed (a length stream cannot resync).
    s.write_all(&prefixed(&[b'y'; 2000])).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let closed = matches!(s.read(&mut [0u8; 16]), Ok(0) | Err(_));
    assert!(closed, "the server closed the connection");
    // Another client is served.
    connect(port).write_all(&prefixed(b"after")).unwrap();
    assert!(wait_until(Duration::from_secs(20), || lines(&out).len() >= 4));
    let log = fbp.stop();
    let texts: Vec<String> = envelopes(&out).iter().map(|e| e["data"].as_str().unwrap().to_string()).collect();
    assert_eq!(texts, ["one", "two\nlines", "", "after"]);
    let bad = envelopes(&dir.path().join("bad.jsonl"));
    assert_eq!(bad.len(), 1);
    assert!(bad[0]["data"]["error"].as_str().unwrap().contains("max_frame_size"), "{bad:?}");
    assert!(log.contains("cannot resynchronise"), "{log}");
}

#[test]
fn malformed_json_goes_to_the_dead_letter_and_the_stream_goes_on() {
    let dir = tempdir();
    let port = free_port();
    let flow = format!(
        "[flow]\nname = \"dl\"\ndead_letter = \"file:dead.jsonl\"\nconnections = [\"src -> out\"]\n\
         [components.src]\ntype = \"tcp-listen\"\nconfig = {{ bind = \"127.0.0.1:{port}\" }}\n\
         [components.out]\ntype = \"file-write\"\nconfig = {{ path = \"out.jsonl\" }}\n"
    );
    let fbp = Running::start(dir.path(), &flow);
    assert!(wait_for_port(port, Duration::from_secs(20)));
    connect(port).write_all(b"{\"ok\":1}\n{\"broken\":\n\n{\"ok\":2}\n").unwrap();
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    assert!(wait_until(Duration::from_secs(20), || lines(&out).len() >= 2 && !lines(&dead).is_empty()));
    let log = fbp.stop();
    let oks: Vec<u64> = envelopes(&out).iter().map(|e| e["data"]["ok"].as_u64().unwrap()).collect();
    assert_eq!(oks, [1, 2], "the blank line is skipped, the bad one does not stop the stream");
    let dead = lines(&dead).join("\n");
    assert!(dead.contains("not JSON") && dead.contains("{\\\"broken\\\":"), "{dead}");
    assert_eq!(summary(&log, "src", "errors"), Some(1));
}

#[test]
fn a_silent_client_is_dropped_after_the_idle_timeout() {
    let dir = tempdir();
    let (fbp, port) = tcp_listen(dir.path(), ", idle_timeout = \"300ms\"");
    let mut silent = connect(port);
    let mut talker = connect(port);
    let start = Instant::now();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The talker keeps its connection with a line every 100 ms meanwhile.
    let keep = std::thread::spawn(move || {
        for n in 0..10 {
            talker.write_all(format!("{{\"n\":{n}}}\n").as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        talker
    });
    assert!(matches!(silent.read(&mut [0u8; 8]), Ok(0)), "the silent client sees the server close");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(5), "{waited:?}");
    let _talker = keep.join().unwrap();
    let out = dir.path().join("out.jsonl");
    assert!(wait_until(Duration::from_secs(10), || lines(&out).len() >= 10), "the talking client was kept");
    let log = fbp.stop();
    assert!(log.contains("idle for 300ms"), "{log}");
}

#[test]
fn at_max_connections_the_next_client_waits_until_one_leaves() {
    let dir = tempdir();
    let (fbp, port) = tcp_listen(dir.path(), ", max_connections = 1");
    let out = dir.path().join("out.jsonl");
    let mut first = connect(port);
    first.write_all(b"{\"who\":\"first\"}\n").unwrap();
    assert!(wait_until(Duration::from_secs(20), || lines(&out).len() == 1));
    let mut second = connect(port); // completed by the kernel's backlog, not accepted yet
    second.write_all(b"{\"who\":\"second\"}\n").unwrap();
    // A negative can only be watched for a while: the second is not served meanwhile.
    assert!(!wait_until(Duration::from_millis(500), || lines(&out).len() > 1), "served beyond max_connections");
    drop(first);
    assert!(wait_until(Duration::from_secs(20), || lines(&out).len() == 2), "the second is served once the first left");
    fbp.stop();
    assert_eq!(envelopes(&out)[1]["data"]["who"], "second");
}

#[test]
fn a_slow_flow_pushes_back_on_a_tcp_client_and_memory_stays_bounded() {
    let dir = tempdir();
    let port = free_port();
    let fbp = Running::start(dir.path(), &slow_flow("tcp-listen", &format!("bind = \"127.0.0.1:{port}\""), 100));
    assert!(wait_for_port(port, Duration::from_secs(20)));
    let pid = fbp.child.id();
    let mut s = connect(port);
    s.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
    let chunk: String = (0..1000).map(|n| format!("{{\"n\":{n},\"pad\":\"{}\"}}\n", "p".repeat(40))).collect();
    let (mut written, mut blocked, mut peak) = (0usize, false, 0u64);
    let start = Instant::now();
    while written < 200 << 20 && start.elapsed() < Duration::from_secs(8) {
        match s.write(chunk.as_bytes()) {
            Ok(n) => written += n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                blocked = true;
                break;
            }
            Err(e) => panic!("write failed: {e}"),
        }
        peak = peak.max(rss_kib(pid).unwrap_or(0));
    }
    peak = peak.max(rss_kib(pid).unwrap_or(0));
    eprintln!("tcp back-pressure: {written} bytes written before the client blocked, peak RSS {peak} KiB");
    assert!(blocked, "the client wrote {written} bytes without ever waiting");
    assert!(written < 64 << 20, "{written} bytes taken: the server did not stop reading");
    assert!(peak < 100 * 1024, "RSS peaked at {peak} KiB");
    drop(s);
    let log = fbp.stop();
    assert!(summary(&log, "src", "sent").unwrap() < 2000, "the slow flow set the pace");
}

// ---- udp-listen ----

#[test]
fn paced_udp_datagrams_all_arrive_with_their_peer() {
    let dir = tempdir();
    let port = free_port();
    let fbp = Running::start(
        dir.path(),
        &listen_flow("udp-listen", &format!("bind = \"127.0.0.1:{port}\", framing = \"lines\"")),
    );
    assert!(fbp.wait_log("Listening.", 1));
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let me = s.local_addr().unwrap().to_string();
    let n = 500;
    for i in 0..n {
        // Two lines a datagram for the even ones.
        let text =
            if i % 2 == 0 { format!("{{\"i\":{i}}}\n{{\"i\":{i},\"twin\":true}}\n") } else { format!("{{\"i\":{i}}}") };
        s.send_to(text.as_bytes(), ("127.0.0.1", port)).unwrap();
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let out = dir.path().join("out.jsonl");
    let want = n + n / 2;
    assert!(wait_until(Duration::from_secs(20), || lines(&out).len() >= want), "{} of {want}", lines(&out).len());
    let log = fbp.stop();
    let got = envelopes(&out);
    assert_eq!(got.len(), want);
    assert!(got.iter().all(|e| e["metadata"]["headers"]["peer"] == me));
    assert_eq!(summary(&log, "src", "dropped"), Some(0));
}

/// Bytes queued in the kernel for the IPv4 UDP socket bound to `port`
/// (`rx_queue` in `/proc/net/udp`); `None` when there is no such socket.
fn udp_queued(port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/udp").ok()?;
    table.lines().skip(1).find_map(|row| {
        let cols: Vec<&str> = row.split_whitespace().collect();
        let local_port = u16::from_str_radix(cols.get(1)?.rsplit_once(':')?.1, 16).ok()?;
        let rx = cols.get(4)?.split_once(':')?.1;
        (local_port == port).then(|| u64::from_str_radix(rx, 16).ok())?
    })
}

#[test]
fn a_udp_flood_into_a_slow_flow_drops_and_counts_with_bounded_memory() {
    let dir = tempdir();
    let port = free_port();
    let config = format!("bind = \"127.0.0.1:{port}\", buffer = 64");
    let fbp = Running::start(dir.path(), &slow_flow("udp-listen", &config, 200));
    assert!(fbp.wait_log("Listening.", 1));
    let pid = fbp.child.id();
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagram = format!("{{\"pad\":\"{}\"}}", "p".repeat(900));
    let (mut sent, mut peak) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) && sent < 300_000 {
        for _ in 0..500 {
            if s.send_to(datagram.as_bytes(), ("127.0.0.1", port)).is_ok() {
                sent += 1;
            }
        }
        peak = peak.max(rss_kib(pid).unwrap_or(0));
    }
    // The flood is over once fbp has read the socket's queue empty.
    assert!(wait_until(Duration::from_secs(10), || udp_queued(port) == Some(0)), "the socket was never drained");
    peak = peak.max(rss_kib(pid).unwrap_or(0));
    let log = fbp.stop();
    let (passed, dropped) = (summary(&log, "src", "sent").unwrap(), summary(&log, "src", "dropped").unwrap());
    eprintln!("udp flood: {sent} datagrams sent, {passed} passed, {dropped} dropped, peak RSS {peak} KiB");
    assert!(dropped > 0, "a flood into a slow flow must drop");
    assert!(passed + dropped <= sent, "{passed} + {dropped} > {sent}");
    // Every datagram is passed or counted, but for the one a send to the full
    // out-port held when the flow stopped.
    assert!(sent - (passed + dropped) <= 1, "uncounted losses: {sent} sent, {passed} passed, {dropped} dropped");
    assert!(passed < 2000, "the slow flow took {passed}: the flood was not a flood");
    assert!(peak < 200 * 1024, "RSS peaked at {peak} KiB");
    assert!(log.contains("Datagrams dropped"), "the drop count is logged");
    let warnings = log.matches("Datagrams dropped").count();
    assert!(warnings <= 2, "drops are reported periodically, not per datagram: {warnings} warnings");
}

// ---- websocket ----

/// A plain or TLS stream, for the test server.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// A WebSocket server on `port` in the test (over TLS with `tls`): sends `{"i": K}` for K in
/// `feed`, then records what the client sends, until told to stop.
struct WsServer {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn ws_server(
    rt: &tokio::runtime::Runtime,
    port: u16,
    tls: Option<tokio_rustls::TlsAcceptor>,
    feed: std::ops::Range<u64>,
    got: Arc<Mutex<Vec<String>>>,
) -> WsServer {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let listener = rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", port))).expect("the port is free again");
    let task = rt.spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else { return };
        let stream: Box<dyn Stream> = match tls {
            Some(tls) => Box::new(tls.accept(tcp).await.expect("TLS handshake")),
            None => Box::new(tcp),
        };
        let mut ws = tokio_tungstenite::accept_async(stream).await.expect("handshake");
        for k in feed {
            ws.send(Message::text(format!("{{\"i\":{k}}}"))).await.unwrap();
        }
        ws.send(Message::Binary(vec![0xde, 0xad].into())).await.unwrap();
        loop {
            tokio::select! {
                _ = stopped.changed() => break,
                m = ws.next() => match m {
                    Some(Ok(Message::Text(t))) => got.lock().unwrap().push(t.to_string()),
                    Some(Ok(_)) => {}
                    _ => break,
                },
            }
        }
        // Dropped without a close frame: the client sees the connection go.
    });
    WsServer { stop, task }
}

impl WsServer {
    fn shut(self, rt: &tokio::runtime::Runtime) {
        let _ = self.stop.send(true);
        rt.block_on(self.task).unwrap();
    }
}

#[test]
fn websocket_receives_sends_and_reconnects_when_the_server_comes_back() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempdir();
    let port = free_port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let server = ws_server(&rt, port, None, 0..50, got.clone());
    let flow = format!(
        "[flow]\nname = \"ws\"\nconnections = [\"ticks -> ws.in\", \"ws.out -> out\"]\n\
         [components.ticks]\ntype = \"counter\"\nconfig = {{ interval = \"20ms\", max_count = 0 }}\n\
         [components.ws]\ntype = \"websocket\"\nconfig = {{ url = \"ws://127.0.0.1:{port}/feed\", reconnect = \"50ms..200ms\" }}\n\
         [components.out]\ntype = \"file-write\"\nconfig = {{ path = \"out.jsonl\" }}\n"
    );
    let fbp = Running::start(dir.path(), &flow);
    let out = dir.path().join("out.jsonl");
    assert!(wait_until(Duration::from_secs(20), || lines(&out).len() >= 51), "received {}", lines(&out).len());
    assert!(wait_until(Duration::from_secs(20), || got.lock().unwrap().len() >= 50), "the server got too few");
    server.shut(&rt);
    assert!(fbp.wait_log("Connection lost", 1), "{}", fbp.log());
    // Down for a while: several attempts fail, one warning.
    std::thread::sleep(Duration::from_millis(800));
    let server = ws_server(&rt, port, None, 100..150, got.clone());
    assert!(fbp.wait_log("Reconnected.", 1), "{}", fbp.log());
    assert!(wait_until(Duration::from_secs(20), || lines(&out).len() >= 102), "received {}", lines(&out).len());
    let sent_before = got.lock().unwrap().len();
    assert!(wait_until(Duration::from_secs(20), || got.lock().unwrap().len() >= sent_before + 20), "sending resumed");
    let log = fbp.stop();
    server.shut(&rt);
    assert_eq!(log.matches("Connection lost").count(), 1, "one warning per outage: {log}");
    assert_eq!(log.matches("Cannot connect").count(), 0, "{log}");
    let received = envelopes(&out);
    let is: Vec<u64> = received.iter().filter_map(|e| e["data"]["i"].as_u64()).collect();
    assert_eq!(is, (0..50).chain(100..150).collect::<Vec<_>>(), "both feeds, in order");
    assert_eq!(received.len(), 102, "and one binary frame after each feed");
    let counts: Vec<u64> = got
        .lock()
        .unwrap()
        .iter()
        .map(|t| serde_json::from_str::<serde_json::Value>(t).unwrap()["count"].as_u64().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] < w[1]), "sent in order, none twice: {counts:?}");
    assert_eq!(counts[0], 1);
}

// ---- flows/udp-sensors.toml ----

#[test]
fn the_udp_sensors_flow_averages_json_and_csv_readings_into_sqlite() {
    let dir = tempdir();
    let (json_port, csv_port) = (free_port(), free_port());
    let db = dir.path().join("s.db");
    let mut cmd = fbp();
    cmd.current_dir(dir.path())
        .args(["--log-format", "json", "run"])
        .arg(crate::util::root().join("flows/udp-sensors.toml"))
        .env("UDP_BIND", format!("127.0.0.1:{json_port}"))
        .env("UDP_CSV_BIND", format!("127.0.0.1:{csv_port}"))
        .env("WINDOW", "200ms")
        .env("SENSOR_DB", &db)
        .env("DEAD_LETTER", dir.path().join("dead.jsonl"));
    let fbp = Running::spawn(cmd);
    assert!(fbp.wait_log("Listening.", 2), "{}", fbp.log());
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(b"{\"sensor\":\"t1\",\"value\":20}\n{\"sensor\":\"t1\",\"value\":23.5}\n", ("127.0.0.1", json_port))
        .unwrap();
    s.send_to(b"t2,10\r\nt2,14\nnot,a,reading\n", ("127.0.0.1", csv_port)).unwrap();
    s.send_to(b"{\"sensor\":\"t1\"", ("127.0.0.1", json_port)).unwrap();
    // Windows of 200 ms may split a sensor's readings: sum counts across rows.
    let totals = || -> BTreeMap<String, (f64, i64)> {
        let Ok(conn) = rusqlite::Connection::open(&db) else { return BTreeMap::new() };
        let Ok(mut stmt) = conn.prepare("SELECT sensor, avg, count FROM averages") else { return BTreeMap::new() };
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, f64>(1)?, r.get::<_, i64>(2)?)));
        let mut totals = BTreeMap::new();
        for (sensor, avg, count) in rows.into_iter().flatten().flatten() {
            let t: &mut (f64, i64) = totals.entry(sensor).or_default();
            t.0 += avg * count as f64;
            t.1 += count;
        }
        totals
    };
    let done =
        |t: &BTreeMap<String, (f64, i64)>| t.get("t1").map(|x| x.1) == Some(2) && t.get("t2").map(|x| x.1) == Some(2);
    assert!(wait_until(Duration::from_secs(20), || done(&totals())), "{:?}", totals());
    let dead = dir.path().join("dead.jsonl");
    assert!(wait_until(Duration::from_secs(10), || lines(&dead).len() >= 2), "bad lines reach the dead letter");
    let log = fbp.stop();
    let t = totals();
    assert_eq!((t["t1"].0 / 2.0, t["t2"].0 / 2.0), (21.75, 12.0));
    assert_eq!(summary(&log, "json_in", "errors"), Some(1), "the cut JSON line");
    assert_eq!(summary(&log, "parse", "errors"), Some(1), "the CSV line with three fields");
}

#[test]
fn relay_file_to_a_websocket_sends_every_line_then_closes_and_exits() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempdir();
    let port = free_port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let server = ws_server(&rt, port, None, 0..0, got.clone());
    let input: String = (0..200).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    write(dir.path(), "in.jsonl", &input);
    let o = fbp()
        .current_dir(dir.path())
        .args(["relay", "file:in.jsonl", &format!("ws://127.0.0.1:{port}/in")])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", crate::util::stderr(&o));
    rt.block_on(server.task).unwrap(); // ends when the client closes
    let want: Vec<String> = (0..200).map(|n| format!("{{\"n\":{n}}}")).collect();
    assert_eq!(*got.lock().unwrap(), want, "every line, in order, once");
}

/// A test CA (`ca.pem`) in `dir` and a TLS acceptor for `localhost` signed by it.
fn tls_acceptor(dir: &Path) -> tokio_rustls::TlsAcceptor {
    fbp_runtime::testbed::certificates(dir, "DNS:localhost").expect("openssl makes the test certificates");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let certs = rustls_pemfile::certs(&mut read("server.pem").as_slice()).collect::<Result<Vec<_>, _>>().unwrap();
    let key = rustls_pemfile::private_key(&mut read("server.key").as_slice()).unwrap().expect("a key");
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[test]
fn wss_connects_with_the_ca_file_and_receives() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempdir();
    let port = free_port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let server = ws_server(&rt, port, Some(tls_acceptor(dir.path())), 0..20, got);
    let flow = format!(
        "[flow]\nname = \"wss\"\nconnections = [\"ws.out -> out\"]\n\
         [components.ws]\ntype = \"websocket\"\nconfig = {{ url = \"wss://localhost:{port}/feed\", ca_file = \"ca.pem\" }}\n\
         [components.out]\ntype = \"file-write\"\nconfig = {{ path = \"out.jsonl\" }}\n"
    );
    let fbp = Running::start(dir.path(), &flow);
    let out = dir.path().join("out.jsonl");
    assert!(wait_until(Duration::from_secs(20), || lines(&out).len() >= 21), "{}", fbp.log());
    let log = fbp.stop();
    server.shut(&rt);
    let is: Vec<u64> = envelopes(&out).iter().filter_map(|e| e["data"]["i"].as_u64()).collect();
    assert_eq!(is, (0..20).collect::<Vec<_>>());
    assert!(!log.contains("Cannot connect"), "{log}");
}

#[test]
fn a_websocket_whose_server_never_comes_dead_letters_its_input_at_shutdown() {
    let dir = tempdir();
    let port = free_port(); // nothing listens there
    let flow = format!(
        "[flow]\nname = \"down\"\ndead_letter = \"file:dead.jsonl\"\nconnections = [\"src -> ws\"]\n\
         [components.src]\ntype = \"inject\"\nconfig = {{ messages = [1, 2, 3, 4, 5] }}\n\
         [components.ws]\ntype = \"websocket\"\nconfig = {{ url = \"ws://127.0.0.1:{port}/x\", reconnect = \"20ms..100ms\" }}\n"
    );
    let fbp = Running::start(dir.path(), &flow);
    assert!(fbp.wait_log("Cannot connect", 1), "{}", fbp.log());
    let log = fbp.stop();
    assert_eq!(log.matches("Cannot connect").count(), 1, "one warning for the whole outage");
    let dead = lines(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 5, "{dead:?}");
    assert!(dead.iter().all(|l| l.contains("connection was down when the flow stopped")), "{dead:?}");
}

#[test]
fn relay_tcp_to_stdout_prints_what_clients_send() {
    let dir = tempdir();
    let port = free_port();
    let mut child = fbp()
        .current_dir(dir.path())
        .args(["--log-level", "warn", "relay", &format!("tcp://127.0.0.1:{port}?format=text"), "-"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for_port(port, Duration::from_secs(20)), "not listening");
    connect(port).write_all(b"hello\r\nworld\n").unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let data: Vec<serde_json::Value> =
        (0..2).map(|_| serde_json::from_str::<serde_json::Value>(&out.next().unwrap().unwrap()).unwrap()).collect();
    assert!(wait_until(Duration::from_secs(10), || catches(child.id(), 15)));
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    assert_eq!(data.iter().map(|e| e["data"].as_str().unwrap()).collect::<Vec<_>>(), ["hello", "world"]);
    assert!(data[0]["metadata"]["headers"]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
}
