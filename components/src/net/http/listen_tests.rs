use std::time::Duration;

use fbp_runtime::testing::Harness;
use serde_json::json;

fn client() -> reqwest::Client {
    crate::net::tls::ensure_provider();
    reqwest::Client::new()
}

#[tokio::test]
async fn answers_each_request_by_what_became_of_it() {
    let port = fbp_runtime::testbed::free_port();
    let config = json!({"bind": format!("127.0.0.1:{port}"), "path": "/hooks/", "respond": "queued",
                        "max_body_size": "64", "headers": ["x-event"]});
    let mut h = Harness::new(&super::SPEC, config);
    let stop = h.shutdown();
    let requests = tokio::spawn(async move {
        let up = move || fbp_runtime::testbed::wait_for_port(port, Duration::from_secs(5));
        assert!(tokio::task::spawn_blocking(up).await.unwrap(), "listening");
        let c = client();
        let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
        let ok = c.post(url("/hooks/a")).header("x-event", "push").body(r#"{"n": 1}"#).send().await.unwrap();
        let bad = c.post(url("/hooks/a")).body("{nope").send().await.unwrap();
        let big = c.post(url("/hooks/a")).body(vec![b' '; 100]).send().await.unwrap();
        let lost = c.post(url("/other")).body("1").send().await.unwrap();
        let get = c.get(url("/hooks/a")).send().await.unwrap();
        stop.cancel();
        [ok, bad, big, lost, get].map(|r| r.status().as_u16())
    });
    let out = tokio::time::timeout(Duration::from_secs(10), h.run()).await.expect("stops");
    assert_eq!(requests.await.unwrap(), [200, 400, 413, 404, 405]);
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    assert_eq!(out.json("out"), [r#"{"n":1}"#]);
    let meta = &out.messages("out")[0].meta;
    assert_eq!(meta.topic.as_deref(), Some("/hooks/a"));
    assert_eq!(meta.headers.get("x-event").map(String::as_str), Some("push"));
    assert!(out.messages("err").is_empty(), "client errors are answered, not sent to err");
    assert_eq!(h.metrics().errors.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn build_refuses_bad_settings() {
    let build = |over: serde_json::Value| {
        let mut config = json!({"bind": "127.0.0.1:0", "path": "/", "methods": ["POST"], "format": "json",
            "max_body_size": "1MiB", "headers": [], "respond": "delivered", "queue_timeout": "1s",
            "response_timeout": "1s", "read_timeout": "1s", "idle_timeout": "1s", "max_connections": 4});
        for (k, v) in over.as_object().unwrap() {
            config[k] = v.clone();
        }
        (super::SPEC.build)(&fbp_runtime::BuildContext { name: "l".into(), config, base_dir: ".".into() }).err()
    };
    assert!(build(json!({})).is_none());
    assert!(build(json!({"bind": "localhost"})).unwrap().contains("not an address"));
    assert!(build(json!({"path": "hooks"})).unwrap().contains("start with `/`"));
    assert!(build(json!({"methods": ["P O"]})).unwrap().contains("not a method"));
    assert!(build(json!({"max_connections": 0})).unwrap().contains("at least 1"));
    assert!(build(json!({"max_connections": i64::MAX})).unwrap().contains("at most"));
    assert!(build(json!({"idle_timeout": "0s"})).unwrap().contains("`idle_timeout`"));
    assert!(build(json!({"auth": {"token": ""}})).unwrap().contains("`auth.token` is empty"));
    assert!(build(json!({"auth": {"tokn": "x"}})).unwrap().contains("unknown field `tokn`"));
    let tls = build(json!({"tls": {"cert": "/nonexistent/c.pem", "key": "/nonexistent/k.pem"}})).unwrap();
    assert!(tls.contains("/nonexistent/c.pem"), "{tls}");
    assert!(build(json!({"tls": {"cert": "c.pem"}})).unwrap().contains("missing field `key`"));
}

#[tokio::test]
async fn a_body_in_several_chunks_is_joined_and_limited() {
    let chunks = |parts: &[&'static str]| {
        let items: Vec<Result<bytes::Bytes, std::io::Error>> =
            parts.iter().map(|p| Ok(bytes::Bytes::from_static(p.as_bytes()))).collect();
        axum::body::Body::from_stream(futures_util::stream::iter(items))
    };
    let joined = super::read_body(chunks(&["{\"a\":", " 1", "}"]), 64).await.ok().unwrap();
    assert_eq!(&joined[..], b"{\"a\": 1}");
    assert!(matches!(super::read_body(chunks(&["12345", "6789"]), 8).await, Err(super::BodyError::TooLarge)));
    assert_eq!(&super::read_body(chunks(&["one"]), 8).await.ok().unwrap()[..], b"one");
}
