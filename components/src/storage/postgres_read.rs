//! `postgres-read`: rows of a query, polled with a watermark column, or the
//! notifications of a LISTEN channel.

use std::sync::Arc;
use std::time::Duration;

use fbp_runtime::link::{Link, RECONNECT_KEY};
use fbp_runtime::spec::{KeySpec, KeyType, Port};
use fbp_runtime::value;
use fbp_runtime::{
    Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, PortSpec, Task, TaskFuture,
};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client};

use crate::storage::postgres::conn::{Server, describe, is_connection_error};
use crate::storage::postgres::sql::quote;
use crate::storage::postgres::{CA_FILE_KEY, SSLMODE_KEY, URL_KEY, server};

/// The `postgres-read` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "postgres-read",
    summary: "Read rows from PostgreSQL: poll a query by a watermark column, or LISTEN to a channel.",
    doc: "Two modes. `query`: runs the query and sends each row as a JSON object (column name \
          to value, as `row_to_json` gives it). With `watermark` (a column the query returns \
          that only grows and is unique, like a serial id), it polls every `interval` for rows \
          whose watermark is above the highest one sent, in watermark order, `batch_size` at \
          a time, so each row is sent once (with ties, rows sharing the last value of a full \
          batch are skipped: use a unique column); without `watermark` it runs the query once \
          and finishes. The watermark is kept in memory only: a restarted component \
          (or process) begins again from `from` (`start`: every row again; `end`: only rows \
          added after it started). Rows that commit late with a lower watermark than one \
          already read (concurrent writers) are missed: use a watermark the writer sets in \
          commit order, or `listen`. `listen`: LISTENs to the channel and sends each \
          notification's payload (as JSON, or text with `format = \"text\"`), topic the \
          channel; notifications sent while disconnected are lost (PostgreSQL does not keep \
          them). Either way it reconnects with backoff when the server goes away (logged once \
          per outage) and never fails the flow for it.",
    kind: Kind::Source,
    inputs: &[],
    outputs: &[PortSpec { name: "out", ty: "json", doc: "rows as objects, or notification payloads" }],
    config: &[
        URL_KEY,
        KeySpec::optional(
            "query",
            KeyType::String,
            "A SELECT whose rows to send, e.g. `SELECT * FROM readings`; with `watermark` it is \
             wrapped as a subquery (no trailing `;`, no ORDER BY needed).",
        ),
        KeySpec::optional(
            "watermark",
            KeyType::String,
            "With `query`: the column of its rows that only grows; only rows above the highest \
             sent are read, in its order.",
        ),
        KeySpec::new(
            "from",
            KeyType::Enum(&["start", "end"]),
            "\"start\"",
            "With `watermark`: begin with every row (`start`) or only rows added after the \
             component started (`end`).",
        ),
        KeySpec::new("interval", KeyType::Duration, "\"1s\"", "With `watermark`: how often to poll."),
        KeySpec::new("batch_size", KeyType::Integer, "1000", "With `watermark`: most rows read by one poll query."),
        KeySpec::optional("listen", KeyType::String, "A channel to LISTEN to, instead of `query`."),
        KeySpec::new(
            "format",
            KeyType::Enum(&["json", "text"]),
            "\"json\"",
            "With `listen`: a payload is JSON (one that does not parse goes to `err`) or text.",
        ),
        SSLMODE_KEY,
        CA_FILE_KEY,
        RECONNECT_KEY,
    ],
    delivery: Delivery::AtMostOnce,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.new_orders]\ntype = \"postgres-read\"\n\
              config = { url = \"postgresql://postgres@127.0.0.1/shop\", query = \"SELECT * FROM orders\", watermark = \"id\", interval = \"2s\" }\n",
    build,
    ports: Some(ports),
    probe: Some(super::postgres::probe::READ),
};

#[derive(Deserialize)]
struct Config {
    url: String,
    query: Option<String>,
    watermark: Option<String>,
    from: String,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    interval: Duration,
    batch_size: usize,
    listen: Option<String>,
    format: String,
    sslmode: Option<String>,
    ca_file: Option<String>,
    reconnect: String,
}

/// What to read.
#[derive(Clone, Debug)]
enum Mode {
    /// Run the query once.
    Once { query: String },
    /// Poll the query above the watermark.
    Poll { query: String, watermark: String, from_end: bool, interval: Duration, batch_size: usize },
    /// LISTEN to a channel.
    Listen { channel: Arc<str>, text: bool },
}

struct PostgresRead {
    server: Server,
    mode: Mode,
}

fn ports(config: &serde_json::Value) -> (Vec<Port>, Vec<Port>) {
    let text = config.get("listen").is_some() && config.get("format").and_then(|f| f.as_str()) == Some("text");
    (Vec::new(), vec![Port { name: "out".into(), ty: if text { "text" } else { "json" }.into() }])
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let c: Config = ctx.parse()?;
    let mode = match (c.query, c.listen) {
        (Some(_), Some(_)) => return Err("set either `query` or `listen`, not both".into()),
        (None, None) => return Err("set `query` (with `watermark` to poll) or `listen`".into()),
        (None, Some(channel)) if channel.is_empty() => return Err("`listen`: the channel name is empty".into()),
        (None, Some(channel)) => Mode::Listen { channel: channel.into(), text: c.format == "text" },
        (Some(query), None) if query.trim().is_empty() => return Err("`query` is empty".into()),
        (Some(query), None) => match c.watermark {
            None => Mode::Once { query },
            Some(w) if w.is_empty() => return Err("`watermark`: the column name is empty".into()),
            Some(watermark) => {
                if c.interval.is_zero() || c.batch_size == 0 {
                    return Err("`interval` and `batch_size` must be more than 0".into());
                }
                let query = query.trim().trim_end_matches(';').to_string();
                Mode::Poll {
                    query,
                    watermark,
                    from_end: c.from == "end",
                    interval: c.interval,
                    batch_size: c.batch_size,
                }
            }
        },
    };
    Ok(Instance::task(PostgresRead {
        server: server(ctx, &c.url, c.sslmode.as_deref(), c.ca_file.as_deref(), &c.reconnect)?,
        mode,
    }))
}

/// The statements of a watermark poll.
struct Poll {
    /// The first rows (no watermark yet).
    first: String,
    /// The rows above `$1` (the watermark as text).
    next: String,
    /// The highest watermark now, as text.
    max: String,
}

impl Poll {
    /// `ty` is the watermark column's type name, as the server reports it.
    fn new(query: &str, watermark: &str, ty: &str, batch_size: usize) -> Poll {
        let w = format!("q.{}", quote(watermark));
        let select = format!("SELECT row_to_json(q)::text, {w}::text FROM ({query}) q");
        Poll {
            first: format!("{select} ORDER BY {w} LIMIT {batch_size}"),
            next: format!("{select} WHERE {w} > $1::text::{} ORDER BY {w} LIMIT {batch_size}", quote(ty)),
            max: format!("SELECT max({w})::text FROM ({query}) q"),
        }
    }
}

/// The highest watermark sent, as text (in memory only).
#[derive(Default)]
struct Watermark {
    /// Whether the start (`from`) was settled: later connections go on from `value`.
    started: bool,
    /// `None`: no row seen yet (an empty table with `from = "end"`: every row is new).
    value: Option<String>,
}

/// What stopped a reading loop.
enum Stop {
    /// The flow is shutting down, or the query ran once.
    Done,
    /// The connection broke: reconnect and go on.
    Lost(String),
}

impl Task for PostgresRead {
    fn run(self: Box<Self>, ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let mut link = Link::new(ctx.name.clone(), self.server.target.clone(), self.server.backoff);
            let mut watermark = Watermark::default();
            loop {
                let stop = match &self.mode {
                    Mode::Listen { channel, text } => self.listen(&ctx, &mut link, channel, *text).await?,
                    Mode::Once { query } => match self.server.connect_until_up(&mut link, ctx.shutdown()).await {
                        None => Stop::Done,
                        Some(client) => once(&ctx, &client, query).await?,
                    },
                    Mode::Poll { .. } => match self.server.connect_until_up(&mut link, ctx.shutdown()).await {
                        None => Stop::Done,
                        Some(client) => self.poll(&ctx, &client, &mut watermark).await?,
                    },
                };
                match stop {
                    Stop::Done => return Ok(()),
                    Stop::Lost(e) => {
                        let delay = link.down(&e);
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            () = ctx.shutdown().cancelled() => return Ok(()),
                        }
                    }
                }
            }
        })
    }
}

/// A lost connection is `Ok(Stop::Lost)`; another error is a failure.
fn lost_or_fail(e: tokio_postgres::Error, what: &str) -> Result<Stop, Failure> {
    if is_connection_error(&e) {
        Ok(Stop::Lost(describe(&e)))
    } else {
        Err(Failure(format!("{what}: {}", describe(&e))))
    }
}

/// Runs the query once and sends its rows.
async fn once(ctx: &Context, client: &Client, query: &str) -> Result<Stop, Failure> {
    let sql = format!("SELECT row_to_json(q)::text FROM ({}) q", query.trim().trim_end_matches(';'));
    let rows = match client.query(&sql, &[]).await {
        Ok(rows) => rows,
        Err(e) => return lost_or_fail(e, "the query failed"),
    };
    let out = ctx.output("out");
    for row in rows {
        out.send(row_message(ctx, row.get(0))).await?;
    }
    Ok(Stop::Done)
}

fn row_message(ctx: &Context, json: &str) -> Message {
    let payload = value::parse_json(json.as_bytes()).unwrap_or_else(|_| value::string(json));
    Message::new(payload, ctx.meta())
}

impl PostgresRead {
    /// Polls until the connection breaks or the flow shuts down.
    async fn poll(&self, ctx: &Context, client: &Client, mark: &mut Watermark) -> Result<Stop, Failure> {
        let Mode::Poll { query, watermark: column, from_end, interval, batch_size } = &self.mode else {
            return Ok(Stop::Done);
        };
        let probe = format!("SELECT q.{} FROM ({query}) q", quote(column));
        let ty = match client.prepare(&probe).await {
            Ok(s) => s.columns().first().map(|c| c.type_().name().to_string()).unwrap_or_default(),
            Err(e) => return lost_or_fail(e, &format!("the query or its `watermark` column `{column}` is wrong")),
        };
        let poll = Poll::new(query, column, &ty, *batch_size);
        if *from_end && !mark.started {
            match client.query_one(&poll.max, &[]).await {
                Ok(row) => mark.value = row.get::<_, Option<String>>(0),
                Err(e) => return lost_or_fail(e, "the query failed"),
            }
        }
        mark.started = true;
        let watermark = &mut mark.value;
        let out = ctx.output("out");
        loop {
            let rows = match watermark {
                None => client.query(&poll.first, &[]).await,
                Some(w) => client.query(&poll.next, &[&w.as_str()]).await,
            };
            let rows = match rows {
                Ok(rows) => rows,
                Err(e) => return lost_or_fail(e, "the query failed"),
            };
            let full = rows.len() >= *batch_size;
            for row in &rows {
                out.send(row_message(ctx, row.get(0))).await?;
                *watermark = row.get::<_, Option<String>>(1).or(watermark.take());
            }
            if !full {
                tokio::select! {
                    () = tokio::time::sleep(*interval) => {}
                    () = ctx.shutdown().cancelled() => return Ok(Stop::Done),
                }
            } else if ctx.shutdown().is_cancelled() {
                return Ok(Stop::Done);
            }
        }
    }

    /// LISTENs and sends notifications until the connection breaks or the flow shuts down.
    async fn listen(&self, ctx: &Context, link: &mut Link, channel: &Arc<str>, text: bool) -> Result<Stop, Failure> {
        let (client, mut connection) = match self.server.connect().await {
            Ok(c) => c,
            Err(e) => return Ok(Stop::Lost(describe(&e))),
        };
        let (tx, mut notifications) = mpsc::channel(1000);
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        let driver = tokio::spawn(async move {
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(n.payload().to_string()).await.is_err() {
                            return None;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Some(describe(&e)),
                }
            }
            Some("the server closed the connection".to_string())
        });
        let _end = AbortOnDrop(driver.abort_handle());
        if let Err(e) = client.batch_execute(&format!("LISTEN {}", quote(channel))).await {
            return lost_or_fail(e, "LISTEN failed");
        }
        link.up();
        let out = ctx.output("out");
        loop {
            let payload = tokio::select! {
                p = notifications.recv() => p,
                () = ctx.shutdown().cancelled() => return Ok(Stop::Done),
            };
            let Some(payload) = payload else {
                let why = driver.await.ok().flatten().unwrap_or_else(|| "connection ended".into());
                return Ok(Stop::Lost(why));
            };
            let mut meta = ctx.meta();
            meta.topic = Some(channel.clone());
            let value = if text { Ok(value::string(payload.as_str())) } else { value::parse_json(payload.as_bytes()) };
            match value {
                Ok(v) => out.send(Message::new(v, meta)).await?,
                Err(e) => {
                    let msg = Message::new(value::string(payload), meta);
                    ctx.reject(&msg, &format!("the notification payload is not JSON: {e}")).await?;
                }
            }
        }
    }
}

/// Ends the connection's task when the listener is done with it.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_statements_wrap_the_query() {
        let p = Poll::new("SELECT * FROM t", "id", "int8", 100);
        assert_eq!(
            p.first,
            r#"SELECT row_to_json(q)::text, q."id"::text FROM (SELECT * FROM t) q ORDER BY q."id" LIMIT 100"#
        );
        assert!(p.next.contains(r#"WHERE q."id" > $1::text::"int8" ORDER BY"#), "{}", p.next);
        assert_eq!(p.max, r#"SELECT max(q."id")::text FROM (SELECT * FROM t) q"#);
    }

    #[test]
    fn config_mistakes_are_build_errors() {
        let ctx = |extra: serde_json::Value| {
            let mut config = serde_json::json!({"url": "host=127.0.0.1", "from": "start", "interval": "1s",
                "batch_size": 10, "format": "json", "sslmode": "disable", "reconnect": "100ms..1s"});
            config.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            BuildContext { name: "read".into(), config, base_dir: ".".into() }
        };
        let err = |extra| build(&ctx(extra)).err().unwrap();
        assert!(err(serde_json::json!({})).contains("set `query`"));
        assert!(err(serde_json::json!({"query": "SELECT 1", "listen": "c"})).contains("not both"));
        assert!(
            err(serde_json::json!({"query": "SELECT 1", "watermark": "id", "interval": "0s"})).contains("`interval`")
        );
        assert!(build(&ctx(serde_json::json!({"listen": "events"}))).is_ok());
        assert!(build(&ctx(serde_json::json!({"query": "SELECT 1 AS id;", "watermark": "id"}))).is_ok());
    }
}
