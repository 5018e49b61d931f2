//! What `fbp check --connect` tries for `postgres`, `postgres-read` and a
//! `kv-state` with a PostgreSQL store: one connection with the component's
//! settings (the server's own text when it refuses), then read-only
//! questions: whether the table exists and may be written, or may be created
//! (`to_regclass`, `has_table_privilege`, `has_schema_privilege`); for
//! `postgres-read`, that its query prepares. Nothing is created or written.

use fbp_runtime::spec::{BuildContext, Probe, ProbeFuture, ProbeResult};
use serde::Deserialize;
use tokio_postgres::Client;

use super::conn::{self, Server};
use super::sql::quote_table;

/// The connection keys both components share, and what each checks.
#[derive(Deserialize)]
struct Keys {
    url: String,
    sslmode: Option<String>,
    ca_file: Option<String>,
    reconnect: String,
    table: Option<String>,
    query: Option<String>,
}

/// The `postgres` probe.
pub(crate) const SINK: Probe = Probe {
    doc: "connects (the server's own text when it refuses), and asks whether the table exists and takes \
          inserts, or may be created; nothing is created",
    run: sink,
};

/// The `postgres-read` probe.
pub(crate) const READ: Probe = Probe { doc: "connects, and prepares the `query` (nothing runs)", run: read };

/// `postgres`: connects; the table exists and takes inserts, or can be created.
fn sink(ctx: &BuildContext) -> ProbeFuture {
    let ctx = ctx.clone();
    Box::pin(async move {
        let (keys, server, client) = connected(&ctx).await?;
        let table = keys.table.as_deref().ok_or("`table` is not set")?;
        let found = table_check(&client, table).await;
        found.map(|t| format!("{}: {t}", server.target)).map_err(|e| format!("{}: {e}", server.target))
    })
}

/// `postgres-read`: connects; its `query`, if any, prepares (nothing runs).
fn read(ctx: &BuildContext) -> ProbeFuture {
    let ctx = ctx.clone();
    Box::pin(async move {
        let (keys, server, client) = connected(&ctx).await?;
        let Some(query) = &keys.query else { return Ok(format!("{}: connected", server.target)) };
        match client.prepare(query).await {
            Ok(_) => Ok(format!("{}: connected; the query prepares", server.target)),
            Err(e) => {
                Err(format!("{}: the query does not prepare: {}; fix `query`", server.target, conn::describe(&e)))
            }
        }
    })
}

/// The component's keys, its server, and one connection to it.
async fn connected(ctx: &BuildContext) -> Result<(Keys, Server, Client), String> {
    let keys: Keys = ctx.parse()?;
    let server = super::server(ctx, &keys.url, keys.sslmode.as_deref(), keys.ca_file.as_deref(), &keys.reconnect)?;
    let client = connect(&server).await?;
    Ok((keys, server, client))
}

/// One connection to `server`, or the server's text and what to change.
pub(crate) async fn connect(server: &Server) -> Result<Client, String> {
    server.connect_driven().await.map_err(|e| {
        let fix = conn::refused_for_good(&e).unwrap_or("check `url` and that the server runs");
        let cause = if e.as_db_error().is_some() { conn::describe(&e) } else { fbp_runtime::cause::chain(&e) };
        format!("{}: {cause}; {fix}", server.target)
    })
}

/// Whether `table` exists and takes inserts, or its schema lets this user create it.
pub(crate) async fn table_check(client: &Client, table: &str) -> ProbeResult {
    let quoted = quote_table(table);
    let schema = table.split_once('.').map(|(s, _)| super::sql::quote(s));
    let row = client
        .query_one(
            "SELECT to_regclass($1::text) IS NOT NULL,
                    CASE WHEN to_regclass($1::text) IS NOT NULL THEN has_table_privilege(to_regclass($1::text), 'INSERT') END,
                    CASE WHEN to_regnamespace(coalesce($2::text, current_schema())) IS NOT NULL
                         THEN has_schema_privilege(to_regnamespace(coalesce($2::text, current_schema())), 'CREATE') END",
            &[&quoted, &schema],
        )
        .await
        .map_err(|e| format!("cannot ask about table `{table}`: {}", conn::describe(&e)))?;
    let (exists, insert, create): (bool, Option<bool>, Option<bool>) = (row.get(0), row.get(1), row.get(2));
    match (exists, insert, create) {
        (true, Some(true), _) => Ok(format!("table `{table}` exists and takes inserts")),
        (true, _, _) => Err(format!("table `{table}` exists but this user may not insert; GRANT INSERT on it")),
        (false, _, Some(true)) => Ok(format!("table `{table}` does not exist; it will be created")),
        (false, _, None) => Err(format!("table `{table}`: its schema does not exist; create it or fix `table`")),
        (false, _, Some(false)) => Err(format!(
            "table `{table}` does not exist and this user may not create it; create it or GRANT CREATE on the schema"
        )),
    }
}
