//! The `exec` declaration, its config, and the build.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fbp_runtime::spec::{KeySpec, KeyType, Port};
use fbp_runtime::units::positive_size;
use fbp_runtime::{Acks, BuildContext, ComponentSpec, Delivery, Instance, Kind, PortSpec};
use serde::Deserialize;

use super::protocol;

/// The `exec` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "exec",
    summary: "Run a program that speaks JSON lines (the DStream provider protocol) as a source, transform or sink.",
    doc: "Starts `command` with `args`, `env` and `cwd` (default: the flow file's folder) and \
          writes the command envelope `{\"command\": \"run\", \"config\": <provider_config>}` as \
          the first line of its stdin. The program may answer on its first stdout line \
          `{\"status\": \"ready\"}`, or `{\"status\": \"error\", \"message\": \"..\"}`, a start-up \
          failure reported with that message and the tail of its stderr; with \
          `handshake = \"required\"` a program that has not answered within `ready_timeout` is a \
          start-up failure, otherwise it just starts. Then each stdout line \
          `{\"data\": .., \"metadata\": {..}}` becomes a message (its topic and headers kept, base64 \
          data with `\"encoding\": \"base64\"` becomes bytes) and each message sent to the \
          component is written to stdin as such an envelope, one per line. A stdout line that is \
          not JSON or not an envelope goes to `err` as text and the stream goes on (so does a line \
          longer than `max_line_size`, cut). stderr lines \
          go to fbp's log, tagged with the component name. `mode` sets the ports: `source` (out \
          only; stdin stays open after the command line), `transform` (in and out), `sink` (in \
          only). Back-pressure holds: messages are written to stdin one batch at a time and \
          stdout is read only as fast as `out` takes messages, so a slow program stalls its \
          upstream. When the input ends, stdin is closed and the program has `stop_timeout` to \
          exit; a program still running then, or at shutdown (source), gets SIGTERM, then \
          SIGKILL after `stop_timeout`. A program that cannot be started, exits non-zero or \
          crashes is a failure, and the supervisor restarts it. Delivery is at-most-once: a \
          message is acknowledged once written and flushed to stdin, so what the program had \
          read but not processed when it crashed is lost; the messages written to it since its \
          last stdout line are counted in `dropped` as possibly lost, with a warning (a program \
          that reads ahead can lose more than that). What fbp had taken from `in` but not yet \
          written, and a batch whose write failed, are kept for the next program (a message of \
          a batch cut short may then reach a program twice). With `replies = \"one\"` (a program that answers every line \
          with exactly one line, in order) fbp keeps each message until its answer, which \
          carries the message's acknowledgement; the messages a crashed program had not answered \
          are written again to the restarted program (at-least-once), the oldest of them counted \
          as an attempt, so a message that crashes the program twice goes to `err`; a last line \
          cut short by the end of stdout (a program killed mid-line) goes to `err` and is not \
          taken as an answer.",
    kind: Kind::Transform,
    inputs: &[PortSpec { name: "in", ty: "json", doc: "messages written to the program's stdin (transform, sink)" }],
    outputs: &[PortSpec {
        name: "out",
        ty: "json",
        doc: "the envelopes the program writes on stdout (source, transform)",
    }],
    config: &[
        KeySpec::required(
            "command",
            KeyType::String,
            "The program: a name looked up in `PATH`, or a path (a relative path with a `/` is taken from `cwd`).",
        ),
        KeySpec::new("args", KeyType::StringList, "[]", "Its arguments."),
        KeySpec::new(
            "env",
            KeyType::Any,
            "{}",
            "The program's environment, a table of strings: `{ LEVEL = \"debug\" }`. It gets these \
             and fbp's own `PATH`, `HOME` and `LANG`, nothing else of fbp's environment (so no \
             secret fbp was started with reaches it); pass one on with `{ TOKEN = \"${TOKEN}\" }`. \
             `PYTHONUNBUFFERED = \"1\"` is set unless this sets it, so Python flushes each line.",
        ),
        KeySpec::optional(
            "cwd",
            KeyType::String,
            "Its working folder; a relative path is taken from the flow file's folder, which is the default.",
        ),
        KeySpec::new(
            "provider_config",
            KeyType::Any,
            "{}",
            "Sent to the program as `config` in the command envelope `{\"command\": \"run\", \"config\": ..}`.",
        ),
        KeySpec::new(
            "mode",
            KeyType::Enum(&["source", "transform", "sink"]),
            "\"transform\"",
            "`source`: port `out` only; `transform`: `in` and `out`; `sink`: `in` only.",
        ),
        KeySpec::new(
            "handshake",
            KeyType::Enum(&["optional", "required"]),
            "\"optional\"",
            "`required`: the program must answer `{\"status\": \"ready\"}` within `ready_timeout` before \
             messages are written to it; `optional`: a first status line is read if it comes.",
        ),
        KeySpec::new(
            "ready_timeout",
            KeyType::Duration,
            "\"30s\"",
            "With `handshake = \"required\"`: how long to wait for the program's ready line.",
        ),
        KeySpec::new(
            "stop_timeout",
            KeyType::Duration,
            "\"10s\"",
            "How long the program has to exit once its stdin is closed, and again after SIGTERM before SIGKILL.",
        ),
        KeySpec::new(
            "max_line_size",
            KeyType::String,
            "\"1MiB\"",
            "The longest stdout line read whole, as a size (`\"64KiB\"`, `\"1MiB\"`); a longer one is cut to \
             this size and sent to `err`, so memory stays bounded.",
        ),
        KeySpec::new(
            "replies",
            KeyType::Enum(&["any", "one"]),
            "\"any\"",
            "`any`: the program writes what it likes; `one`: it answers every line with exactly one line, \
             in order, so fbp keeps each message until answered and a restarted program gets the \
             unanswered ones again.",
        ),
    ],
    delivery: Delivery::AtMostOnce,
    acks: Acks::Holds {
        when: "with `replies = \"any\"` (default) once a message is written and flushed to stdin; with \
               `replies = \"one\"` each message is held until the program answers it, its answer carrying the \
               acknowledgement: as long as the program takes",
        hold: |_| None,
        fix: "make the program answer sooner",
    },
    stateless: false,
    example: "[components.upper]\ntype = \"exec\"\nconfig = { command = \"python3\", args = [\"upper.py\"], provider_config = { field = \"name\" } }\n",
    build,
    ports: Some(ports),
    probe: Some(crate::probe::EXEC),
};

/// Where the program sits in the flow.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Mode {
    /// It produces messages.
    Source,
    /// It takes messages and produces messages.
    #[default]
    Transform,
    /// It takes messages.
    Sink,
}

/// Whether the program must answer the command envelope.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Handshake {
    Optional,
    Required,
}

/// How the program's lines pair with what it is sent.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Replies {
    /// No pairing: a message is acknowledged once written.
    Any,
    /// One line out per line in, in order.
    One,
}

#[derive(Deserialize)]
struct Config {
    command: String,
    args: Vec<String>,
    env: serde_json::Value,
    cwd: Option<String>,
    provider_config: serde_json::Value,
    mode: Mode,
    handshake: Handshake,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    ready_timeout: Duration,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    stop_timeout: Duration,
    replies: Replies,
    max_line_size: String,
}

/// An `exec` instance, ready to start its program.
#[derive(Debug)]
pub(super) struct Exec {
    /// `command` as written, for messages.
    pub(super) command: String,
    /// What is started: `command`, resolved against `cwd` when it is a relative path.
    pub(super) program: PathBuf,
    pub(super) args: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    pub(super) cwd: PathBuf,
    /// The first stdin line.
    pub(super) command_line: String,
    pub(super) mode: Mode,
    pub(super) handshake: Handshake,
    pub(super) ready_timeout: Duration,
    pub(super) stop_timeout: Duration,
    pub(super) replies: Replies,
    /// The longest stdout line read whole, in bytes.
    pub(super) max_line: usize,
}

fn ports(config: &serde_json::Value) -> (Vec<Port>, Vec<Port>) {
    let mode = config.get("mode").and_then(|m| Mode::deserialize(m).ok()).unwrap_or_default();
    let port = |name: &str| vec![Port { name: name.into(), ty: "json".into() }];
    match mode {
        Mode::Source => (Vec::new(), port("out")),
        Mode::Transform => (port("in"), port("out")),
        Mode::Sink => (port("in"), Vec::new()),
    }
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    if config.command.is_empty() {
        return Err("`command` is empty".into());
    }
    if config.stop_timeout.is_zero() {
        return Err("`stop_timeout` must be more than 0s".into());
    }
    let max_line = positive_size("max_line_size", &config.max_line_size)?;
    let cwd = config.cwd.as_deref().map_or_else(|| ctx.base_dir.clone(), |c| ctx.path(c));
    // A flow file named without a folder has an empty one: the current folder.
    let cwd = if cwd.as_os_str().is_empty() { PathBuf::from(".") } else { cwd };
    Ok(Instance::task(Exec {
        program: program(&config.command, &cwd),
        command: config.command,
        args: config.args,
        env: env(&config.env)?,
        cwd,
        command_line: protocol::command_line(&config.provider_config),
        mode: config.mode,
        handshake: config.handshake,
        ready_timeout: config.ready_timeout,
        stop_timeout: config.stop_timeout,
        replies: config.replies,
        max_line,
    }))
}

/// A relative path with a `/` is taken from `cwd`; a bare name is looked up in `PATH`.
fn program(command: &str, cwd: &Path) -> PathBuf {
    let p = Path::new(command);
    if p.is_relative() && command.contains('/') { cwd.join(p) } else { p.to_path_buf() }
}

/// `env` as pairs; every value must be a string.
fn env(table: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
    let serde_json::Value::Object(map) = table else {
        return Err(format!("`env` must be a table of strings, found {table}"));
    };
    let bad: Vec<&str> = map.iter().filter(|(_, v)| !v.is_string()).map(|(k, _)| k.as_str()).collect();
    if !bad.is_empty() {
        return Err(format!("`env` values must be strings; not so for `{}`", bad.join("`, `")));
    }
    Ok(map.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
}
