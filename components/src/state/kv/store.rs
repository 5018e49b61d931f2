//! Where the state survives a restart: a small [`Store`] trait, its SQLite
//! backend here and its PostgreSQL backend in `postgres`. Another backend is
//! one more file implementing [`Store`] and one more arm in [`StoreSpec::parse`].
//!
//! The trait is blocking on purpose: the task calls it on tokio's blocking
//! pool, one batch of changes per call, so the async threads never wait on
//! the disk.

mod postgres;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use self::postgres::PgStore;

/// One key's change for the store: its new value as JSON text, or `None` when
/// it was removed.
pub(crate) type Change = (String, Option<String>);

/// A backing store for one `kv-state` component's keys.
pub(crate) trait Store: Send + 'static {
    /// Every key with its value as JSON text.
    fn load(&mut self) -> Result<Vec<(String, String)>, String>;
    /// Writes these keys' latest values (JSON text) and removes the removed
    /// ones, in order, all or none.
    fn save(&mut self, changes: &[Change]) -> Result<(), String>;
}

/// The `store` config key, parsed (no I/O).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StoreSpec {
    /// Memory only: the state starts empty at every start.
    Memory,
    /// An SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (checked when parsed).
    Postgres(String),
}

impl StoreSpec {
    /// `"memory"`, `"sqlite:PATH"` (`PATH` relative to the flow file's folder
    /// via `resolve`), a `postgresql://` (or `postgres://`) URI, or
    /// `"postgres:"` and a `key=value` connection string.
    pub(crate) fn parse(text: &str, resolve: impl Fn(&str) -> PathBuf) -> Result<Self, String> {
        let postgres = |url: &str| PgStore::check(url).map(|()| StoreSpec::Postgres(url.to_string()));
        match text.split_once(':') {
            _ if text == "memory" => Ok(StoreSpec::Memory),
            _ if text.starts_with("postgresql://") || text.starts_with("postgres://") => postgres(text),
            Some(("postgres", conninfo)) if !conninfo.trim().is_empty() => postgres(conninfo),
            Some(("sqlite", path)) if !path.is_empty() => Ok(StoreSpec::Sqlite(resolve(path))),
            _ => Err(format!(
                "`store = \"{text}\"`: write \"memory\", \"sqlite:PATH\" (e.g. \"sqlite:state.db\") or a \
                 PostgreSQL URI (e.g. \"postgresql://postgres@127.0.0.1/app\")"
            )),
        }
    }

    /// Opens the store (blocking I/O); `None` for memory.
    pub(crate) fn open(&self, component: &str) -> Result<Option<Box<dyn Store>>, String> {
        match self {
            StoreSpec::Memory => Ok(None),
            StoreSpec::Sqlite(path) => Ok(Some(Box::new(SqliteStore::open(path, component)?))),
            StoreSpec::Postgres(url) => Ok(Some(Box::new(PgStore::open(url, component)?))),
        }
    }
}

/// Keys in the table `kv_state (component, key, value)`, one row per key;
/// several `kv-state` components may share a database file.
pub(crate) struct SqliteStore {
    conn: Connection,
    component: String,
}

impl SqliteStore {
    fn open(path: &Path, component: &str) -> Result<Self, String> {
        let fail = |e: &dyn std::fmt::Display| format!("cannot open kv-state store `{}`: {e}", path.display());
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        let conn = Connection::open(path).map_err(|e| fail(&e))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS kv_state (
                 component TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
                 PRIMARY KEY (component, key));",
        )
        .map_err(|e| fail(&e))?;
        Ok(SqliteStore { conn, component: component.to_string() })
    }
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Vec<(String, String)>, String> {
        let read = || -> rusqlite::Result<Vec<(String, String)>> {
            let mut stmt = self.conn.prepare("SELECT key, value FROM kv_state WHERE component = ?1 ORDER BY key")?;
            let rows = stmt.query_map([&self.component], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        };
        read().map_err(|e| format!("cannot read the kv-state store: {e}"))
    }

    fn save(&mut self, changes: &[Change]) -> Result<(), String> {
        let write = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut set = tx.prepare_cached(
                    "INSERT INTO kv_state (component, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (component, key) DO UPDATE SET value = excluded.value",
                )?;
                let mut remove = tx.prepare_cached("DELETE FROM kv_state WHERE component = ?1 AND key = ?2")?;
                for (key, value) in changes {
                    match value {
                        Some(value) => set.execute(params![self.component, key, value])?,
                        None => remove.execute(params![self.component, key])?,
                    };
                }
            }
            tx.commit()
        };
        write(&mut self.conn).map_err(|e| format!("cannot write the kv-state store: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_support::TempDir;

    fn set(key: &str, json: &str) -> Change {
        (key.into(), Some(json.into()))
    }

    #[test]
    fn parses_the_store_key() {
        let resolve = |p: &str| PathBuf::from("/flows").join(p);
        assert_eq!(StoreSpec::parse("memory", resolve).unwrap(), StoreSpec::Memory);
        assert_eq!(StoreSpec::parse("sqlite:s.db", resolve).unwrap(), StoreSpec::Sqlite("/flows/s.db".into()));
        let pg = "postgresql://postgres@127.0.0.1/test";
        assert_eq!(StoreSpec::parse(pg, resolve).unwrap(), StoreSpec::Postgres(pg.into()));
        let keywords = StoreSpec::parse("postgres:host=127.0.0.1 dbname=test", resolve).unwrap();
        assert_eq!(keywords, StoreSpec::Postgres("host=127.0.0.1 dbname=test".into()));
        let err = StoreSpec::parse("redis://x", resolve).unwrap_err();
        assert!(err.contains("\"sqlite:PATH\"") && err.contains("postgresql://"), "{err}");
        assert!(StoreSpec::parse("sqlite:", resolve).is_err());
        let err = StoreSpec::parse("postgresql://x/db?bogus=1", resolve).unwrap_err();
        assert!(err.starts_with("`store`: not a PostgreSQL connection string"), "{err}");
    }

    #[test]
    fn sqlite_keeps_the_latest_value_per_key_and_component() {
        let dir = TempDir::new("kv-store");
        let spec = StoreSpec::Sqlite(dir.path().join("sub/state.db"));
        let mut a = spec.open("a").unwrap().unwrap();
        a.save(&[set("k1", "1"), set("k2", "\"x\""), set("k3", "3")]).unwrap();
        a.save(&[set("k1", "{\"v\":2}"), ("k3".into(), None), ("k4".into(), None)]).unwrap();
        spec.open("b").unwrap().unwrap().save(&[set("k1", "9"), set("k3", "9")]).unwrap();
        drop(a);
        let loaded = spec.open("a").unwrap().unwrap().load().unwrap();
        assert_eq!(loaded, [("k1".to_string(), "{\"v\":2}".to_string()), ("k2".into(), "\"x\"".into())]);
        let other = spec.open("b").unwrap().unwrap().load().unwrap();
        assert_eq!(other.len(), 2, "a removal is one component's: {other:?}");
    }

    /// Against the PostgreSQL on 127.0.0.1:5432 (database `test`), through a
    /// proxy that is cut and restored between two batches: the second is
    /// written on a new connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_keeps_the_latest_value_per_key_and_reconnects_once() {
        use fbp_runtime::testbed::Proxy;
        let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).unwrap();
        let url = format!("postgresql://postgres@127.0.0.1:{}/test", proxy.port());
        let component = format!("unit-{}", std::process::id());
        let spec = StoreSpec::parse(&url, |p| PathBuf::from(p)).unwrap();
        let (s, c) = (spec.clone(), component.clone());
        let loaded = tokio::task::spawn_blocking(move || {
            let mut store = s.open(&c)?.unwrap();
            store.save(&[set("k1", "1"), set("k2", "\"x\""), set("k1", "{\"v\":2}"), set("k4", "4")])?;
            proxy.cut();
            proxy.restore();
            store.save(&[set("k3", "[true]"), ("k4".into(), None), set("k5", "5"), ("k5".into(), None)])?;
            let loaded = s.open(&c)?.unwrap().load();
            s.open(&format!("{c}-other"))?.unwrap().save(&[set("k1", "0")])?;
            loaded
        })
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            loaded,
            [
                ("k1".to_string(), "{\"v\": 2}".to_string()),
                ("k2".into(), "\"x\"".into()),
                ("k3".into(), "[true]".into())
            ]
        );
        let clean = format!("DELETE FROM kv_state WHERE component IN ('{component}', '{component}-other')");
        let (client, conn) =
            tokio_postgres::connect("host=127.0.0.1 user=postgres dbname=test", tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client.batch_execute(&clean).await.unwrap();
    }
}
