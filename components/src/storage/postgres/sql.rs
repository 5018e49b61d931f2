//! The SQL `postgres` writes, built from names it has checked or quoted, and
//! the column types a table made from a record gets. No I/O: unit-tested.
//!
//! A batch is inserted with one statement whatever its size: the records go
//! as one JSON array parameter, and `json_populate_recordset` turns it into
//! rows of the table's own row type, so PostgreSQL converts each field to its
//! column's type (numbers, text, `TIMESTAMPTZ` from RFC 3339 strings, `JSONB`
//! from objects and arrays, arrays into array columns) and says which value
//! it refuses.

use fbp_runtime::value::{self, Value};

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

/// The schema (`None`: the current one) and the bare name of a checked table name.
pub(crate) fn split_table(name: &str) -> (Option<&str>, &str) {
    match name.split_once('.') {
        Some((schema, table)) => (Some(schema), table),
        None => (None, name),
    }
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
    if !key.is_empty() {
        let keys: Vec<String> = key.iter().map(|k| quote(k)).collect();
        let updates: Vec<String> =
            columns.iter().filter(|c| !key.contains(c)).map(|c| format!("{0} = EXCLUDED.{0}", quote(c))).collect();
        let action =
            if updates.is_empty() { "NOTHING".to_string() } else { format!("UPDATE SET {}", updates.join(", ")) };
        sql.push_str(&format!(" ON CONFLICT ({}) DO {action}", keys.join(", ")));
    }
    sql
}

/// The table's columns that some record of the batch has, in table order.
pub(crate) fn batch_columns<'a>(table_columns: &'a [String], records: &[&Value]) -> Vec<&'a String> {
    table_columns.iter().filter(|c| records.iter().any(|r| value::get(r, c).is_some())).collect()
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
    let mut last = std::collections::HashMap::new();
    for (i, r) in records.iter().enumerate() {
        if let Some(k) = key_of(r, key) {
            last.insert(k, i);
        }
    }
    (0..records.len()).filter(|&i| key_of(records[i], key).is_none_or(|k| last[&k] == i)).collect()
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

    #[test]
    fn batch_columns_are_the_fields_present_in_table_order() {
        let table = ["id".to_string(), "a".to_string(), "b".to_string()];
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
