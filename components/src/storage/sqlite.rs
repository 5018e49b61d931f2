//! `sqlite`: insert records into an SQLite table, in batches.
//!
//! - this file: the declaration, the config and the async task;
//! - `db`: the connection, the table's columns and the inserts, which run
//!   on tokio's blocking pool so the async threads never wait on the disk.

mod db;

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use fbp_runtime::link::Backoff;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::{
    Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, PortSpec, Task, TaskFuture,
};
use serde::Deserialize;

use self::db::Db;
use crate::sink_retry::{Fault, Refused, Retry, Stop, give_up, reject_rest};
use crate::storage::{FLUSH_INTERVAL_KEY, next_batch};

/// The pause between attempts while the database stays locked (each attempt
/// itself waits up to the busy timeout for the lock).
const RETRY: Backoff = Backoff { min: Duration::from_millis(50), max: Duration::from_secs(2) };

/// The `sqlite` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "sqlite",
    summary: "Insert records into an SQLite table, in batches.",
    doc: "Inserts each record (a JSON object) as a row: each column takes the field of the same \
          name (NULL when missing; fields without a column are ignored; arrays and objects are \
          stored as JSON text). If the table does not exist it is created, from `columns` when \
          set, else from the first record's fields (integers and booleans INTEGER, other numbers \
          REAL, strings, arrays and objects TEXT, bytes BLOB). What is queued, up to \
          `batch_size`, and what arrives within `flush_interval` of the first, is inserted in one \
          transaction and committed before the messages are acknowledged. A payload that is not an \
          object, or a record the table refuses (a constraint, a type mismatch), goes alone to \
          `err` and the rest of the batch is committed. While another connection holds the \
          database locked (busy, locked; at start too) or the disk is full, the batch is kept: each attempt \
          waits up to 5 s for the lock, then the whole batch is written again after a pause \
          (50ms doubling to 2s), until it is in, without a restart; logged once per episode \
          (\"Cannot write the batch\", then \"Written after N attempts\"). At shutdown a pause \
          ends at once and the batch is rejected, not acknowledged. A database that cannot be \
          opened, or another error (no permission, a corrupt file), is a failure with its cause: \
          the batch is rejected and the component restarted.",
    kind: Kind::Sink,
    inputs: &[PortSpec { name: "in", ty: "object", doc: "records to insert" }],
    outputs: &[],
    config: &[
        KeySpec::required(
            "path",
            KeyType::String,
            "The database file, created if missing; a relative path is taken from the flow file's folder.",
        ),
        KeySpec::required(
            "table",
            KeyType::String,
            "The table to insert into: letters, digits and `_`, not starting with a digit.",
        ),
        KeySpec::new(
            "batch_size",
            KeyType::Integer,
            "500",
            "Most records inserted in one transaction; a batch takes what is queued, up to this.",
        ),
        FLUSH_INTERVAL_KEY,
        KeySpec::optional(
            "columns",
            KeyType::Any,
            "The table's columns, to create it before any record comes: a table of name to SQL \
             type (`TEXT`, `INTEGER`, `REAL`, `NUMERIC`, `BLOB`), e.g. `{ sensor = \"TEXT\", \
             value = \"REAL\" }`. Unset: created from the first record. An existing table keeps \
             its own columns.",
        ),
    ],
    delivery: Delivery::AtLeastOnce,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.store]\ntype = \"sqlite\"\nconfig = { path = \"readings.db\", table = \"readings\", batch_size = 200 }\n",
    build,
    ports: None,
    probe: Some(crate::probe::SQLITE),
};

#[derive(Deserialize)]
struct Config {
    path: String,
    table: String,
    batch_size: usize,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    flush_interval: Duration,
    columns: Option<serde_json::Value>,
}

struct Sqlite {
    path: PathBuf,
    table: String,
    batch_size: usize,
    flush_interval: Duration,
    declared: Vec<(String, String)>,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    check_table_name(&config.table)?;
    if config.batch_size == 0 {
        return Err("`batch_size` must be at least 1".into());
    }
    Ok(Instance::task(Sqlite {
        path: ctx.path(&config.path),
        table: config.table,
        batch_size: config.batch_size,
        flush_interval: config.flush_interval,
        declared: config.columns.as_ref().map(declared_columns).transpose()?.unwrap_or_default(),
    }))
}

fn check_table_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(format!("`table = \"{name}\"`: a table name is letters, digits and `_`, not starting with a digit"))
    }
}

fn declared_columns(columns: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
    let serde_json::Value::Object(columns) = columns else {
        return Err("`columns` must be a table of name to SQL type, e.g. `{ value = \"REAL\" }`".into());
    };
    columns
        .iter()
        .map(|(name, ty)| {
            let ty = ty.as_str().map(str::to_ascii_uppercase).filter(|t| db::TYPES.contains(&t.as_str()));
            match ty {
                Some(ty) if !name.is_empty() && !name.contains('\0') => Ok((name.clone(), ty)),
                _ => Err(format!("column `{name}`: the type must be one of {}", db::TYPES.join(", "))),
            }
        })
        .collect()
}

impl Task for Sqlite {
    fn run(self: Box<Self>, mut ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let mut input = ctx.input("in");
            let mut retry = Retry::new(ctx.name.clone(), format!("sqlite {}", self.path.display()), RETRY);
            let mut batch = Vec::with_capacity(self.batch_size);
            let Some(opened) = self.open(&mut retry, &ctx).await? else {
                // Shut down before the database could be read: nothing is written.
                reject_rest(&mut input, &mut batch, &ctx).await;
                return Ok(());
            };
            let mut db = Some(opened);
            while next_batch(&mut input, &mut batch, self.batch_size, self.flush_interval).await {
                if let Err(stop) = commit(&mut db, &mut batch, &ctx, &mut retry).await? {
                    give_up(stop, &batch, &ctx)?;
                }
                batch.clear();
            }
            Ok(())
        })
    }
}

impl Sqlite {
    /// Opens the database, waiting out a lock another connection holds;
    /// `None` if the flow shut down meanwhile.
    async fn open(&self, retry: &mut Retry, ctx: &Context) -> Result<Option<Db>, Failure> {
        loop {
            let (path, table, declared) = (self.path.clone(), self.table.clone(), self.declared.clone());
            let fault = match tokio::task::spawn_blocking(move || Db::open(&path, &table, &declared)).await {
                Ok(Ok(db)) => {
                    retry.written();
                    return Ok(Some(db));
                }
                Ok(Err(fault)) => fault,
                Err(e) => Fault::Permanent(format!("sqlite open crashed: {e}")),
            };
            match retry.failed(fault, ctx.shutdown()).await {
                Ok(()) => {}
                Err(Stop::Shutdown) => return Ok(None),
                Err(Stop::Permanent(why)) => return Err(Failure(why)),
            }
        }
    }
}

/// Inserts and commits a batch, written again after a pause while the
/// database is locked or busy, then sends the records the table refused to
/// `err`. `Ok(Err(stop))`: the batch was given up (shut down, or a
/// permanent error).
async fn commit(
    db: &mut Option<Db>,
    batch: &mut Vec<Message>,
    ctx: &Context,
    retry: &mut Retry,
) -> Result<Result<(), Stop>, Failure> {
    let refused = loop {
        match insert(db, batch).await {
            Ok(refused) => break refused,
            Err(fault) => {
                if let Err(stop) = retry.failed(fault, ctx.shutdown()).await {
                    return Ok(Err(stop));
                }
            }
        }
    };
    retry.written();
    for (i, error) in refused {
        ctx.reject(&batch[i], &error).await?;
    }
    Ok(Ok(()))
}

/// One attempt: the connection and the batch go to a blocking thread and
/// back, so no payload is copied. A panic in the insert is a permanent
/// fault (caught there, so the batch comes back to be rejected even then).
async fn insert(slot: &mut Option<Db>, batch: &mut Vec<Message>) -> Result<Vec<Refused>, Fault> {
    let Some(mut db) = slot.take() else {
        return Err(Fault::Permanent("the sqlite connection was lost in a crash".into()));
    };
    let records = std::mem::take(batch);
    let done = tokio::task::spawn_blocking(move || {
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| db.insert(records.iter().map(|m| &m.payload))));
        (db, records, result)
    })
    .await;
    match done {
        Ok((db, records, result)) => {
            (*slot, *batch) = (Some(db), records);
            result.unwrap_or_else(|_| Err(Fault::Permanent("sqlite insert crashed".into())))
        }
        Err(e) => Err(Fault::Permanent(format!("sqlite insert did not finish: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use fbp_runtime::testing::Harness;
    use fbp_runtime::{Ack, Meta, Outcome, value};
    use rusqlite::Connection;
    use serde_json::json;

    use super::*;
    use crate::storage::test_support::TempDir;

    fn count(path: &str) -> i64 {
        let conn = Connection::open(path).unwrap();
        conn.query_row("SELECT count(*) FROM readings", [], |r| r.get(0)).unwrap()
    }

    #[tokio::test]
    async fn inserts_records_and_routes_the_rest_to_err() {
        let dir = TempDir::new("sqlite");
        let path = dir.join("data/readings.db");
        let mut h = Harness::new(&SPEC, json!({"path": path, "table": "readings", "batch_size": 2}));
        h.push_json(r#"{"sensor": "a", "value": 1.5}"#);
        h.push_json(r#""not a record""#);
        h.push_json(r#"{"sensor": "b", "value": 2.5}"#);
        let out = h.run_to_end().await;
        assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
        assert_eq!(count(&path), 2);
        let err = out.json("err");
        assert_eq!(err.len(), 1);
        assert!(err[0].contains("not a record") && err[0].contains(r#""type":"sqlite""#), "{}", err[0]);
    }

    #[tokio::test]
    async fn acknowledges_only_once_committed() {
        let dir = TempDir::new("sqlite");
        let path = dir.join("readings.db");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut h = Harness::new(&SPEC, json!({"path": path, "table": "readings"}));
        let (s, p) = (seen.clone(), path.clone());
        let mut msg = Message::new(value::object([("value", value::int(1))]), Meta::new("t".into(), 0));
        msg.ack = Some(Ack::new(move |o| s.lock().unwrap().push((o, count(&p)))));
        h.push_message("in", msg);
        assert!(matches!(h.run_to_end().await.result, Some(Ok(()))));
        assert_eq!(*seen.lock().unwrap(), [(Outcome::Delivered, 1)]);
    }

    #[tokio::test]
    async fn a_database_it_cannot_open_is_a_failure() {
        let dir = TempDir::new("sqlite");
        let mut h = Harness::new(&SPEC, json!({"path": dir.path(), "table": "readings"}));
        let err = h.run_to_end().await.result.unwrap().unwrap_err().0;
        assert!(err.starts_with("cannot open sqlite database"), "{err}");
    }

    #[test]
    fn config_mistakes_are_build_errors() {
        let ctx = |mut config: serde_json::Value| {
            config["flush_interval"] = json!("0s");
            BuildContext { name: "store".into(), config, base_dir: ".".into() }
        };
        let error = |config| build(&ctx(config)).err().unwrap();
        let err = error(json!({"path": "x.db", "table": "t; DROP TABLE u", "batch_size": 1}));
        assert!(err.contains("a table name is letters"), "{err}");
        let err = error(json!({"path": "x.db", "table": "t", "batch_size": 0}));
        assert!(err.contains("`batch_size`"), "{err}");
        let err = error(json!({"path": "x.db", "table": "t", "batch_size": 1, "columns": {"v": "VARCHAR); --"}}));
        assert!(err.contains("column `v`") && err.contains("TEXT, INTEGER"), "{err}");
        let err = error(json!({"path": "x.db", "table": "t", "batch_size": 1, "columns": ["v"]}));
        assert!(err.contains("`columns` must be a table"), "{err}");
        assert!(
            build(&ctx(json!({"path": "x.db", "table": "_t1", "batch_size": 1, "columns": {"v": "real"}}))).is_ok()
        );
    }
}
