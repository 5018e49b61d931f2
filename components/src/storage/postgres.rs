//! `postgres`: insert or upsert records into a PostgreSQL table, in batches.
//!
//! - this file: the declaration, the config and the build;
//! - `sql`: the statements and the column types (no I/O);
//! - `conn`: the connection string, connecting with reconnection, error kinds
//!   (shared with `postgres-read`);
//! - `sink`: the task: batches, one transaction each, reconnection and retry.

pub(crate) mod conn;
pub(crate) mod probe;
mod sink;
pub(crate) mod sql;

use std::time::Duration;

use fbp_runtime::link::RECONNECT_KEY;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::{Acks, BuildContext, ComponentSpec, Delivery, Instance, Kind, PortSpec};
use serde::Deserialize;

use self::conn::Server;
use super::FLUSH_INTERVAL_KEY;

/// The `sslmode` key `postgres` and `postgres-read` share.
pub(crate) const SSLMODE_KEY: KeySpec = KeySpec::optional(
    "sslmode",
    KeyType::Enum(&["disable", "require", "verify-full"]),
    "TLS to the server (rustls): `verify-full` checks its certificate against `ca_file` (or the \
     system's CAs) and its host name, as libpq does; `require` encrypts without checking who \
     answers (warned about at start; `sslmode=require` in `url` means the same); `disable` \
     speaks in the clear (warned about at start for a server on another host). Unset: \
     `disable` for a server on this host (`localhost`, a loopback address, a Unix socket), \
     `verify-full` for any other.",
);

/// The `ca_file` key `postgres` and `postgres-read` share.
pub(crate) const CA_FILE_KEY: KeySpec = KeySpec::optional(
    "ca_file",
    KeyType::String,
    "With `sslmode = \"verify-full\"`: CA certificates (PEM) to trust. Unset: the system's.",
);

/// The server `url`, `sslmode` and `ca_file` describe, TLS files read now.
pub(crate) fn server(
    ctx: &BuildContext,
    url: &str,
    sslmode: Option<&str>,
    ca_file: Option<&str>,
    reconnect: &str,
) -> Result<Server, String> {
    let server = Server::parse(url, sslmode, reconnect)?.with_ca_file(ca_file.map(|f| ctx.path(f)))?;
    if server.unverified() {
        tracing::warn!(
            component = %ctx.name,
            "`sslmode = \"require\"`: the connection is encrypted but the server's certificate is not \
             checked; set `sslmode = \"verify-full\"` (with `ca_file`) to know who answers."
        );
    }
    if server.in_clear_beyond_this_host() {
        tracing::warn!(
            component = %ctx.name,
            "`sslmode = \"disable\"` to a server on another host: its password and data cross the \
             network in the clear; leave `sslmode` unset or set `verify-full`."
        );
    }
    Ok(server)
}

/// The `url` key `postgres` and `postgres-read` share.
pub(crate) const URL_KEY: KeySpec = KeySpec::required(
    "url",
    KeyType::String,
    "The connection string, as libpq takes it: `host=127.0.0.1 user=app dbname=metrics` or \
     `postgresql://app:secret@127.0.0.1:5432/metrics` (user `postgres` when unset). Put the \
     password in a variable (`${PGPASSWORD}`): values from variables never appear in logs.",
);

/// The `postgres` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "postgres",
    summary: "Insert or upsert records into a PostgreSQL table, in batches, one transaction each.",
    doc: "Inserts each record (a JSON object) as a row: each column takes the field of the same \
          name, converted by PostgreSQL to the column's type (numbers, text, booleans, RFC 3339 \
          strings into `TIMESTAMPTZ`, objects and arrays into `JSONB`); fields without a column \
          are ignored; a column no record of the batch has keeps its default, one that some \
          records lack is NULL in those. With `key`, a record whose key exists updates that row \
          (`INSERT .. ON CONFLICT (key) DO UPDATE`; the table needs a primary key or unique \
          index on it); within one batch only the last record per key is written. If the table \
          does not exist it is created, from `columns` when set, else from the first record \
          (integers BIGINT, other numbers DOUBLE PRECISION, booleans BOOLEAN, strings and nulls \
          TEXT, objects and arrays JSONB), with `key` as its primary key. A batch is what is \
          queued, up to `batch_size`, plus what arrives within `flush_interval`; it is written \
          by one statement in one transaction (one array parameter per column, zipped by \
          `unnest`: binary for integer, float and boolean columns whose values all fit, else \
          each value's text cast by the server; the batch as one JSON parameter expanded by \
          `json_populate_recordset` when the table has an array, composite or domain column), \
          and the messages are acknowledged only after the COMMIT. A payload that is not an \
          object, or a record the table refuses (a value its column's type does not take, a \
          constraint), goes to `err` and the rest \
          of the batch is committed: the batch is written again inside a transaction, halves \
          under SAVEPOINTs, down to the refused records. While the server is unreachable the \
          component holds its batch, takes no more input (back-pressure) and reconnects \
          (logged once per outage); the flow never fails for it. The same holds, on the same \
          connection, when the server refuses the batch for now: a cancelled statement (57014: \
          an admin's `pg_cancel_backend`, `statement_timeout`), a serialization failure or \
          deadlock (40001, 40P01), a lock not available (55P03, `lock_timeout`), out of \
          resources (class 53); server shutdowns (57P01-57P03) and class 08 are a lost \
          connection. The batch is written again with the `reconnect` backoff until it is in, \
          without a restart, logged once per episode. A batch whose COMMIT was sent but not \
          confirmed when the connection broke is written again after reconnecting \
          (at-least-once): with `key` that is harmless (effectively once), a plain insert may \
          duplicate exactly that batch (logged as `in_doubt`); a connection the server closed \
          while idle puts nothing in doubt. At shutdown a pause ends at once and the batch is \
          rejected, not acknowledged. Other server errors (no permission, no unique index for \
          `key`) are failures with the server's message: the batch is rejected and the \
          component restarted. TLS per `sslmode` (`verify-full` checks the server).",
    kind: Kind::Sink,
    inputs: &[PortSpec { name: "in", ty: "object", doc: "records to insert or upsert" }],
    outputs: &[],
    config: &[
        URL_KEY,
        KeySpec::required(
            "table",
            KeyType::String,
            "The table: letters, digits and `_`, not starting with a digit; `schema.table` for \
             another schema than the current one.",
        ),
        KeySpec::optional(
            "key",
            KeyType::StringList,
            "Columns that identify a row, e.g. `[\"sensor\", \"ts\"]`: records are upserted on \
             them (and a created table gets them as primary key). Unset: plain inserts.",
        ),
        KeySpec::optional(
            "columns",
            KeyType::Any,
            "The table's columns, to create it before any record comes: a table of name to \
             PostgreSQL type, e.g. `{ sensor = \"TEXT\", value = \"DOUBLE PRECISION\", ts = \
             \"TIMESTAMPTZ\" }` (created in name order). Unset: created from the first record. An \
             existing table keeps its own columns.",
        ),
        KeySpec::new("batch_size", KeyType::Integer, "500", "Most records written in one transaction."),
        FLUSH_INTERVAL_KEY,
        SSLMODE_KEY,
        CA_FILE_KEY,
        RECONNECT_KEY,
    ],
    delivery: Delivery::AtLeastOnce,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.store]\ntype = \"postgres\"\n\
              config = { url = \"postgresql://postgres@127.0.0.1:5432/metrics\", table = \"readings\", key = [\"sensor\"] }\n",
    build,
    ports: None,
    probe: Some(probe::SINK),
};

#[derive(Deserialize)]
struct Config {
    url: String,
    table: String,
    key: Option<Vec<String>>,
    columns: Option<serde_json::Value>,
    batch_size: usize,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    flush_interval: Duration,
    sslmode: Option<String>,
    ca_file: Option<String>,
    reconnect: String,
}

/// A built `postgres` sink.
pub(crate) struct Postgres {
    server: Server,
    table: String,
    key: Vec<String>,
    declared: Vec<(String, String)>,
    batch_size: usize,
    flush_interval: Duration,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    sql::check_table_name(&config.table)?;
    if config.batch_size == 0 {
        return Err("`batch_size` must be at least 1".into());
    }
    let key = config.key.unwrap_or_default();
    if let Some(k) = key.iter().find(|k| k.is_empty() || k.contains('\0')) {
        return Err(format!("`key`: `{k}` is not a column name"));
    }
    let declared = config.columns.as_ref().map(declared_columns).transpose()?.unwrap_or_default();
    if let Some(k) = key.iter().find(|k| !declared.is_empty() && !declared.iter().any(|(c, _)| c == *k)) {
        return Err(format!("`key`: `{k}` is not one of the declared `columns`"));
    }
    Ok(Instance::task(Postgres {
        server: server(ctx, &config.url, config.sslmode.as_deref(), config.ca_file.as_deref(), &config.reconnect)?,
        table: config.table,
        key,
        declared,
        batch_size: config.batch_size,
        flush_interval: config.flush_interval,
    }))
}

fn declared_columns(columns: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
    let serde_json::Value::Object(columns) = columns else {
        return Err("`columns` must be a table of name to type, e.g. `{ value = \"DOUBLE PRECISION\" }`".into());
    };
    columns
        .iter()
        .map(|(name, ty)| match ty.as_str() {
            Some(ty) if sql::check_type(ty) && !name.is_empty() && !name.contains('\0') => {
                Ok((name.clone(), ty.to_string()))
            }
            _ => Err(format!(
                "column `{name}`: the type must be a PostgreSQL type name such as TEXT, BIGINT, \
                 DOUBLE PRECISION, NUMERIC(10,2), TIMESTAMPTZ, JSONB or TEXT[]"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests;
