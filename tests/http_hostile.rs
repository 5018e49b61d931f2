//! HTTP clients against a hostile server: endless and oversized response
//! bodies, message values that try to change the endpoint, and secrets in
//! URLs. The server is raw TCP on 127.0.0.1, so it can misbehave as a real
//! peer would, and it records the request lines it receives.

use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::{fbp, lines, rss_kib, signal, summary, tempdir, wait_until, write};

/// What the server answers to one request.
#[derive(Clone, Copy)]
enum Reply {
    /// 200 with this JSON body.
    Json(&'static str),
    /// This status, with a short text body.
    Status(u16),
    /// 200 and a body that does not end until the client goes, framed so.
    Endless(Framing),
}

/// How an endless body is framed.
#[derive(Clone, Copy)]
enum Framing {
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A `Content-Length` of 2 GiB.
    Declared,
    /// Neither: the body ends when the connection does.
    UntilClose,
}

/// A raw HTTP/1.1 server on a free loopback port, on its own runtime, stopped on drop.
struct RawServer {
    addr: SocketAddr,
    /// Each request line received (`GET /x HTTP/1.1`), in order.
    requests: Arc<Mutex<Vec<String>>>,
    /// Body bytes written by the endless replies, all connections together.
    written: Arc<AtomicU64>,
    _rt: tokio::runtime::Runtime,
}

type Answer = dyn Fn(&str, usize) -> Reply + Send + Sync;

/// Starts a server answering the `n`th request (from 0) for `target` with `answer(target, n)`.
fn raw_serve(answer: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> RawServer {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let written = Arc::new(AtomicU64::new(0));
    let (r, w, answer) = (requests.clone(), written.clone(), Arc::new(answer) as Arc<Answer>);
    rt.spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve_one(sock, r.clone(), w.clone(), answer.clone()));
        }
    });
    RawServer { addr, requests, written, _rt: rt }
}

impl RawServer {
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request (head and any `Content-Length` body), answers it, closes.
async fn serve_one(
    mut sock: TcpStream,
    requests: Arc<Mutex<Vec<String>>>,
    written: Arc<AtomicU64>,
    answer: Arc<Answer>,
) {
    let Some(head) = read_head(&mut sock).await else { return };
    let line = head.lines().next().unwrap_or_default().to_string();
    let target = line.split(' ').nth(1).unwrap_or_default().to_string();
    let n = {
        let mut r = requests.lock().unwrap();
        r.push(line);
        r.len() - 1
    };
    let _ = match answer(&target, n) {
        Reply::Json(body) => sock.write_all(response(200, "application/json", body).as_bytes()).await,
        Reply::Status(status) => sock.write_all(response(status, "text/plain", "refused").as_bytes()).await,
        Reply::Endless(framing) => endless(&mut sock, framing, &written).await,
    };
    let _ = sock.shutdown().await;
}

/// The request head, and the body it declares read past; `None` if the client went.
async fn read_head(sock: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = sock.read(&mut chunk).await.ok().filter(|n| *n > 0 && buf.len() < 64 * 1024)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let declared = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok()).flatten()
    });
    let mut rest = declared.unwrap_or(0).saturating_sub(buf.len() - end);
    while rest > 0 {
        let n = sock.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        rest = rest.saturating_sub(n);
    }
    Some(head)
}

fn response(status: u16, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Writes a 200 and a body of spaces (valid JSON whitespace) until the client
/// closes; at most 2 GiB and 30 s, so a client that keeps reading cannot hang the test.
async fn endless(sock: &mut TcpStream, framing: Framing, written: &AtomicU64) -> std::io::Result<()> {
    const CHUNK: usize = 64 * 1024;
    const TOTAL: u64 = 2 << 30;
    let length = match framing {
        Framing::Chunked => "transfer-encoding: chunked\r\n".to_string(),
        Framing::Declared => format!("content-length: {TOTAL}\r\n"),
        Framing::UntilClose => String::new(),
    };
    let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{length}connection: close\r\n\r\n");
    sock.write_all(head.as_bytes()).await?;
    let data = vec![b' '; CHUNK];
    let frame = match framing {
        Framing::Chunked => [format!("{CHUNK:x}\r\n").as_bytes(), &data, b"\r\n"].concat(),
        Framing::Declared | Framing::UntilClose => data,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    for _ in 0..TOTAL / CHUNK as u64 {
        if Instant::now() > deadline {
            break;
        }
        sock.write_all(&frame).await?;
        written.fetch_add(CHUNK as u64, Ordering::Relaxed);
    }
    Ok(())
}

/// `fbp` started in `dir` with JSON logs in `dir/fbp.log`.
fn start(dir: &Path, args: &[&str]) -> Child {
    let log = File::create(dir.join("fbp.log")).unwrap();
    fbp().current_dir(dir).args(["--log-format", "json"]).args(args).stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("fbp.log")).unwrap_or_default()
}

fn envelopes(path: &Path) -> Vec<Value> {
    lines(path).iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Waits up to `limit` for `child` to exit, sampling its resident memory
/// meanwhile; returns how it exited (`None`: still running) and the most RSS seen, in KiB.
fn wait_sampling_rss(child: &mut Child, limit: Duration) -> (Option<ExitStatus>, u64) {
    let mut peak = 0;
    let mut status = None;
    wait_until(limit, || {
        peak = peak.max(rss_kib(child.id()).unwrap_or(0));
        status = child.try_wait().unwrap();
        status.is_some()
    });
    (status, peak)
}

/// A flow `inject(messages) -> push(http-request) -> store(file-write)` with a dead letter file.
fn request_flow(dir: &Path, messages: &str, request: &str) {
    let flow = format!(
        "[flow]\nname = \"push\"\ndead_letter = \"file:dead.jsonl\"\nconnections = [\"items -> push\", \"push -> store\"]\n\n\
         [components.items]\ntype = \"inject\"\nconfig = {{ messages = {messages} }}\n\n\
         [components.push]\ntype = \"http-request\"\nconfig = {{ {request} }}\n\n\
         [components.store]\ntype = \"file-write\"\nconfig = {{ path = \"out.jsonl\" }}\n"
    );
    write(dir, "flow.toml", &flow);
}

/// Most bytes of one endless body the server may get out before fbp stops
/// reading: the 8 MiB default limit plus what loopback sockets' buffers hold.
const WRITTEN_PER_BODY_AT_MOST: u64 = 32 << 20;
/// The most resident memory fbp may use while it refuses those bodies.
const RSS_AT_MOST_KIB: u64 = 200 * 1024;

#[test]
fn http_request_stops_reading_a_body_past_max_body_size_and_goes_on() {
    let server = raw_serve(|target, _| match target {
        "/chunked" => Reply::Endless(Framing::Chunked),
        "/declared" => Reply::Endless(Framing::Declared),
        "/until-close" => Reply::Endless(Framing::UntilClose),
        _ => Reply::Json(r#"{"ok": true}"#),
    });
    let dir = tempdir();
    let messages = r#"[{ p = "chunked" }, { p = "declared" }, { p = "until-close" }, { p = "ok" }]"#;
    request_flow(
        dir.path(),
        messages,
        &format!(r#"url = "http://{}/{{{{ .p }}}}", method = "GET", concurrency = 1"#, server.addr),
    );
    let started = Instant::now();
    let mut child = start(dir.path(), &["run", "flow.toml"]);
    let (status, peak_kib) = wait_sampling_rss(&mut child, Duration::from_secs(30));
    let log = log(dir.path());
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert!(peak_kib < RSS_AT_MOST_KIB, "fbp's RSS reached {peak_kib} KiB");
    let written = server.written.load(Ordering::Relaxed);
    assert!(written < 3 * WRITTEN_PER_BODY_AT_MOST, "fbp let the server write {written} bytes of 3 bodies");
    let out = envelopes(&dir.path().join("out.jsonl"));
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0]["data"]["body"], json!({"ok": true}), "the request after the refused bodies works");
    let dead = envelopes(&dir.path().join("dead.jsonl"));
    let refused: Vec<_> = dead.iter().map(|d| d["data"]["data"]["p"].clone()).collect();
    assert_eq!(refused, [json!("chunked"), json!("declared"), json!("until-close")]);
    for d in &dead {
        let error = d["data"]["error"].as_str().unwrap();
        assert!(error.contains("max_body_size") && error.contains("8388608 bytes"), "{error}");
    }
    assert_eq!(summary(&log, "push", "errors"), Some(3), "{log}");
    assert_eq!(server.requests().len(), 4, "each message asked once: {:?}", server.requests());
}

#[test]
fn http_poll_stops_reading_a_body_past_max_body_size_and_polls_again() {
    // First poll: an endless body; second: one declared too large; then a small page.
    let server = raw_serve(|_, n| match n {
        0 => Reply::Endless(Framing::Chunked),
        1 => Reply::Endless(Framing::Declared),
        _ => Reply::Json(r#"{"page": 3}"#),
    });
    let dir = tempdir();
    let flow = format!(
        "[flow]\nname = \"poll\"\ndead_letter = \"file:dead.jsonl\"\nconnections = [\"api -> store\"]\n\n\
         [components.api]\ntype = \"http-poll\"\nconfig = {{ url = \"http://{}/items\", interval = \"100ms\", max_body_size = \"1MiB\" }}\n\n\
         [components.store]\ntype = \"file-write\"\nconfig = {{ path = \"out.jsonl\" }}\n",
        server.addr
    );
    write(dir.path(), "flow.toml", &flow);
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let mut child = start(dir.path(), &["run", "flow.toml"]);
    let mut peak_kib = 0;
    let done = wait_until(Duration::from_secs(20), || {
        peak_kib = peak_kib.max(rss_kib(child.id()).unwrap_or(0));
        !lines(&out).is_empty()
    });
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let log = log(dir.path());
    assert!(done && status.success(), "{status:?}\n{log}");
    assert!(peak_kib < RSS_AT_MOST_KIB, "fbp's RSS reached {peak_kib} KiB");
    let written = server.written.load(Ordering::Relaxed);
    assert!(written < 2 * WRITTEN_PER_BODY_AT_MOST, "fbp let the server write {written} bytes of 2 bodies");
    assert_eq!(envelopes(&out)[0]["data"], json!({"page": 3}));
    let dead = envelopes(&dead);
    assert_eq!(dead.len(), 2, "{dead:?}");
    for d in &dead {
        let error = d["data"]["error"].as_str().unwrap();
        assert!(error.contains("max_body_size") && error.contains("1048576 bytes"), "{error}");
    }
    assert_eq!(summary(&log, "api", "errors"), Some(2), "{log}");
    assert_eq!(summary(&log, "api", "restarts"), Some(0), "{log}");
}

#[test]
fn http_request_encodes_values_so_a_message_cannot_change_the_path_or_add_a_query() {
    let server = raw_serve(|_, _| Reply::Json("{}"));
    let dir = tempdir();
    let messages = r#"[{ id = "../admin/delete" }, { id = "1?role=admin" }, { id = "a/b#c" }, { id = ".." }]"#;
    let url = format!("http://{}/api/items/{{{{ .id }}}}?v=1", server.addr);
    request_flow(dir.path(), messages, &format!(r#"url = "{url}", method = "GET", concurrency = 1"#));
    let mut child = start(dir.path(), &["run", "flow.toml"]);
    let (status, _) = wait_sampling_rss(&mut child, Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{}", log(dir.path()));
    assert_eq!(
        server.requests(),
        [
            "GET /api/items/%2E%2E%2Fadmin%2Fdelete?v=1 HTTP/1.1",
            "GET /api/items/1%3Frole%3Dadmin?v=1 HTTP/1.1",
            "GET /api/items/a%2Fb%23c?v=1 HTTP/1.1",
        ],
        "a `..` segment of its own is refused, not sent"
    );
    assert_eq!(lines(&dir.path().join("out.jsonl")).len(), 3);
    let dead = envelopes(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["data"]["data"], json!({"id": ".."}));
    assert!(dead[0]["data"]["error"].as_str().unwrap().contains("climb the path"), "{dead:?}");
}

/// The secrets `secret_url` holds, which no file fbp writes may show.
const SECRETS: [&str; 2] = ["hunter2", "s3cret"];

fn secret_url(port: u16) -> String {
    format!("http://user:hunter2@127.0.0.1:{port}/x?n=1&token=s3cret")
}

/// Each file in `dir` but the flow file, with its text.
fn files_written(dir: &Path) -> Vec<(String, String)> {
    let entries = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path());
    let written = entries.filter(|p| p.file_name().is_some_and(|n| n != "flow.toml"));
    written.map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap_or_default())).collect()
}

fn assert_no_secret(dir: &Path) {
    for (path, text) in files_written(dir) {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{path} shows `{secret}`:\n{text}");
        }
    }
}

#[test]
fn http_request_masks_url_secrets_in_logs_errors_and_dead_letters_when_refused() {
    let server = raw_serve(|_, _| Reply::Status(403));
    let dir = tempdir();
    let request = format!(r#"url = "{}", method = "GET""#, secret_url(server.addr.port()));
    request_flow(dir.path(), r#"[{ n = 1 }]"#, &request);
    let mut child =
        start(dir.path(), &["--log-level", "trace,reqwest=trace,hyper=trace,hyper_util=trace", "run", "flow.toml"]);
    let (status, _) = wait_sampling_rss(&mut child, Duration::from_secs(20));
    let log = log(dir.path());
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
    assert_eq!(server.requests(), ["GET /x?n=1&token=s3cret HTTP/1.1"], "the request itself has its secrets");
    let dead = envelopes(&dir.path().join("dead.jsonl"));
    let error = dead[0]["data"]["error"].as_str().unwrap();
    assert!(error.contains("403") && error.contains("user:***@127.0.0.1") && error.contains("token=***"), "{error}");
    assert!(log.lines().count() > 10, "trace logs were written:\n{log}");
    assert_no_secret(dir.path());
}

#[test]
fn http_request_masks_url_secrets_in_logs_while_the_server_is_down() {
    let port = fbp_runtime::testbed::free_port();
    let dir = tempdir();
    let request = format!(r#"url = "{}", method = "GET", reconnect = "10ms..50ms""#, secret_url(port));
    request_flow(dir.path(), r#"[{ n = 1 }]"#, &request);
    let child =
        start(dir.path(), &["--log-level", "trace,reqwest=trace,hyper=trace,hyper_util=trace", "run", "flow.toml"]);
    let retried = || log(dir.path()).matches("Still unreachable.").count() >= 3;
    assert!(wait_until(Duration::from_secs(20), retried), "{}", log(dir.path()));
    // The request in hand waits for the server, so a SIGTERM would wait out the drain timeout.
    signal(&child, "KILL");
    let mut child = child;
    child.wait().unwrap();
    let log = log(dir.path());
    let warning = log.lines().find(|l| l.contains("reconnecting in the background")).unwrap_or_default();
    assert!(warning.contains("user:***@127.0.0.1") && warning.contains("token=***"), "{warning}");
    assert_no_secret(dir.path());
}

#[test]
fn http_poll_masks_url_secrets_in_logs_errors_topics_and_dead_letters() {
    let server = raw_serve(|_, n| if n == 0 { Reply::Status(403) } else { Reply::Json(r#"{"page": 2}"#) });
    let dir = tempdir();
    let flow = format!(
        "[flow]\nname = \"poll\"\ndead_letter = \"file:dead.jsonl\"\nconnections = [\"api -> store\"]\n\n\
         [components.api]\ntype = \"http-poll\"\nconfig = {{ url = \"{}\", interval = \"100ms\" }}\n\n\
         [components.store]\ntype = \"file-write\"\nconfig = {{ path = \"out.jsonl\" }}\n",
        secret_url(server.addr.port())
    );
    write(dir.path(), "flow.toml", &flow);
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let mut child =
        start(dir.path(), &["--log-level", "trace,reqwest=trace,hyper=trace,hyper_util=trace", "run", "flow.toml"]);
    let done = wait_until(Duration::from_secs(20), || !lines(&out).is_empty() && !lines(&dead).is_empty());
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let log = log(dir.path());
    assert!(done && status.success(), "{status:?}\n{log}");
    let error = envelopes(&dead)[0]["data"]["error"].as_str().unwrap().to_string();
    assert!(error.contains("403") && error.contains("token=***"), "{error}");
    let topic = envelopes(&out)[0]["metadata"]["topic"].as_str().unwrap().to_string();
    assert_eq!(topic, format!("http://user:***@{}/x?n=1&token=***", server.addr));
    assert_no_secret(dir.path());
}
