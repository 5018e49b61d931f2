//! Where the state survives a restart: a small [`Store`] trait and its SQLite
//! backend. A second backend (PostgreSQL, say) is one more file implementing
//! [`Store`] and one more arm in [`StoreSpec::parse`].
//!
//! The trait is blocking on purpose: the task calls it on tokio's blocking
//! pool, one batch of changes per call, so the async threads never wait on
//! the disk.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

/// A backing store for one `kv-state` component's keys.
pub(crate) trait Store: Send + 'static {
    /// Every key with its value as JSON text.
    fn load(&mut self) -> Result<Vec<(String, String)>, String>;
    /// Writes these keys' latest values (JSON text), all or none.
    fn save(&mut self, changes: &[(String, String)]) -> Result<(), String>;
}

/// The `store` config key, parsed (no I/O).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StoreSpec {
    /// Memory only: the state starts empty at every start.
    Memory,
    /// An SQLite database file.
    Sqlite(PathBuf),
}

impl StoreSpec {
    /// `"memory"` or `"sqlite:PATH"` (`PATH` relative to the flow file's folder via `resolve`).
    pub(crate) fn parse(text: &str, resolve: impl Fn(&str) -> PathBuf) -> Result<Self, String> {
        match text.split_once(':') {
            _ if text == "memory" => Ok(StoreSpec::Memory),
            Some(("sqlite", path)) if !path.is_empty() => Ok(StoreSpec::Sqlite(resolve(path))),
            _ => Err(format!("`store = \"{text}\"`: write \"memory\" or \"sqlite:PATH\" (e.g. \"sqlite:state.db\")")),
        }
    }

    /// Opens the store (blocking I/O); `None` for memory.
    pub(crate) fn open(&self, component: &str) -> Result<Option<Box<dyn Store>>, String> {
        match self {
            StoreSpec::Memory => Ok(None),
            StoreSpec::Sqlite(path) => Ok(Some(Box::new(SqliteStore::open(path, component)?))),
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

    fn save(&mut self, changes: &[(String, String)]) -> Result<(), String> {
        let write = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO kv_state (component, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (component, key) DO UPDATE SET value = excluded.value",
                )?;
                for (key, value) in changes {
                    stmt.execute(params![self.component, key, value])?;
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

    #[test]
    fn parses_the_store_key() {
        let resolve = |p: &str| PathBuf::from("/flows").join(p);
        assert_eq!(StoreSpec::parse("memory", resolve).unwrap(), StoreSpec::Memory);
        assert_eq!(StoreSpec::parse("sqlite:s.db", resolve).unwrap(), StoreSpec::Sqlite("/flows/s.db".into()));
        let err = StoreSpec::parse("postgres://x", resolve).unwrap_err();
        assert!(err.contains("\"sqlite:PATH\""), "{err}");
        assert!(StoreSpec::parse("sqlite:", resolve).is_err());
    }

    #[test]
    fn sqlite_keeps_the_latest_value_per_key_and_component() {
        let dir = TempDir::new("kv-store");
        let spec = StoreSpec::Sqlite(dir.path().join("sub/state.db"));
        let mut a = spec.open("a").unwrap().unwrap();
        a.save(&[("k1".into(), "1".into()), ("k2".into(), "\"x\"".into())]).unwrap();
        a.save(&[("k1".into(), "{\"v\":2}".into())]).unwrap();
        spec.open("b").unwrap().unwrap().save(&[("k1".into(), "9".into())]).unwrap();
        drop(a);
        let loaded = spec.open("a").unwrap().unwrap().load().unwrap();
        assert_eq!(loaded, [("k1".to_string(), "{\"v\":2}".to_string()), ("k2".into(), "\"x\"".into())]);
    }
}
