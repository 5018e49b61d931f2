//! The hand-written baseline for `benches/http_bench.py`: the least a webhook
//! ingest server does, written directly on axum. Each POST body is parsed as
//! JSON, handed to a bounded channel that a task drains (like `http-listen ->
//! null` with `respond = "queued"`), and answered 200.
//!
//! `cargo run --release --example http_ingest -- 127.0.0.1:PORT`

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use tokio::sync::mpsc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn ingest(State(tx): State<mpsc::Sender<serde_json::Value>>, body: Bytes) -> StatusCode {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    match tx.send(value).await {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        let (tx, mut rx) = mpsc::channel(1000);
        tokio::spawn(async move {
            let mut n = 0u64;
            while rx.recv().await.is_some() {
                n += 1;
            }
            eprintln!("received {n}");
        });
        let app = axum::Router::new().fallback(axum::routing::post(ingest)).with_state(tx);
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        axum::serve(listener, app).await.expect("serve");
    });
}
