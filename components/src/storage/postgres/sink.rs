//! The `postgres` task: takes a batch, writes it in one transaction, and
//! acknowledges it only once committed; reconnects and writes the batch again
//! when the server goes away, and writes it again after a pause when the server
//! refuses it for now (`sink_retry`).

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use fbp_runtime::link::Link;
use fbp_runtime::value::{self, Value};
use fbp_runtime::{Context, Message, Task, TaskFuture};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use fbp_runtime::cause::chain;

use super::conn::{describe, is_connection_error, is_passing_error, is_record_error};
use super::sql::{Column, ColumnKind, Param};
use super::{Postgres, sql};
use crate::sink_retry::{Fault, Refused, Retry, give_up};
use crate::storage::next_batch;

/// Why a batch was not written.
enum WriteError {
    /// The connection broke; `in_doubt` when a COMMIT (or the one-statement
    /// transaction) was sent and its outcome is unknown.
    Lost { error: tokio_postgres::Error, in_doubt: bool },
    /// The server refused the work for now (a cancelled statement, a lock or
    /// statement timeout, a serialization failure or deadlock, out of
    /// resources); the connection is still good.
    Busy(String),
    /// The server refused the work for a reason no retry fixes.
    Fatal(String),
}

impl Task for Postgres {
    fn run(self: Box<Self>, mut ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let mut input = ctx.input("in");
            let mut link = Link::new(ctx.name.clone(), self.server.target.clone(), self.server.backoff);
            let mut retry = Retry::new(ctx.name.clone(), self.server.target.clone(), self.server.backoff);
            let mut writer: Option<Writer> = None;
            let mut batch = Vec::with_capacity(self.batch_size);
            while next_batch(&mut input, &mut batch, self.batch_size, self.flush_interval).await {
                let refused = loop {
                    match self.attempt(&mut writer, &mut link, &batch, &ctx).await {
                        Ok(refused) => break refused,
                        Err(fault) => {
                            if let Err(stop) = retry.failed(fault, ctx.shutdown()).await {
                                give_up(stop, &batch, &ctx)?;
                                break Vec::new();
                            }
                        }
                    }
                };
                retry.written();
                for (i, why) in refused {
                    ctx.reject(&batch[i], &why).await?;
                }
                batch.clear();
            }
            Ok(())
        })
    }
}

impl Postgres {
    /// One attempt at a batch: connects first if there is no connection (or
    /// the server closed it while idle, which puts nothing in doubt), then
    /// writes. A lost connection is logged by `link`, once per outage.
    async fn attempt(
        &self,
        writer: &mut Option<Writer>,
        link: &mut Link,
        batch: &[Message],
        ctx: &Context,
    ) -> Result<Vec<Refused>, Fault> {
        if writer.as_ref().is_some_and(|w| w.client.is_closed()) {
            *writer = None;
            link.down(&"the server closed the connection while it was idle");
        }
        let w = match writer {
            Some(w) => w,
            None => match connect_or_stop(self, ctx).await? {
                Ok(client) => {
                    link.up();
                    writer.insert(Writer { client, columns: None, statements: HashMap::new() })
                }
                Err(e) => {
                    let why = chain(&e);
                    if let Some(fix) = super::conn::refused_for_good(&e) {
                        return Err(Fault::Permanent(format!("cannot connect: {why}; {fix}")));
                    }
                    link.down(&why);
                    return Err(Fault::Transient(format!("cannot connect: {why}")));
                }
            },
        };
        match w.write(self, batch).await {
            Ok(refused) => Ok(refused),
            Err(WriteError::Lost { error, in_doubt }) => {
                if in_doubt {
                    tracing::warn!(
                        component = %ctx.name,
                        in_doubt = batch.len(),
                        "The connection broke before a COMMIT was confirmed; the batch is written again once reconnected (a plain insert may duplicate it, an upsert does not)."
                    );
                }
                *writer = None;
                let why = describe(&error);
                link.down(&why);
                Err(Fault::Transient(format!("the connection broke: {why}")))
            }
            Err(WriteError::Busy(why)) => Err(Fault::Transient(why)),
            Err(WriteError::Fatal(why)) => Err(Fault::Permanent(why)),
        }
    }
}

/// One connection attempt, cut short by a shutdown (an unreachable server
/// may take the whole connect timeout to say so); once shutting down, an
/// attempt gets `AT_SHUTDOWN`.
async fn connect_or_stop(sink: &Postgres, ctx: &Context) -> Result<Result<Client, tokio_postgres::Error>, Fault> {
    let stop = ctx.shutdown();
    let gone = || Fault::Transient("no connection at shutdown".into());
    if stop.is_cancelled() {
        return tokio::time::timeout(AT_SHUTDOWN, sink.server.connect_driven()).await.map_err(|_| gone());
    }
    tokio::select! {
        connected = sink.server.connect_driven() => Ok(connected),
        () = stop.cancelled() => Err(gone()),
    }
}

/// How long a connection attempt may take once the flow is shutting down.
const AT_SHUTDOWN: Duration = Duration::from_secs(1);

/// A connection and what it knows of the table.
struct Writer {
    client: Client,
    /// The table's columns, once read (or created).
    columns: Option<Vec<Column>>,
    /// Prepared insert statements, by their SQL.
    statements: HashMap<String, Statement>,
}

impl Writer {
    /// Writes a batch and commits it. `Ok` lists the records refused.
    async fn write(&mut self, sink: &Postgres, batch: &[Message]) -> Result<Vec<Refused>, WriteError> {
        let mut refused = Vec::new();
        let mut records: Vec<(usize, &Value)> = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            match &m.payload {
                r @ Value::Obj(_) => records.push((i, r)),
                other => {
                    refused.push((i, format!("a {} is not a record; postgres takes objects", value::type_name(other))))
                }
            }
        }
        if self.columns.is_none() {
            self.columns = self.open_table(sink, &mut records, &mut refused).await?;
        }
        let Some(columns) = self.columns.clone() else {
            return Ok(refused); // no record could create the table
        };
        let values: Vec<&Value> = records.iter().map(|(_, r)| *r).collect();
        let keep = sql::last_per_key(&values, &sink.key);
        let records: Vec<(usize, &Value)> = keep.iter().map(|&k| records[k]).collect();
        if records.is_empty() {
            return Ok(refused);
        }
        match self.insert(sink, &columns, &records).await {
            Ok(()) => {}
            Err(e) if is_record_error(&e) => refused.extend(self.write_around(sink, &columns, &records).await?),
            Err(e) => return Err(classify(e, true)),
        }
        refused.sort_unstable_by_key(|(i, _)| *i);
        Ok(refused)
    }

    /// Reads the table's columns; creates the table if it is missing, from
    /// the declared columns or from the first record that has fields (records
    /// before it that cannot create it are refused).
    async fn open_table(
        &self,
        sink: &Postgres,
        records: &mut Vec<(usize, &Value)>,
        refused: &mut Vec<Refused>,
    ) -> Result<Option<Vec<Column>>, WriteError> {
        if let Some(columns) = self.table_columns(&sink.table).await? {
            return Ok(Some(columns));
        }
        let columns = if !sink.declared.is_empty() {
            sink.declared.clone()
        } else {
            let mut columns = Vec::new();
            while let Some(&(i, first)) = records.first() {
                columns = sql::first_columns(first);
                let missing = sink.key.iter().find(|k| !columns.iter().any(|(c, _)| c == *k));
                match (columns.is_empty(), missing) {
                    (false, None) => break,
                    (true, _) => {
                        refused.push((i, format!("a record without fields cannot create the table `{}`", sink.table)))
                    }
                    (false, Some(k)) => refused.push((
                        i,
                        format!("a record without the key field `{k}` cannot create the table `{}`", sink.table),
                    )),
                }
                columns.clear();
                records.remove(0);
            }
            if columns.is_empty() {
                return Ok(None);
            }
            columns
        };
        let create = sql::create_table(&sink.table, &columns, &sink.key);
        self.client.batch_execute(&create).await.map_err(|e| fatal_unless_lost(e, "cannot create the table"))?;
        tracing::info!(table = %sink.table, columns = columns.len(), "Created the table.");
        self.table_columns(&sink.table).await
    }

    /// The columns of `table` (as the insert names it, through the search
    /// path), in order, or `None` if there is no such table.
    async fn table_columns(&self, table: &str) -> Result<Option<Vec<Column>>, WriteError> {
        let rows = self
            .client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, NULL), t.typname::text, t.typcategory::text, \
                 t.typtype::text FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[&sql::quote_table(table)],
            )
            .await
            .map_err(|e| fatal_unless_lost(e, "cannot read the table's columns"))?;
        let columns: Vec<Column> = rows
            .iter()
            .map(|r| Column { name: r.get(0), ty: r.get(1), kind: ColumnKind::of(r.get(2), r.get(3), r.get(4)) })
            .collect();
        Ok((!columns.is_empty()).then_some(columns))
    }

    /// One statement for these records (a transaction of its own when no
    /// transaction is open): typed, unless a column needs the JSON form.
    async fn insert(
        &mut self,
        sink: &Postgres,
        columns: &[Column],
        records: &[(usize, &Value)],
    ) -> Result<(), tokio_postgres::Error> {
        let values: Vec<&Value> = records.iter().map(|(_, r)| *r).collect();
        let fill = sql::batch_columns(columns, &values);
        let fill = if fill.is_empty() { vec![&columns[0]] } else { fill };
        if fill.iter().any(|c| c.kind == ColumnKind::Structured) {
            let names: Vec<String> = fill.iter().map(|c| c.name.clone()).collect();
            let statement = self.statement(sql::insert(&sink.table, &names, &sink.key)).await?;
            return self.client.execute(&statement, &[&sql::json_array(&values)]).await.map(drop);
        }
        let params: Vec<Param> = fill.iter().map(|c| Param::of(c, &values)).collect();
        let typed: Vec<(&Column, &Param)> = fill.iter().copied().zip(&params).collect();
        let statement = self.statement(sql::insert_typed(&sink.table, &typed, &sink.key)).await?;
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(Param::as_sql).collect();
        self.client.execute(&statement, &params).await.map(drop)
    }

    /// The prepared statement for `sql`, prepared once per connection.
    async fn statement(&mut self, sql: String) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.statements.get(&sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(&sql).await?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    /// Writes a batch the table refused some record of: in one transaction,
    /// halves under SAVEPOINTs, down to the single records it refuses.
    async fn write_around(
        &mut self,
        sink: &Postgres,
        columns: &[Column],
        records: &[(usize, &Value)],
    ) -> Result<Vec<Refused>, WriteError> {
        let lost = |e| classify(e, false);
        self.client.batch_execute("BEGIN").await.map_err(lost)?;
        let mut refused = Vec::new();
        let mut todo: Vec<Range<usize>> = Vec::with_capacity(8);
        todo.push(0..records.len());
        while let Some(range) = todo.pop() {
            self.client.batch_execute("SAVEPOINT fbp_part").await.map_err(lost)?;
            match self.insert(sink, columns, &records[range.clone()]).await {
                Ok(()) => self.client.batch_execute("RELEASE SAVEPOINT fbp_part").await.map_err(lost)?,
                Err(e) if is_record_error(&e) => {
                    self.client
                        .batch_execute("ROLLBACK TO SAVEPOINT fbp_part; RELEASE SAVEPOINT fbp_part")
                        .await
                        .map_err(lost)?;
                    if range.len() == 1 {
                        refused
                            .push((records[range.start].0, format!("the table refused the record: {}", describe(&e))));
                    } else {
                        let mid = range.start + range.len() / 2;
                        todo.push(mid..range.end);
                        todo.push(range.start..mid);
                    }
                }
                Err(e) => {
                    let _ = self.client.batch_execute("ROLLBACK").await;
                    return Err(classify(e, false));
                }
            }
        }
        self.client.batch_execute("COMMIT").await.map_err(|e| classify(e, true))?;
        Ok(refused)
    }
}

/// A lost connection (in doubt if a commit was under way), a refusal for
/// now, or a failure.
fn classify(e: tokio_postgres::Error, committing: bool) -> WriteError {
    classify_as(e, committing, "postgres refused the batch")
}

fn fatal_unless_lost(e: tokio_postgres::Error, what: &str) -> WriteError {
    classify_as(e, false, what)
}

fn classify_as(e: tokio_postgres::Error, committing: bool, what: &str) -> WriteError {
    if is_connection_error(&e) {
        WriteError::Lost { in_doubt: committing && e.as_db_error().is_none(), error: e }
    } else if is_passing_error(&e) {
        WriteError::Busy(format!("{what} for now: {}", describe(&e)))
    } else {
        WriteError::Fatal(format!("{what}: {}", describe(&e)))
    }
}
