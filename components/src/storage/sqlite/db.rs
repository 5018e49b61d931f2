//! The synchronous side of `sqlite`: one connection, the table's columns,
//! and batch inserts in one transaction. It runs on tokio's blocking pool.

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use fbp_runtime::value::{self, Value};
use rusqlite::types::{ToSql, ToSqlOutput, Value as Sql, ValueRef};
use rusqlite::{CachedStatement, Connection, ErrorCode, Transaction, params_from_iter};

use crate::sink_retry::{Fault, Refused};

/// How long a write waits for another connection's lock before the attempt
/// fails (and the batch is written again after a pause).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQL column types a `columns` declaration may use.
pub(super) const TYPES: &[&str] = &["TEXT", "INTEGER", "REAL", "NUMERIC", "BLOB"];

/// An open database and what it knows of its table.
pub(super) struct Db {
    conn: Connection,
    table: String,
    /// The table's columns and insert statement, once it exists.
    target: Option<Target>,
}

/// The columns to fill (as the record keys they are looked up by) and the
/// statement that fills them.
struct Target {
    keys: Vec<Value>,
    sql: String,
}

impl Target {
    fn new(table: &str, columns: Vec<String>) -> Self {
        let names: Vec<String> = columns.iter().map(|c| quote(c)).collect();
        let marks = vec!["?"; columns.len()].join(", ");
        let sql = format!("INSERT INTO {} ({}) VALUES ({marks})", quote(table), names.join(", "));
        Target { keys: columns.into_iter().map(value::string).collect(), sql }
    }

    fn insert(&self, stmt: &mut CachedStatement<'_>, map: &value::Map) -> rusqlite::Result<()> {
        stmt.execute(params_from_iter(self.keys.iter().map(|k| Field(map.get(k).unwrap_or(&Value::Null)))))?;
        Ok(())
    }
}

impl Db {
    /// Opens (creating) the database; reads the table's columns if it exists,
    /// else creates it from `declared` columns if there are any.
    /// `Err` says whether trying again may help (the database locked).
    pub(super) fn open(path: &Path, table: &str, declared: &[(String, String)]) -> Result<Db, Fault> {
        let doing = format!("cannot open sqlite database `{}`", path.display());
        let fail = |e: &dyn std::fmt::Display| Fault::Permanent(format!("{doing}: {e}"));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        let conn = Connection::open(path).map_err(|e| fail(&e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| fail(&e))?;
        let mut columns = table_columns(&conn, table).map_err(|e| fault(&doing, &e))?;
        if columns.is_none() && !declared.is_empty() {
            create_table(&conn, table, declared).map_err(|e| fault(&doing, &e))?;
            columns = Some(declared.iter().map(|(name, _)| name.clone()).collect());
        }
        Ok(Db { target: columns.map(|c| Target::new(table, c)), conn, table: table.to_string() })
    }

    /// Inserts every record of `batch` it can in one transaction and commits.
    /// `Ok` lists the records refused (not objects, or rejected by the table);
    /// `Err` means nothing was committed, and whether trying again may help
    /// (the database busy or locked past `BUSY_TIMEOUT`, the disk full).
    pub(super) fn insert<'a>(&mut self, batch: impl IntoIterator<Item = &'a Value>) -> Result<Vec<Refused>, Fault> {
        let had_table = self.target.is_some();
        let result = self.insert_all(batch);
        if result.is_err() && !had_table {
            // A table created in the transaction went with its rollback.
            self.target = None;
        }
        result
    }

    fn insert_all<'a>(&mut self, batch: impl IntoIterator<Item = &'a Value>) -> Result<Vec<Refused>, Fault> {
        let tx = self.conn.transaction().map_err(|e| fault("cannot begin a transaction", &e))?;
        let mut refused = Vec::new();
        let mut stmt = None;
        for (i, payload) in batch.into_iter().enumerate() {
            if let Err(why) = insert_one(&tx, &mut stmt, &mut self.target, &self.table, payload)? {
                refused.push((i, why));
            }
        }
        drop(stmt);
        tx.commit().map_err(|e| fault(&format!("cannot commit to `{}`", self.table), &e))?;
        Ok(refused)
    }
}

/// A database error as a fault: transient when another connection holds the
/// lock (busy past the timeout, or locked) or the disk is full, else permanent.
fn fault(doing: &str, e: &rusqlite::Error) -> Fault {
    let why = format!("{doing}: {e}");
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull) => Fault::Transient(why),
        _ => Fault::Permanent(why),
    }
}

/// Inserts one record, first creating the table from it if there is none;
/// `stmt` is the batch's insert statement, prepared at its first record.
/// `Ok(Err(why))`: the record is refused; `Err`: the database failed.
fn insert_one<'tx>(
    tx: &'tx Transaction<'_>,
    stmt: &mut Option<CachedStatement<'tx>>,
    target: &mut Option<Target>,
    table: &str,
    record: &Value,
) -> Result<Result<(), String>, Fault> {
    let Value::Obj(fields) = record else {
        let what = value::type_name(record);
        return Ok(Err(format!("a {what} is not a record; sqlite takes objects")));
    };
    let target = match target {
        Some(target) => target,
        slot @ None => {
            let columns = first_columns(record);
            if columns.is_empty() {
                return Ok(Err(format!("a record without fields cannot create the table `{table}`")));
            }
            create_table(tx, table, &columns).map_err(|e| fault(&format!("cannot create the table `{table}`"), &e))?;
            slot.insert(Target::new(table, columns.into_iter().map(|(name, _)| name).collect()))
        }
    };
    let stmt = match stmt {
        Some(stmt) => stmt,
        slot @ None => slot
            .insert(tx.prepare_cached(&target.sql).map_err(|e| fault(&format!("cannot insert into `{table}`"), &e))?),
    };
    match target.insert(stmt, fields) {
        Ok(()) => Ok(Ok(())),
        Err(e) if refuses_record(&e) => Ok(Err(format!("the table refused the record: {e}"))),
        Err(e) => Err(fault(&format!("cannot insert into `{table}`"), &e)),
    }
}

/// Whether an insert error concerns the record rather than the database.
fn refuses_record(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::ToSqlConversionFailure(_))
        || matches!(
            e.sqlite_error_code(),
            Some(ErrorCode::ConstraintViolation | ErrorCode::TypeMismatch | ErrorCode::TooBig)
        )
}

/// A name as an SQL identifier, quoted (so no name can inject SQL).
pub(super) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The columns of `table`, or `None` if there is no such table.
fn table_columns(conn: &Connection, table: &str) -> rusqlite::Result<Option<Vec<String>>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    let names = stmt.query_map([table], |row| row.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
    Ok((!names.is_empty()).then_some(names))
}

fn create_table(conn: &Connection, table: &str, columns: &[(String, String)]) -> rusqlite::Result<()> {
    let defs: Vec<String> =
        columns.iter().map(|(name, ty)| format!("{} {ty}", quote(name)).trim_end().to_string()).collect();
    conn.execute(&format!("CREATE TABLE IF NOT EXISTS {} ({})", quote(table), defs.join(", ")), [])?;
    Ok(())
}

/// Columns for a table made from a record: its fields, typed by their values.
fn first_columns(record: &Value) -> Vec<(String, String)> {
    crate::storage::record_columns(record, column_type)
}

/// The column type for a field, from its first value. A `null` gives no
/// declared type, so later values keep their own.
fn column_type(v: &Value) -> &'static str {
    match v {
        Value::Num(n) if n.as_isize().is_some() => "INTEGER",
        Value::Bool(_) => "INTEGER",
        Value::Num(_) => "REAL",
        Value::BStr(_) => "BLOB",
        Value::Null => "",
        Value::TStr(_) | Value::Arr(_) | Value::Obj(_) => "TEXT",
    }
}

/// A field bound as an SQL value, borrowed from the record where it can be:
/// objects and arrays as JSON text, text that is not UTF-8 made valid.
struct Field<'a>(&'a Value);

impl ToSql for Field<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        let v = self.0;
        Ok(match v {
            Value::Null => ToSqlOutput::Owned(Sql::Null),
            Value::Bool(b) => ToSqlOutput::Owned(Sql::Integer((*b).into())),
            Value::Num(n) => ToSqlOutput::Owned(match n.as_isize() {
                Some(i) => Sql::Integer(i as i64),
                None => value::as_f64(v).map_or(Sql::Null, Sql::Real),
            }),
            Value::TStr(s) => match String::from_utf8_lossy(s) {
                Cow::Borrowed(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
                Cow::Owned(text) => ToSqlOutput::Owned(Sql::Text(text)),
            },
            Value::BStr(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Value::Arr(_) | Value::Obj(_) => ToSqlOutput::Owned(Sql::Text(value::to_json_string(v))),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::storage::test_support::TempDir;

    fn records(json: serde_json::Value) -> Vec<Value> {
        match json {
            serde_json::Value::Array(items) => items.iter().map(value::from_serde).collect(),
            other => vec![value::from_serde(&other)],
        }
    }

    fn query(db: &Db, sql: &str) -> Vec<Vec<Sql>> {
        let mut stmt = db.conn.prepare(sql).unwrap();
        let n = stmt.column_count();
        let rows = stmt.query_map([], |row| (0..n).map(|i| row.get::<_, Sql>(i)).collect()).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    fn text(s: &str) -> Sql {
        Sql::Text(s.into())
    }

    #[test]
    fn creates_the_table_from_the_first_record() {
        let dir = TempDir::new("sqlite");
        let mut db = Db::open(&dir.path().join("t.db"), "readings", &[]).unwrap();
        let first = r#"{"sensor": "a", "value": 23.5, "n": 3, "ok": true, "tags": ["x"], "none": null}"#;
        let batch = [value::parse_json(first.as_bytes()).unwrap()];
        assert!(db.insert(&batch).unwrap().is_empty());
        let types = query(&db, "SELECT name, type FROM pragma_table_info('readings') ORDER BY cid");
        let expect = [
            ("sensor", "TEXT"),
            ("value", "REAL"),
            ("n", "INTEGER"),
            ("ok", "INTEGER"),
            ("tags", "TEXT"),
            ("none", ""),
        ];
        assert_eq!(types, expect.map(|(n, t)| vec![text(n), text(t)]));
        let rows = query(&db, "SELECT * FROM readings");
        assert_eq!(
            rows,
            [vec![text("a"), Sql::Real(23.5), Sql::Integer(3), Sql::Integer(1), text(r#"["x"]"#), Sql::Null]]
        );
    }

    #[test]
    fn an_existing_table_keeps_its_columns() {
        let dir = TempDir::new("sqlite");
        let path = dir.path().join("t.db");
        Connection::open(&path).unwrap().execute("CREATE TABLE t (sensor TEXT, value REAL)", []).unwrap();
        let mut db = Db::open(&path, "t", &[("other".into(), "TEXT".into())]).unwrap();
        let refused = db.insert(&records(json!([{"sensor": "a", "value": 1, "extra": 5}, {"value": 2}]))).unwrap();
        assert!(refused.is_empty());
        let rows = query(&db, "SELECT sensor, value FROM t");
        assert_eq!(rows, [vec![text("a"), Sql::Real(1.0)], vec![Sql::Null, Sql::Real(2.0)]]);
    }

    #[test]
    fn refused_records_are_listed_and_the_rest_commits() {
        let dir = TempDir::new("sqlite");
        let path = dir.path().join("t.db");
        Connection::open(&path)
            .unwrap()
            .execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)", [])
            .unwrap();
        let mut db = Db::open(&path, "t", &[]).unwrap();
        let batch = json!([{"id": 1, "v": "a"}, 5, {"id": 1, "v": "again"}, {"id": 2}, {"id": 3, "v": "c"}]);
        let refused = db.insert(&records(batch)).unwrap();
        let at: Vec<usize> = refused.iter().map(|(i, _)| *i).collect();
        assert_eq!(at, [1, 2, 3]);
        assert!(refused.iter().all(|(_, why)| !why.is_empty()));
        assert!(refused[0].1.contains("a number is not a record"), "{}", refused[0].1);
        assert!(refused[1].1.contains("UNIQUE"), "{}", refused[1].1);
        assert!(refused[2].1.contains("NOT NULL"), "{}", refused[2].1);
        assert_eq!(query(&db, "SELECT id FROM t"), [[Sql::Integer(1)], [Sql::Integer(3)]]);
    }

    #[test]
    fn an_empty_first_record_is_refused_and_the_next_creates_the_table() {
        let dir = TempDir::new("sqlite");
        let mut db = Db::open(&dir.path().join("t.db"), "t", &[]).unwrap();
        let refused = db.insert(&records(json!([{}, {"v": 1}]))).unwrap();
        assert_eq!(refused.len(), 1);
        assert!(refused[0].1.contains("without fields"), "{}", refused[0].1);
        assert_eq!(query(&db, "SELECT v FROM t"), [[Sql::Integer(1)]]);
    }

    #[test]
    fn odd_field_names_are_quoted_not_executed() {
        let dir = TempDir::new("sqlite");
        let mut db = Db::open(&dir.path().join("t.db"), "t", &[]).unwrap();
        let name = r#"x" TEXT); DROP TABLE t; --"#;
        let record = value::object([(name, value::int(1))]);
        assert!(db.insert(&[record.clone(), record]).unwrap().is_empty());
        let columns = query(&db, "SELECT name FROM pragma_table_info('t')");
        assert_eq!(columns, [[text(name)]]);
        assert_eq!(query(&db, "SELECT count(*) FROM t"), [[Sql::Integer(2)]]);
    }

    #[test]
    fn declared_columns_create_the_table_at_open() {
        let dir = TempDir::new("sqlite");
        let declared = [("sensor".to_string(), "TEXT".to_string()), ("value".to_string(), "REAL".to_string())];
        let db = Db::open(&dir.path().join("t.db"), "t", &declared).unwrap();
        let types = query(&db, "SELECT name, type FROM pragma_table_info('t') ORDER BY cid");
        assert_eq!(types, [vec![text("sensor"), text("TEXT")], vec![text("value"), text("REAL")]]);
    }

    #[test]
    fn a_database_that_cannot_be_opened_says_which() {
        let dir = TempDir::new("sqlite");
        let Some(Fault::Permanent(err)) = Db::open(dir.path(), "t", &[]).err() else { panic!("not permanent") };
        assert!(err.starts_with("cannot open sqlite database"), "{err}");
        assert!(err.contains(&*dir.path().to_string_lossy()), "{err}");
    }
}
