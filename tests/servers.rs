//! The servers (`http-listen`, kv-state's API) against hostile peers,
//! through the real binary: a name rebound to the gateway, a page of another
//! origin, half-sent request heads, a flood on one listener, tokens, TLS,
//! and the warning about a listener open beyond this host.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use fbp_runtime::testbed::{certificates, free_port, wait_for_port};
use tokio_tungstenite::tungstenite;

use crate::sockets::Running;
use crate::util::{fbp, stderr, tempdir, wait_until, write};

/// One HTTP/1.1 request with the given header lines and `Connection: close`:
/// the status and the whole answer (head and body).
fn request(port: u16, method: &str, path: &str, headers: &[String]) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let headers: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let body = if method == "GET" { "" } else { "{\"n\":1}" };
    let head =
        format!("{method} {path} HTTP/1.1\r\n{headers}Connection: close\r\nContent-Length: {}\r\n\r\n", body.len());
    s.write_all(format!("{head}{body}").as_bytes()).unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    (text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), text)
}

/// `Host: 127.0.0.1:PORT`, what a client of the bind sends.
fn host(port: u16) -> String {
    format!("Host: 127.0.0.1:{port}")
}

/// A kv-state (`state`) on `port` with `config` added, fed by nothing but PUTs.
fn kv_flow(port: u16, config: &str) -> String {
    format!(
        "[flow]\nname = \"kv\"\nconnections = [\"state -> out\"]\n\
         [components.state]\ntype = \"kv-state\"\nconfig = {{ key = \".k\", bind = \"127.0.0.1:{port}\", \
         put_creates = true{config} }}\n\
         [components.out]\ntype = \"null\"\n"
    )
}

fn wait_for_api(port: u16) {
    let up = wait_until(Duration::from_secs(20), || request(port, "GET", "/keys", &[host(port)]).0 == 200);
    assert!(up, "the API never came up");
}

/// A WebSocket handshake to `/subscribe` with an `Origin`: the first event, or the refusal.
fn subscribe(port: u16, origin: &str) -> Result<String, String> {
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://127.0.0.1:{port}/subscribe"))
            .unwrap();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    match tungstenite::connect(req) {
        Ok((mut ws, _)) => Ok(ws.read().map(|m| m.to_string()).unwrap_or_default()),
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16().to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn kv_state_refuses_a_rebound_host_and_pages_of_another_origin() {
    let (dir, port) = (tempdir(), free_port());
    let fbp = Running::start(dir.path(), &kv_flow(port, ", allowed_origins = [\"http://dash.plant\"]"));
    wait_for_api(port);
    let evil = format!("Host: evil.example:{port}");
    let (status, answer) = request(port, "PUT", "/state/a", std::slice::from_ref(&evil));
    assert_eq!(status, 421, "a rebound name cannot write: {answer}");
    assert_eq!(request(port, "GET", "/state", &[evil]).0, 421, "nor read");
    assert_eq!(request(port, "PUT", "/state/a", &[host(port)]).0, 202);
    let (status, answer) = request(port, "GET", "/state/a", &[format!("Host: localhost:{port}")]);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.ends_with("{\"n\":1}"), "{answer}");

    assert_eq!(subscribe(port, "http://evil.example"), Err("403".into()));
    let same = subscribe(port, &format!("http://127.0.0.1:{port}")).unwrap();
    assert!(same.contains("\"type\":\"sync\""), "{same}");
    assert!(subscribe(port, "http://dash.plant").unwrap().contains("\"sync\""), "a listed origin");

    let origin = |o: &str| vec![host(port), format!("Origin: {o}")];
    assert_eq!(request(port, "GET", "/events", &origin("http://evil.example")).0, 403);
    let mut sse = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(sse, "GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n\r\n").unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut first = [0; 12];
    sse.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200", "same-origin SSE is served");
    drop(sse);
    fbp.stop();
}

/// Opens `n` connections that each send half a request head; the time until
/// the server closed every one (each read to its end, within `limit`).
fn half_sent_heads_closed(port: u16, n: usize, limit: Duration) -> (usize, Duration) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut socks = Vec::new();
        for _ in 0..n {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            s.write_all(b"GET /keys HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").await.unwrap();
            socks.push(s);
        }
        let started = Instant::now();
        let closes = socks.into_iter().map(|mut s| async move {
            let mut buf = [0; 256];
            loop {
                match tokio::time::timeout(limit, s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(_)) => {}
                    Err(_) => return false,
                }
            }
        });
        let closed = futures_util::future::join_all(closes).await.into_iter().filter(|c| *c).count();
        (closed, started.elapsed())
    })
}

#[test]
fn three_hundred_half_sent_heads_are_closed_after_read_timeout() {
    let (dir, port) = (tempdir(), free_port());
    let fbp = Running::start(dir.path(), &kv_flow(port, ", read_timeout = \"1s\", max_connections = 400"));
    wait_for_api(port);
    let (closed, took) = half_sent_heads_closed(port, 300, Duration::from_secs(15));
    assert_eq!(closed, 300, "every half-sent head is closed");
    assert!(took < Duration::from_secs(10), "closed at read_timeout, not later: {took:?}");
    assert_eq!(request(port, "GET", "/keys", &[host(port)]).0, 200, "and the API answers");
    fbp.stop();
}

#[test]
fn a_flood_on_kv_state_leaves_http_listen_in_the_same_flow_answering() {
    let (dir, kv, web) = (tempdir(), free_port(), free_port());
    let flow = format!(
        "[flow]\nname = \"two\"\nconnections = [\"state -> sink\", \"hooks -> sink\"]\n\
         [components.state]\ntype = \"kv-state\"\nconfig = {{ key = \".k\", bind = \"127.0.0.1:{kv}\" }}\n\
         [components.hooks]\ntype = \"http-listen\"\nconfig = {{ bind = \"127.0.0.1:{web}\" }}\n\
         [components.sink]\ntype = \"null\"\n"
    );
    write(dir.path(), "flow.toml", &flow);
    // A gateway whose hard limit is 256 descriptors.
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--nofile=256:256", "--", env!("CARGO_BIN_EXE_fbp"), "--log-format", "json", "run", "flow.toml"]);
    cmd.current_dir(dir.path()).env_remove("RUST_LOG").stdin(std::process::Stdio::null());
    let fbp = Running::spawn(cmd);
    assert!(wait_for_port(kv, Duration::from_secs(20)) && wait_for_port(web, Duration::from_secs(20)));
    // Idle clients, more than the process has descriptors; those past
    // kv-state's share wait in the kernel's accept queue.
    let to = std::net::SocketAddr::from(([127, 0, 0, 1], kv));
    let clients: Vec<TcpStream> =
        (0..300).filter_map(|_| TcpStream::connect_timeout(&to, Duration::from_millis(50)).ok()).collect();
    assert!(clients.len() >= 150, "{} connected", clients.len());
    let (status, answer) = request(web, "POST", "/", &[host(web), "Content-Type: application/json".into()]);
    assert_eq!(status, 200, "http-listen still accepts: {answer}\n{}", fbp.log());
    drop(clients);
    wait_for_api(kv);
    let log = fbp.stop();
    assert!(!log.contains("Too many open files"), "{log}");
}

/// A flow with an http-listen (`hooks`) and a kv-state (`state`) sharing `extra` config.
fn both_flow(web: u16, kv: u16, extra: &str) -> String {
    format!(
        "[flow]\nname = \"both\"\nconnections = [\"hooks -> state\", \"state -> sink\"]\n\
         [components.hooks]\ntype = \"http-listen\"\nconfig = {{ bind = \"127.0.0.1:{web}\"{extra} }}\n\
         [components.state]\ntype = \"kv-state\"\nconfig = {{ key = \"\\\"n\\\"\", bind = \"127.0.0.1:{kv}\"{extra} }}\n\
         [components.sink]\ntype = \"null\"\n"
    )
}

#[test]
fn a_token_is_required_on_http_listen_and_kv_state_and_never_logged() {
    let (dir, web, kv) = (tempdir(), free_port(), free_port());
    write(dir.path(), "flow.toml", &both_flow(web, kv, ", auth = { token = \"${HOOK_TOKEN}\" }"));
    let mut cmd = fbp();
    cmd.current_dir(dir.path()).env("HOOK_TOKEN", "t0ps3cret-42").args([
        "--log-format",
        "json",
        "--log-level",
        "debug",
        "run",
        "flow.toml",
    ]);
    let fbp = Running::spawn(cmd);
    assert!(wait_for_port(web, Duration::from_secs(20)) && wait_for_port(kv, Duration::from_secs(20)));
    for (port, method, path) in [(web, "POST", "/"), (kv, "GET", "/state")] {
        let ask = |auth: Option<&str>| {
            let mut h = vec![host(port), "Content-Type: application/json".to_string()];
            h.extend(auth.map(|a| format!("Authorization: {a}")));
            request(port, method, path, &h)
        };
        let (status, answer) = ask(None);
        assert_eq!(status, 401, "{answer}");
        assert!(answer.to_ascii_lowercase().contains("www-authenticate: bearer"), "{answer}");
        assert_eq!(ask(Some("Bearer t0ps3cret-4")).0, 401, "a wrong token");
        assert_eq!(ask(Some("Basic t0ps3cret-42")).0, 401, "another scheme");
        let (status, answer) = ask(Some("Bearer t0ps3cret-42"));
        assert_eq!(status, 200, "{answer}");
    }
    let log = fbp.stop();
    assert!(!log.contains("t0ps3cret"), "{log}");
}

#[test]
fn http_listen_and_kv_state_serve_tls_with_the_given_certificate() {
    let (dir, web, kv) = (tempdir(), free_port(), free_port());
    certificates(dir.path(), "IP:127.0.0.1").expect("openssl makes the certificates");
    let fbp =
        Running::start(dir.path(), &both_flow(web, kv, ", tls = { cert = \"server.pem\", key = \"server.key\" }"));
    assert!(wait_for_port(web, Duration::from_secs(20)) && wait_for_port(kv, Duration::from_secs(20)));
    let files = fbp_components::net::tls::TlsFiles { ca_file: Some(dir.path().join("ca.pem")), ..Default::default() };
    let tls = fbp_components::net::tls::client_config(&files).unwrap();
    let client = reqwest::Client::builder().use_preconfigured_tls((*tls).clone()).build().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let hook = client.post(format!("https://127.0.0.1:{web}/")).body("{\"n\": 7}").send().await.unwrap();
        assert_eq!(hook.status(), 200);
        let state = async {
            let r = client.get(format!("https://127.0.0.1:{kv}/state/n")).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        };
        // The hook's message reaches the state through the flow.
        let mut got = state.await;
        let end = Instant::now() + Duration::from_secs(10);
        while got.0 != 200 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let r = client.get(format!("https://127.0.0.1:{kv}/state/n")).send().await.unwrap();
            got = (r.status().as_u16(), r.text().await.unwrap());
        }
        assert_eq!(got, (200, "{\"n\":7}".to_string()));
    });
    assert_eq!(request(kv, "GET", "/state", &[host(kv)]).0, 0, "plain HTTP gets no answer");
    fbp.stop();
}

#[test]
fn a_listener_beyond_loopback_without_auth_is_warned_about_by_check_and_run() {
    let dir = tempdir();
    let [web, kv, tcp, udp, locked] = [0; 5].map(|_| free_port());
    let flow = format!(
        "[flow]\nname = \"open\"\nconnections = [\"hooks -> sink\", \"devices -> sink\", \"dgrams -> sink\", \"safe -> sink\", \"state -> sink\"]\n\
         [components.hooks]\ntype = \"http-listen\"\nconfig = {{ bind = \"0.0.0.0:{web}\" }}\n\
         [components.state]\ntype = \"kv-state\"\nconfig = {{ key = \".k\", bind = \"0.0.0.0:{kv}\" }}\n\
         [components.devices]\ntype = \"tcp-listen\"\nconfig = {{ bind = \"0.0.0.0:{tcp}\" }}\n\
         [components.dgrams]\ntype = \"udp-listen\"\nconfig = {{ bind = \"0.0.0.0:{udp}\" }}\n\
         [components.safe]\ntype = \"http-listen\"\nconfig = {{ bind = \"0.0.0.0:{locked}\", auth = {{ token = \"x\" }} }}\n\
         [components.sink]\ntype = \"null\"\n"
    );
    write(dir.path(), "flow.toml", &flow);
    let check = fbp().current_dir(dir.path()).args(["check", "flow.toml"]).output().unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    let err = stderr(&check);
    let warned: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: `")).collect();
    assert_eq!(
        warned,
        [
            format!(
                "warning: `hooks` (http-listen) listens on `0.0.0.0:{web}`, beyond this host, without authentication"
            ),
            format!("warning: `state` (kv-state) listens on `0.0.0.0:{kv}`, beyond this host, without authentication"),
            format!(
                "warning: `devices` (tcp-listen) listens on `0.0.0.0:{tcp}`, beyond this host; tcp-listen has no authentication: anyone who reaches the port can send"
            ),
            format!(
                "warning: `dgrams` (udp-listen) listens on `0.0.0.0:{udp}`, beyond this host; udp-listen has no authentication: anyone who reaches the port can send"
            ),
            "warning: `flow.toml`: 4 warnings".to_string(),
        ],
        "{err}"
    );
    assert!(err.contains("= help: set `auth = { token = \"${TOKEN}\" }`"), "{err}");
    let fbp = Running::start(dir.path(), &flow);
    assert!(wait_for_port(web, Duration::from_secs(20)), "{}", fbp.log());
    let log = fbp.stop();
    let warned = crate::util::logged(&log, "The flow check warns.");
    let said: Vec<&str> = warned.iter().filter_map(|f| f["warning"].as_str()).collect();
    assert_eq!(said.len(), 4, "{log}");
    assert!(said[0].contains(&format!("`hooks` (http-listen) listens on `0.0.0.0:{web}`")), "{said:?}");
    assert!(warned[0]["help"].as_str().unwrap().contains("auth = {"), "{warned:?}");
    assert!(said.iter().all(|s| !s.contains("`safe`")), "{said:?}");
}

/// A WebSocket subscriber of kv-state on `port` (same origin: no `Origin` header).
fn ws(port: u16) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>> {
    let (ws, _) = tungstenite::connect(format!("ws://127.0.0.1:{port}/subscribe")).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    ws
}

#[test]
fn sixteen_subscribers_sending_megabyte_frames_are_cut_off_without_memory_growing() {
    let (dir, port) = (tempdir(), free_port());
    let fbp = Running::start(dir.path(), &kv_flow(port, ""));
    wait_for_api(port);
    let before = crate::util::rss_kib(fbp.pid()).unwrap();
    let mut peers: Vec<_> = (0..16).map(|_| ws(port)).collect();
    for peer in &mut peers {
        assert!(peer.read().unwrap().to_string().contains("\"sync\""));
        // The server refuses the frame by its header, so the rest may not be read at all.
        let _ = peer.send(tungstenite::Message::binary(vec![b'x'; 1 << 20]));
    }
    for (i, peer) in peers.iter_mut().enumerate() {
        let end = Instant::now() + Duration::from_secs(10);
        let cut = loop {
            match peer.read() {
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(_) | Ok(tungstenite::Message::Close(_)) => break true,
                Ok(_) if Instant::now() < end => {}
                Ok(_) => break false,
            }
        };
        assert!(cut, "peer {i} is still connected after a frame over max_message_size");
    }
    let after = crate::util::rss_kib(fbp.pid()).unwrap();
    assert!(after < before + 16 * 1024, "RSS went from {before} to {after} KiB");
    assert!(ws(port).read().unwrap().to_string().contains("\"sync\""), "new subscribers are served");
    fbp.stop();
}

#[test]
fn a_quiet_subscriber_outlives_idle_timeout_and_a_stalled_body_does_not() {
    let (dir, port) = (tempdir(), free_port());
    let fbp = Running::start(dir.path(), &kv_flow(port, ", idle_timeout = \"1s\", read_timeout = \"30s\""));
    wait_for_api(port);
    let mut quiet = ws(port);
    assert!(quiet.read().unwrap().to_string().contains("\"sync\""));
    // A head, then not one byte of the body it announces: read_timeout is 30s away,
    // idle_timeout closes it.
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stalled, "PUT /state/a HTTP/1.1\r\n{}\r\nContent-Length: 10\r\n\r\n", host(port)).unwrap();
    stalled.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(10), "closed after {took:?}");
    // The subscriber was pinged meanwhile, so it is still there for the next change.
    assert_eq!(request(port, "PUT", "/state/b", &[host(port)]).0, 202);
    let change = loop {
        match quiet.read().expect("the quiet subscriber is still connected") {
            tungstenite::Message::Text(t) => break t.to_string(),
            _ => continue,
        }
    };
    assert!(change.contains("\"change\"") && change.contains("\"b\""), "{change}");
    fbp.stop();
}

#[test]
fn a_bad_certificate_or_key_is_a_check_error_naming_the_file() {
    let dir = tempdir();
    certificates(dir.path(), "IP:127.0.0.1").expect("openssl makes the certificates");
    write(dir.path(), "junk.pem", "not a certificate\n");
    let cases = [
        ("cert = \"missing.pem\", key = \"server.key\"", "missing.pem"),
        ("cert = \"junk.pem\", key = \"server.key\"", "junk.pem` holds no PEM certificate"),
        ("cert = \"server.pem\", key = \"junk.pem\"", "junk.pem` holds no PEM private key"),
        ("cert = \"ca.pem\", key = \"server.key\"", "do not make a server certificate"),
        ("cert = \"server.pem\"", "`tls` needs `key`"),
        ("cert = \"server.pem\", key = \"server.key\", kee = \"x\"", "unknown key `kee` in `tls`"),
        ("cert = \"server.pem\", key = 1", "`tls.key` must be a string, found an integer"),
    ];
    for (tls, want) in cases {
        let flow = format!(
            "[flow]\nname = \"tls\"\nconnections = [\"hooks -> sink\"]\n\
             [components.hooks]\ntype = \"http-listen\"\nconfig = {{ tls = {{ {tls} }} }}\n\
             [components.sink]\ntype = \"null\"\n"
        );
        write(dir.path(), "flow.toml", &flow);
        let check = fbp().current_dir(dir.path()).args(["check", "flow.toml"]).output().unwrap();
        let err = stderr(&check);
        assert!(!check.status.success() && err.contains(want), "{tls}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let flow = "[flow]\nname = \"auth\"\nconnections = [\"hooks -> sink\"]\n\
                [components.hooks]\ntype = \"http-listen\"\nconfig = { auth = { tokn = \"x\" } }\n\
                [components.sink]\ntype = \"null\"\n";
    write(dir.path(), "flow.toml", flow);
    let check = fbp().current_dir(dir.path()).args(["check", "flow.toml"]).output().unwrap();
    let err = stderr(&check);
    assert!(!check.status.success(), "{err}");
    assert!(err.contains("unknown key `tokn` in `auth`") && err.contains("did you mean `token`?"), "{err}");
    assert!(err.contains("--> flow.toml:6:21"), "at the key: {err}");
}
