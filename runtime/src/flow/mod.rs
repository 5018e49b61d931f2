//! Flow files: from what the user wrote to a checked graph.
//!
//! `load` reads a file, [`raw`] turns its TOML into spanned values with
//! variables substituted, [`check`] resolves component types, config, ports and
//! connections against the catalogue and type-checks every connection. Every
//! error found is collected into [`Diagnostics`], rendered the way rustc does.

pub mod acks;
pub mod check;
pub mod diag;
mod lint;
pub mod listeners;
pub mod overrides;
pub mod raw;
mod subflow;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use diag::{Diagnostic, Diagnostics};

use crate::port::PortType;
use crate::queue::WhenFull;
use crate::spec::{Catalogue, ComponentSpec, Port};

/// The largest flow file `load` reads.
pub const MAX_FLOW_FILE: u64 = 4 * 1024 * 1024;

/// Default capacity of a connection, in messages.
pub const DEFAULT_CAPACITY: usize = 1000;

/// A checked flow, ready to run.
#[derive(Clone, Debug)]
pub struct Flow {
    /// `[flow] name`.
    pub name: String,
    /// `[flow] description`.
    pub description: String,
    /// The components, in file order.
    pub nodes: Vec<Node>,
    /// The connections, in file order.
    pub edges: Vec<Edge>,
    /// `[flow] dead_letter`: where rejected messages go when `err` is unconnected.
    pub dead_letter: Option<PathBuf>,
    /// `[flow] on_component_failure`.
    pub on_component_failure: OnFailure,
    /// `[flow.limits]`.
    pub limits: Limits,
    /// `[ports]`: inner ports this flow exports when another flow uses it as `flow:PATH`.
    pub exports: Vec<Export>,
    /// What `check` found that does not stop the flow (a source that cannot
    /// afford the acknowledgements held downstream); `None` when nothing.
    pub warnings: Option<Diagnostics>,
    /// Where each component and its config keys are written, to point at the
    /// key a run-time failure names.
    pub written: Option<std::sync::Arc<Written>>,
}

/// A flow file's text and where each component's config keys are in it.
#[derive(Debug, Default)]
pub struct Written {
    /// The file's path, as the user gave it.
    pub path: String,
    /// Its text.
    pub source: String,
    /// Each component, in file order.
    pub components: Vec<WrittenComponent>,
}

/// Where one component is written.
#[derive(Debug)]
pub struct WrittenComponent {
    /// Its name.
    pub name: String,
    /// Where the name is.
    pub span: std::ops::Range<usize>,
    /// Each config key, with where its value is.
    pub keys: Vec<(String, std::ops::Range<usize>)>,
}

impl Written {
    /// The failure of `component` as a diagnostic, its caret on the value of
    /// the first config key `message` names in backticks (else on the
    /// component's name); `None` for a component not written in this file.
    pub fn failure(&self, component: &str, message: &str) -> Option<Diagnostics> {
        let c = self.components.iter().find(|c| c.name == component)?;
        let span = diag::first_named(message, c.keys.iter().map(|(k, s)| (k.as_str(), s))).unwrap_or(&c.span).clone();
        let error = diag::Diagnostic::at(span, format!("component `{component}` failed: {message}"))
            .label("restarting cannot fix this");
        Some(Diagnostics { path: self.path.clone(), source: self.source.clone(), errors: vec![error] })
    }
}

/// `[flow.limits]`: how deep a JSON document may nest, and what a jq program
/// may do with one message. They hold for the whole process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// `max_depth`: levels of arrays and objects in any JSON read or value made.
    pub max_depth: usize,
    /// `jq_timeout`, `jq_max_steps`, `jq_max_outputs`.
    pub jq: crate::jq::Limits,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_depth: crate::value::DEFAULT_MAX_DEPTH, jq: crate::jq::Limits::DEFAULT }
    }
}

impl Limits {
    /// Makes these the limits of the whole process.
    pub fn apply(&self) {
        crate::value::set_max_depth(self.max_depth);
        crate::jq::set_limits(self.jq);
    }
}

/// A port a subflow exports: `[ports] in = "decode.in"`.
#[derive(Clone, Debug)]
pub struct Export {
    /// The name the outer flow uses (`in`, `out`, ...).
    pub name: String,
    /// The inner port.
    pub port: PortRef,
    /// Whether it is an in-port.
    pub input: bool,
}

/// A component of a flow.
#[derive(Clone, Debug)]
pub struct Node {
    /// Its name in the flow.
    pub name: Arc<str>,
    /// Its type's declaration.
    pub spec: &'static ComponentSpec,
    /// Its config, checked, defaults filled in.
    pub config: serde_json::Value,
    /// How the supervisor treats its failures.
    pub restart: Restart,
    /// Default capacity of connections into it.
    pub capacity: usize,
    /// Parallel instances (competing consumers).
    pub workers: usize,
    /// Folder of the flow file (relative paths in config are resolved against it).
    pub base_dir: PathBuf,
    /// Its in-ports.
    pub inputs: Vec<Port>,
    /// Its out-ports, `err` last.
    pub outputs: Vec<Port>,
}

impl Node {
    /// Names of its out-ports, `err` last.
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|p| &*p.name).collect()
    }

    /// Names of its in-ports.
    pub fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().map(|p| &*p.name).collect()
    }
}

/// One end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRef {
    /// Index into `Flow::nodes`.
    pub node: usize,
    /// Index into the node's inputs or outputs (`err` is the last output).
    pub port: usize,
}

/// A connection: one bounded queue.
#[derive(Clone, Debug)]
pub struct Edge {
    /// The out-port it leaves.
    pub from: PortRef,
    /// The in-port it enters.
    pub to: PortRef,
    /// Queue capacity in messages.
    pub capacity: usize,
    /// What a full queue does.
    pub when_full: WhenFull,
    /// A type to check each message against at run time (a `json` port feeding a narrower one).
    pub check: Option<PortType>,
    /// A disk buffer between the two ends (`buffer = { type = "disk", ... }`).
    pub buffer: Option<EdgeBuffer>,
}

/// A connection's disk buffer, as the flow file gives it (DESIGN §9).
#[derive(Clone, Debug)]
pub struct EdgeBuffer {
    /// The buffer's directory, relative paths resolved against the flow file's.
    pub path: std::path::PathBuf,
    /// The most bytes on disk (plus one segment); default 1 GiB.
    pub max_size: u64,
    /// What a full buffer does: `block` (the default) or `drop_oldest`.
    pub when_full: crate::buffer::WhenFull,
}

impl EdgeBuffer {
    /// The buffer's configuration.
    pub fn config(&self) -> crate::buffer::Config {
        crate::buffer::Config { path: self.path.clone(), max_size: self.max_size, when_full: self.when_full }
    }
}

/// `[flow] on_component_failure`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Shut the flow down; `run` exits 1.
    #[default]
    Stop,
    /// Drain the failed component's inputs to the dead letter; the rest keeps running.
    Isolate,
}

/// When the supervisor restarts a component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// After a failure, and after it stops while its inputs are still open.
    Always,
    /// After a failure only.
    OnFailure,
    /// Never.
    Never,
}

/// A component's restart settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restart {
    /// When to restart.
    pub policy: Policy,
    /// At most this many restarts ...
    pub max_restarts: u32,
    /// ... within this long.
    pub within: Duration,
    /// First backoff delay, doubled at each restart ...
    pub backoff_min: Duration,
    /// ... up to this.
    pub backoff_max: Duration,
}

impl Restart {
    /// The defaults: `on-failure` for sources, `always` for the others.
    pub fn default_for(spec: &ComponentSpec) -> Self {
        let policy = if spec.kind == crate::spec::Kind::Source { Policy::OnFailure } else { Policy::Always };
        Restart {
            policy,
            max_restarts: 10,
            within: Duration::from_secs(60),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Reads and checks a flow file.
pub fn load(path: &Path, catalogue: &Catalogue) -> Result<Flow, Diagnostics> {
    load_with_env(path, catalogue, &|k| std::env::var(k).ok())
}

/// [`load`] with an injectable environment.
pub fn load_with_env(path: &Path, catalogue: &Catalogue, env: raw::Env<'_>) -> Result<Flow, Diagnostics> {
    load_with(path, catalogue, &Options { env, sets: &[] })
}

/// What the command line changes in a flow file before it is checked.
#[derive(Clone, Copy)]
pub struct Options<'a> {
    /// Where `${VAR}` values come from.
    pub env: raw::Env<'a>,
    /// `component.key=value` overrides of config keys (`--set`).
    pub sets: &'a [String],
}

/// [`load`] with overrides: `--set` keys and an environment (`--env-file`).
pub fn load_with(path: &Path, catalogue: &Catalogue, options: &Options<'_>) -> Result<Flow, Diagnostics> {
    load_file(path, catalogue, options, &[])
}

/// Loads a flow file that `stack` (the files including it) uses as a subflow.
pub(crate) fn load_nested(
    path: &Path,
    catalogue: &Catalogue,
    env: raw::Env<'_>,
    stack: &[PathBuf],
) -> Result<Flow, Diagnostics> {
    load_file(path, catalogue, &Options { env, sets: &[] }, stack)
}

fn load_file(
    path: &Path,
    catalogue: &Catalogue,
    options: &Options<'_>,
    stack: &[PathBuf],
) -> Result<Flow, Diagnostics> {
    let shown = path.display().to_string();
    let fail = |message: String, help: &str| Diagnostics {
        path: shown.clone(),
        source: String::new(),
        errors: vec![Diagnostic::whole(message).help(help)],
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read `{shown}`: {e}"), "check the path"))?;
    if meta.is_dir() {
        return Err(fail(format!("`{shown}` is a folder, not a flow file"), "give the path of a .toml flow file"));
    }
    if meta.len() > MAX_FLOW_FILE {
        return Err(fail(
            format!("`{shown}` is too large for a flow file ({} bytes; the limit is {MAX_FLOW_FILE})", meta.len()),
            "a flow file names components and connections; data belongs in files the flow reads",
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| fail(format!("cannot read `{shown}`: {e}"), "check the path and permissions"))?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = String::from_utf8_lossy(&e.as_bytes()[..e.utf8_error().valid_up_to()]).into_owned();
            let at = valid.len();
            return Err(Diagnostics {
                path: shown,
                source: valid,
                errors: vec![
                    Diagnostic::at(at..at, "the flow file is not UTF-8 text")
                        .label("invalid UTF-8 here")
                        .help("a flow file is TOML text; is this a binary file?"),
                ],
            });
        }
    };
    let mut stack = stack.to_vec();
    stack.push(path.canonicalize().unwrap_or_else(|_| path.to_path_buf()));
    check::check_nested(&shown, &text, &base_dir, catalogue, options, &stack)
}
