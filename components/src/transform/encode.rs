//! `encode`: payloads into JSON text, CSV lines or plain text.

use fbp_runtime::spec::{KeySpec, KeyType, Port};
use fbp_runtime::value::{self, Json, Value};
use fbp_runtime::{Acks, BuildContext, ComponentSpec, Delivery, Instance, Kind, Message, Outbox, PortSpec, Transform};
use serde::Deserialize;

use crate::codec::csv::{Csv, cell_text};

/// The `encode` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "encode",
    summary: "Encode payloads as JSON text, CSV lines or plain text.",
    doc: "Turns each payload into text (bytes with `as_bytes`), the reverse of `decode`. \
          `json`: the payload as JSON, on one line unless `pretty` (bytes payloads become base64 \
          strings). `csv`: one CSV record, without line terminator, from an object (the fields \
          named by `columns`, in that order; a missing or null field is an empty cell) or from an \
          array (its items in order; `columns` does not apply); strings are written as they are, \
          other values as JSON. `text`: a string payload stays as it is, bytes that are UTF-8 \
          become text, anything else becomes its JSON text. A payload the format cannot take (a \
          number for csv, bytes that are not UTF-8 for text) goes to `err`; the metadata is kept.",
    kind: Kind::Transform,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "payloads to encode" }],
    outputs: &[PortSpec {
        name: "out",
        ty: "text",
        doc: "the encoded payloads: text, or bytes with `as_bytes = true`",
    }],
    config: &[
        KeySpec::new(
            "format",
            KeyType::Enum(&["json", "csv", "text"]),
            "\"json\"",
            "What to write: `json` text, one `csv` record, or `text` (strings as they are, the rest as JSON).",
        ),
        KeySpec::new("pretty", KeyType::Bool, "false", "json: indent over several lines instead of one line."),
        KeySpec::optional(
            "columns",
            KeyType::StringList,
            "csv (required): the object fields to write, in order, e.g. `[\"sensor\", \"value\"]`.",
        ),
        KeySpec::new(
            "delimiter",
            KeyType::String,
            "\",\"",
            "csv: the field separator, one ASCII character (`\"\\t\"` for tabs).",
        ),
        KeySpec::new("as_bytes", KeyType::Bool, "false", "Emit bytes instead of text (the out-port is then `bytes`)."),
    ],
    delivery: Delivery::PassThrough,
    acks: Acks::Prompt,
    stateless: true,
    example: "[components.to_csv]\ntype = \"encode\"\nconfig = { format = \"csv\", columns = [\"sensor\", \"value\"] }\n",
    build,
    ports: Some(ports),
    probe: None,
};

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Format {
    #[default]
    Json,
    Csv,
    Text,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    format: Format,
    #[serde(default)]
    pretty: bool,
    columns: Option<Vec<String>>,
    #[serde(default = "comma")]
    delimiter: String,
    #[serde(default)]
    as_bytes: bool,
}

fn comma() -> String {
    ",".into()
}

/// `text`, or `bytes` with `as_bytes = true`.
fn ports(config: &serde_json::Value) -> (Vec<Port>, Vec<Port>) {
    let as_bytes = config.get("as_bytes").and_then(serde_json::Value::as_bool).unwrap_or(false);
    let inputs = SPEC.inputs.iter().map(Port::from).collect();
    (inputs, vec![Port { name: "out".into(), ty: if as_bytes { "bytes" } else { "text" }.into() }])
}

enum Encoding {
    Json { pretty: bool },
    Csv { csv: Csv, columns: Vec<String> },
    Text,
}

struct Encode {
    encoding: Encoding,
    as_bytes: bool,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    let encoding = match config.format {
        Format::Json => Encoding::Json { pretty: config.pretty },
        Format::Text => Encoding::Text,
        Format::Csv => {
            let columns = config.columns.ok_or(
                "format = \"csv\" needs `columns`, the object fields to write in order, e.g. `columns = [\"sensor\", \"value\"]`",
            )?;
            crate::codec::csv::Columns::new(&columns)?;
            Encoding::Csv { csv: Csv::new(&config.delimiter, false)?, columns }
        }
    };
    Ok(Instance::transform(Encode { encoding, as_bytes: config.as_bytes }))
}

impl Transform for Encode {
    fn process(&mut self, msg: &Message, out: &mut Outbox) -> Result<(), String> {
        let text = match &self.encoding {
            Encoding::Json { pretty } => json_text(&msg.payload, *pretty),
            Encoding::Csv { csv, columns } => csv_line(csv, columns, &msg.payload)?,
            Encoding::Text => match &msg.payload {
                Value::TStr(s) => {
                    let payload = if self.as_bytes { Value::byte_str((**s).clone()) } else { msg.payload.clone() };
                    out.send(msg.with_payload(payload));
                    return Ok(());
                }
                Value::BStr(b) => std::str::from_utf8(b)
                    .map_err(|e| format!("bytes are not UTF-8 text ({e}); use format = \"json\" for base64"))?
                    .to_string(),
                other => value::to_json_string(other),
            },
        };
        let payload = if self.as_bytes { Value::byte_str(text.into_bytes()) } else { value::string(text) };
        out.send(msg.with_payload(payload));
        Ok(())
    }
}

fn json_text(v: &Value, pretty: bool) -> String {
    if pretty {
        serde_json::to_string_pretty(&Json(v)).unwrap_or_else(|_| "null".into())
    } else {
        value::to_json_string(v)
    }
}

fn csv_line(csv: &Csv, columns: &[String], v: &Value) -> Result<String, String> {
    let cells: Vec<String> = match v {
        Value::Obj(_) => columns.iter().map(|c| cell_text(value::get(v, c))).collect(),
        Value::Arr(items) => items.iter().map(|i| cell_text(Some(i))).collect(),
        other => return Err(format!("csv needs an object or an array, found {}", value::type_name(other))),
    };
    csv.write(&cells)
}

#[cfg(test)]
mod tests {
    use fbp_runtime::testing::{Harness, Output};
    use fbp_runtime::value::{self, Value};
    use serde_json::json;

    async fn encode(config: serde_json::Value, payloads: Vec<Value>) -> Output {
        Harness::run_payloads(&super::SPEC, config, payloads).await
    }

    fn parse(s: &str) -> Value {
        value::parse_json(s.as_bytes()).unwrap()
    }

    /// The text of each payload sent on `out`, checking it is text.
    fn texts(out: &Output) -> Vec<String> {
        out.payloads("out")
            .iter()
            .map(|p| match p {
                Value::TStr(s) => String::from_utf8(s.to_vec()).unwrap(),
                other => panic!("not text: {other:?}"),
            })
            .collect()
    }

    fn errors(out: &Output) -> Vec<String> {
        out.payloads("err").iter().map(|e| value::as_str(value::get(e, "error").unwrap()).unwrap().into()).collect()
    }

    #[tokio::test]
    async fn json_writes_one_line_or_pretty() {
        let out = encode(json!({}), vec![parse(r#"{"a": [1, "x"]}"#), parse(r#""s""#)]).await;
        assert_eq!(texts(&out), [r#"{"a":[1,"x"]}"#, r#""s""#]);
        let out = encode(json!({"pretty": true}), vec![parse(r#"{"a": 1}"#)]).await;
        assert_eq!(texts(&out), ["{\n  \"a\": 1\n}"]);
    }

    #[tokio::test]
    async fn csv_writes_objects_by_columns_and_arrays_as_they_are() {
        let config = json!({"format": "csv", "columns": ["sensor", "value", "note"]});
        let payloads = vec![
            parse(r#"{"value": 21.5, "sensor": "s,1", "extra": true}"#),
            parse(r#"["a", 2, null, {"b": 1}]"#),
            parse("42"),
        ];
        let out = encode(config, payloads).await;
        assert_eq!(texts(&out), [r#""s,1",21.5,"#, r#"a,2,,"{""b"":1}""#]);
        assert_eq!(errors(&out), ["csv needs an object or an array, found number"]);
    }

    #[tokio::test]
    async fn csv_needs_columns_at_build() {
        let err = encode(json!({"format": "csv"}), vec![]).await.result.unwrap().unwrap_err().0;
        assert!(err.contains("needs `columns`"), "{err}");
    }

    #[tokio::test]
    async fn text_keeps_strings_and_writes_the_rest_as_json() {
        let payloads =
            vec![parse(r#""plain""#), Value::byte_str(b"raw".to_vec()), parse("[1]"), Value::byte_str(vec![0xff])];
        let out = encode(json!({"format": "text"}), payloads).await;
        assert_eq!(texts(&out), ["plain", "raw", "[1]"]);
        assert!(errors(&out)[0].starts_with("bytes are not UTF-8"));
    }

    #[tokio::test]
    async fn as_bytes_emits_bytes_and_types_the_port() {
        let out = encode(json!({"format": "text", "as_bytes": true}), vec![parse(r#""hi""#), parse("{}")]).await;
        let bytes: Vec<_> = out.payloads("out").iter().map(|p| matches!(p, Value::BStr(_))).collect();
        assert_eq!(bytes, [true, true]);
        assert_eq!(value::as_str(&out.payloads("out")[1]).unwrap(), "{}");
        let ty = |config| super::SPEC.resolve_ports(&config).1[0].ty.clone();
        assert_eq!(ty(json!({"as_bytes": true})), "bytes");
        assert_eq!(ty(json!({})), "text");
    }

    #[tokio::test]
    async fn metadata_is_kept() {
        let out = encode(json!({}), vec![parse("1")]).await;
        assert_eq!(&*out.messages("out")[0].meta.source, "test");
    }
}
