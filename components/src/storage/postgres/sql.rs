//! The SQL `postgres` writes, built from names it has checked or quoted, and
//! the column types a table made from a record gets. No I/O: unit-tested.
//!
//! A batch is inserted with one statement whatever its size, in one of two
//! forms that give the same rows:
//!
//! - typed ([`insert_typed`]): one array parameter per column, zipped into
//!   rows by `unnest`. A column of integers, floats or booleans goes as a
//!   binary array of that type when every value of the batch is one; any
//!   other column goes as the text of each value (a string's contents, the
//!   JSON text of anything else, the JSON text for `JSON`/`JSONB`), which the
//!   server casts with the column type's own input function.
//! - JSON ([`insert`]): the records as one JSON array parameter, expanded by
//!   `json_populate_recordset` into rows of the table's row type. Used when a
//!   column is an array, composite or domain type, whose conversion from JSON
//!   only that function does.
//!
//! Either way PostgreSQL converts each field as `json_populate_recordset`
//! does (numbers, text, `TIMESTAMPTZ` from RFC 3339 strings, `JSONB` from any
//! value) and says which value it refuses.

use fbp_runtime::value::{self, Value};
use tokio_postgres::types::ToSql;

/// A name as an SQL identifier, quoted (so no name can inject SQL).
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Checks a table name: letters, digits and `_`, not starting with a digit,
/// optionally behind a schema name of the same form (`schema.table`).
pub(crate) fn check_table_name(name: &str) -> Result<(), String> {
    let part_ok = |p: &str| {
        let mut chars = p.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() <= 2 && parts.iter().all(|p| part_ok(p)) {
        Ok(())
    } else {
        Err(format!(
            "`table = \"{name}\"`: a table name is letters, digits and `_`, not starting with a digit \
             (optionally `schema.table`)"
        ))
    }
}

/// A checked table name, quoted part by part: `"schema"."table"`.
pub(crate) fn quote_table(name: &str) -> String {
    name.split('.').map(quote).collect::<Vec<_>>().join(".")
}

/// Checks a declared column type: a PostgreSQL type name such as `TEXT`,
/// `DOUBLE PRECISION`, `NUMERIC(10,2)`, `TIMESTAMPTZ` or `TEXT[]` (letters,
/// digits, spaces, `_`, `(`, `)`, `,`, `[`, `]`; nothing that could end the
/// statement).
pub(crate) fn check_type(ty: &str) -> bool {
    ty.starts_with(|c: char| c.is_ascii_alphabetic())
        && ty.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '(' | ')' | ',' | '[' | ']'))
}

/// The column type for a field of the record that creates the table.
pub(crate) fn column_type(v: &Value) -> &'static str {
    match v {
        Value::Num(n) if n.as_isize().is_some() => "BIGINT",
        Value::Num(_) => "DOUBLE PRECISION",
        Value::Bool(_) => "BOOLEAN",
        Value::BStr(_) | Value::TStr(_) | Value::Null => "TEXT",
        Value::Arr(_) | Value::Obj(_) => "JSONB",
    }
}

/// Columns for a table made from a record: its fields, typed by their values.
pub(crate) fn first_columns(record: &Value) -> Vec<(String, String)> {
    crate::storage::record_columns(record, column_type)
}

/// `CREATE TABLE IF NOT EXISTS` with these columns, and the key as primary key.
pub(crate) fn create_table(table: &str, columns: &[(String, String)], key: &[String]) -> String {
    let mut defs: Vec<String> = columns.iter().map(|(name, ty)| format!("{} {ty}", quote(name))).collect();
    if !key.is_empty() {
        let key: Vec<String> = key.iter().map(|k| quote(k)).collect();
        defs.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    format!("CREATE TABLE IF NOT EXISTS {} ({})", quote_table(table), defs.join(", "))
}

/// The statement that inserts a batch: `$1` is the batch as a JSON array of
/// records (text). `columns` are the ones to fill (the others keep their
/// defaults); with a `key`, a record whose key exists updates that row.
pub(crate) fn insert(table: &str, columns: &[String], key: &[String]) -> String {
    let names: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let names = names.join(", ");
    let table = quote_table(table);
    let mut sql = format!(
        "INSERT INTO {table} ({names}) SELECT {names} FROM json_populate_recordset(NULL::{table}, $1::text::json)"
    );
    sql.push_str(&on_conflict(columns, key));
    sql
}

/// ` ON CONFLICT (key) DO UPDATE SET ..` for an upsert of `columns`; empty without a key.
fn on_conflict(columns: &[String], key: &[String]) -> String {
    if key.is_empty() {
        return String::new();
    }
    let keys: Vec<String> = key.iter().map(|k| quote(k)).collect();
    let updates: Vec<String> =
        columns.iter().filter(|c| !key.contains(c)).map(|c| format!("{0} = EXCLUDED.{0}", quote(c))).collect();
    let action = if updates.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", updates.join(", ")) };
    format!(" ON CONFLICT ({}) DO {action}", keys.join(", "))
}

/// A column of the table: its name, its type (without modifiers, for casts)
/// and how its values are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) ty: String,
    pub(crate) kind: ColumnKind,
}

/// How a column's values are sent in a typed insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    Int2,
    Int4,
    Int8,
    Float8,
    Bool,
    /// `TEXT`, `VARCHAR`, `CHAR`: the text, assigned without a cast (so a
    /// length limit refuses rather than truncates).
    Text,
    /// `JSON`, `JSONB`: the JSON text of the value.
    Json,
    /// Any other scalar type (`TIMESTAMPTZ`, `NUMERIC`, `UUID`, `REAL`, ..):
    /// the text, cast by the server.
    Cast,
    /// Arrays, composite and domain types: only the JSON form converts them.
    Structured,
}

impl ColumnKind {
    /// From `pg_type`'s `typname`, `typcategory` and `typtype`.
    pub(crate) fn of(typname: &str, category: &str, typtype: &str) -> ColumnKind {
        if category == "A" || typtype != "b" {
            return ColumnKind::Structured;
        }
        match typname {
            "int2" => ColumnKind::Int2,
            "int4" => ColumnKind::Int4,
            "int8" => ColumnKind::Int8,
            "float8" => ColumnKind::Float8,
            "bool" => ColumnKind::Bool,
            "text" | "varchar" | "bpchar" => ColumnKind::Text,
            "json" | "jsonb" => ColumnKind::Json,
            _ => ColumnKind::Cast,
        }
    }
}

/// One column's values for a typed insert, as one array parameter.
#[derive(Debug)]
pub(crate) enum Param {
    Int2(Vec<Option<i16>>),
    Int4(Vec<Option<i32>>),
    Int8(Vec<Option<i64>>),
    Float8(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
    Text(Vec<Option<String>>),
}

impl Param {
    /// The values of `column` in `records` (a missing field or `null` is
    /// NULL): binary when every value is of the column's type, else text.
    pub(crate) fn of(column: &Column, records: &[&Value]) -> Param {
        let fields = || records.iter().map(|r| value::get(r, &column.name).filter(|v| !matches!(v, Value::Null)));
        // Each field converted, or `None` as soon as one does not convert.
        fn all<'a, T>(
            fields: impl Iterator<Item = Option<&'a Value>>,
            to: impl Fn(&Value) -> Option<T>,
        ) -> Option<Vec<Option<T>>> {
            fields.map(|v| v.map_or(Some(None), |v| to(v).map(Some))).collect()
        }
        let binary = match column.kind {
            ColumnKind::Int2 => all(fields(), |v| int(v)?.try_into().ok()).map(Param::Int2),
            ColumnKind::Int4 => all(fields(), |v| int(v)?.try_into().ok()).map(Param::Int4),
            ColumnKind::Int8 => all(fields(), int).map(Param::Int8),
            ColumnKind::Float8 => all(fields(), float).map(Param::Float8),
            ColumnKind::Bool => {
                all(fields(), |v| if let Value::Bool(b) = v { Some(*b) } else { None }).map(Param::Bool)
            }
            _ => None,
        };
        binary.unwrap_or_else(|| Param::Text(fields().map(|v| v.map(|v| text(v, column.kind))).collect()))
    }

    /// The parameter's SQL array type.
    fn array_type(&self) -> &'static str {
        match self {
            Param::Int2(_) => "int2[]",
            Param::Int4(_) => "int4[]",
            Param::Int8(_) => "int8[]",
            Param::Float8(_) => "float8[]",
            Param::Bool(_) => "bool[]",
            Param::Text(_) => "text[]",
        }
    }

    pub(crate) fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::Int2(v) => v,
            Param::Int4(v) => v,
            Param::Int8(v) => v,
            Param::Float8(v) => v,
            Param::Bool(v) => v,
            Param::Text(v) => v,
        }
    }
}

/// An integer value exactly (not `2.0`: the server refuses that for an integer column too).
fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Num(n) => n.as_isize().and_then(|i| i64::try_from(i).ok()),
        _ => None,
    }
}

/// A number as `f64`, if it is one and finite (the server refuses what overflows).
fn float(v: &Value) -> Option<f64> {
    matches!(v, Value::Num(_)).then(|| value::as_f64(v)).flatten().filter(|f| f.is_finite())
}

/// A value as the server's input function takes it: a string's contents,
/// the JSON text of anything else (always the JSON text for a JSON column).
fn text(v: &Value, kind: ColumnKind) -> String {
    match value::as_str(v) {
        Some(s) if kind != ColumnKind::Json && matches!(v, Value::TStr(_)) => s.into_owned(),
        _ => value::to_json_string(v),
    }
}

/// The typed insert of these columns, one parameter per column in order
/// (`$1` the first column's [`Param`], ...); with a `key`, an upsert.
pub(crate) fn insert_typed(table: &str, columns: &[(&Column, &Param)], key: &[String]) -> String {
    let names: Vec<String> = columns.iter().map(|(c, _)| quote(&c.name)).collect();
    let selected: Vec<String> = columns
        .iter()
        .zip(&names)
        .map(|((c, p), name)| match p {
            Param::Text(_) if c.kind != ColumnKind::Text => format!("u.{name}::{}", c.ty),
            _ => format!("u.{name}"),
        })
        .collect();
    let params: Vec<String> =
        columns.iter().enumerate().map(|(i, (_, p))| format!("${}::{}", i + 1, p.array_type())).collect();
    let mut sql = format!(
        "INSERT INTO {} ({}) SELECT {} FROM unnest({}) AS u({})",
        quote_table(table),
        names.join(", "),
        selected.join(", "),
        params.join(", "),
        names.join(", ")
    );
    let names: Vec<String> = columns.iter().map(|(c, _)| c.name.clone()).collect();
    sql.push_str(&on_conflict(&names, key));
    sql
}

/// The table's columns that some record of the batch has, in table order.
pub(crate) fn batch_columns<'a>(table_columns: &'a [Column], records: &[&Value]) -> Vec<&'a Column> {
    table_columns.iter().filter(|c| records.iter().any(|r| value::get(r, &c.name).is_some())).collect()
}

/// The records as one JSON array, the parameter of [`insert`].
pub(crate) fn json_array(records: &[&Value]) -> String {
    let mut text = String::with_capacity(records.len() * 64 + 2);
    text.push('[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&value::to_json_string(r));
    }
    text.push(']');
    text
}

/// A record's key as text, to tell records with the same key apart in a batch
/// (`None` when the record lacks a key field).
pub(crate) fn key_of(record: &Value, key: &[String]) -> Option<String> {
    let parts: Option<Vec<String>> = key.iter().map(|k| value::get(record, k).map(value::to_json_string)).collect();
    parts.map(|p| p.join("\u{1f}"))
}

/// The positions of the records to write in an upsert batch: when several
/// have the same key, only the last (one statement cannot update a row twice,
/// and the last would win anyway). Records without a key are all kept (the
/// table refuses them).
pub(crate) fn last_per_key(records: &[&Value], key: &[String]) -> Vec<usize> {
    if key.is_empty() {
        return (0..records.len()).collect();
    }
    let keys: Vec<Option<String>> = records.iter().map(|r| key_of(r, key)).collect();
    last_positions(&keys)
}

/// The positions of the entries that are the last of their key (and of
/// those without a key), in order.
pub(crate) fn last_positions<K: std::hash::Hash + Eq>(keys: &[Option<K>]) -> Vec<usize> {
    let mut last = std::collections::HashMap::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        if let Some(k) = k {
            last.insert(k, i);
        }
    }
    (0..keys.len()).filter(|&i| keys[i].as_ref().is_none_or(|k| last[k] == i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(json: &str) -> Value {
        value::parse_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn json_types_map_to_column_types() {
        let record = v(r#"{"n": 3, "f": 2.5, "ok": true, "s": "x", "o": {"a": 1}, "a": [1], "z": null}"#);
        let got = first_columns(&record);
        let want = [
            ("n", "BIGINT"),
            ("f", "DOUBLE PRECISION"),
            ("ok", "BOOLEAN"),
            ("s", "TEXT"),
            ("o", "JSONB"),
            ("a", "JSONB"),
            ("z", "TEXT"),
        ];
        assert_eq!(got, want.map(|(n, t)| (n.to_string(), t.to_string())));
        assert!(first_columns(&v("5")).is_empty());
    }

    #[test]
    fn create_table_quotes_names_and_sets_the_key() {
        let cols = [("id".to_string(), "BIGINT".to_string()), ("a\"b".to_string(), "TEXT".to_string())];
        assert_eq!(
            create_table("s.t", &cols, &["id".into()]),
            r#"CREATE TABLE IF NOT EXISTS "s"."t" ("id" BIGINT, "a""b" TEXT, PRIMARY KEY ("id"))"#
        );
        assert_eq!(create_table("t", &cols[..1], &[]), r#"CREATE TABLE IF NOT EXISTS "t" ("id" BIGINT)"#);
    }

    #[test]
    fn insert_and_upsert_statements() {
        let cols = ["id".to_string(), "v".to_string()];
        assert_eq!(
            insert("t", &cols, &[]),
            r#"INSERT INTO "t" ("id", "v") SELECT "id", "v" FROM json_populate_recordset(NULL::"t", $1::text::json)"#
        );
        assert!(
            insert("t", &cols, &["id".into()]).ends_with(r#" ON CONFLICT ("id") DO UPDATE SET "v" = EXCLUDED."v""#)
        );
        assert!(insert("t", &cols[..1], &["id".into()]).ends_with(r#" ON CONFLICT ("id") DO NOTHING"#));
    }

    #[test]
    fn table_names_and_types_that_could_inject_are_refused() {
        assert!(check_table_name("readings").is_ok());
        assert!(check_table_name("public.readings_2").is_ok());
        for bad in ["", "1t", "t; DROP TABLE u", "a.b.c", "t\"", ".t"] {
            assert!(check_table_name(bad).is_err(), "{bad}");
        }
        for good in ["TEXT", "DOUBLE PRECISION", "NUMERIC(10,2)", "TEXT[]", "timestamptz"] {
            assert!(check_type(good), "{good}");
        }
        for bad in ["", "TEXT); DROP TABLE t; --", "TEXT DEFAULT 'x'", "1INT"] {
            assert!(!check_type(bad), "{bad}");
        }
    }

    fn col(name: &str, ty: &str, kind: ColumnKind) -> Column {
        Column { name: name.into(), ty: ty.into(), kind }
    }

    #[test]
    fn column_kinds_from_pg_type() {
        assert_eq!(ColumnKind::of("int8", "N", "b"), ColumnKind::Int8);
        assert_eq!(ColumnKind::of("varchar", "S", "b"), ColumnKind::Text);
        assert_eq!(ColumnKind::of("jsonb", "U", "b"), ColumnKind::Json);
        assert_eq!(ColumnKind::of("timestamptz", "D", "b"), ColumnKind::Cast);
        assert_eq!(ColumnKind::of("float4", "N", "b"), ColumnKind::Cast, "no binary REAL: rounding is the server's");
        assert_eq!(ColumnKind::of("_int4", "A", "b"), ColumnKind::Structured);
        assert_eq!(ColumnKind::of("point3", "C", "c"), ColumnKind::Structured);
        assert_eq!(ColumnKind::of("positive", "N", "d"), ColumnKind::Structured);
    }

    #[test]
    fn params_are_binary_when_every_value_fits_and_text_otherwise() {
        let (a, b, c) =
            (v(r#"{"n": 1, "f": 2, "ok": true, "s": "x", "j": "x"}"#), v(r#"{"n": null, "f": 2.5}"#), v("{}"));
        let rs = [&a, &b, &c];
        let param = |name, kind| format!("{:?}", Param::of(&col(name, "t", kind), &rs));
        assert_eq!(param("n", ColumnKind::Int8), "Int8([Some(1), None, None])");
        assert_eq!(param("n", ColumnKind::Int2), "Int2([Some(1), None, None])");
        assert_eq!(param("f", ColumnKind::Float8), "Float8([Some(2.0), Some(2.5), None])");
        assert_eq!(
            param("f", ColumnKind::Int8),
            r#"Text([Some("2"), Some("2.5"), None])"#,
            "2.5 is the server's to refuse"
        );
        assert_eq!(param("ok", ColumnKind::Bool), "Bool([Some(true), None, None])");
        assert_eq!(param("s", ColumnKind::Text), r#"Text([Some("x"), None, None])"#);
        assert_eq!(param("j", ColumnKind::Json), r#"Text([Some("\"x\""), None, None])"#, "a JSON string stays one");
        assert_eq!(param("s", ColumnKind::Int8), r#"Text([Some("x"), None, None])"#);
        let big = v(r#"{"n": 70000}"#);
        assert_eq!(format!("{:?}", Param::of(&col("n", "t", ColumnKind::Int2), &[&big])), r#"Text([Some("70000")])"#);
        let obj = v(r#"{"o": {"a": [1]}}"#);
        assert_eq!(
            format!("{:?}", Param::of(&col("o", "t", ColumnKind::Text), &[&obj])),
            r#"Text([Some("{\"a\":[1]}")])"#
        );
    }

    #[test]
    fn typed_inserts_unnest_one_array_per_column_and_cast_text_where_needed() {
        let (n, s, ts) = (
            col("n", "bigint", ColumnKind::Int8),
            col("s", "text", ColumnKind::Text),
            col("ts", "timestamp with time zone", ColumnKind::Cast),
        );
        let (pn, ps, pts) = (Param::Int8(vec![Some(1)]), Param::Text(vec![None]), Param::Text(vec![None]));
        assert_eq!(
            insert_typed("t", &[(&n, &pn), (&s, &ps), (&ts, &pts)], &[]),
            r#"INSERT INTO "t" ("n", "s", "ts") SELECT u."n", u."s", u."ts"::timestamp with time zone FROM unnest($1::int8[], $2::text[], $3::text[]) AS u("n", "s", "ts")"#
        );
        let text_n = Param::Text(vec![None]);
        assert!(insert_typed("t", &[(&n, &text_n), (&s, &ps)], &["n".into()]).ends_with(
            r#"SELECT u."n"::bigint, u."s" FROM unnest($1::text[], $2::text[]) AS u("n", "s") ON CONFLICT ("n") DO UPDATE SET "s" = EXCLUDED."s""#
        ));
    }

    #[test]
    fn batch_columns_are_the_fields_present_in_table_order() {
        let table = [
            col("id", "bigint", ColumnKind::Int8),
            col("a", "text", ColumnKind::Text),
            col("b", "text", ColumnKind::Text),
        ];
        let (r1, r2) = (v(r#"{"b": 1, "x": 2}"#), v(r#"{"id": 1}"#));
        assert_eq!(batch_columns(&table, &[&r1, &r2]), [&table[0], &table[2]]);
        assert_eq!(json_array(&[&r1, &r2]), r#"[{"b":1,"x":2},{"id":1}]"#);
    }

    #[test]
    fn upsert_batches_keep_the_last_record_per_key() {
        let rs = [v(r#"{"id": 1, "v": "a"}"#), v(r#"{"id": 2}"#), v(r#"{"v": "no key"}"#), v(r#"{"id": 1, "v": "b"}"#)];
        let refs: Vec<&Value> = rs.iter().collect();
        assert_eq!(last_per_key(&refs, &["id".into()]), [1, 2, 3]);
        assert_eq!(last_per_key(&refs, &[]), [0, 1, 2, 3]);
        assert_ne!(key_of(&v(r#"{"id": 1}"#), &["id".into()]), key_of(&v(r#"{"id": "1"}"#), &["id".into()]));
    }
}
