//! `stdin`: a source that reads messages from standard input, one per line.
//!
//! Standard input belongs to the process, not to one instance: a single
//! reader thread (started by the first instance that runs, never by `fbp
//! check`) reads lines into a bounded channel, so a full out-port stalls the
//! reader, and an instance restarted by its supervisor goes on from the next
//! line. A plain thread, because a blocked read of stdin cannot be cancelled
//! and must not hold up the runtime's shutdown.
//!
//! - this file: the declaration, the config and the build;
//! - `lines`: the reader thread and the bounded line reader;
//! - `run`: the task, which batches messages and sends bad lines to `err`.

mod lines;
mod run;
#[cfg(test)]
mod tests;

use fbp_runtime::spec::{KeySpec, KeyType, Port};
use fbp_runtime::units::positive_size;
use fbp_runtime::{Acks, BuildContext, ComponentSpec, Delivery, Instance, Kind, PortSpec};
use serde::Deserialize;

use self::lines::{Lines, stdin_lines};

/// The `stdin` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "stdin",
    summary: "Read messages from standard input, one per line (JSON lines or text).",
    doc: "Reads standard input line by line and sends a message per line. `json`: each line is \
          a JSON value, or the wire envelope `{\"data\": .., \"metadata\": {..}}` (what `console` \
          with `format = \"json\"` and `file-write` write), whose data becomes the payload and \
          whose topic and headers are kept; blank lines are skipped. `lines`: each line as text. \
          `\\r\\n` endings are removed. A line that does not parse goes to `err` as text and \
          reading goes on; so does a line longer than `max_line_size` (cut to that size). The \
          component finishes at the end of input and stops at once when the flow shuts down. \
          Delivery is at-most-once: standard input cannot be read again, so lines in flight when \
          the process dies are lost.",
    kind: Kind::Source,
    inputs: &[],
    outputs: &[PortSpec { name: "out", ty: "json", doc: "one message per line; text with `format = \"lines\"`" }],
    config: &[
        KeySpec::new(
            "format",
            KeyType::Enum(&["json", "lines"]),
            "\"json\"",
            "`json`: JSON lines, envelopes unwrapped; `lines`: each line as text.",
        ),
        KeySpec::new(
            "max_line_size",
            KeyType::String,
            "\"1MiB\"",
            "The longest line read whole, as a size (`\"64KiB\"`, `\"1MiB\"`); a longer one is cut to \
             this size and sent to `err`, so memory stays bounded. The first instance to run sets it.",
        ),
    ],
    delivery: Delivery::AtMostOnce,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.input]\ntype = \"stdin\"\nconfig = { format = \"json\" }\n",
    build,
    ports: Some(ports),
    probe: None,
};

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Format {
    Json,
    Lines,
}

#[derive(Deserialize)]
struct Config {
    format: Format,
    max_line_size: String,
}

/// A built `stdin`.
struct Stdin {
    format: Format,
    /// The longest line read whole.
    max_line: usize,
    /// Where its lines come from (standard input, or a test's text), given the limit.
    open: fn(usize) -> Lines,
}

/// The out-port's type for this config.
fn ports(config: &serde_json::Value) -> (Vec<Port>, Vec<Port>) {
    let ty = match config.get("format").and_then(serde_json::Value::as_str) {
        Some("lines") => "text",
        _ => "json",
    };
    (Vec::new(), vec![Port { name: "out".into(), ty: ty.into() }])
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    let max_line = max_line(&config.max_line_size)?;
    Ok(Instance::task(Stdin { format: config.format, max_line, open: stdin_lines }))
}

fn max_line(size: &str) -> Result<usize, String> {
    positive_size("max_line_size", size)
}
