//! `filter`: keep the messages a jq condition holds for.

use fbp_runtime::jq::Program;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::value::truthy;
use fbp_runtime::{Acks, BuildContext, ComponentSpec, Delivery, Instance, Kind, Message, Outbox, PortSpec, Transform};
use serde::Deserialize;

/// The `filter` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "filter",
    summary: "Keep messages for which a jq condition is true.",
    doc: "Evaluates a jq condition on each payload; a message whose first output is neither \
          `false` nor `null` passes unchanged, the others are dropped (and acknowledged). \
          A jq error sends the message to `err`.",
    kind: Kind::Transform,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "messages to test" }],
    outputs: &[PortSpec { name: "out", ty: "same", doc: "the messages that pass, unchanged" }],
    config: &[KeySpec::required("expr", KeyType::Expr, "The condition, e.g. `.avg > 28`.")],
    delivery: Delivery::PassThrough,
    acks: Acks::Prompt,
    stateless: true,
    example: "[components.hot]\ntype = \"filter\"\nconfig = { expr = \".avg > 28\" }\n",
    build,
    ports: None,
    probe: None,
};

#[derive(Deserialize)]
struct Config {
    expr: String,
}

struct Filter {
    program: Program,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    Ok(Instance::transform(Filter { program: Program::compile(&config.expr)? }))
}

impl Transform for Filter {
    fn process(&mut self, msg: &Message, out: &mut Outbox) -> Result<(), String> {
        if self.program.first(msg)?.as_ref().is_some_and(truthy) {
            out.send(msg.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use fbp_runtime::testing::Harness;
    use serde_json::json;

    #[tokio::test]
    async fn keeps_only_matching_messages() {
        let mut h = Harness::new(&super::SPEC, json!({"expr": ".avg > 28"}));
        for avg in [20, 30, 29, 10] {
            h.push_json(&format!(r#"{{"avg": {avg}}}"#));
        }
        let out = h.run_to_end().await;
        assert_eq!(out.json("out"), [r#"{"avg":30}"#, r#"{"avg":29}"#]);
        assert!(out.messages("err").is_empty());
    }
}
