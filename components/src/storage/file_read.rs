//! `file-read`: a source that reads a file line by line, and can follow it.
//!
//! - this file: the declaration, the config and the build;
//! - `lines`: the line reader, following growth, truncation and rotation;
//! - `parse`: a line to a payload (JSON lines and envelopes, CSV, text);
//! - `run`: the task, which batches messages and sends errors to `err`.

mod lines;
mod parse;
mod run;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fbp_runtime::spec::{KeySpec, KeyType, Port};
use fbp_runtime::units::positive_size;
use fbp_runtime::{Acks, BuildContext, ComponentSpec, Delivery, Instance, Kind, PortSpec};
use serde::Deserialize;

use self::parse::{Header, Parser};
use crate::codec::csv::{Columns, Csv};

/// The `file-read` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "file-read",
    summary: "Read a file line by line (JSON lines, CSV or text), optionally following it like `tail -F`.",
    doc: "Reads the file at `path` one line at a time with a buffered reader, never the whole \
          file at once, and sends a message per line; the metadata topic is `path` as written. \
          `json`: each line is a JSON value; a line in the wire envelope form `{\"data\": .., \
          \"metadata\": {..}}` (what `file-write` writes) gives its data as the payload and its \
          topic and headers as the message's (base64 data with `\"encoding\": \"base64\"` becomes \
          bytes). `csv`: the first line is the header (unless `columns` is set) and each further \
          line an object; one record per line, so quoted fields may not span lines. `lines`: each \
          line as text. Blank lines are skipped in `json` and `csv`; `\\r\\n` endings and a UTF-8 \
          byte order mark are removed. A line that does not parse goes to `err` as text, and \
          reading goes on; so does a line longer than `max_line_size` (cut to that size). \
          Without `follow` the component finishes at the end of the file (an unterminated last \
          line is sent too) and a missing file is a failure. With `follow` it waits for the file \
          to appear, keeps reading what is appended (an unterminated last line waits for its \
          newline), checks every `poll_interval`, reads a truncated file from its start again, and \
          when the path is replaced (rotation: a new inode) finishes the old file and goes on with \
          the new one from its start. It stops at once when the flow shuts down. Delivery is \
          at-most-once: no acknowledgement is awaited and no read offset is kept yet, so lines in \
          flight when the process dies are lost, and a restarted instance reads again from `from` \
          (with `from = \"start\"` that repeats lines already sent).",
    kind: Kind::Source,
    inputs: &[],
    outputs: &[PortSpec {
        name: "out",
        ty: "json",
        doc: "one message per line; the type follows `format`: json, object (csv) or text (lines)",
    }],
    config: &[
        KeySpec::required(
            "path",
            KeyType::String,
            "The file to read; a relative path is taken from the flow file's folder.",
        ),
        KeySpec::new(
            "format",
            KeyType::Enum(&["json", "csv", "lines"]),
            "\"json\"",
            "`json`: JSON lines (envelopes unwrapped); `csv`: a header line, then rows as objects; \
             `lines`: each line as text.",
        ),
        KeySpec::optional(
            "columns",
            KeyType::StringList,
            "csv: the field names, in order; when set, the file has no header line and every line is a row.",
        ),
        KeySpec::new(
            "infer_types",
            KeyType::Bool,
            "true",
            "csv: turn fields that read as JSON numbers or `true`/`false` into numbers and booleans \
             (`007` and `+1` stay strings); `false` keeps every field a string.",
        ),
        KeySpec::new(
            "delimiter",
            KeyType::String,
            "\",\"",
            "csv: the field separator, one ASCII character (`\"\\t\"` for tabs).",
        ),
        KeySpec::new(
            "follow",
            KeyType::Bool,
            "false",
            "Keep reading what is appended, like `tail -F` (truncation and rotation handled), until \
             the flow shuts down; `false` finishes at the end of the file.",
        ),
        KeySpec::new(
            "from",
            KeyType::Enum(&["start", "end"]),
            "\"start\"",
            "With `follow`: where to begin in the file present at start, its `start` or its `end` \
             (only new lines). Without `follow` the file is always read from the start.",
        ),
        KeySpec::new(
            "poll_interval",
            KeyType::Duration,
            "\"250ms\"",
            "With `follow`: how often to look for new lines, truncation and rotation once at the end.",
        ),
        KeySpec::optional(
            "rotate_grace",
            KeyType::Duration,
            "With `follow`: once the path names a new file (rotation), the old one is still read \
             until it has given nothing for this long, since a writer may append to it until it \
             reopens its log (logrotate's `create`, then a HUP). Unset: 4 `poll_interval`s, at \
             least 2s.",
        ),
        KeySpec::new(
            "max_line_size",
            KeyType::String,
            "\"1MiB\"",
            "The longest line read whole, as a size (`\"64KiB\"`, `\"1MiB\"`); a longer one is cut to \
             this size and sent to `err`, so memory stays bounded.",
        ),
    ],
    delivery: Delivery::AtMostOnce,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.logs]\ntype = \"file-read\"\nconfig = { path = \"in/readings.jsonl\", follow = true, from = \"end\" }\n",
    build,
    ports: Some(ports),
    probe: Some(crate::probe::FILE_READ),
};

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Format {
    #[default]
    Json,
    Csv,
    Lines,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum StartAt {
    Start,
    End,
}

#[derive(Deserialize)]
struct Config {
    path: String,
    #[serde(default)]
    format: Format,
    columns: Option<Vec<String>>,
    infer_types: bool,
    delimiter: String,
    follow: bool,
    from: StartAt,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    poll_interval: Duration,
    #[serde(default, deserialize_with = "fbp_runtime::units::opt_duration")]
    rotate_grace: Option<Duration>,
    max_line_size: String,
}

/// The out-port's type for this config.
fn ports(config: &serde_json::Value) -> (Vec<Port>, Vec<Port>) {
    let ty = match config.get("format").and_then(serde_json::Value::as_str) {
        Some("csv") => "object",
        Some("lines") => "text",
        _ => "json",
    };
    (Vec::new(), vec![Port { name: "out".into(), ty: ty.into() }])
}

/// A built `file-read`.
struct FileRead {
    /// The path as the flow wrote it: the messages' topic.
    topic: Arc<str>,
    /// The path resolved against the flow file's folder.
    path: PathBuf,
    format: Format,
    columns: Option<Columns>,
    csv: Csv,
    follow: bool,
    from_end: bool,
    poll_interval: Duration,
    rotate_grace: Duration,
    max_line: usize,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    if config.path.is_empty() {
        return Err("`path` is empty".into());
    }
    if config.poll_interval.is_zero() {
        return Err("`poll_interval` must be more than 0s".into());
    }
    let max_line = positive_size("max_line_size", &config.max_line_size)?;
    Ok(Instance::task(FileRead {
        topic: config.path.as_str().into(),
        path: ctx.path(&config.path),
        format: config.format,
        columns: config.columns.as_deref().map(Columns::new).transpose()?,
        csv: Csv::new(&config.delimiter, config.infer_types)?,
        follow: config.follow,
        from_end: config.follow && config.from == StartAt::End,
        poll_interval: config.poll_interval,
        rotate_grace: config.rotate_grace.unwrap_or((4 * config.poll_interval).max(Duration::from_secs(2))),
        max_line,
    }))
}

impl FileRead {
    /// A fresh parser for this format.
    fn parser(&self) -> Parser {
        match self.format {
            Format::Json => Parser::Json,
            Format::Lines => Parser::Lines,
            Format::Csv => Parser::Csv {
                csv: self.csv.clone(),
                header: self.columns.clone().map_or(Header::Wanted, Header::Names),
                fixed: self.columns.is_some(),
            },
        }
    }
}
