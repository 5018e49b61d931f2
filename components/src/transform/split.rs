//! `split`: one message per element of an array.

use fbp_runtime::jq::Program;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::value::{Value, type_name};
use fbp_runtime::{Acks, BuildContext, ComponentSpec, Delivery, Instance, Kind, Message, Outbox, PortSpec, Transform};
use serde::Deserialize;

/// The `split` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "split",
    summary: "Send one message per element of an array.",
    doc: "Sends each element of the array that `expr` gives (its first output; by default the \
          payload itself) as a message of its own, in order, with the input's metadata. The \
          input is acknowledged once every piece is done; an empty array sends nothing and \
          acknowledges it at once. A message whose `expr` gives no array (or a jq error) goes \
          to `err`.",
    kind: Kind::Transform,
    inputs: &[PortSpec { name: "in", ty: "json", doc: "messages holding an array" }],
    outputs: &[PortSpec { name: "out", ty: "json", doc: "one message per element, with the input's metadata" }],
    config: &[KeySpec::new(
        "expr",
        KeyType::Expr,
        "\".\"",
        "jq expression giving the array to split, e.g. `.readings`; `.` splits the payload itself.",
    )],
    delivery: Delivery::PassThrough,
    acks: Acks::Prompt,
    stateless: true,
    example: "[components.readings]\ntype = \"split\"\nconfig = { expr = \".readings\" }\n",
    build,
    ports: None,
    probe: None,
};

#[derive(Deserialize)]
struct Config {
    expr: String,
}

struct Split {
    program: Program,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    Ok(Instance::transform(Split { program: Program::compile(&config.expr)? }))
}

impl Transform for Split {
    fn process(&mut self, msg: &Message, out: &mut Outbox) -> Result<(), String> {
        match self.program.first(msg)? {
            Some(Value::Arr(items)) => items.iter().for_each(|v| out.send(msg.with_payload(v.clone()))),
            Some(other) => return Err(format!("`expr` gave {}, not an array", type_name(&other))),
            None => return Err("`expr` gave no value, so there is no array to split".into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use fbp_runtime::testing::Harness;
    use fbp_runtime::{Ack, Message, Meta, Outcome, value};
    use serde_json::json;

    #[tokio::test]
    async fn sends_each_element_with_the_input_metadata() {
        let mut h = Harness::new(&super::SPEC, json!({}));
        let mut meta = Meta::new("src".into(), 7);
        meta.topic = Some("t/1".into());
        h.push_message("in", Message::new(value::parse_json(br#"[1, {"a": 2}, "x"]"#).unwrap(), meta));
        h.push_json("[]");
        let out = h.run_to_end().await;
        assert_eq!(out.json("out"), ["1", r#"{"a":2}"#, r#""x""#]);
        for m in out.messages("out") {
            assert_eq!((m.meta.topic.as_deref(), m.meta.seq), (Some("t/1"), 7));
        }
    }

    #[tokio::test]
    async fn splits_what_expr_gives_and_sends_non_arrays_to_err() {
        let mut h = Harness::new(&super::SPEC, json!({"expr": ".readings"}));
        h.push_json(r#"{"readings": [3, 4]}"#);
        h.push_json(r#"{"readings": 5}"#);
        h.push_json(r#"{"other": []}"#);
        let out = h.run_to_end().await;
        assert_eq!(out.json("out"), ["3", "4"]);
        let err = out.json("err");
        assert_eq!(err.len(), 2);
        assert!(err[0].contains("gave number, not an array"), "{}", err[0]);
        assert!(err[1].contains("gave null, not an array"), "{}", err[1]);
    }

    #[tokio::test]
    async fn the_input_is_acknowledged_when_every_piece_is_done() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let mut m = Message::new(value::parse_json(b"[1, 2]").unwrap(), Meta::new("t".into(), 0));
        m.ack = Some(Ack::new(move |o| s.lock().unwrap().push(o)));
        let mut h = Harness::new(&super::SPEC, json!({}));
        h.push_message("in", m);
        let mut out = h.run_to_end().await;
        let mut pieces = std::mem::take(&mut out.ports[0].1);
        assert_eq!(pieces.len(), 2);
        pieces.pop();
        assert!(seen.lock().unwrap().is_empty(), "acknowledged before every piece was done");
        pieces.pop();
        assert_eq!(*seen.lock().unwrap(), [Outcome::Delivered]);
    }
}
