//! `broker-load`: the load tool of `benches/broker_bench.py`.
//!
//! Publishes `--count` JSON readings of about 120 bytes to `--publish`
//! (`mqtt://HOST:PORT/TOPIC?qos=Q` or `nats://HOST:PORT/SUBJECT`), as fast as
//! it can or at `--rate` messages/s, while it subscribes to `--receive` (same
//! forms, or `none`), counts what comes back and computes the latency from
//! the publish time each reading carries (`"ts"`, Unix nanoseconds). Prints
//! one JSON summary line on stdout. Every wait is bounded: it stops when all
//! came back, when nothing came for `--idle` after the last publish, or at
//! `--timeout`.
//!
//! `--probe` measures readiness instead: once subscribed it prints
//! `{"subscribed":true}`, then publishes a reading every 5 ms until one comes
//! back, and prints `{"ready":true}` (the caller starts the relay between the
//! two lines and times the second).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use tokio::sync::mpsc;
use tokio::time::timeout;

#[path = "endpoint.rs"]
mod endpoint;

use endpoint::{Endpoint, Scheme};

/// Messages the NATS receiver may hold unread (more than a run sends).
const RECEIVE_CAPACITY: usize = 1 << 21;

#[derive(Parser)]
struct Args {
    /// Where to publish.
    #[arg(long)]
    publish: String,
    /// Where the messages come back, or `none`.
    #[arg(long, default_value = "none")]
    receive: String,
    /// How many readings to publish.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Messages per second; 0 publishes as fast as the broker takes them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Stop waiting when nothing came back for this long after the last publish (ms).
    #[arg(long, default_value_t = 3000)]
    idle: u64,
    /// Give up after this long in all (s).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Measure readiness (see the module doc) instead of load.
    #[arg(long)]
    probe: bool,
}

/// One reading as published: about 120 bytes of JSON.
fn reading(seq: u64) -> Vec<u8> {
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let value = 15.0 + (seq % 2000) as f64 / 100.0;
    format!(
        r#"{{"sensor":"s-{}","value":{value:.2},"unit":"C","ts":{ts},"seq":{seq},"site":"plant-north","status":"ok"}}"#,
        seq % 32
    )
    .into_bytes()
}

/// The latency of a reading that came back, from its `"ts"`, in ns.
fn latency(payload: &[u8], now: u64) -> Option<(u64, u64)> {
    let field = |name: &str| {
        let text = std::str::from_utf8(payload).ok()?;
        let start = text.find(name)? + name.len();
        let digits = text[start..].split(|c: char| !c.is_ascii_digit()).next()?;
        digits.parse::<u64>().ok()
    };
    let ts = field("\"ts\":")?;
    Some((now.saturating_sub(ts), field("\"seq\":")?))
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A publisher of either scheme.
enum Publisher {
    Mqtt(rumqttc::AsyncClient, String, rumqttc::QoS, tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>),
    Nats(async_nats::Client, String),
}

impl Publisher {
    async fn send(&self, payload: Vec<u8>) -> Result<(), String> {
        match self {
            Publisher::Mqtt(client, topic, qos, _) => {
                client.publish_bytes(topic.as_str(), *qos, false, payload.into()).await.map_err(|e| e.to_string())
            }
            Publisher::Nats(client, subject) => {
                client.publish(subject.clone(), payload.into()).await.map_err(|e| e.to_string())
            }
        }
    }

    async fn flush(&self) {
        if let Publisher::Nats(client, _) = self {
            let _ = client.flush().await;
        }
    }

    /// Waits until everything queued is written: flushes NATS; disconnects
    /// MQTT, which comes after the publishes, and waits for its event loop.
    async fn finish(&self) {
        match self {
            Publisher::Nats(..) => self.flush().await,
            Publisher::Mqtt(client, _, _, events) => {
                let _ = client.disconnect().await;
                if let Some(events) = events.lock().await.take() {
                    let _ = timeout(Duration::from_secs(30), events).await;
                }
            }
        }
    }
}

/// Connects a publisher; for MQTT, its event loop runs on its own task.
async fn publisher(ep: &Endpoint) -> Result<Publisher, String> {
    match ep.scheme {
        Scheme::Mqtt => {
            let (client, mut events) = endpoint::mqtt_client(ep, "load-pub", 10_000, false);
            let events = tokio::spawn(async move { while let Ok(_event) = events.poll().await {} });
            Ok(Publisher::Mqtt(client, ep.topic.clone(), ep.qos(), tokio::sync::Mutex::new(Some(events))))
        }
        Scheme::Nats => Ok(Publisher::Nats(endpoint::nats_client(ep).await?, ep.topic.clone())),
    }
}

/// Subscribes; every payload that comes back goes to the channel with the
/// time it came. Returns once the subscription is live.
async fn receiver(ep: &Endpoint, tx: mpsc::UnboundedSender<(Vec<u8>, u64)>) -> Result<(), String> {
    match ep.scheme {
        Scheme::Mqtt => {
            let (client, mut events) = endpoint::mqtt_client(ep, "load-sub", 100, false);
            client.subscribe(ep.topic.as_str(), ep.qos()).await.map_err(|e| e.to_string())?;
            let (live_tx, live_rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let _client = client;
                let mut live = Some(live_tx);
                loop {
                    match events.poll().await {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                            live.take().map(|l| l.send(()));
                        }
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                            let _ = tx.send((p.payload.to_vec(), now_nanos()));
                        }
                        Ok(_) => {}
                        Err(e) => {
                            eprintln!("broker-load: receiver: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
            timeout(Duration::from_secs(10), live_rx).await.map_err(|_| "no SUBACK within 10 s")?.ok();
        }
        Scheme::Nats => {
            // The client's own default (65 536 messages held) drops a burst
            // the tool reads slower than a relay writes: hold the whole run.
            let options = async_nats::ConnectOptions::new().subscription_capacity(RECEIVE_CAPACITY);
            let client = endpoint::nats_client_holding(ep, options).await?;
            let mut sub = client.subscribe(ep.topic.clone()).await.map_err(|e| e.to_string())?;
            client.flush().await.map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _client = client;
                use futures_util::StreamExt;
                while let Some(m) = sub.next().await {
                    let _ = tx.send((m.payload.to_vec(), now_nanos()));
                }
            });
        }
    }
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn probe(publisher: Publisher, mut rx: mpsc::UnboundedReceiver<(Vec<u8>, u64)>, limit: Duration) {
    println!("{{\"subscribed\":true}}");
    let _ = std::io::stdout().flush();
    let deadline = Instant::now() + limit;
    let mut seq = 0;
    while Instant::now() < deadline {
        let _ = publisher.send(reading(seq)).await;
        publisher.flush().await;
        seq += 1;
        if let Ok(Some(_)) = timeout(Duration::from_millis(5), rx.recv()).await {
            println!("{{\"ready\":true,\"probes\":{seq}}}");
            return;
        }
    }
    println!("{{\"ready\":false,\"probes\":{seq}}}");
}

/// Publishes `count` readings at `rate`/s (0: flat out); returns when the
/// last is handed over. A fixed rate is kept on a thread of its own that
/// sleeps until each message's due time, so messages do not come in bursts
/// of a timer tick.
async fn publish_all(publisher: Arc<Publisher>, count: u64, rate: u64) -> Result<(), String> {
    if rate == 0 {
        for seq in 0..count {
            publisher.send(reading(seq)).await?;
        }
        publisher.finish().await;
        return Ok(());
    }
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        for seq in 0..count {
            let due = start + Duration::from_nanos(seq * 1_000_000_000 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            handle.block_on(publisher.send(reading(seq)))?;
        }
        handle.block_on(publisher.finish());
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("broker-load: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let target = Endpoint::parse(&args.publish)?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let receiving = args.receive != "none";
    if receiving {
        receiver(&Endpoint::parse(&args.receive)?, tx).await?;
    }
    let publisher = publisher(&target).await?;
    if args.probe {
        probe(publisher, rx, Duration::from_secs(args.timeout)).await;
        return Ok(());
    }
    let start = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let sending = {
        let (publisher, done) = (Arc::new(publisher), done.clone());
        let (count, rate) = (args.count, args.rate);
        tokio::spawn(async move {
            let result = publish_all(publisher, count, rate).await;
            done.store(true, Ordering::SeqCst);
            result
        })
    };
    let deadline = start + Duration::from_secs(args.timeout);
    let mut latencies = Vec::with_capacity(args.count as usize);
    let mut seen = vec![false; args.count as usize];
    let (mut received, mut duplicates, mut last) = (0u64, 0u64, start);
    while receiving && received < args.count && Instant::now() < deadline {
        let wait = if done.load(Ordering::SeqCst) { Duration::from_millis(args.idle) } else { Duration::from_secs(1) };
        match timeout(wait, rx.recv()).await {
            Ok(Some((payload, at))) => {
                last = Instant::now();
                if let Some((lat, seq)) = latency(&payload, at) {
                    match seen.get_mut(seq as usize) {
                        Some(s) if *s => duplicates += 1,
                        Some(s) => {
                            *s = true;
                            received += 1;
                            latencies.push(lat);
                        }
                        None => {}
                    }
                }
            }
            Ok(None) => break,
            Err(_) if done.load(Ordering::SeqCst) => break,
            Err(_) => {}
        }
    }
    let published_in = sending.await.map_err(|e| e.to_string())?;
    let publish_s = start.elapsed().as_secs_f64();
    if let Err(e) = published_in {
        return Err(format!("publishing: {e}"));
    }
    let elapsed = if receiving { (last - start).as_secs_f64() } else { publish_s };
    latencies.sort_unstable();
    println!(
        "{{\"sent\":{},\"received\":{received},\"duplicates\":{duplicates},\"elapsed_s\":{elapsed:.4},\
         \"publish_s\":{publish_s:.4},\"per_s\":{:.0},\"p50_us\":{:.1},\"p99_us\":{:.1},\"max_us\":{:.1}}}",
        args.count,
        received as f64 / elapsed.max(1e-9),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
    );
    Ok(())
}
