//! What `fbp check --connect` tries for `kv-state`: its `bind` address can
//! be bound (and is released at once), and its `store` can be used: an SQLite
//! file or its folder writable, a PostgreSQL server reached with the table
//! `kv_state` there or creatable. Nothing is created.

use fbp_runtime::spec::{BuildContext, Probe, ProbeFuture};

use super::store::StoreSpec;
use crate::storage::postgres::conn::Server;
use crate::storage::postgres::probe::{connect, table_check};

/// The `kv-state` probe.
pub(super) const PROBE: Probe = Probe {
    doc: "binds `bind` and releases it; an SQLite `store` file or its folder is writable, a PostgreSQL one \
          reached with the table `kv_state` there or creatable",
    run: probe,
};

/// Binds `bind` once and checks the store.
fn probe(ctx: &BuildContext) -> ProbeFuture {
    let bound = (crate::probe::TCP_BIND.run)(ctx);
    let ctx = ctx.clone();
    Box::pin(async move {
        let bound = bound.await?;
        let text = ctx.config.get("store").and_then(|v| v.as_str()).unwrap_or("memory");
        let store = match StoreSpec::parse(text, |p| ctx.path(p))? {
            StoreSpec::Memory => "store in memory".to_string(),
            StoreSpec::Sqlite(path) => crate::probe::writable(&path, "store")?,
            StoreSpec::Postgres(url) => {
                let server = Server::parse(&url, None, "100ms..10s")?;
                let client = connect(&server).await?;
                let table = table_check(&client, "kv_state").await.map_err(|e| format!("{}: {e}", server.target))?;
                format!("{}: {table}", server.target)
            }
        };
        Ok(format!("{bound}; {store}"))
    })
}
