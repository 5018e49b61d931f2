//! `mqtt-relay-baseline IN OUT`: a hand-written MQTT relay, the yardstick
//! for `fbp relay mqtt://.. mqtt://..` in `benches/broker_bench.py`.
//!
//! Subscribes to IN (`mqtt://HOST:PORT/TOPIC?qos=Q`) and publishes each
//! payload, unchanged, to OUT at OUT's QoS. At QoS 1 it keeps fbp's
//! guarantee: an incoming message is acknowledged to the broker only once its
//! copy is published (QoS 0 out) or PubAck'ed (QoS 1 out). Two connections,
//! one per side, so that acknowledging IN never waits behind OUT's traffic.
//! No reconnection: a benchmark yardstick, not a product.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{Event, Outgoing, Packet, Publish, QoS};
use tokio::sync::mpsc;

#[path = "endpoint.rs"]
mod endpoint;

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst] = args.as_slice() else { return Err("usage: mqtt-relay-baseline IN OUT".into()) };
    let (src, dst) = (endpoint::Endpoint::parse(src)?, endpoint::Endpoint::parse(dst)?);
    let manual = src.qos() != QoS::AtMostOnce;
    let (input, mut in_events) = endpoint::mqtt_client(&src, "relay-in", 1000, manual);
    let (output, mut out_events) = endpoint::mqtt_client(&dst, "relay-out", 1000, false);
    input.subscribe(src.topic.as_str(), src.qos()).await.map_err(|e| e.to_string())?;
    // Received messages published out, in order, until their pkid is known.
    let pending: Arc<Mutex<VecDeque<Publish>>> = Arc::default();
    let (tx, mut rx) = mpsc::channel::<Publish>(1000);
    let (queue, out_qos, topic) = (pending.clone(), dst.qos(), dst.topic.clone());
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let payload = p.payload.clone();
            if manual {
                queue.lock().unwrap().push_back(p);
            }
            if let Err(e) = output.publish_bytes(topic.as_str(), out_qos, false, payload).await {
                eprintln!("publish: {e}");
            }
        }
    });
    let acker = input.clone();
    tokio::spawn(async move {
        let mut unacked: HashMap<u16, Publish> = HashMap::new();
        loop {
            match out_events.poll().await {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) if manual => {
                    let Some(p) = pending.lock().unwrap().pop_front() else { continue };
                    if out_qos == QoS::AtMostOnce {
                        let _ = acker.ack(&p).await;
                    } else {
                        unacked.insert(pkid, p);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(p) = unacked.remove(&ack.pkid) {
                        let _ = acker.ack(&p).await;
                    }
                }
                Ok(_) => {}
                Err(e) => pause("out", e).await,
            }
        }
    });
    loop {
        match in_events.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                tx.send(p).await.map_err(|e| e.to_string())?;
            }
            Ok(_) => {}
            Err(e) => pause("in", e).await,
        }
    }
}

async fn pause(side: &str, e: rumqttc::ConnectionError) {
    eprintln!("mqtt-relay-baseline: {side}: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
