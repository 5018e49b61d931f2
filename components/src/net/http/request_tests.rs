use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::put;
use fbp_runtime::testing::Harness;
use fbp_runtime::value;
use serde_json::json;

use crate::net::http::test_server::Server;

#[tokio::test]
async fn retries_5xx_then_forwards_the_response_and_sends_4xx_to_err() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let server = Server::start(axum::Router::new().route(
        "/items/{id}",
        put(move |Path(id): Path<String>, body: String| async move {
            let n = c.fetch_add(1, Ordering::SeqCst);
            match id.as_str() {
                "flaky" if n < 2 => (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response(),
                "flaky" => (StatusCode::CREATED, axum::Json(json!({"got": body}))).into_response(),
                _ => (StatusCode::UNPROCESSABLE_ENTITY, "bad item").into_response(),
            }
        }),
    ))
    .await;
    let config =
        json!({"url": server.url("/items/{{ .id }}"), "method": "PUT", "backoff": "10ms..20ms", "concurrency": 1});
    let payloads = [r#"{"id": "flaky"}"#, r#"{"id": "nope"}"#, r#"{"n": 1}"#];
    let out = Harness::run_payloads(
        &super::SPEC,
        config,
        payloads.iter().map(|p| value::parse_json(p.as_bytes()).unwrap()).collect(),
    )
    .await;
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    let responses = out.json("out");
    assert_eq!(responses.len(), 1, "{responses:?}");
    let r: serde_json::Value = serde_json::from_str(&responses[0]).unwrap();
    assert_eq!(r["status"], 201);
    assert_eq!(r["body"], json!({"got": r#"{"id":"flaky"}"#}));
    assert_eq!(r["headers"]["content-type"], "application/json");
    assert_eq!(calls.load(Ordering::SeqCst), 4, "two 500s, one 201, one 422");
    let errs = out.json("err");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("HTTP 422") && errs[0].contains("bad item"), "{}", errs[0]);
    assert!(errs[1].contains("gave no value"), "{}", errs[1]);
}

#[tokio::test]
async fn gives_up_after_the_retries() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let server = Server::start(axum::Router::new().route(
        "/",
        axum::routing::post(move || async move {
            c.fetch_add(1, Ordering::SeqCst);
            StatusCode::INTERNAL_SERVER_ERROR
        }),
    ))
    .await;
    let config = json!({"url": server.url("/"), "retries": 2, "backoff": "5ms..10ms"});
    let out = Harness::run_payloads(&super::SPEC, config, vec![value::int(1)]).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let errs = out.json("err");
    assert!(errs[0].contains("500") && errs[0].contains("after 3 attempts"), "{errs:?}");
}

#[tokio::test]
async fn a_server_refusing_for_a_while_is_waited_out_past_the_retries() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let server = Server::start(axum::Router::new().route(
        "/",
        axum::routing::post(move || async move {
            match c.fetch_add(1, Ordering::SeqCst) {
                0 => StatusCode::SERVICE_UNAVAILABLE,
                1 => StatusCode::TOO_MANY_REQUESTS,
                2 => StatusCode::BAD_GATEWAY,
                3 => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::OK,
            }
        }),
    ))
    .await;
    let config = json!({"url": server.url("/"), "retries": 1, "backoff": "5ms..10ms"});
    let out = Harness::run_payloads(&super::SPEC, config, vec![value::int(1)]).await;
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(out.json("out").len(), 1);
    assert!(out.json("err").is_empty(), "{:?}", out.json("err"));
}

#[test]
fn build_checks_fixed_urls_and_numbers() {
    let build = |over: serde_json::Value| {
        let mut config = json!({"url": "http://x/", "method": "POST", "timeout": "1s", "retries": 1,
            "backoff": "1ms..2ms", "concurrency": 1, "response_format": "auto", "reconnect": "1s..2s", "max_body_size": "8MiB"});
        for (k, v) in over.as_object().unwrap() {
            config[k] = v.clone();
        }
        (super::SPEC.build)(&fbp_runtime::BuildContext { name: "r".into(), config, base_dir: ".".into() }).err()
    };
    assert!(build(json!({})).is_none());
    assert!(build(json!({"url": "x://y"})).unwrap().contains("`http` or `https`"));
    assert!(build(json!({"url": "http://h/{{ .id"})).unwrap().contains("not closed"));
    assert!(build(json!({"concurrency": 0})).unwrap().contains("1 or more"));
    assert!(build(json!({"max_body_size": "0"})).unwrap().contains("more than 0 bytes"));
    assert!(build(json!({"max_body_size": "lots"})).unwrap().contains("not a size"));
}
