//! `nats-relay-baseline IN OUT`: a hand-written core NATS relay, the
//! yardstick for `fbp relay nats://.. nats://..` in
//! `benches/broker_bench.py`. Subscribes to IN (`nats://HOST:PORT/SUBJECT`)
//! and publishes each payload, unchanged, to OUT; one connection per side,
//! as a relay between two servers needs.

use futures_util::StreamExt;

#[path = "endpoint.rs"]
mod endpoint;

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst] = args.as_slice() else { return Err("usage: nats-relay-baseline IN OUT".into()) };
    let (src, dst) = (endpoint::Endpoint::parse(src)?, endpoint::Endpoint::parse(dst)?);
    let input = endpoint::nats_client(&src).await?;
    let output = endpoint::nats_client(&dst).await?;
    let mut messages = input.subscribe(src.topic.clone()).await.map_err(|e| e.to_string())?;
    while let Some(m) = messages.next().await {
        output.publish(dst.topic.clone(), m.payload).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
