//! HTTP edges through the real binary: `http-poll` (pagination, Retry-After),
//! `http-listen` (answers by delivery, client errors, saturation, load,
//! slow clients) and `http-request` (retries, dead letter), against local
//! axum servers started by each test.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::util::{fbp, lines, root, signal, stderr, tempdir, wait_until, write};

#[path = "http_hostile.rs"]
mod hostile;

/// An axum server on a free port, on its own runtime, stopped on drop.
struct Server {
    addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

fn serve(router: axum::Router) -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, router).await });
    Server { addr, _rt: rt }
}

pub(crate) fn client() -> reqwest::Client {
    fbp_components::net::tls::ensure_provider();
    reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn envelopes(path: &std::path::Path) -> Vec<Value> {
    lines(path).iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Stops a running `fbp` with SIGTERM and returns its stderr; asserts a clean exit.
fn stop(mut child: Child) -> String {
    signal(&child, "TERM");
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{err}");
    err
}

#[test]
fn the_poll_flow_follows_pages_and_stores_every_item() {
    let server = serve(axum::Router::new().route(
        "/items",
        get(|Query(q): Query<std::collections::HashMap<String, String>>| async move {
            match q.get("page").map(String::as_str) {
                Some("2") => axum::Json(json!({"items": [{"id": 3}], "next": null})),
                _ => axum::Json(json!({"items": [{"id": 1}, {"id": 2}], "next": "/items?page=2"})),
            }
        }),
    ));
    let dir = tempdir();
    let out = dir.path().join("items.jsonl");
    let child = fbp()
        .arg("run")
        .arg(root().join("flows/http-poll-to-file.toml"))
        .env("API_URL", format!("http://{}/items", server.addr))
        .env("OUT_FILE", &out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(15), || lines(&out).len() >= 3), "{:?}", lines(&out));
    stop(child);
    let items = envelopes(&out);
    let ids: Vec<_> = items.iter().map(|e| e["data"]["id"].clone()).collect();
    assert_eq!(ids, [json!(1), json!(2), json!(3)], "one poll a minute: exactly the three items");
    assert_eq!(items[2]["metadata"]["topic"], format!("http://{}/items?page=2", server.addr));
    assert_eq!(items[0]["metadata"]["headers"]["status"], "200");
}

#[test]
fn relay_from_http_waits_as_long_as_retry_after_says() {
    let times = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let t = times.clone();
    let server = serve(axum::Router::new().route(
        "/",
        get(move || async move {
            let n = {
                let mut t = t.lock().unwrap();
                t.push(Instant::now());
                t.len()
            };
            if n == 1 {
                (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "2")], "slow down").into_response()
            } else {
                axum::Json(json!({"n": n})).into_response()
            }
        }),
    ));
    let dir = tempdir();
    let uri = format!("http://{}/?interval=100ms&reconnect=10ms..20ms", server.addr);
    let child =
        fbp().current_dir(dir.path()).args(["relay", &uri, "file:out.jsonl"]).stderr(Stdio::piped()).spawn().unwrap();
    let out = dir.path().join("out.jsonl");
    assert!(wait_until(Duration::from_secs(15), || !lines(&out).is_empty()));
    let err = stop(child);
    let t = times.lock().unwrap();
    let waited = t[1] - t[0];
    assert!(waited >= Duration::from_millis(1950), "asked again after {waited:?}; Retry-After said 2s");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(envelopes(&out)[0]["data"], json!({"n": 2}));
    assert_eq!(err.matches("reconnecting in the background").count(), 1, "one warning per outage: {err}");
}

/// A flow `http-listen -> [middle ->] file-write` on a free port; returns the child and the port.
fn listen_flow(dir: &std::path::Path, listen: &str, middle: Option<(&str, &str)>) -> (Child, u16) {
    listen_flow_to(dir, listen, middle, "out.jsonl")
}

/// The same, writing to `path`.
fn listen_flow_to(dir: &std::path::Path, listen: &str, middle: Option<(&str, &str)>, path: &str) -> (Child, u16) {
    let port = fbp_runtime::testbed::free_port();
    let (connections, extra) = match middle {
        Some((ty, config)) => (
            r#"[{ from = "hooks.out", to = "slow.in", capacity = 1 }, "slow -> store"]"#.to_string(),
            format!("[components.slow]\ntype = \"{ty}\"\nconfig = {config}\n"),
        ),
        None => (r#"["hooks -> store"]"#.to_string(), String::new()),
    };
    let flow = format!(
        "[flow]\nname = \"ingest\"\nconnections = {connections}\n\n\
         [components.hooks]\ntype = \"http-listen\"\nconfig = {{ bind = \"127.0.0.1:{port}\", path = \"/hooks\", {listen} }}\n\n\
         {extra}\n[components.store]\ntype = \"file-write\"\nconfig = {{ path = \"{path}\" }}\n"
    );
    write(dir, "flow.toml", &flow);
    let child = fbp().current_dir(dir).args(["run", "flow.toml"]).stderr(Stdio::piped()).spawn().unwrap();
    assert!(fbp_runtime::testbed::wait_for_port(port, Duration::from_secs(15)), "http-listen is up");
    (child, port)
}

#[test]
fn listen_answers_200_once_the_file_holds_the_message_and_refuses_bad_bodies() {
    let dir = tempdir();
    let (child, port) = listen_flow(dir.path(), "max_body_size = \"1KiB\"", None);
    let url = format!("http://127.0.0.1:{port}/hooks");
    let out = dir.path().join("out.jsonl");
    let statuses = runtime().block_on(async {
        let c = client();
        let mut got = Vec::new();
        for i in 0..3 {
            let r = c.post(&url).json(&json!({"i": i})).send().await.unwrap();
            got.push(r.status().as_u16());
            // Answered only after delivery: the line is already in the file.
            assert_eq!(lines(&out).len(), i + 1, "200 came before the sink wrote message {i}");
        }
        got.push(c.post(&url).body("{\"i\": ").send().await.unwrap().status().as_u16());
        got.push(c.post(&url).body(vec![b'1'; 2048]).send().await.unwrap().status().as_u16());
        got.push(c.post(format!("{url}/x")).body("1").send().await.unwrap().status().as_u16());
        got.push(c.get(&url).send().await.unwrap().status().as_u16());
        got
    });
    stop(child);
    assert_eq!(statuses, [200, 200, 200, 400, 413, 404, 405]);
    let data: Vec<_> = envelopes(&out).iter().map(|e| e["data"]["i"].clone()).collect();
    assert_eq!(data, [json!(0), json!(1), json!(2)]);
    assert_eq!(envelopes(&out)[0]["metadata"]["topic"], "/hooks");
}

#[test]
fn listen_answers_500_when_the_sink_could_not_write_the_message() {
    let dir = tempdir();
    // Every write to /dev/full fails: file-write rejects the batch, then fails and restarts.
    let (mut child, port) = listen_flow_to(dir.path(), "", None, "/dev/full");
    let status = runtime().block_on(async {
        let r = client().post(format!("http://127.0.0.1:{port}/hooks")).json(&json!({"i": 1})).send().await.unwrap();
        r.status().as_u16()
    });
    signal(&child, "KILL");
    let _ = child.wait();
    assert_eq!(status, 500, "a rejected message is not acknowledged to the client");
}

#[test]
fn listen_answers_503_when_the_flow_is_saturated() {
    let dir = tempdir();
    let listen = "respond = \"queued\", queue_timeout = \"200ms\"";
    let (child, port) = listen_flow(dir.path(), listen, Some(("throttle", "{ rate = 1, per = \"10s\" }")));
    let url = format!("http://127.0.0.1:{port}/hooks");
    let statuses = runtime().block_on(async {
        let c = client();
        let requests = (0..10).map(|i| {
            let (c, url) = (c.clone(), url.clone());
            tokio::spawn(async move { c.post(url).json(&json!({"i": i})).send().await.unwrap() })
        });
        let mut got = Vec::new();
        for r in requests.collect::<Vec<_>>() {
            let r = r.await.unwrap();
            if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(r.headers()["retry-after"], "1");
            }
            got.push(r.status().as_u16());
        }
        got
    });
    signal(&child, "KILL");
    let mut child = child;
    let _ = child.wait();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let busy = statuses.iter().filter(|s| **s == 503).count();
    assert!(ok >= 1 && busy >= 5 && ok + busy == 10, "{statuses:?}");
}

#[test]
fn listen_stores_1000_concurrent_posts_exactly_once() {
    let dir = tempdir();
    let (child, port) = listen_flow(dir.path(), "", None);
    let url = format!("http://127.0.0.1:{port}/hooks");
    let started = Instant::now();
    let statuses = runtime().block_on(async {
        let c = client();
        let gate = Arc::new(tokio::sync::Semaphore::new(50));
        let requests: Vec<_> = (0..1000)
            .map(|i| {
                let (c, url, gate) = (c.clone(), url.clone(), gate.clone());
                tokio::spawn(async move {
                    let _slot = gate.acquire_owned().await.unwrap();
                    c.post(url).json(&json!({"i": i})).send().await.unwrap().status().as_u16()
                })
            })
            .collect();
        let mut got = Vec::new();
        for r in requests {
            got.push(r.await.unwrap());
        }
        got
    });
    assert!(started.elapsed() < Duration::from_secs(25), "took {:?}", started.elapsed());
    let err = stop(child);
    assert!(statuses.iter().all(|s| *s == 200), "{:?}", statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>());
    let mut seen: Vec<u64> =
        envelopes(&dir.path().join("out.jsonl")).iter().map(|e| e["data"]["i"].as_u64().unwrap()).collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..1000).collect::<Vec<_>>(), "each request stored exactly once\n{err}");
}

#[test]
fn listen_cuts_off_a_slowloris_while_others_are_served() {
    let dir = tempdir();
    let (child, port) = listen_flow(dir.path(), "read_timeout = \"1s\"", None);
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"POST /hooks HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n").unwrap();
        let started = Instant::now();
        // One byte every 200 ms: 20 s for the whole body, unless cut off. Read
        // before each write, so the answer is seen before a write could reset.
        for _ in 0..100 {
            std::thread::sleep(Duration::from_millis(200));
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 512];
            let answered = matches!(s.read(&mut buf), Ok(n) if n > 0);
            s.set_nonblocking(false).unwrap();
            if answered {
                return (started.elapsed(), String::from_utf8_lossy(&buf).into_owned());
            }
            if s.write_all(b"1").is_err() {
                break;
            }
        }
        (started.elapsed(), String::new())
    });
    let url = format!("http://127.0.0.1:{port}/hooks");
    let served = runtime().block_on(async {
        let c = client();
        let mut ok = 0;
        for i in 0..5 {
            ok += u32::from(c.post(&url).json(&json!({"i": i})).send().await.unwrap().status() == StatusCode::OK);
        }
        ok
    });
    let (after, answer) = slow.join().unwrap();
    stop(child);
    assert_eq!(served, 5, "the others were served while the slow client trickled");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?} after {after:?}");
    assert!(after < Duration::from_secs(4), "cut off after {after:?}");
}

#[test]
fn http_request_retries_a_500_and_dead_letters_a_4xx() {
    let calls = Arc::new(Mutex::new(Vec::<String>::new()));
    let c = calls.clone();
    let server = serve(axum::Router::new().route(
        "/items",
        post(move |axum::Json(body): axum::Json<Value>| async move {
            let id = body["id"].as_str().unwrap_or_default().to_string();
            let n = {
                let mut c = c.lock().unwrap();
                c.push(id.clone());
                c.iter().filter(|x| **x == id).count()
            };
            match id.as_str() {
                "a" if n == 1 => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
                "a" => axum::Json(json!({"stored": id})).into_response(),
                _ => (StatusCode::BAD_REQUEST, "no such item").into_response(),
            }
        }),
    ));
    let dir = tempdir();
    let flow = format!(
        "[flow]\nname = \"push\"\ndead_letter = \"file:dead.jsonl\"\nconnections = [\"items -> push\", \"push -> store\"]\n\n\
         [components.items]\ntype = \"inject\"\nconfig = {{ messages = [{{ id = \"a\" }}, {{ id = \"b\" }}] }}\n\n\
         [components.push]\ntype = \"http-request\"\nconfig = {{ url = \"http://{}/items\", backoff = \"50ms..100ms\" }}\n\n\
         [components.store]\ntype = \"file-write\"\nconfig = {{ path = \"out.jsonl\" }}\n",
        server.addr
    );
    write(dir.path(), "flow.toml", &flow);
    let o = fbp().current_dir(dir.path()).args(["run", "flow.toml"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = envelopes(&dir.path().join("out.jsonl"));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["data"]["status"], 200);
    assert_eq!(out[0]["data"]["body"], json!({"stored": "a"}));
    let dead = envelopes(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["data"]["data"], json!({"id": "b"}));
    let error = dead[0]["data"]["error"].as_str().unwrap();
    assert!(error.contains("400") && error.contains("no such item"), "{error}");
    let mut calls = calls.lock().unwrap().clone();
    calls.sort();
    assert_eq!(calls, ["a", "a", "b"], "a retried once after its 500, b not retried after its 400");
}

#[test]
fn relay_to_http_posts_each_line_as_json() {
    let bodies = Arc::new(Mutex::new(Vec::<Value>::new()));
    let b = bodies.clone();
    let server = serve(axum::Router::new().route(
        "/in",
        post(move |axum::Json(body): axum::Json<Value>| async move {
            b.lock().unwrap().push(body);
            StatusCode::NO_CONTENT
        }),
    ));
    let dir = tempdir();
    write(dir.path(), "in.jsonl", "{\"n\": 1}\n{\"n\": 2}\n");
    let sink = format!("http://{}/in?concurrency=1", server.addr);
    let o = fbp().current_dir(dir.path()).args(["relay", "file:in.jsonl", &sink]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(*bodies.lock().unwrap(), [json!({"n": 1}), json!({"n": 2})]);
}
