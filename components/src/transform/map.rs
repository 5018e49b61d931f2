//! `map`: a jq program over each payload.

use fbp_runtime::jq::Program;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::{Acks, BuildContext, ComponentSpec, Delivery, Instance, Kind, Message, Outbox, PortSpec, Transform};
use serde::Deserialize;

/// The `map` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "map",
    summary: "Transform each payload with a jq program.",
    doc: "Runs a jq program on each payload (`.` is the payload, `$meta` the metadata) and sends \
          every output as a message with the input's metadata. No output drops the message; \
          a jq error sends it to `err`.",
    kind: Kind::Transform,
    inputs: &[PortSpec { name: "in", ty: "json", doc: "payloads to transform" }],
    outputs: &[PortSpec { name: "out", ty: "json", doc: "the program's outputs" }],
    config: &[KeySpec::required("expr", KeyType::Expr, "The jq program, e.g. `{sensor, celsius: .value}`.")],
    delivery: Delivery::PassThrough,
    acks: Acks::Prompt,
    stateless: true,
    example: "[components.celsius]\ntype = \"map\"\nconfig = { expr = \"{sensor, f: (.value * 9 / 5 + 32)}\" }\n",
    build,
    ports: None,
    probe: None,
};

#[derive(Deserialize)]
struct Config {
    expr: String,
}

struct Map {
    program: Program,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    Ok(Instance::transform(Map { program: Program::compile(&config.expr)? }))
}

impl Transform for Map {
    fn process(&mut self, msg: &Message, out: &mut Outbox) -> Result<(), String> {
        self.program.each(msg, |v| {
            out.send(msg.with_payload(v));
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use fbp_runtime::testing::Harness;
    use serde_json::json;

    #[tokio::test]
    async fn maps_each_payload_and_routes_jq_errors() {
        let mut h = Harness::new(&super::SPEC, json!({"expr": ".value + 1"}));
        h.push_json(r#"{"value": 2}"#);
        h.push_json(r#"{"value": "x"}"#);
        h.push_json(r#"{"value": 5}"#);
        let out = h.run_to_end().await;
        assert_eq!(out.json("out"), ["3", "6"]);
        let err = out.json("err");
        assert_eq!(err.len(), 1);
        assert!(err[0].contains("\"data\":{\"value\":\"x\"}"), "{}", err[0]);
    }
}
