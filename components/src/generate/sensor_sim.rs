//! `sensor-sim`: simulated sensors for demos and tests.
//!
//! `Walk` holds the numbers (baselines spread over the range, a
//! mean-reverting random walk around each); the task only paces and sends.

use std::time::Duration;

use fbp_runtime::message::format_timestamp;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::value::{self, Value};
use fbp_runtime::{
    Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, PortSpec, Task, TaskFuture,
};
use serde::Deserialize;

use crate::generate::{Pace, send_unless_stopped};

/// The `sensor-sim` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "sensor-sim",
    summary: "Simulate sensors: one reading per sensor at every tick.",
    doc: "At every `interval` (the first at once) emits one reading per sensor, \
          `{\"sensor\": \"sensor-1\", \"value\": 23.4, \"unit\": \"C\", \"ts\": \"...\"}`. Each \
          sensor has a baseline, spread evenly over `range`, and wanders around it by a random \
          walk of step `noise` that is pulled back towards the baseline; values are rounded to \
          one decimal. With the defaults the hottest sensor averages 32.5. `seed` makes the \
          values repeatable. Finishes after `count` messages in all, or runs until shut down.",
    kind: Kind::Source,
    inputs: &[],
    outputs: &[PortSpec {
        name: "out",
        ty: "{ sensor = \"string\", value = \"number\", unit = \"string\", ts = \"string\" }",
        doc: "one reading: sensor name, value, unit and time (RFC 3339, UTC, milliseconds)",
    }],
    config: &[
        KeySpec::new("sensors", KeyType::Integer, "4", "How many sensors, named `sensor-1`, `sensor-2`, ..."),
        KeySpec::new(
            "interval",
            KeyType::Duration,
            "\"1s\"",
            "Time between two ticks; each tick emits one reading per sensor. `\"0s\"` sends without pause.",
        ),
        KeySpec::new(
            "range",
            KeyType::NumberList,
            "[15.0, 35.0]",
            "`[low, high]`: the sensors' baselines are spread evenly over it.",
        ),
        KeySpec::new(
            "noise",
            KeyType::Number,
            "0.5",
            "Largest step of the random walk around each baseline, per tick.",
        ),
        KeySpec::new(
            "count",
            KeyType::Integer,
            "0",
            "How many messages to send in all (over every sensor) before finishing; 0 runs forever.",
        ),
        KeySpec::optional(
            "seed",
            KeyType::Integer,
            "Seed of the random generator, for repeatable values; random when unset.",
        ),
        KeySpec::new("unit", KeyType::String, "\"C\"", "The `unit` field of every reading."),
    ],
    delivery: Delivery::Generated,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.sensors]\ntype = \"sensor-sim\"\nconfig = { sensors = 4, interval = \"200ms\", count = 100, seed = 42 }\n",
    build,
    ports: None,
    probe: None,
};

#[derive(Deserialize)]
struct Config {
    sensors: usize,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    interval: Duration,
    range: Vec<f64>,
    noise: f64,
    count: u64,
    seed: Option<u64>,
    unit: String,
}

struct SensorSim {
    walk: Walk,
    names: Vec<Value>,
    unit: Value,
    interval: Duration,
    count: u64,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    let walk = Walk::new(&config)?;
    Ok(Instance::task(SensorSim {
        names: (1..=config.sensors).map(|i| value::string(format!("sensor-{i}"))).collect(),
        walk,
        unit: value::string(config.unit),
        interval: config.interval,
        count: match config.count {
            0 => u64::MAX,
            n => n,
        },
    }))
}

/// How far the walk's offset is pulled back towards the baseline per tick
/// (1 would be a free random walk, which drifts without bound).
const KEEP: f64 = 0.8;

/// The readings: a baseline per sensor and a random walk around it.
struct Walk {
    baselines: Vec<f64>,
    offsets: Vec<f64>,
    noise: f64,
    rng: fastrand::Rng,
}

impl Walk {
    fn new(config: &Config) -> Result<Walk, String> {
        let [low, high] = config.range[..] else {
            return Err("`range` must be two numbers, `[low, high]`".into());
        };
        if !(low.is_finite() && high.is_finite() && low <= high) {
            return Err(format!("`range` must be `[low, high]` with low <= high, not `[{low}, {high}]`"));
        }
        if !(config.noise.is_finite() && config.noise >= 0.0) {
            return Err(format!("`noise` must be a number >= 0, not {}", config.noise));
        }
        if config.sensors == 0 {
            return Err("`sensors` must be at least 1".into());
        }
        let n = config.sensors as f64;
        Ok(Walk {
            baselines: (0..config.sensors).map(|i| low + (high - low) * (i as f64 + 0.5) / n).collect(),
            offsets: vec![0.0; config.sensors],
            noise: config.noise,
            rng: config.seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
        })
    }

    /// The next reading of sensor `i`, rounded to one decimal.
    fn next(&mut self, i: usize) -> f64 {
        let step = (self.rng.f64() * 2.0 - 1.0) * self.noise;
        self.offsets[i] = self.offsets[i] * KEEP + step;
        ((self.baselines[i] + self.offsets[i]) * 10.0).round() / 10.0
    }
}

impl Task for SensorSim {
    fn run(mut self: Box<Self>, ctx: Context) -> TaskFuture {
        Box::pin(async move { self.emit(&ctx).await })
    }
}

impl SensorSim {
    async fn emit(&mut self, ctx: &Context) -> Result<(), Failure> {
        let out = ctx.output("out");
        let mut pace = Pace::new(self.interval);
        let mut sent = 0;
        while pace.wait(ctx).await {
            for i in 0..self.names.len() {
                if sent == self.count || !send_unless_stopped(ctx, &out, self.reading(ctx, i)).await? {
                    return Ok(());
                }
                sent += 1;
            }
        }
        Ok(())
    }

    fn reading(&mut self, ctx: &Context, i: usize) -> Message {
        let meta = ctx.meta();
        let payload = value::object([
            ("sensor", self.names[i].clone()),
            ("value", Value::from(self.walk.next(i))),
            ("unit", self.unit.clone()),
            ("ts", value::string(format_timestamp(meta.timestamp))),
        ]);
        Message::new(payload, meta)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fbp_runtime::testing::Harness;
    use fbp_runtime::value;
    use serde_json::{Value, json};

    async fn run(config: Value) -> Vec<Value> {
        let mut h = Harness::new(&super::SPEC, config);
        let out = h.run().await;
        assert!(matches!(out.result, Some(Ok(()))), "{:?}", out.result);
        out.payloads("out").iter().map(value::to_serde).collect()
    }

    fn field<'a>(readings: &'a [Value], key: &str) -> Vec<&'a Value> {
        readings.iter().map(|r| &r[key]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn emits_count_readings_round_robin_then_finishes() {
        let readings = run(json!({"count": 6, "seed": 1})).await;
        let names = ["sensor-1", "sensor-2", "sensor-3", "sensor-4", "sensor-1", "sensor-2"];
        assert_eq!(field(&readings, "sensor"), names);
        for r in &readings {
            assert_eq!(r["unit"], "C");
            assert!(r["value"].is_number());
            let ts = r["ts"].as_str().unwrap();
            assert!(humantime::parse_rfc3339(ts).is_ok() && ts.ends_with('Z'), "{ts}");
        }
    }

    #[tokio::test]
    async fn seed_makes_values_repeatable() {
        let config = json!({"count": 20, "seed": 7, "interval": "0s"});
        let first = run(config.clone()).await;
        let second = run(config).await;
        assert_eq!(field(&first, "value"), field(&second, "value"));
    }

    #[tokio::test]
    async fn defaults_make_some_sensor_average_above_28() {
        let readings = run(json!({"count": 400, "seed": 3, "interval": "0s"})).await;
        let mut sums: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for r in &readings {
            let v = r["value"].as_f64().unwrap();
            assert_eq!((v * 10.0).round() / 10.0, v, "one decimal");
            assert!((14.0..=36.0).contains(&v), "{v}");
            let s = sums.entry(r["sensor"].as_str().unwrap()).or_default();
            *s = (s.0 + v, s.1 + 1.0);
        }
        let averages: Vec<f64> = sums.values().map(|(sum, n)| sum / n).collect();
        assert!(averages.iter().any(|a| *a > 28.0), "{averages:?}");
        assert!(averages.iter().any(|a| *a < 20.0), "{averages:?}");
    }

    #[tokio::test]
    async fn a_bad_range_is_a_build_error() {
        let mut h = Harness::new(&super::SPEC, json!({"range": [35, 15]}));
        let err = h.run().await.result.unwrap().unwrap_err().0;
        assert!(err.contains("low <= high"), "{err}");
    }
}
