//! The NATS components against a real `nats-server` (JetStream on), one per test.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use fbp_runtime::metrics::Metrics;
use fbp_runtime::testbed::Server;
use fbp_runtime::testing::Harness;
use fbp_runtime::value;
use futures_util::StreamExt;
use serde_json::json;

use crate::storage::test_support::TempDir;

fn server(name: &str) -> (TempDir, Server) {
    let dir = TempDir::new(name);
    let server = Server::nats(dir.path()).expect("nats-server runs");
    (dir, server)
}

fn url(server: &Server) -> String {
    format!("nats://{}", server.addr())
}

async fn client(server: &Server) -> async_nats::Client {
    async_nats::connect(url(server)).await.expect("test client connects")
}

async fn until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Publishes `probe` to `subject` until the subscriber has sent something on
/// (core NATS drops what nobody hears, so this is how a test knows it is live).
async fn until_subscribed(c: &async_nats::Client, subject: &'static str, probe: &'static str, metrics: &Metrics) {
    let live = until(Duration::from_secs(10), || {
        let c = c.clone();
        tokio::spawn(async move { c.publish(subject, probe.into()).await });
        metrics.sent.load(Ordering::Relaxed) > 0
    })
    .await;
    assert!(live, "the subscription never went live");
}

#[tokio::test]
async fn subscribe_decodes_json_keeps_subject_and_headers_and_sends_bad_payloads_to_err() {
    let (_dir, server) = server("nats-sub");
    let mut h = Harness::new(&super::subscribe::SPEC, json!({"url": url(&server), "subject": "in.>"}));
    let (stop, metrics) = (h.shutdown(), h.metrics());
    let run = tokio::spawn(async move { h.run().await });
    let c = client(&server).await;
    until_subscribed(&c, "in.probe", "{}", &metrics).await;
    let mut headers = HeaderMap::new();
    headers.insert("trace", "t-1");
    c.publish_with_headers("in.a", headers, r#"{"v": 1}"#.into()).await.unwrap();
    c.publish("in.b", "not json".into()).await.unwrap();
    c.publish("in.c", "".into()).await.unwrap();
    c.publish("in.d", r#"{"v": 2}"#.into()).await.unwrap();
    c.flush().await.unwrap();
    assert!(until(Duration::from_secs(10), || metrics.errors.load(Ordering::Relaxed) >= 2).await);
    stop.cancel();
    let out = tokio::time::timeout(Duration::from_secs(10), run).await.unwrap().unwrap();
    let good: Vec<_> = out.messages("out").iter().filter(|m| m.meta.topic.as_deref() != Some("in.probe")).collect();
    assert_eq!(good.len(), 2);
    assert_eq!(value::to_json_string(&good[0].payload), r#"{"v":1}"#);
    assert_eq!(good[0].meta.topic.as_deref(), Some("in.a"));
    assert_eq!(good[0].meta.headers.get("trace").map(String::as_str), Some("t-1"));
    let errs = out.json("err");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("not JSON") && errs[0].contains(r#""data":"not json""#), "{errs:?}");
}

/// Several subjects are read in turn: every message of each arrives, in
/// order per subject, with its subject as topic and a sequence of its own.
#[tokio::test]
async fn subscribe_to_several_subjects_takes_every_message_of_each_in_order() {
    let (_dir, server) = server("nats-many");
    let config = json!({"url": url(&server), "subjects": ["a", "b", "c"], "format": "text"});
    let mut h = Harness::new(&super::subscribe::SPEC, config);
    let (stop, metrics) = (h.shutdown(), h.metrics());
    let run = tokio::spawn(async move { h.run().await });
    let c = client(&server).await;
    until_subscribed(&c, "c", "probe", &metrics).await;
    let before = metrics.sent.load(Ordering::Relaxed);
    for i in 0..3000 {
        let subject = ["a", "b", "c"][i % 3];
        c.publish(subject, format!("{i}").into()).await.unwrap();
    }
    c.flush().await.unwrap();
    assert!(until(Duration::from_secs(10), || metrics.sent.load(Ordering::Relaxed) >= before + 3000).await);
    stop.cancel();
    let out = tokio::time::timeout(Duration::from_secs(10), run).await.unwrap().unwrap();
    let messages = out.messages("out");
    let real: Vec<_> = messages.iter().filter(|m| value::as_str(&m.payload).as_deref() != Some("probe")).collect();
    assert_eq!(real.len(), 3000);
    for (k, subject) in ["a", "b", "c"].iter().enumerate() {
        let got: Vec<usize> = real
            .iter()
            .filter(|m| m.meta.topic.as_deref() == Some(*subject))
            .map(|m| value::as_str(&m.payload).unwrap().parse().unwrap())
            .collect();
        let want: Vec<usize> = (0..3000).filter(|i| i % 3 == k).collect();
        assert_eq!(got, want, "subject {subject}");
    }
    assert!(messages.windows(2).all(|w| w[0].meta.seq < w[1].meta.seq), "a sequence number per message, rising");
}

#[tokio::test]
async fn subscribe_text_sends_invalid_utf8_to_err_and_bytes_keeps_it() {
    let (_dir, server) = server("nats-text");
    let c = client(&server).await;
    for (format, want_out, want_err) in [("text", 1, 1), ("bytes", 2, 0)] {
        let mut h =
            Harness::new(&super::subscribe::SPEC, json!({"url": url(&server), "subject": "t", "format": format}));
        let (stop, metrics) = (h.shutdown(), h.metrics());
        let run = tokio::spawn(async move { h.run().await });
        until_subscribed(&c, "t", "probe", &metrics).await;
        c.publish("t", vec![0xff, 0xfe].into()).await.unwrap();
        c.publish("t", "héllo".into()).await.unwrap();
        c.flush().await.unwrap();
        assert!(
            until(Duration::from_secs(10), || {
                let seen = metrics.sent.load(Ordering::Relaxed) + metrics.errors.load(Ordering::Relaxed);
                metrics.errors.load(Ordering::Relaxed) == want_err && seen >= 2
            })
            .await
        );
        stop.cancel();
        let out = tokio::time::timeout(Duration::from_secs(10), run).await.unwrap().unwrap();
        let real: Vec<_> =
            out.payloads("out").into_iter().filter(|p| value::as_str(p).as_deref() != Some("probe")).collect();
        assert_eq!(real.len(), want_out, "{format}");
        assert_eq!(out.messages("err").len() as u64, want_err, "{format}");
        if format == "bytes" {
            assert_eq!(real[0], fbp_runtime::Value::byte_str(vec![0xff, 0xfe]));
        }
    }
}

#[tokio::test]
async fn publish_renders_subjects_from_templates_keeps_headers_and_rejects_what_fails() {
    let (_dir, server) = server("nats-pub");
    let c = client(&server).await;
    let mut sub = c.subscribe("sensors.>").await.unwrap();
    c.flush().await.unwrap();
    let mut h = Harness::new(&super::publish::SPEC, json!({"url": url(&server), "subject": "sensors.{{ .sensor }}"}));
    let mut meta = fbp_runtime::Meta::new("test".into(), 0);
    meta.headers.insert("trace".into(), "t-9".into());
    h.push_message("in", fbp_runtime::Message::new(value::parse_json(br#"{"sensor": "a", "v": 1}"#).unwrap(), meta));
    h.push_json(r#"{"value": 2}"#);
    h.push("in", value::string("raw text"));
    let out = h.run_to_end().await;
    assert!(out.result.as_ref().unwrap().is_ok());
    let errs = out.json("err");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("gave null"), "{errs:?}");
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();
    assert_eq!(m.subject.as_str(), "sensors.a");
    assert_eq!(&m.payload[..], br#"{"sensor":"a","v":1}"#);
    assert_eq!(m.headers.unwrap().get("trace").unwrap().as_str(), "t-9");
}

#[tokio::test]
async fn jetstream_publish_is_confirmed_and_deduplicated_on_msg_id() {
    let (_dir, server) = server("nats-js-pub");
    let config = json!({"url": url(&server), "subject": "orders", "stream": "ORDERS", "create_stream": true,
                        "msg_id": "{{ .id }}"});
    let out = Harness::run_payloads(
        &super::publish::SPEC,
        config,
        [r#"{"id": "a"}"#, r#"{"id": "b"}"#, r#"{"id": "a"}"#, "{}"]
            .iter()
            .map(|j| value::parse_json(j.as_bytes()).unwrap())
            .collect(),
    )
    .await;
    assert!(out.result.as_ref().unwrap().is_ok(), "{:?}", out.result);
    assert_eq!(out.messages("err").len(), 1, "the message without an id");
    let js = async_nats::jetstream::new(client(&server).await);
    let mut stream = js.get_stream("ORDERS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2);
}

async fn build_error(spec: &'static fbp_runtime::ComponentSpec, config: serde_json::Value) -> String {
    match Harness::new(spec, config).run_to_end().await.result {
        Some(Err(e)) => e.0,
        other => panic!("expected a build error, got {other:?}"),
    }
}

#[tokio::test]
async fn config_errors_are_caught_at_build() {
    let sub = &super::subscribe::SPEC;
    assert!(build_error(sub, json!({})).await.contains("no subject"));
    assert!(build_error(sub, json!({"subject": "a.>.b"})).await.contains("not a NATS subject"));
    assert!(build_error(sub, json!({"subject": "a", "stream": "S"})).await.contains("needs `durable`"));
    assert!(build_error(sub, json!({"subject": "a", "username": "u"})).await.contains("needs `password`"));
    let two = json!({"subject": "a", "token": "t", "username": "u", "password": "p"});
    assert!(build_error(sub, two).await.contains("one way"));
    assert!(build_error(sub, json!({"subject": "a", "url": "http://x:1"})).await.contains("not a NATS URL"));
    let zero = json!({"subject": "a", "max_payload_size": "0B"});
    assert!(build_error(sub, zero).await.contains("`max_payload_size` must be more than 0 bytes"));
    let publish = &super::publish::SPEC;
    assert!(build_error(publish, json!({"subject": "a.>"})).await.contains("without wildcards"));
    assert!(build_error(publish, json!({"subject": "a.{{ .x"})).await.contains("not closed"));
    let templated = json!({"subject": "a.{{ .x }}", "stream": "S", "create_stream": true});
    assert!(build_error(publish, templated).await.contains("beforehand"));
    assert!(build_error(publish, json!({"subject": "a", "msg_id": "x"})).await.contains("set `stream`"));
}

#[tokio::test]
async fn a_payload_over_the_server_max_payload_goes_to_err() {
    let (_dir, server) = server("nats-big");
    let c = client(&server).await;
    let mut sub = c.subscribe("big").await.unwrap();
    c.flush().await.unwrap();
    let big = value::string("x".repeat(2 * 1024 * 1024));
    let out = Harness::run_payloads(
        &super::publish::SPEC,
        json!({"url": url(&server), "subject": "big"}),
        vec![big, value::string("small")],
    )
    .await;
    assert!(out.result.as_ref().unwrap().is_ok(), "{:?}", out.result);
    let errs = out.json("err");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("max payload"), "{}", &errs[0][..200]);
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"small");
}

/// A nats-server started with extra arguments, killed by its PID when dropped.
struct Custom(std::process::Child);

impl Drop for Custom {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it, made with openssl.
fn certificates(dir: &std::path::Path) {
    fbp_runtime::testbed::certificates(dir, "IP:127.0.0.1").expect("openssl makes the test certificates");
}

#[tokio::test]
async fn publishes_over_tls_with_a_user_and_password() {
    let dir = TempDir::new("nats-tls");
    certificates(dir.path());
    let port = fbp_runtime::testbed::free_port();
    let child = std::process::Command::new(fbp_runtime::testbed::program("nats-server").expect("nats-server"))
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "--tls", "--user", "fbp", "--pass", "s3cret"])
        .arg("--tlscert")
        .arg(dir.path().join("server.pem"))
        .arg("--tlskey")
        .arg(dir.path().join("server.key"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nats-server starts");
    let _server = Custom(child);
    assert!(fbp_runtime::testbed::wait_for_port(port, Duration::from_secs(10)));
    let ca = dir.join("ca.pem");
    let files = crate::net::tls::TlsFiles { ca_file: Some(ca.clone().into()), ..Default::default() };
    let tls = crate::net::tls::client_config(&files).unwrap();
    let c = async_nats::ConnectOptions::with_user_and_password("fbp".into(), "s3cret".into())
        .require_tls(true)
        .tls_client_config((*tls).clone())
        .connect(format!("tls://127.0.0.1:{port}"))
        .await
        .expect("test client connects over TLS");
    let mut sub = c.subscribe("secure").await.unwrap();
    c.flush().await.unwrap();
    let config = json!({"url": format!("tls://127.0.0.1:{port}"), "subject": "secure", "ca_file": ca,
                        "username": "fbp", "password": "s3cret"});
    let run = Harness::run_payloads(&super::publish::SPEC, config, vec![value::string("over TLS")]);
    let out = tokio::time::timeout(Duration::from_secs(15), run).await.expect("connects over TLS and publishes");
    assert!(out.result.as_ref().unwrap().is_ok(), "{:?}", out.result);
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();
    assert_eq!(&m.payload[..], b"over TLS");
}

#[tokio::test]
async fn a_shutdown_that_meets_the_server_going_away_ends_at_once() {
    let (_dir, server) = server("nats-drain-cut");
    let proxy = fbp_runtime::testbed::Proxy::start(server.addr().parse().unwrap()).unwrap();
    let via = format!("nats://127.0.0.1:{}", proxy.port());
    let mut h =
        Harness::new(&super::subscribe::SPEC, json!({"url": via, "subject": "in.>", "reconnect": "50ms..100ms"}));
    let (stop, metrics) = (h.shutdown(), h.metrics());
    let run = tokio::spawn(async move { h.run().await });
    let c = client(&server).await;
    until_subscribed(&c, "in.probe", "{}", &metrics).await;
    // The connection drops as the shutdown starts: the drain cannot complete,
    // and the source must not wait for a server that is gone.
    proxy.cut();
    stop.cancel();
    let out = tokio::time::timeout(Duration::from_secs(5), run).await;
    assert!(out.is_ok(), "the source was still draining 5 s after the shutdown");
    assert!(matches!(out.unwrap().unwrap().result, Some(Ok(()))));
}

#[tokio::test]
async fn with_the_server_away_a_publisher_stops_once_its_input_ends() {
    let url = format!("nats://127.0.0.1:{}", fbp_runtime::testbed::free_port());
    for config in [json!({"url": url, "subject": "out"}), json!({"url": url, "subject": "out", "stream": "S"})] {
        let mut h = Harness::new(&super::publish::SPEC, config.clone());
        let out = tokio::time::timeout(Duration::from_secs(5), h.run_to_end()).await;
        let out = out.unwrap_or_else(|_| panic!("{config}: still waiting for the server 5 s after the input ended"));
        assert!(matches!(out.result, Some(Ok(()))), "{config}: {:?}", out.result);
    }
}
