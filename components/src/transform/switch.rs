//! `switch`: route each message to the out-port of the first case it matches.
//!
//! The out-ports come from the config (`cases`), so the declaration has a
//! `ports` function; the index of a case in `cases` is the index of its
//! out-port, and `default` follows the last case.

use fbp_runtime::jq::Program;
use fbp_runtime::spec::{KeySpec, KeyType, Port};
use fbp_runtime::value::truthy;
use fbp_runtime::{Acks, BuildContext, ComponentSpec, Delivery, Instance, Kind, Message, Outbox, PortSpec, Transform};
use serde_json::Value as Json;

/// The `switch` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "switch",
    summary: "Route each message to the out-port of the first case it matches.",
    doc: "Evaluates the jq condition of each case in `cases`, in order, on each payload, and sends \
          the message unchanged to the out-port of the first case whose condition gives neither \
          `false` nor `null`; a message no case matches goes to `default`. Each case adds an \
          out-port named by its `port`, before `default`. A jq error sends the message to `err`.",
    kind: Kind::Transform,
    inputs: &[INPUT],
    outputs: &[DEFAULT],
    config: &[KeySpec::required(
        "cases",
        KeyType::Any,
        "The routes, tried in order: an array of `{ port = \"NAME\", expr = \"CONDITION\" }`. Each \
         `port` names a new out-port (letters, digits, `_` and `-`; unique; not `default` or `err`), \
         each `expr` is a jq condition such as `.value > 28`.",
    )],
    delivery: Delivery::PassThrough,
    acks: Acks::Prompt,
    stateless: true,
    example: "[components.route]\ntype = \"switch\"\nconfig = { cases = [{ port = \"hot\", expr = \".value > 28\" }, { port = \"cold\", expr = \".value < 5\" }] }\n",
    build,
    ports: Some(ports),
    probe: None,
};

const INPUT: PortSpec = PortSpec { name: "in", ty: "json", doc: "messages to route" };

const DEFAULT: PortSpec = PortSpec {
    name: "default",
    ty: "same",
    doc: "messages no case matches, unchanged (each case adds a port before it)",
};

/// Port names a case may not take.
const RESERVED: [&str; 2] = ["default", "err"];

/// `in`, then one out-port per case in order, then `default`.
fn ports(config: &Json) -> (Vec<Port>, Vec<Port>) {
    let mut outputs: Vec<Port> = Vec::new();
    for name in case_ports(config) {
        if !RESERVED.contains(&name) && !outputs.iter().any(|p| &*p.name == name) {
            outputs.push(Port { name: name.into(), ty: "same".into() });
        }
    }
    outputs.push(Port::from(&DEFAULT));
    (vec![Port::from(&INPUT)], outputs)
}

/// The `port` of every case that has one, however malformed the rest.
fn case_ports(config: &Json) -> impl Iterator<Item = &str> {
    let cases = config.get("cases").and_then(Json::as_array).map(Vec::as_slice).unwrap_or_default();
    cases.iter().filter_map(|c| c.get("port")?.as_str())
}

struct Switch {
    /// One program per case; case `i` sends on out-port `i`.
    cases: Vec<Program>,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let cases = ctx.config.get("cases").ok_or("`switch` needs `cases`")?;
    Ok(Instance::transform(Switch { cases: parse_cases(cases)? }))
}

/// Compiles every case, or reports every mistake at once.
fn parse_cases(cases: &Json) -> Result<Vec<Program>, String> {
    let Some(cases) = cases.as_array().filter(|c| !c.is_empty()) else {
        return Err("`cases` must be a non-empty array of `{ port = \"NAME\", expr = \"CONDITION\" }`".into());
    };
    let mut programs = Vec::new();
    let mut names = Vec::new();
    let mut errors = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        match parse_case(case, &mut names) {
            Ok(program) => programs.push(program),
            Err(e) => errors.push(format!("case {}: {e}", i + 1)),
        }
    }
    if errors.is_empty() { Ok(programs) } else { Err(format!("bad `cases`: {}", errors.join("; "))) }
}

/// Compiles one case; its port name joins `names` once it is valid. A bad
/// port name and a bad `expr` are reported together.
fn parse_case<'a>(case: &'a Json, names: &mut Vec<&'a str>) -> Result<Program, String> {
    let Some(table) = case.as_object() else {
        return Err("must be a table `{ port = \"NAME\", expr = \"CONDITION\" }`".into());
    };
    if let Some(unknown) = table.keys().find(|k| !matches!(k.as_str(), "port" | "expr")) {
        return Err(format!("unknown key `{unknown}`; a case has `port` and `expr`"));
    }
    let name = port_name(case.get("port"), names);
    if let Ok(name) = name {
        names.push(name);
    }
    let program = match case.get("expr").and_then(Json::as_str) {
        Some(expr) => Program::compile(expr).map_err(|e| format!("`expr`: {e}")),
        None => Err("needs `expr`, a jq condition such as `.value > 28`".into()),
    };
    match (name, program) {
        (Ok(_), Ok(program)) => Ok(program),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
        (Err(a), Err(b)) => Err(format!("{a}, and {b}")),
    }
}

fn port_name<'a>(port: Option<&'a Json>, taken: &[&str]) -> Result<&'a str, String> {
    let name = port.and_then(Json::as_str).ok_or("needs `port`, the name of its out-port")?;
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(format!("port name `{name}` must start with a letter and hold only letters, digits, `_` and `-`"));
    }
    if RESERVED.contains(&name) {
        return Err(format!("port name `{name}` is reserved; choose another"));
    }
    if taken.contains(&name) {
        return Err(format!("port name `{name}` is used by an earlier case"));
    }
    Ok(name)
}

impl Transform for Switch {
    fn process(&mut self, msg: &Message, out: &mut Outbox) -> Result<(), String> {
        let port = self.route(msg)?;
        out.send_to(port, msg.clone());
        Ok(())
    }
}

impl Switch {
    /// The index of the out-port `msg` goes to: its first matching case, else `default`.
    fn route(&self, msg: &Message) -> Result<usize, String> {
        for (i, case) in self.cases.iter().enumerate() {
            if case.first(msg)?.as_ref().is_some_and(truthy) {
                return Ok(i);
            }
        }
        Ok(self.cases.len())
    }
}

#[cfg(test)]
mod tests {
    use fbp_runtime::testing::Harness;
    use serde_json::json;

    fn cases() -> serde_json::Value {
        json!({"cases": [{"port": "hot", "expr": ".value > 28"}, {"port": "warm", "expr": ".value > 20"}]})
    }

    #[test]
    fn ports_follow_the_cases_then_default() {
        let (inputs, outputs) = super::SPEC.resolve_ports(&cases());
        assert_eq!(inputs.iter().map(|p| &*p.name).collect::<Vec<_>>(), ["in"]);
        assert_eq!(outputs.iter().map(|p| &*p.name).collect::<Vec<_>>(), ["hot", "warm", "default", "err"]);
        assert!(outputs[..3].iter().all(|p| p.ty == "same"));
    }

    #[test]
    fn ports_of_a_malformed_config_never_panic() {
        for config in
            [json!({}), json!({"cases": 3}), json!({"cases": [1, {"port": "err"}, {"port": "a"}, {"port": "a"}]})]
        {
            let (_, outputs) = super::SPEC.resolve_ports(&config);
            let names: Vec<_> = outputs.iter().map(|p| p.name.to_string()).collect();
            assert!(names.ends_with(&["default".into(), "err".into()]), "{names:?}");
        }
    }

    #[tokio::test]
    async fn first_matching_case_wins_and_the_rest_go_to_default() {
        let mut h = Harness::new(&super::SPEC, cases());
        for v in [30, 25, 10, 29] {
            h.push_json(&format!(r#"{{"value": {v}}}"#));
        }
        let out = h.run_to_end().await;
        assert!(matches!(out.result, Some(Ok(()))));
        assert_eq!(out.json("hot"), [r#"{"value":30}"#, r#"{"value":29}"#]);
        assert_eq!(out.json("warm"), [r#"{"value":25}"#]);
        assert_eq!(out.json("default"), [r#"{"value":10}"#]);
    }

    #[tokio::test]
    async fn a_jq_error_sends_the_message_to_err() {
        let mut h = Harness::new(&super::SPEC, json!({"cases": [{"port": "big", "expr": ".value + 1 > 2"}]}));
        h.push_json(r#"{"value": "x"}"#);
        h.push_json(r#"{"value": 5}"#);
        let out = h.run_to_end().await;
        assert_eq!(out.json("big"), [r#"{"value":5}"#]);
        let err = out.json("err");
        assert_eq!(err.len(), 1);
        assert!(err[0].contains("jq error") && err[0].contains(r#""data":{"value":"x"}"#), "{}", err[0]);
    }

    async fn build_error(config: serde_json::Value) -> String {
        let mut h = Harness::new(&super::SPEC, config);
        h.run_to_end().await.result.unwrap().unwrap_err().0
    }

    #[tokio::test]
    async fn bad_cases_are_build_errors_reported_together() {
        let cases = json!({"cases": [
            {"port": "a", "expr": ".x >"},
            {"port": "default", "expr": ".x >"},
            {"expr": ".y"},
            {"port": "a", "expr": "true"},
            {"port": "default", "expr": "true"},
            {"port": "err", "expr": "true"},
            {"port": "b c", "expr": "true"},
            {"port": "d"},
            {"port": "e", "expr": "true", "when": 1},
            "f",
        ]});
        let err = build_error(cases).await;
        for want in [
            "case 1: `expr`: invalid jq program",
            "case 2: port name `default` is reserved; choose another, and `expr`: invalid jq program",
            "case 3: needs `port`",
            "case 4: port name `a` is used by an earlier case",
            "case 5: port name `default` is reserved",
            "case 6: port name `err` is reserved",
            "case 7: port name `b c` must start with a letter",
            "case 8: needs `expr`",
            "case 9: unknown key `when`",
            "case 10: must be a table",
        ] {
            assert!(err.contains(want), "missing {want:?} in {err}");
        }
        let err = build_error(json!({"cases": []})).await;
        assert!(err.contains("non-empty array"), "{err}");
    }
}
