//! `decode`: bytes or text into JSON, CSV records, text or bytes.

use fbp_runtime::spec::{KeySpec, KeyType, Port};
use fbp_runtime::value::{self, Value};
use fbp_runtime::{Acks, BuildContext, ComponentSpec, Delivery, Instance, Kind, Message, Outbox, PortSpec, Transform};
use serde::Deserialize;

use crate::codec::csv::{Columns, Csv};
use crate::codec::{raw_bytes, utf8_text};

/// The `decode` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "decode",
    summary: "Decode bytes or text payloads: JSON, CSV, UTF-8 text or raw bytes.",
    doc: "Reads each bytes or text payload as `format` says. `json`: the payload is one JSON \
          document. `csv`: each CSV record in the payload (usually one line) becomes a message, an \
          object keyed by `columns` when set, else an array; fields that read as numbers or booleans are typed \
          unless `infer_types = false`. `text`: bytes become UTF-8 text. `bytes`: text becomes bytes. The \
          out-port's type follows the format (`json`, `object` or `array`, `text`, `bytes`). A \
          payload that does not decode (bad JSON, bad CSV, a record whose field count differs from \
          `columns`, invalid UTF-8) or that is not bytes or text goes to `err` with the reason; \
          the metadata is kept.",
    kind: Kind::Transform,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "bytes or text payloads to decode" }],
    outputs: &[PortSpec {
        name: "out",
        ty: "json",
        doc: "decoded payloads; the type follows `format`: json, object (csv with `columns`), array (csv), text or bytes",
    }],
    config: &[
        KeySpec::new(
            "format",
            KeyType::Enum(&["json", "csv", "text", "bytes"]),
            "\"json\"",
            "How to read the payload: `json`, `csv` (one message per record), `text` (UTF-8) or `bytes`.",
        ),
        KeySpec::optional(
            "columns",
            KeyType::StringList,
            "csv: the field names, in order; each record becomes an object. Unset: an array of strings.",
        ),
        KeySpec::new(
            "infer_types",
            KeyType::Bool,
            "true",
            "csv: turn fields that read as JSON numbers or `true`/`false` into numbers and booleans \
             (`007` and `+1` stay strings); `false` keeps every field a string.",
        ),
        KeySpec::new(
            "delimiter",
            KeyType::String,
            "\",\"",
            "csv: the field separator, one ASCII character (`\"\\t\"` for tabs).",
        ),
    ],
    delivery: Delivery::PassThrough,
    acks: Acks::Prompt,
    stateless: true,
    example: "[components.parse]\ntype = \"decode\"\nconfig = { format = \"csv\", columns = [\"sensor\", \"value\"] }\n",
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
    Bytes,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    format: Format,
    columns: Option<Vec<String>>,
    #[serde(default)]
    infer_types: bool,
    #[serde(default = "comma")]
    delimiter: String,
}

fn comma() -> String {
    ",".into()
}

/// The out-port's type for this config.
fn ports(config: &serde_json::Value) -> (Vec<Port>, Vec<Port>) {
    let config: Option<Config> = serde_json::from_value(config.clone()).ok();
    let ty = match config {
        Some(Config { format: Format::Csv, columns: Some(_), .. }) => "object",
        Some(Config { format: Format::Csv, .. }) => "array",
        Some(Config { format: Format::Text, .. }) => "text",
        Some(Config { format: Format::Bytes, .. }) => "bytes",
        _ => "json",
    };
    let inputs = SPEC.inputs.iter().map(Port::from).collect();
    (inputs, vec![Port { name: "out".into(), ty: ty.into() }])
}

enum Decode {
    Json,
    Csv(Csv, Option<Columns>),
    Text,
    Bytes,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    Ok(Instance::transform(match config.format {
        Format::Json => Decode::Json,
        Format::Text => Decode::Text,
        Format::Bytes => Decode::Bytes,
        Format::Csv => {
            let columns = config.columns.as_deref().map(Columns::new).transpose()?;
            Decode::Csv(Csv::new(&config.delimiter, config.infer_types)?, columns)
        }
    }))
}

impl Transform for Decode {
    fn process(&mut self, msg: &Message, out: &mut Outbox) -> Result<(), String> {
        let raw = raw_bytes(&msg.payload)?;
        let payload = match self {
            Decode::Json => value::parse_json(raw).map_err(|e| format!("not JSON: {e}"))?,
            Decode::Text => utf8_text(raw)?,
            Decode::Bytes => Value::byte_str(raw.clone()),
            Decode::Csv(csv, columns) => {
                // Every record decodes before any is sent: a bad one sends the whole payload to `err`.
                let records = csv.records(raw)?;
                if records.is_empty() {
                    return Err("no CSV record in the payload".into());
                }
                let values: Vec<Value> =
                    records.into_iter().map(|r| csv.to_value(r, columns.as_ref())).collect::<Result<_, _>>()?;
                values.into_iter().for_each(|v| out.send(msg.with_payload(v)));
                return Ok(());
            }
        };
        out.send(msg.with_payload(payload));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use fbp_runtime::testing::{Harness, Output};
    use fbp_runtime::value::{self, Value};
    use serde_json::json;

    async fn decode(config: serde_json::Value, payloads: Vec<Value>) -> Output {
        Harness::run_payloads(&super::SPEC, config, payloads).await
    }

    fn text(s: &str) -> Value {
        value::string(s)
    }

    fn bytes(b: &[u8]) -> Value {
        Value::byte_str(b.to_vec())
    }

    fn errors(out: &Output) -> Vec<String> {
        out.payloads("err").iter().map(|e| value::as_str(value::get(e, "error").unwrap()).unwrap().into()).collect()
    }

    #[tokio::test]
    async fn json_parses_text_and_bytes_and_routes_bad_json() {
        let out = decode(json!({}), vec![text(r#"{"a": [1, 2]}"#), bytes(b"3.5"), text("{oops"), value::int(1)]).await;
        assert_eq!(out.json("out"), [r#"{"a":[1,2]}"#, "3.5"]);
        let errs = errors(&out);
        assert!(errs[0].starts_with("not JSON:"), "{}", errs[0]);
        assert_eq!(errs[1], "expected bytes or text, found number");
        assert!(out.json("err")[0].contains(r#""data":"{oops""#));
    }

    #[tokio::test]
    async fn csv_without_columns_gives_arrays_typed_unless_asked_not_to() {
        let out = decode(json!({"format": "csv"}), vec![text("a,1,\"x,y\"\n"), bytes(b"b,2")]).await;
        assert_eq!(out.json("out"), [r#"["a",1,"x,y"]"#, r#"["b",2]"#]);
        let out = decode(json!({"format": "csv", "infer_types": false}), vec![text("a,1")]).await;
        assert_eq!(out.json("out"), [r#"["a","1"]"#]);
    }

    #[tokio::test]
    async fn csv_with_columns_gives_objects_with_typed_fields() {
        let config = json!({"format": "csv", "columns": ["sensor", "value"]});
        let out = decode(config, vec![text("s1,21.5"), text("s2,true"), text("only-one")]).await;
        assert_eq!(out.json("out"), [r#"{"sensor":"s1","value":21.5}"#, r#"{"sensor":"s2","value":true}"#]);
        assert_eq!(errors(&out), ["the record has 1 fields, expected 2 (one per column)"]);
    }

    #[tokio::test]
    async fn csv_sends_each_record_of_a_payload_or_none_of_them() {
        let config = json!({"format": "csv", "columns": ["a", "b"], "delimiter": ";"});
        let out = decode(config, vec![text("1;2\n3;4\n"), text("5;6\n7\n"), text("")]).await;
        assert_eq!(out.json("out"), [r#"{"a":1,"b":2}"#, r#"{"a":3,"b":4}"#]);
        assert_eq!(errors(&out).len(), 2);
        assert_eq!(errors(&out)[1], "no CSV record in the payload");
    }

    #[tokio::test]
    async fn text_checks_utf8_and_bytes_converts_text() {
        let out = decode(json!({"format": "text"}), vec![bytes("héllo".as_bytes()), bytes(b"\xff")]).await;
        assert!(matches!(out.payloads("out")[..], [Value::TStr(_)]));
        assert_eq!(out.json("out"), [r#""héllo""#]);
        assert!(errors(&out)[0].starts_with("not UTF-8 text"));
        let out = decode(json!({"format": "bytes"}), vec![text("hi")]).await;
        assert!(matches!(&out.payloads("out")[..], [Value::BStr(b)] if &b[..] == b"hi"));
    }

    #[tokio::test]
    async fn metadata_is_kept() {
        let out = decode(json!({}), vec![text("1")]).await;
        assert_eq!(out.messages("out")[0].meta.seq, 0);
        assert_eq!(&*out.messages("out")[0].meta.source, "test");
    }

    #[test]
    fn out_port_type_follows_the_format() {
        let ty = |config| super::SPEC.resolve_ports(&config).1[0].ty.clone();
        assert_eq!(ty(json!({"format": "json"})), "json");
        assert_eq!(ty(json!({"format": "csv"})), "array");
        assert_eq!(ty(json!({"format": "csv", "columns": ["a"]})), "object");
        assert_eq!(ty(json!({"format": "text"})), "text");
        assert_eq!(ty(json!({"format": "bytes"})), "bytes");
        assert_eq!(ty(json!({})), "json");
    }

    #[tokio::test]
    async fn bad_csv_config_fails_at_build() {
        for (config, want) in [
            (json!({"format": "csv", "delimiter": "::"}), "`delimiter`"),
            (json!({"format": "csv", "columns": ["a", "a"]}), "named twice"),
        ] {
            let err = decode(config, vec![]).await.result.unwrap().unwrap_err().0;
            assert!(err.contains(want), "{err}");
        }
    }
}
