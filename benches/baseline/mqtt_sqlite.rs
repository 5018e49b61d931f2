//! `mqtt-sqlite-baseline IN DB TABLE [BATCH]`: a hand-written MQTT to SQLite
//! loop, the yardstick for `fbp relay mqtt://.. sqlite://..` in
//! `benches/broker_bench.py`.
//!
//! Subscribes to IN (`mqtt://HOST:PORT/TOPIC?qos=Q`); a writer thread takes
//! what is queued, up to BATCH (default 500, fbp's `sqlite` default), parses
//! each payload as a JSON object and inserts it in one transaction, creating
//! the table from the first record's fields, then commits; at QoS 1 it
//! acknowledges the batch to the broker after the commit.

use rumqttc::{Event, Packet, Publish, QoS};
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, params_from_iter};
use serde_json::Value;
use tokio::sync::mpsc;

#[path = "endpoint.rs"]
mod endpoint;

#[tokio::main]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (src, db, table) = match args.as_slice() {
        [src, db, table] | [src, db, table, _] => (endpoint::Endpoint::parse(src)?, db.clone(), table.clone()),
        _ => return Err("usage: mqtt-sqlite-baseline IN DB TABLE [BATCH]".into()),
    };
    let batch_size: usize = args.get(3).map_or(Ok(500), |b| b.parse()).map_err(|_| "BATCH: a number")?;
    let manual = src.qos() != QoS::AtMostOnce;
    let (input, mut events) = endpoint::mqtt_client(&src, "sqlite-in", 1000, manual);
    input.subscribe(src.topic.as_str(), src.qos()).await.map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel::<Publish>(1000);
    let acker = manual.then(|| (input.clone(), tokio::runtime::Handle::current()));
    let writer = std::thread::spawn(move || write(rx, &db, &table, batch_size, acker));
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if tx.send(p).await.is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("mqtt-sqlite-baseline: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
    writer.join().map_err(|_| "writer panicked")?
}

type Acker = Option<(rumqttc::AsyncClient, tokio::runtime::Handle)>;

fn write(mut rx: mpsc::Receiver<Publish>, db: &str, table: &str, size: usize, acker: Acker) -> Result<(), String> {
    let mut conn = Connection::open(db).map_err(|e| e.to_string())?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let mut insert: Option<(Vec<String>, String)> = None;
    let mut batch = Vec::with_capacity(size);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < size {
            let Ok(p) = rx.try_recv() else { break };
            batch.push(p);
        }
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        for p in &batch {
            let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(&p.payload) else {
                eprintln!("mqtt-sqlite-baseline: not a JSON object, skipped");
                continue;
            };
            let (columns, sql) = insert.get_or_insert_with(|| create(&tx, table, &record));
            let values = columns.iter().map(|c| to_sql(record.get(c).unwrap_or(&Value::Null)));
            tx.prepare_cached(sql).and_then(|mut s| s.execute(params_from_iter(values))).map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())?;
        if let Some((client, handle)) = &acker {
            for p in &batch {
                let _ = handle.block_on(client.ack(p));
            }
        }
        batch.clear();
    }
    Ok(())
}

/// Creates the table from a record's fields; returns its columns and insert.
fn create(conn: &Connection, table: &str, record: &serde_json::Map<String, Value>) -> (Vec<String>, String) {
    let columns: Vec<String> = record.keys().cloned().collect();
    let defs: Vec<String> = record
        .iter()
        .map(|(k, v)| {
            let ty = match v {
                Value::Bool(_) => "INTEGER",
                Value::Number(n) if n.is_i64() || n.is_u64() => "INTEGER",
                Value::Number(_) => "REAL",
                _ => "TEXT",
            };
            format!("\"{k}\" {ty}")
        })
        .collect();
    let create = format!("CREATE TABLE IF NOT EXISTS \"{table}\" ({})", defs.join(", "));
    if let Err(e) = conn.execute(&create, []) {
        eprintln!("mqtt-sqlite-baseline: {e}");
    }
    let marks = vec!["?"; columns.len()].join(", ");
    let names: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
    let sql = format!("INSERT INTO \"{table}\" ({}) VALUES ({marks})", names.join(", "));
    (columns, sql)
}

fn to_sql(v: &Value) -> Sql {
    match v {
        Value::Null => Sql::Null,
        Value::Bool(b) => Sql::Integer(i64::from(*b)),
        Value::Number(n) => n.as_i64().map(Sql::Integer).unwrap_or_else(|| Sql::Real(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => Sql::Text(s.clone()),
        other => Sql::Text(other.to_string()),
    }
}
