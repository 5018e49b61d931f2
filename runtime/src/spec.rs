//! The one declaration every component type makes.
//!
//! A [`ComponentSpec`] names the type, documents it, declares its ports with
//! their types, its config keys with types and defaults, its delivery
//! semantics and an example, and points at the function that builds it.
//! `fbp check`, `fbp describe`, `fbp components`, the `launch` parser and
//! `docs/components.md` all read these declarations and nothing else.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::component::Instance;

/// What kind of node a component is in a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Produces messages; has no input.
    Source,
    /// Takes messages in and sends messages on.
    Transform,
    /// Takes messages in and writes them somewhere.
    Sink,
}

impl Kind {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Transform => "transform",
            Kind::Sink => "sink",
        }
    }
}

/// Delivery semantics, as `fbp describe` states them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Generates its own messages; nothing upstream to acknowledge.
    Generated,
    /// Passes acknowledgements through: a dropped message is acknowledged,
    /// an output carries its inputs' acknowledgements.
    PassThrough,
    /// Acknowledges once the data is written, flushed or committed.
    AtLeastOnce,
    /// Cannot acknowledge its upstream; a crash may lose what is in flight.
    AtMostOnce,
    /// Depends on the config; the sentence says how (e.g. at-least-once with
    /// a broker's acknowledged mode, at-most-once without).
    Depends(&'static str),
}

impl Delivery {
    /// One sentence for `describe` and the docs.
    pub fn describe(self) -> &'static str {
        match self {
            Delivery::Generated => "generates its messages; nothing upstream to acknowledge",
            Delivery::PassThrough => {
                "passes acknowledgements through: a dropped message is acknowledged, an output carries its inputs' acknowledgements"
            }
            Delivery::AtLeastOnce => {
                "at-least-once: acknowledges a message only after it is written and flushed or committed"
            }
            Delivery::AtMostOnce => "at-most-once: cannot acknowledge upstream; a crash may lose messages in flight",
            Delivery::Depends(how) => how,
        }
    }
}

/// When a component acknowledges its inputs, or, for a source, what its
/// broker lets it leave unacknowledged. `fbp describe` prints the sentence;
/// `fbp check` and the sources' budget warnings read the functions.
#[derive(Clone, Copy, Debug)]
pub enum Acks {
    /// Holds no acknowledgement for a time of its own: it settles or passes
    /// on each message as it handles it (what [`Delivery`] says).
    Prompt,
    /// Holds its inputs' acknowledgements for a time.
    Holds {
        /// When it acknowledges, one sentence for `describe` and the docs.
        when: &'static str,
        /// How long at most it holds them with a config; `None` when it
        /// holds none with that config. [`Duration::MAX`]: no bound in time.
        hold: HoldFn,
        /// What to change in the component so that it holds none, for a warning.
        fix: &'static str,
    },
    /// A source whose broker bounds the messages it may leave unacknowledged.
    Budget {
        /// What the broker does past the bound, one sentence.
        limit: &'static str,
        /// Whether a config acknowledges to the broker at all (not QoS 0, say).
        bounded: fn(&serde_json::Value) -> bool,
    },
}

/// How long a component holds its inputs' acknowledgements with a config.
pub type HoldFn = fn(&serde_json::Value) -> Option<Duration>;

impl Acks {
    /// The sentence `describe` prints, if there is more to say than [`Delivery`].
    pub fn describe(self) -> Option<&'static str> {
        match self {
            Acks::Prompt => None,
            Acks::Holds { when, .. } => Some(when),
            Acks::Budget { limit, .. } => Some(limit),
        }
    }

    /// How long a component with `config` holds its inputs' acknowledgements.
    pub fn hold(self, config: &serde_json::Value) -> Option<Duration> {
        match self {
            Acks::Holds { hold, .. } => hold(config),
            Acks::Prompt | Acks::Budget { .. } => None,
        }
    }

    /// Whether a source with `config` has a broker's budget of unacknowledged messages.
    pub fn budgeted(self, config: &serde_json::Value) -> bool {
        matches!(self, Acks::Budget { bounded, .. } if bounded(config))
    }
}

/// The duration in config key `key`, when it is set and well-formed.
pub fn config_duration(config: &serde_json::Value, key: &str) -> Option<Duration> {
    config.get(key)?.as_str().and_then(|d| crate::units::parse_duration(d).ok())
}

/// A port declaration.
#[derive(Clone, Copy, Debug)]
pub struct PortSpec {
    /// Port name (`in`, `out`, ...).
    pub name: &'static str,
    /// Type, as [`crate::port::PortType::parse`] reads it.
    pub ty: &'static str,
    /// What flows through it.
    pub doc: &'static str,
}

/// The type of a config key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// A string.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Bool,
    /// A human duration: `"200ms"`, `"10s"`, `"1m"`.
    Duration,
    /// A jq program, compiled at check time.
    Expr,
    /// One of the listed strings.
    Enum(&'static [&'static str]),
    /// An array of strings.
    StringList,
    /// A list of numbers: `[min, max]` and the like.
    NumberList,
    /// A table with exactly these keys, each a string: `{ cert = "..", key = ".." }`.
    Table(&'static [&'static str]),
    /// Any TOML value (arrays and tables of free form).
    Any,
}

impl KeyType {
    /// How `describe` names the type.
    pub fn name(self) -> String {
        match self {
            KeyType::String => "string".into(),
            KeyType::Integer => "integer".into(),
            KeyType::Number => "number".into(),
            KeyType::Bool => "bool".into(),
            KeyType::Duration => "duration".into(),
            KeyType::Expr => "jq expression".into(),
            KeyType::Enum(options) => options.iter().map(|o| format!("\"{o}\"")).collect::<Vec<_>>().join(" | "),
            KeyType::StringList => "array of strings".into(),
            KeyType::NumberList => "array of numbers".into(),
            KeyType::Table(keys) => {
                format!("table {{ {} }}", keys.iter().map(|k| format!("{k} = string")).collect::<Vec<_>>().join(", "))
            }
            KeyType::Any => "any".into(),
        }
    }
}

/// A config key declaration.
#[derive(Clone, Copy, Debug)]
pub struct KeySpec {
    /// Key name, snake_case.
    pub name: &'static str,
    /// Its type.
    pub ty: KeyType,
    /// Default as a TOML literal (`"1s"`, `10`, `true`); `None` for required or optional keys.
    pub default: Option<&'static str>,
    /// Whether a flow must set it.
    pub required: bool,
    /// What it does.
    pub doc: &'static str,
}

impl KeySpec {
    /// An optional key with a default.
    pub const fn new(name: &'static str, ty: KeyType, default: &'static str, doc: &'static str) -> Self {
        KeySpec { name, ty, default: Some(default), required: false, doc }
    }

    /// A key the flow must set.
    pub const fn required(name: &'static str, ty: KeyType, doc: &'static str) -> Self {
        KeySpec { name, ty, default: None, required: true, doc }
    }

    /// An optional key without a default.
    pub const fn optional(name: &'static str, ty: KeyType, doc: &'static str) -> Self {
        KeySpec { name, ty, default: None, required: false, doc }
    }
}

/// What a build function receives.
#[derive(Clone, Debug)]
pub struct BuildContext {
    /// The component's name in its flow.
    pub name: Arc<str>,
    /// Its config, checked, with defaults filled in, as JSON.
    pub config: serde_json::Value,
    /// The folder of the flow file, for relative paths.
    pub base_dir: PathBuf,
}

impl BuildContext {
    /// Deserialises the config into a component's config type.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(self.config.clone()).map_err(|e| format!("bad config for `{}`: {e}", self.name))
    }

    /// Resolves a path from the config against the flow file's folder.
    pub fn path(&self, p: &str) -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { self.base_dir.join(p) }
    }
}

/// A port as one component of a flow has it: names and types may depend on config.
#[derive(Clone, Debug, PartialEq)]
pub struct Port {
    /// Port name.
    pub name: Arc<str>,
    /// Type, as [`crate::port::PortType::parse`] reads it.
    pub ty: String,
}

impl From<&PortSpec> for Port {
    fn from(p: &PortSpec) -> Self {
        Port { name: p.name.into(), ty: p.ty.to_string() }
    }
}

/// In- and out-ports that depend on config (e.g. `switch` routes, `decode` output type).
pub type PortsFn = fn(&serde_json::Value) -> (Vec<Port>, Vec<Port>);

/// Builds a fresh instance of a component (at start and at every restart).
///
/// It validates the config and prepares the instance but does no I/O: `fbp check`
/// calls it too, to report what only the build can check.
pub type BuildFn = fn(&BuildContext) -> Result<Instance, String>;

/// What a probe finds: `Ok` with what was checked (`mqtt://host:1883: CONNACK`),
/// `Err` with the cause and what to change.
pub type ProbeResult = Result<String, String>;

/// A probe's one bounded attempt, run by `fbp check --connect`.
pub type ProbeFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ProbeResult> + Send>>;

/// Tries once what the component would connect to, open or bind, and changes
/// nothing (no table created, no message published, no file created). The
/// caller bounds it in time.
pub type ProbeFn = fn(&BuildContext) -> ProbeFuture;

/// What `fbp check --connect` (and `run --require-healthy`) tries for a component.
#[derive(Clone, Copy)]
pub struct Probe {
    /// What it checks, one sentence for `describe` and the docs.
    pub doc: &'static str,
    /// The attempt.
    pub run: ProbeFn,
}

/// The declaration of a component type.
#[derive(Clone, Copy)]
pub struct ComponentSpec {
    /// Type name, kebab-case.
    pub name: &'static str,
    /// One line for `fbp components`.
    pub summary: &'static str,
    /// Longer description for `describe` and the docs.
    pub doc: &'static str,
    /// Source, transform or sink.
    pub kind: Kind,
    /// In-ports. Every component also has an `err` out-port, not listed here.
    pub inputs: &'static [PortSpec],
    /// Out-ports, besides `err`.
    pub outputs: &'static [PortSpec],
    /// Config keys.
    pub config: &'static [KeySpec],
    /// Delivery semantics.
    pub delivery: Delivery,
    /// When it acknowledges its inputs, if it holds them for a time; a
    /// source's broker budget.
    pub acks: Acks,
    /// Whether `workers = N` may run parallel instances.
    pub stateless: bool,
    /// An example: a `[components.NAME]` table that passes `fbp check`.
    pub example: &'static str,
    /// Builds an instance.
    pub build: BuildFn,
    /// Ports that depend on config; `None` when `inputs` and `outputs` say it all.
    pub ports: Option<PortsFn>,
    /// What `fbp check --connect` tries; `None`: nothing to check.
    pub probe: Option<Probe>,
}

impl std::fmt::Debug for ComponentSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentSpec").field("name", &self.name).finish_non_exhaustive()
    }
}

impl ComponentSpec {
    /// The ports of a component with this config: in-ports, and out-ports with `err` last.
    pub fn resolve_ports(&self, config: &serde_json::Value) -> (Vec<Port>, Vec<Port>) {
        let (inputs, mut outputs) = match self.ports {
            Some(f) => f(config),
            None => (self.inputs.iter().map(Port::from).collect(), self.outputs.iter().map(Port::from).collect()),
        };
        outputs.push(Port::from(&ERR_PORT));
        (inputs, outputs)
    }

    /// The declared key called `name`.
    pub fn key(&self, name: &str) -> Option<&'static KeySpec> {
        self.config.iter().find(|k| k.name == name)
    }
}

/// The every-component `err` port.
pub const ERR_PORT: PortSpec = PortSpec {
    name: "err",
    ty: "object",
    doc: "messages this component could not process: `{error, component, type, attempts, data}` with the original metadata",
};

/// The list of component types a flow may use.
#[derive(Clone, Copy, Debug)]
pub struct Catalogue(pub &'static [&'static ComponentSpec]);

impl Catalogue {
    /// The spec called `name`.
    pub fn get(&self, name: &str) -> Option<&'static ComponentSpec> {
        self.0.iter().copied().find(|s| s.name == name)
    }

    /// All type names.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().map(|s| s.name)
    }
}
