//! From a line of the file to a payload, as `format` says.

use std::collections::BTreeMap;

use fbp_runtime::value::{self, Value};

use super::lines::Line;
use crate::codec::csv::{Columns, Csv};
use crate::codec::envelope::{self, Envelope};

/// What a line gives.
#[derive(Debug)]
pub(super) enum Parsed {
    /// Nothing to send: a blank line, a CSV header.
    Skip,
    /// A payload, with the topic and headers of its envelope where it had one.
    Payload { payload: Value, topic: Option<String>, headers: BTreeMap<String, String> },
}

impl Parsed {
    fn payload(payload: Value) -> Self {
        Parsed::Payload { payload, topic: None, headers: BTreeMap::new() }
    }
}

/// Parses lines of one format; a CSV parser remembers the header.
pub(super) enum Parser {
    /// JSON lines, envelopes unwrapped.
    Json,
    /// Each line as text.
    Lines,
    /// CSV rows as objects.
    Csv {
        /// The codec.
        csv: Csv,
        /// The column names.
        header: Header,
        /// Whether the names come from config (every line is then a row).
        fixed: bool,
    },
}

/// Where a CSV parser stands with its column names.
pub(super) enum Header {
    /// The next non-blank line is the header.
    Wanted,
    /// The names rows are read with.
    Names(Columns),
    /// The file's header could not be used: its rows go to `err` until the file starts again.
    Bad(String),
}

impl Parser {
    /// Parses one line; `Err` is a message error.
    pub(super) fn parse(&mut self, line: &Line) -> Result<Parsed, String> {
        let blank = line.bytes.iter().all(u8::is_ascii_whitespace);
        match self {
            Parser::Lines => match std::str::from_utf8(&line.bytes) {
                Ok(text) => Ok(Parsed::payload(value::string(text))),
                Err(e) => Err(format!("not UTF-8 text: {e}")),
            },
            Parser::Json if blank => Ok(Parsed::Skip),
            Parser::Json => json_line(&line.bytes),
            Parser::Csv { csv, header, fixed } => {
                if line.first && !*fixed {
                    // A file that starts again (new, truncated, rotated) has a header again.
                    *header = Header::Wanted;
                }
                if blank {
                    return Ok(Parsed::Skip);
                }
                csv_line(csv, header, &line.bytes)
            }
        }
    }

    /// Whether this parser still needs a header line.
    pub(super) fn wants_header(&self) -> bool {
        matches!(self, Parser::Csv { header: Header::Wanted, .. })
    }
}

/// A CSV line: the header while one is wanted, else a row.
fn csv_line(csv: &Csv, header: &mut Header, bytes: &[u8]) -> Result<Parsed, String> {
    match header {
        Header::Names(columns) => csv.to_value(csv.record(bytes)?, Some(columns)).map(Parsed::payload),
        Header::Bad(e) => Err(format!("no usable CSV header: {e}")),
        Header::Wanted => match csv.record(bytes).and_then(|names| Columns::new(&names)) {
            Ok(columns) => {
                *header = Header::Names(columns);
                Ok(Parsed::Skip)
            }
            Err(e) => {
                *header = Header::Bad(e.clone());
                Err(format!("bad CSV header: {e}"))
            }
        },
    }
}

/// A JSON line; the wire envelope `{"data": .., "metadata": {..}}` is unwrapped.
fn json_line(bytes: &[u8]) -> Result<Parsed, String> {
    let v = value::parse_json(bytes).map_err(|e| format!("not JSON: {e}"))?;
    Ok(match envelope::unwrap(&v)? {
        Some(Envelope { payload, topic, headers }) => Parsed::Payload { payload, topic, headers },
        None => Parsed::payload(v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, first: bool) -> Line {
        Line { bytes: text.as_bytes().to_vec(), first, too_long: false }
    }

    fn payload(parsed: Parsed) -> String {
        match parsed {
            Parsed::Payload { payload, .. } => value::to_json_string(&payload),
            Parsed::Skip => "skip".into(),
        }
    }

    #[test]
    fn json_lines_parse_and_blank_lines_are_skipped() {
        let mut p = Parser::Json;
        assert_eq!(payload(p.parse(&line(r#"{"a": 1}"#, true)).unwrap()), r#"{"a":1}"#);
        assert_eq!(payload(p.parse(&line("  ", false)).unwrap()), "skip");
        assert!(p.parse(&line("{nope", false)).unwrap_err().starts_with("not JSON"));
    }

    #[test]
    fn envelopes_are_unwrapped_into_payload_topic_and_headers() {
        let env = r#"{"data": {"v": 1}, "metadata": {"topic": "t/1", "source": "x", "headers": {"k": "v", "n": 2}}}"#;
        let Parsed::Payload { payload, topic, headers } = Parser::Json.parse(&line(env, false)).unwrap() else {
            panic!("skipped")
        };
        assert_eq!(value::to_json_string(&payload), r#"{"v":1}"#);
        assert_eq!(topic.as_deref(), Some("t/1"));
        assert_eq!(headers, BTreeMap::from([("k".into(), "v".into()), ("n".into(), "2".into())]));
    }

    #[test]
    fn base64_envelopes_give_bytes_and_other_objects_stay_whole() {
        let env = r#"{"data": "AP8=", "metadata": {"encoding": "base64"}}"#;
        let parsed = Parser::Json.parse(&line(env, false)).unwrap();
        assert!(matches!(parsed, Parsed::Payload { payload: Value::BStr(b), .. } if b[..] == [0, 255]));
        let not_env = r#"{"data": 1, "metadata": {}, "more": true}"#;
        assert_eq!(
            payload(Parser::Json.parse(&line(not_env, false)).unwrap()),
            r#"{"data":1,"metadata":{},"more":true}"#
        );
    }

    #[test]
    fn csv_takes_the_header_from_each_file_start() {
        let mut p = Parser::Csv { csv: Csv::new(",", false).unwrap(), header: Header::Wanted, fixed: false };
        assert!(p.wants_header());
        assert_eq!(payload(p.parse(&line("a,b", true)).unwrap()), "skip");
        assert_eq!(payload(p.parse(&line("1,2", false)).unwrap()), r#"{"a":"1","b":"2"}"#);
        assert!(p.parse(&line("1", false)).unwrap_err().contains("expected 2"));
        assert_eq!(payload(p.parse(&line("x,y,z", true)).unwrap()), "skip");
        assert_eq!(payload(p.parse(&line("1,2,3", false)).unwrap()), r#"{"x":"1","y":"2","z":"3"}"#);
    }

    #[test]
    fn a_bad_csv_header_sends_the_rows_to_err_until_the_file_starts_again() {
        let mut p = Parser::Csv { csv: Csv::new(",", false).unwrap(), header: Header::Wanted, fixed: false };
        assert_eq!(p.parse(&line("a,a", true)).unwrap_err(), "bad CSV header: column `a` is named twice");
        assert_eq!(p.parse(&line("1,2", false)).unwrap_err(), "no usable CSV header: column `a` is named twice");
        assert_eq!(payload(p.parse(&line("a,b", true)).unwrap()), "skip");
        assert_eq!(payload(p.parse(&line("1,2", false)).unwrap()), r#"{"a":"1","b":"2"}"#);
    }

    #[test]
    fn csv_with_columns_reads_every_line_as_a_row() {
        let cols = Columns::new(&["a".into()]).unwrap();
        let mut p = Parser::Csv { csv: Csv::new(",", true).unwrap(), header: Header::Names(cols), fixed: true };
        assert!(!p.wants_header());
        assert_eq!(payload(p.parse(&line("5", true)).unwrap()), r#"{"a":5}"#);
        assert!(p.parse(&line("a,a", true)).is_err());
    }

    #[test]
    fn lines_are_text_and_must_be_utf8() {
        let mut p = Parser::Lines;
        assert_eq!(payload(p.parse(&line("", false)).unwrap()), r#""""#);
        let bad = Line { bytes: vec![0xff], first: false, too_long: false };
        assert!(p.parse(&bad).unwrap_err().starts_with("not UTF-8"));
    }
}
