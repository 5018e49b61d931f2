//! The PostgreSQL backend of [`Store`]: the table `kv_state (component, key,
//! value JSONB)` in the database the connection string names, one row per key.
//!
//! [`Store`] is blocking and called on tokio's blocking pool, so this drives
//! tokio-postgres with [`Handle::block_on`]; its connection runs as a task on
//! the component's runtime.

use tokio::runtime::Handle;
use tokio_postgres::Client;

use super::{Change, Store};
use crate::storage::postgres::conn::{Server, describe, is_connection_error};
use crate::storage::postgres::sql::last_positions;

/// Keys of one component in the table `kv_state`; several components (and
/// several flows) may share a database.
pub(crate) struct PgStore {
    server: Server,
    client: Client,
    component: String,
    rt: Handle,
}

const CREATE: &str = "CREATE TABLE IF NOT EXISTS kv_state (
    component TEXT NOT NULL, key TEXT NOT NULL, value JSONB NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (component, key))";

/// One statement for a whole batch, removals and values: all of it or none of
/// it. The two lists name different keys (a batch writes each key once).
const WRITE: &str = "WITH removed AS (DELETE FROM kv_state WHERE component = $1 AND key = ANY($4::text[]))
    INSERT INTO kv_state (component, key, value)
    SELECT $1, k, v::jsonb FROM unnest($2::text[], $3::text[]) AS t(k, v)
    ON CONFLICT (component, key) DO UPDATE SET value = excluded.value, updated_at = now()";

impl PgStore {
    /// Checks the connection string (no I/O), for `check`.
    pub(crate) fn check(url: &str) -> Result<(), String> {
        server(url).map(drop)
    }

    /// Connects and makes the table. Call on the blocking pool.
    pub(crate) fn open(url: &str, component: &str) -> Result<Self, String> {
        let server = server(url)?;
        let rt = Handle::current();
        let client = rt.block_on(connect(&server))?;
        rt.block_on(client.batch_execute(CREATE)).map_err(|e| fail(&server, &e))?;
        Ok(PgStore { server, client, component: component.to_string(), rt })
    }

    fn write(&self, keys: &[&str], values: &[&str], removed: &[&str]) -> Result<(), tokio_postgres::Error> {
        self.rt.block_on(self.client.execute(WRITE, &[&self.component, &keys, &values, &removed])).map(drop)
    }
}

impl Store for PgStore {
    fn load(&mut self) -> Result<Vec<(String, String)>, String> {
        let sql = "SELECT key, value::text FROM kv_state WHERE component = $1 ORDER BY key";
        let rows = self.rt.block_on(self.client.query(sql, &[&self.component])).map_err(|e| fail(&self.server, &e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    fn save(&mut self, changes: &[Change]) -> Result<(), String> {
        // A key changed twice in one batch is written once, as it was last
        // (one statement may not update a row twice).
        let keys: Vec<Option<&str>> = changes.iter().map(|(k, _)| Some(k.as_str())).collect();
        let (mut set, mut values, mut removed) = (Vec::new(), Vec::new(), Vec::new());
        for (key, value) in last_positions(&keys).into_iter().map(|i| &changes[i]) {
            match value {
                Some(value) => {
                    set.push(key.as_str());
                    values.push(value.as_str());
                }
                None => removed.push(key.as_str()),
            }
        }
        match self.write(&set, &values, &removed) {
            Ok(()) => Ok(()),
            // The server restarted since the last batch: once more on a new connection.
            Err(e) if is_connection_error(&e) => {
                tracing::warn!(target = %self.server.target, error = %describe(&e), "kv-state store connection lost; reconnecting.");
                self.client = self.rt.block_on(connect(&self.server))?;
                self.write(&set, &values, &removed).map_err(|e| fail(&self.server, &e))
            }
            Err(e) => Err(fail(&self.server, &e)),
        }
    }
}

fn server(url: &str) -> Result<Server, String> {
    Server::parse(url, None, "100ms..10s").map_err(|e| format!("`store`: {}", e.trim_start_matches("`url`: ")))
}

async fn connect(server: &Server) -> Result<Client, String> {
    server.connect_driven().await.map_err(|e| fail(server, &e))
}

fn fail(server: &Server, e: &tokio_postgres::Error) -> String {
    format!("kv-state store {}: {}", server.target, describe(e))
}
