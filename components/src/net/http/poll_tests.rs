use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fbp_runtime::testing::{Harness, Output};
use serde_json::json;

use crate::net::http::test_server::Server;

/// Runs `http-poll` with `config` against a server answering `path` with
/// `respond(n, query)` for its `n`th request (from 1), until `stop_at` requests
/// have arrived. Returns what the source sent, the request times and the URL.
async fn poll_server(
    path: &'static str,
    stop_at: usize,
    config: serde_json::Value,
    respond: impl Fn(usize, Option<&str>) -> Response + Clone + Send + Sync + 'static,
) -> (Output, Vec<Instant>, String) {
    let times = Arc::new(Mutex::new(Vec::new()));
    let stop = tokio_util::sync::CancellationToken::new();
    let (t, s) = (times.clone(), stop.clone());
    let handler = move |uri: Uri| async move {
        let n = {
            let mut t = t.lock().unwrap();
            t.push(Instant::now());
            t.len()
        };
        if n >= stop_at {
            s.cancel();
        }
        respond(n, uri.query())
    };
    let server = Server::start(axum::Router::new().route(path, get(handler))).await;
    let mut config = config;
    config["url"] = server.url(path).into();
    let mut h = Harness::new(&super::SPEC, config);
    let own = h.shutdown();
    tokio::spawn(async move {
        stop.cancelled().await;
        own.cancel();
    });
    let out = tokio::time::timeout(Duration::from_secs(10), h.run()).await.expect("stops");
    let times = times.lock().unwrap().clone();
    (out, times, server.url(path))
}

#[tokio::test]
async fn follows_pages_and_splits_items() {
    // The fourth request starts the second poll: the first poll's items are all sent by then.
    let config = json!({"interval": "50ms", "paginate": ".next", "split": ".items"});
    let (out, _, url) = poll_server("/items", 4, config, |_, query| match query {
        Some("page=2") => axum::Json(json!({"items": [3], "next": "/items?page=3"})).into_response(),
        Some("page=3") => axum::Json(json!({"items": [], "next": null})).into_response(),
        _ => axum::Json(json!({"items": [1, 2], "next": "/items?page=2"})).into_response(),
    })
    .await;
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    let items = out.json("out");
    assert_eq!(items[..3], ["1", "2", "3"], "{items:?}");
    let first = &out.messages("out")[0].meta;
    assert_eq!(first.topic.as_deref(), Some(url.as_str()));
    assert_eq!(first.headers.get("status").map(String::as_str), Some("200"));
    assert!(out.messages("err").is_empty());
}

#[tokio::test]
async fn waits_as_long_as_retry_after_says_on_429() {
    let config = json!({"interval": "50ms", "reconnect": "10ms..20ms"});
    let (out, t, _) = poll_server("/", 3, config, |n, _| {
        if n == 1 {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response()
        } else {
            axum::Json(json!({"n": n})).into_response()
        }
    })
    .await;
    let waited = t[1] - t[0];
    assert!(waited >= Duration::from_millis(950), "retried after {waited:?}, Retry-After said 1s");
    assert_eq!(out.json("out")[0], r#"{"n":2}"#);
    assert!(out.messages("err").is_empty(), "a 429 is an outage, not a message error");
}

#[tokio::test]
async fn max_pages_counts_pages_served_not_retries() {
    let queries = Arc::new(Mutex::new(Vec::new()));
    let q = queries.clone();
    let config = json!({"interval": "50ms", "paginate": ".next", "max_pages": 3, "reconnect": "10ms..20ms"});
    // Endless pages; the first try of page 2 meets an outage (503).
    let (out, _, _) = poll_server("/", 5, config, move |n, query| {
        q.lock().unwrap().push(query.map(str::to_string));
        let page: u32 = query.and_then(|q| q.strip_prefix("page=")?.parse().ok()).unwrap_or(1);
        if n == 2 {
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        axum::Json(json!({"page": page, "next": format!("/?page={}", page + 1)})).into_response()
    })
    .await;
    let pages: Vec<_> = out.json("out");
    assert_eq!(
        pages[..3],
        [r#"{"next":"/?page=2","page":1}"#, r#"{"next":"/?page=3","page":2}"#, r#"{"next":"/?page=4","page":3}"#]
    );
    let asked = queries.lock().unwrap().clone();
    let want = [None, Some("page=2"), Some("page=2"), Some("page=3"), None];
    assert_eq!(asked, want.map(|q| q.map(str::to_string)), "page 2 asked again, then a new poll after 3 pages");
}

#[tokio::test]
async fn bodies_that_do_not_decode_and_4xx_go_to_err() {
    let (out, _, _) = poll_server("/", 3, json!({"interval": "20ms"}), |n, _| match n {
        1 => "{not json".into_response(),
        2 => (StatusCode::NOT_FOUND, "no such thing").into_response(),
        _ => axum::Json(json!(1)).into_response(),
    })
    .await;
    let errs = out.json("err");
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].contains("not JSON") && errs[0].contains("{not json"), "{}", errs[0]);
    assert!(errs[1].contains("HTTP 404") && errs[1].contains("no such thing"), "{}", errs[1]);
}

#[tokio::test]
async fn an_unreachable_server_is_retried_not_a_failure() {
    let port = fbp_runtime::testbed::free_port();
    let mut h = Harness::new(
        &super::SPEC,
        json!({"url": format!("http://127.0.0.1:{port}/"), "interval": "20ms", "reconnect": "10ms..20ms"}),
    );
    let stop = h.shutdown();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
    });
    let out = h.run().await;
    assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
    assert!(out.messages("out").is_empty() && out.messages("err").is_empty());
}

#[test]
fn build_refuses_bad_urls_and_programs() {
    let build = |config: serde_json::Value| {
        let mut config = config;
        for (k, v) in [
            ("interval", "1s"),
            ("method", "GET"),
            ("format", "json"),
            ("timeout", "1s"),
            ("reconnect", "1s..2s"),
            ("max_body_size", "8MiB"),
        ] {
            config[k] = v.into();
        }
        config["max_pages"] = 10.into();
        (super::SPEC.build)(&fbp_runtime::BuildContext { name: "p".into(), config, base_dir: ".".into() }).err()
    };
    assert!(build(json!({"url": "ftp://x/"})).unwrap().contains("`http` or `https`"));
    assert!(build(json!({"url": "nope"})).unwrap().contains("not a URL"));
    assert!(build(json!({"url": "http://x/", "paginate": ".next +"})).unwrap().contains("invalid jq"));
    assert!(build(json!({"url": "http://x/"})).is_none());
}
