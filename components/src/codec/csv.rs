//! CSV records to and from payload values, with the `csv` crate.
//!
//! A record decodes to an array of strings, or to an object when column
//! names are known; with `infer_types`, numbers and booleans are typed.
//! Encoding writes one record without its line terminator.

use fbp_runtime::value::{self, Value};

/// How a component reads and writes CSV.
#[derive(Clone, Debug)]
pub(crate) struct Csv {
    delimiter: u8,
    infer_types: bool,
}

impl Csv {
    /// A codec for `delimiter` (one ASCII character).
    pub(crate) fn new(delimiter: &str, infer_types: bool) -> Result<Self, String> {
        match delimiter.as_bytes() {
            [d] if d.is_ascii() && *d != b'"' && *d != b'\n' && *d != b'\r' => Ok(Csv { delimiter: *d, infer_types }),
            _ => Err(format!(
                "`delimiter` must be one ASCII character other than a quote or newline, found {delimiter:?}"
            )),
        }
    }

    /// Every record in `text`, each as its fields.
    pub(crate) fn records(&self, text: &[u8]) -> Result<Vec<Vec<String>>, String> {
        let mut reader =
            csv::ReaderBuilder::new().has_headers(false).flexible(true).delimiter(self.delimiter).from_reader(text);
        reader
            .records()
            .map(|r| r.map(|rec| rec.iter().map(str::to_string).collect()).map_err(|e| format!("bad CSV: {e}")))
            .collect()
    }

    /// The only record in `text` (a line read from a file).
    pub(crate) fn record(&self, text: &[u8]) -> Result<Vec<String>, String> {
        let mut records = self.records(text)?.into_iter();
        match (records.next(), records.next()) {
            (Some(rec), None) => Ok(rec),
            (None, _) => Err("no CSV record in the line".into()),
            (Some(_), Some(_)) => Err("more than one CSV record in the line".into()),
        }
    }

    /// A record as a value: an object keyed by `columns`, else an array.
    pub(crate) fn to_value(&self, fields: Vec<String>, columns: Option<&Columns>) -> Result<Value, String> {
        let cells = fields.into_iter().map(|f| self.cell(f));
        let Some(columns) = columns else {
            return Ok(cells.collect());
        };
        if columns.0.len() != cells.len() {
            return Err(format!(
                "the record has {} fields, expected {} (one per column)",
                cells.len(),
                columns.0.len()
            ));
        }
        Ok(Value::obj(columns.0.iter().cloned().zip(cells).collect()))
    }

    fn cell(&self, field: String) -> Value {
        if self.infer_types
            && let Some(v) = infer(&field)
        {
            return v;
        }
        value::string(field)
    }

    /// One record (without line terminator) from its fields.
    pub(crate) fn write(&self, fields: &[String]) -> Result<String, String> {
        let mut writer = csv::WriterBuilder::new()
            .delimiter(self.delimiter)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        writer.write_record(fields).map_err(|e| format!("cannot write CSV: {e}"))?;
        let mut line = writer.into_inner().map_err(|e| format!("cannot write CSV: {e}"))?;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        String::from_utf8(line).map_err(|e| format!("cannot write CSV: {e}"))
    }
}

/// Column names, as the object keys they become.
#[derive(Clone, Debug)]
pub(crate) struct Columns(Vec<Value>);

impl Columns {
    /// Names in order; two columns may not share a name.
    pub(crate) fn new(names: &[String]) -> Result<Self, String> {
        if names.is_empty() {
            return Err("`columns` is empty".into());
        }
        if let Some(dup) = names.iter().enumerate().find(|(i, n)| names[..*i].contains(n)).map(|(_, n)| n) {
            return Err(format!("column `{dup}` is named twice"));
        }
        Ok(Columns(names.iter().map(|n| value::string(n.as_str())).collect()))
    }
}

/// A field as a number or boolean, where it reads as one (JSON's number syntax).
fn infer(field: &str) -> Option<Value> {
    match field {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        // serde_json holds to JSON's grammar (no `007`, no `+1`); jaq keeps integers exact.
        _ if field.trim() == field && serde_json::from_str::<serde_json::Number>(field).is_ok() => {
            value::parse_json(field.as_bytes()).ok()
        }
        _ => None,
    }
}

/// The text of a value in a CSV cell: strings as they are, null or missing
/// as an empty cell, bytes as base64, anything else as JSON.
pub(crate) fn cell_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::TStr(s)) => String::from_utf8_lossy(s).into_owned(),
        Some(other) => {
            let json = value::to_json_string(other);
            match other {
                Value::BStr(_) => json.trim_matches('"').to_string(),
                _ => json,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &Value) -> String {
        value::to_json_string(v)
    }

    #[test]
    fn records_split_fields_and_honour_quotes() {
        let csv = Csv::new(",", false).unwrap();
        let recs = csv.records(b"a,\"b,c\",\"say \"\"hi\"\"\"\n1,2\n").unwrap();
        assert_eq!(recs, [vec!["a", "b,c", "say \"hi\""], vec!["1", "2"]]);
    }

    #[test]
    fn record_wants_exactly_one() {
        let csv = Csv::new(";", false).unwrap();
        assert_eq!(csv.record(b"x;y").unwrap(), ["x", "y"]);
        assert!(csv.record(b"").unwrap_err().contains("no CSV record"));
        assert!(csv.record(b"a\nb").unwrap_err().contains("more than one"));
    }

    #[test]
    fn values_are_arrays_or_objects_by_columns() {
        let csv = Csv::new(",", false).unwrap();
        let cols = Columns::new(&["a".into(), "b".into()]).unwrap();
        assert_eq!(json(&csv.to_value(vec!["1".into(), "x".into()], None).unwrap()), r#"["1","x"]"#);
        let obj = csv.to_value(vec!["1".into(), "x".into()], Some(&cols)).unwrap();
        assert_eq!(json(&obj), r#"{"a":"1","b":"x"}"#);
        let err = csv.to_value(vec!["1".into()], Some(&cols)).unwrap_err();
        assert_eq!(err, "the record has 1 fields, expected 2 (one per column)");
    }

    #[test]
    fn infer_types_reads_numbers_and_booleans_only() {
        let csv = Csv::new(",", true).unwrap();
        let fields = ["12", "-1.5", "2e3", "true", "007", "+1", "", "abc", "1 2"];
        let v = csv.to_value(fields.iter().map(|s| s.to_string()).collect(), None).unwrap();
        assert_eq!(json(&v), r#"[12,-1.5,2000.0,true,"007","+1","","abc","1 2"]"#);
    }

    #[test]
    fn delimiter_must_be_one_ascii_character() {
        assert!(Csv::new("\t", false).is_ok());
        for bad in ["", ";;", "\"", "é"] {
            assert!(Csv::new(bad, false).unwrap_err().contains("`delimiter`"), "{bad:?}");
        }
    }

    #[test]
    fn columns_must_be_unique_and_present() {
        assert_eq!(Columns::new(&[]).unwrap_err(), "`columns` is empty");
        assert_eq!(Columns::new(&["a".into(), "a".into()]).unwrap_err(), "column `a` is named twice");
    }

    #[test]
    fn write_quotes_what_needs_it() {
        let csv = Csv::new(",", false).unwrap();
        let line = csv.write(&["a".into(), "b,c".into(), "say \"hi\"".into(), "".into()]).unwrap();
        assert_eq!(line, r#"a,"b,c","say ""hi""","#);
    }

    #[test]
    fn cell_text_of_each_type() {
        let v = value::parse_json(br#"[null, "s", 1.5, true, {"a": 1}]"#).unwrap();
        let Value::Arr(items) = v else { panic!() };
        let cells: Vec<_> = items.iter().map(|v| cell_text(Some(v))).collect();
        assert_eq!(cells, ["", "s", "1.5", "true", r#"{"a":1}"#]);
        assert_eq!(cell_text(None), "");
        assert_eq!(cell_text(Some(&Value::byte_str(vec![0u8, 255]))), "AP8=");
    }
}
