//! The hand-written baseline for `benches/postgres_bench.py`: reads the same
//! JSON lines (`{"n": .., "sensor": .., "value": ..}`) and inserts them into
//! PostgreSQL with tokio-postgres, either in batches (one multi-row INSERT
//! with typed parameters per batch, a transaction of its own) or one row at
//! a time (one prepared INSERT per row, each committed on its own).
//!
//!     pg_batched URL TABLE FILE batched|row [BATCH_SIZE]

use std::io::BufRead;

use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, table, file, mode, rest @ ..] = args.as_slice() else {
        return Err("usage: pg_batched URL TABLE FILE batched|row [BATCH_SIZE]".into());
    };
    let batch_size: usize = rest.first().map_or(Ok(500), |s| s.parse())?;
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    let mut rows: Vec<(i64, String, f64)> = Vec::with_capacity(batch_size);
    let row_insert = client.prepare(&format!("INSERT INTO {table} (n, sensor, value) VALUES ($1, $2, $3)")).await?;
    let mut batch_insert = None;
    for line in std::io::BufReader::new(std::fs::File::open(file)?).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        let row = (
            v["n"].as_i64().unwrap_or(0),
            v["sensor"].as_str().unwrap_or("").to_string(),
            v["value"].as_f64().unwrap_or(0.0),
        );
        if mode == "row" {
            client.execute(&row_insert, &[&row.0, &row.1, &row.2]).await?;
            continue;
        }
        rows.push(row);
        if rows.len() == batch_size {
            let insert = match &batch_insert {
                Some(s) => s,
                None => batch_insert.insert(client.prepare(&multi_row(table, batch_size)).await?),
            };
            client.execute(insert, &params(&rows)).await?;
            rows.clear();
        }
    }
    if !rows.is_empty() {
        client.execute(&multi_row(table, rows.len()), &params(&rows)).await?;
    }
    Ok(())
}

/// `INSERT INTO t (n, sensor, value) VALUES ($1, $2, $3), ($4, $5, $6), ...`
fn multi_row(table: &str, rows: usize) -> String {
    let values: Vec<String> = (0..rows).map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3)).collect();
    format!("INSERT INTO {table} (n, sensor, value) VALUES {}", values.join(", "))
}

fn params(rows: &[(i64, String, f64)]) -> Vec<&(dyn ToSql + Sync)> {
    rows.iter().flat_map(|(n, s, v)| [n as &(dyn ToSql + Sync), s, v]).collect()
}
