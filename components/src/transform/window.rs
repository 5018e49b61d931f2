//! `window`: aggregate a numeric field over time or count windows, per group.
//!
//! - `state`: the aggregation state machine, which reads no clock;
//! - `run`: the async loop that feeds it messages and timer ticks and sends
//!   what it emits.
//!
//! Windows are in processing time: a message counts at the moment `window`
//! takes it in.

mod run;
mod state;

use std::time::Duration;

use fbp_runtime::spec::{KeySpec, KeyType, config_duration};
use fbp_runtime::units::parse_duration;
use fbp_runtime::{Acks, BuildContext, ComponentSpec, Context, Delivery, Instance, Kind, PortSpec, Task, TaskFuture};
use serde::Deserialize;

use self::run::Clock;
use self::state::{Agg, Bounds, Layout, Shape, Windows};

/// The `window` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "window",
    summary: "Aggregate a numeric field over time or count windows, per group.",
    doc: "Collects the number in `field` of each message, per value of `group_by`, and emits \
          per group and window `{<group_by>: .., \"avg\": .., \"min\": .., \"max\": .., \
          \"count\": .., \"window_start\": .., \"window_end\": ..}` with the `aggregates` asked \
          for (`count` always). `every` alone makes tumbling windows of that length, `every` \
          with `size` sliding windows of length `size` emitted every `every`; both are in \
          processing time, aligned to multiples of `every`, and a window with no message emits \
          nothing. `count = N` instead emits a group's window every N of its messages. A message \
          whose field is missing or not a number goes to `err`. Partial windows are flushed when \
          the input ends, when a count window has been idle for `idle_timeout`, and for the group \
          seen first when a new one would pass `max_groups`. With `ack = \"on_fold\"` (the default) a message is acknowledged as soon \
          as it is folded into the window's state, so the source's broker never waits on a window \
          period; an open window is then lost on a crash (its messages were acknowledged, its \
          result not yet written). With \
          `ack = \"on_emit\"` each output carries its inputs' acknowledgements, which are settled \
          when the result is delivered: nothing is lost on a crash, but the source must afford \
          to leave a whole window period unacknowledged (an MQTT broker sends only 20 \
          unacknowledged messages by default).",
    kind: Kind::Transform,
    inputs: &[PortSpec { name: "in", ty: "object", doc: "records holding the number to aggregate" }],
    outputs: &[PortSpec {
        name: "out",
        ty: "{ count = \"number\", window_start = \"string\", window_end = \"string\" }",
        doc: "one record per group and window: the group, the aggregates, `count`, and the window's \
              start and end (RFC 3339, UTC, milliseconds)",
    }],
    config: &[
        KeySpec::optional(
            "every",
            KeyType::Duration,
            "Time windows: the length of a tumbling window, or how often a sliding window is \
             emitted. Windows end at multiples of it. Set this or `count`.",
        ),
        KeySpec::optional(
            "size",
            KeyType::Duration,
            "Sliding windows: the length of each window, a multiple of `every` (e.g. `every = \
             \"10s\"`, `size = \"1m\"`: the last minute, every 10 seconds). Unset: tumbling.",
        ),
        KeySpec::optional(
            "count",
            KeyType::Integer,
            "Count windows: emit a group's window every `count` messages of that group, instead \
             of by time.",
        ),
        KeySpec::optional(
            "group_by",
            KeyType::String,
            "Field whose value splits messages into groups, each with its own windows; echoed in \
             each result. A message without it joins the group `null`. Unset: one group.",
        ),
        KeySpec::new("field", KeyType::String, "\"value\"", "Field holding the number to aggregate."),
        KeySpec::new(
            "aggregates",
            KeyType::StringList,
            "[\"avg\", \"min\", \"max\"]",
            "What to compute, in output order: any of `avg`, `min`, `max`, `sum`, `count`, `first`, \
             `last`. `count` is included anyway.",
        ),
        KeySpec::new(
            "max_groups",
            KeyType::Integer,
            "100000",
            "Most groups held at once; a message of a new group past it flushes the group seen \
             first as a partial window (counted, and warned about at most every 10 s), so state \
             stays bounded however many ids the world sends.",
        ),
        KeySpec::new(
            "idle_timeout",
            KeyType::Duration,
            "\"10m\"",
            "Count windows: a group's partly filled window that gets no message for this long is \
             flushed as a partial window (looked for every half of it), so groups that never fill \
             do not stay for ever.",
        ),
        KeySpec::new(
            "ack",
            KeyType::Enum(&["on_fold", "on_emit"]),
            "\"on_fold\"",
            "When inputs are acknowledged: `on_fold` once counted in the window's state (an open \
             window is lost on a crash), `on_emit` once the window's result is delivered (the \
             source holds a window period of unacknowledged messages).",
        ),
    ],
    delivery: Delivery::Depends(
        "passes acknowledgements on: a message sent to `err` carries its own; with `ack = \"on_fold\"` \
         (default) an input is acknowledged once counted, with `ack = \"on_emit\"` once the result \
         holding it is delivered",
    ),
    acks: Acks::Holds {
        when: "with `ack = \"on_fold\"` (default) as soon as a message is counted (an open window is lost on a \
               crash); with `ack = \"on_emit\"` once \
               the result of every window holding it is delivered: a window period (`size` for sliding \
               windows, until `count` messages of a group for count windows)",
        hold,
        fix: "set `ack = \"on_fold\"` (an open window is then lost on a crash)",
    },
    stateless: false,
    example: "[components.avg]\ntype = \"window\"\nconfig = { every = \"10s\", group_by = \"sensor\", field = \"value\", aggregates = [\"avg\", \"min\", \"max\"] }\n",
    build,
    ports: None,
    probe: None,
};

/// How long a window with `config` holds its inputs' acknowledgements.
fn hold(config: &serde_json::Value) -> Option<Duration> {
    if config.get("ack").and_then(serde_json::Value::as_str) != Some("on_emit") {
        return None;
    }
    if config.get("count").is_some_and(|c| !c.is_null()) {
        return Some(Duration::MAX);
    }
    config_duration(config, "size").or_else(|| config_duration(config, "every"))
}

#[derive(Deserialize)]
struct Config {
    every: Option<String>,
    size: Option<String>,
    count: Option<u64>,
    group_by: Option<String>,
    field: String,
    aggregates: Vec<String>,
    ack: AckMode,
    max_groups: u64,
    idle_timeout: String,
}

/// When `window` acknowledges its inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum AckMode {
    /// Once folded into the window's state.
    OnFold,
    /// Once the window's result is delivered.
    OnEmit,
}

struct Window {
    windows: Windows,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    let shape = shape(&config)?;
    let layout = Layout { aggregates: aggregates(&config.aggregates)?, group_by: config.group_by };
    if let Some(name) = layout.group_by.as_deref().filter(|g| is_output_field(g)) {
        return Err(format!("`group_by = \"{name}\"` would clash with the result field `{name}`"));
    }
    if config.max_groups == 0 {
        return Err("`max_groups` must be at least 1".into());
    }
    let idle_timeout = parse_duration(&config.idle_timeout)?;
    if idle_timeout.is_zero() {
        return Err("`idle_timeout` must be longer than 0s".into());
    }
    let bounds = Bounds { max_groups: usize::try_from(config.max_groups).unwrap_or(usize::MAX), idle_timeout };
    let windows = Windows::new(shape, layout, config.field, config.ack == AckMode::OnEmit).bounded(bounds);
    Ok(Instance::task(Window { windows }))
}

fn aggregates(names: &[String]) -> Result<Vec<Agg>, String> {
    names
        .iter()
        .map(|name| {
            Agg::parse(name)
                .ok_or_else(|| format!("unknown aggregate `{name}`; the aggregates are {}", Agg::NAMES.join(", ")))
        })
        .collect()
}

fn is_output_field(name: &str) -> bool {
    Agg::NAMES.contains(&name) || name == "window_start" || name == "window_end"
}

fn shape(config: &Config) -> Result<Shape, String> {
    let duration = |d: &Option<String>| d.as_deref().map(parse_duration).transpose();
    match (duration(&config.every)?, duration(&config.size)?, config.count) {
        (Some(_), _, Some(_)) => Err("set `every` (time windows) or `count` (count windows), not both".into()),
        (None, Some(_), _) => Err("`size` needs `every`: a window of `size` is emitted every `every`".into()),
        (None, None, None) => Err("set `every` (time windows) or `count` (count windows)".into()),
        (None, None, Some(0)) => Err("`count` must be at least 1".into()),
        (None, None, Some(n)) => Ok(Shape::Count(n)),
        (Some(every), size, None) => time_shape(every, size.unwrap_or(every)),
    }
}

fn time_shape(every: Duration, size: Duration) -> Result<Shape, String> {
    if every.is_zero() {
        return Err("`every` must be longer than 0s".into());
    }
    if size < every || !size.as_nanos().is_multiple_of(every.as_nanos()) {
        return Err(format!(
            "`size` must be a multiple of `every` ({} is not a multiple of {})",
            humantime::format_duration(size),
            humantime::format_duration(every)
        ));
    }
    Ok(Shape::Time { every, size })
}

impl Task for Window {
    fn run(self: Box<Self>, mut ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let input = ctx.input("in");
            let out = ctx.output("out");
            run::run(self.windows, Clock::starting_now(), input, out, &ctx).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use fbp_runtime::testing::Harness;
    use fbp_runtime::{Ack, Message, Meta, Outcome, value};
    use serde_json::json;

    async fn build_error(config: serde_json::Value) -> String {
        let mut h = Harness::new(&super::SPEC, config);
        h.run_to_end().await.result.unwrap().unwrap_err().0
    }

    #[tokio::test]
    async fn config_mistakes_are_build_errors() {
        let err = build_error(json!({"every": "10s", "aggregates": ["avg", "median"]})).await;
        assert!(err.contains("`median`") && err.contains("avg, min, max, sum, count, first, last"), "{err}");
        let err = build_error(json!({"every": "10s", "count": 5})).await;
        assert!(err.contains("not both"), "{err}");
        let err = build_error(json!({"size": "10s"})).await;
        assert!(err.contains("`size` needs `every`"), "{err}");
        let err = build_error(json!({})).await;
        assert!(err.contains("set `every`"), "{err}");
        let err = build_error(json!({"every": "10s", "size": "15s"})).await;
        assert!(err.contains("multiple of `every`"), "{err}");
        let err = build_error(json!({"count": 3, "group_by": "count"})).await;
        assert!(err.contains("clash"), "{err}");
    }

    #[tokio::test]
    async fn count_windows_route_bad_messages_to_err_and_flush_at_the_end() {
        let mut h = Harness::new(&super::SPEC, json!({"count": 2, "group_by": "sensor", "aggregates": ["sum"]}));
        h.push_json(r#"{"sensor": "a", "value": 1}"#);
        h.push_json(r#"{"sensor": "a", "temp": 9}"#);
        h.push_json(r#"{"sensor": "b", "value": 4}"#);
        h.push_json(r#"{"sensor": "a", "value": 2}"#);
        let out = h.run_to_end().await;
        assert!(matches!(out.result, Some(Ok(()))));
        let sums: Vec<_> =
            out.payloads("out").iter().map(value::to_serde).map(|p| (p["sensor"].clone(), p["sum"].clone())).collect();
        assert_eq!(sums, [(json!("a"), json!(3.0)), (json!("b"), json!(4.0))]);
        let err = out.json("err");
        assert_eq!(err.len(), 1);
        assert!(err[0].contains("no field `value`") && err[0].contains(r#""temp":9"#), "{}", err[0]);
    }

    /// Runs a one-hour window over two acknowledged messages; what their
    /// sources learnt before and after the output was dropped.
    async fn outcomes(config: serde_json::Value) -> (Vec<Outcome>, Vec<Outcome>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut h = Harness::new(&super::SPEC, config);
        for v in [1, 2] {
            let s = seen.clone();
            let mut m = Message::new(value::object([("value", value::int(v))]), Meta::new("t".into(), 0));
            m.ack = Some(Ack::new(move |o| s.lock().unwrap().push(o)));
            h.push_message("in", m);
        }
        let out = h.run_to_end().await;
        assert_eq!(out.messages("out").len(), 1);
        let before = seen.lock().unwrap().clone();
        drop(out);
        let after = seen.lock().unwrap().clone();
        (before, after)
    }

    #[tokio::test]
    async fn inputs_are_acknowledged_once_folded_in_by_default() {
        let (before, after) = outcomes(json!({"every": "1h"})).await;
        assert_eq!(before, [Outcome::Delivered, Outcome::Delivered], "not acknowledged before the window closed");
        assert_eq!(after, before);
    }

    #[tokio::test]
    async fn with_ack_on_emit_an_output_carries_its_inputs_acknowledgements() {
        let (before, after) = outcomes(json!({"every": "1h", "ack": "on_emit"})).await;
        assert!(before.is_empty(), "acknowledged before the output was done");
        assert_eq!(after, [Outcome::Delivered, Outcome::Delivered]);
    }
}
