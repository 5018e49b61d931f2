//! Command-line arguments. Every flag has an `FBP_*` environment twin.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// A flow-based-programming runtime for IoT gateways and message relays.
#[derive(Parser, Debug)]
#[command(name = "fbp", version, about, propagate_version = true)]
pub(crate) struct Cli {
    /// Log level: error, warn, info, debug or trace (RUST_LOG also works).
    #[arg(long, global = true, env = "FBP_LOG_LEVEL")]
    pub(crate) log_level: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, env = "FBP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    /// Colour in diagnostics: `auto` on a terminal unless NO_COLOR is set.
    #[arg(long, global = true, env = "FBP_COLOR", value_enum, default_value_t = Color::Auto)]
    pub(crate) color: Color,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// When diagnostics are coloured.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Color {
    /// On a terminal, unless `NO_COLOR` is set (to anything but empty).
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run a flow until its sources end, or until Ctrl-C / SIGTERM.
    Run {
        /// The flow file.
        flow: PathBuf,
        /// A config key of one component, `COMPONENT.KEY=VALUE`, set before the
        /// check (repeatable; replaces the file's value or adds the key; the value
        /// is read as TOML where it parses for the key's type, else as a string).
        #[arg(long = "set", value_name = "COMPONENT.KEY=VALUE", env = "FBP_SET")]
        sets: Vec<String>,
        #[command(flatten)]
        env: EnvFile,
        #[command(flatten)]
        run: RunFlags,
    },
    /// Check a flow file: syntax, components, config, ports, types, variables.
    #[command(visible_aliases = ["validate", "lint"])]
    Check {
        /// The flow files.
        #[arg(required = true)]
        flows: Vec<PathBuf>,
        /// Treat warnings as errors (exit 2).
        #[arg(long, env = "FBP_DENY_WARNINGS")]
        deny_warnings: bool,
        #[command(flatten)]
        env: EnvFile,
        #[command(flatten)]
        probe: ProbeFlags,
    },
    /// List every component type, one line each.
    #[command(visible_alias = "list")]
    Components {
        /// Output format.
        #[arg(long, env = "FBP_COMPONENTS_FORMAT", value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// Describe a component type: ports, config keys, delivery, an example.
    Describe {
        /// The component type, e.g. `sensor-sim`.
        component: String,
        /// Output format.
        #[arg(long, env = "FBP_DESCRIBE_FORMAT", value_enum, default_value_t = DescribeFormat::Text)]
        format: DescribeFormat,
    },
    /// Write a commented flow file to start from: `fbp new 'mqtt-subscribe ! window ! sqlite'`.
    ///
    /// Every key of every component is there, the required ones with a value to
    /// replace (TODO), the others commented out with their defaults.
    New {
        /// The components in order, as for `launch`; settings (`key=value`) are kept.
        pipeline: String,
        /// Write it to this file (which must not exist) instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print a shell completion script: `fbp completions bash > /etc/bash_completion.d/fbp`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print a flow as a graph.
    Graph {
        /// The flow file.
        flow: PathBuf,
        /// Graph language.
        #[arg(long, env = "FBP_GRAPH_FORMAT", value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Run a pipeline written inline: 'sensor-sim count=100 ! map expr=".value" ! console'.
    Launch {
        /// The pipeline: components separated by `!`, each `TYPE key=value ...`.
        pipeline: String,
        /// A config key of one element, `NAME.KEY=VALUE` (the name is its type,
        /// `TYPE-2` for a second one; repeatable; replaces what the pipeline set).
        #[arg(long = "set", value_name = "NAME.KEY=VALUE", env = "FBP_SET")]
        sets: Vec<String>,
        #[command(flatten)]
        made: MadeFlags,
    },
    /// Relay messages from a source URI to a sink URI: 'file:in.jsonl' 'sqlite://out.db?table=t'.
    ///
    /// URIs: `file:PATH` (JSON lines; `?format=csv|lines`; `?follow=true` as a source),
    /// `-` or `stdin:` / `stdout:` (standard input or output), `sqlite://PATH?table=T`
    /// (a sink), `exec:PROGRAM?arg=A&arg=B` (a JSON-lines program). Query pairs become
    /// config settings of the component. Between brokers (`mqtt://`, `nats://`) payloads
    /// are forwarded byte for byte unless a URI or `--set` gives either end a `format`.
    #[command(after_long_help = fbp_runtime::uri::supported())]
    Relay {
        /// Where messages come from.
        source: String,
        /// Where messages go.
        sink: String,
        /// A config setting of one end, `source.KEY=VALUE` or `sink.KEY=VALUE`
        /// (repeatable; replaces what the URI set; FBP_SET holds one).
        #[arg(long = "set", value_name = "END.KEY=VALUE", env = "FBP_SET")]
        sets: Vec<String>,
        #[command(flatten)]
        made: MadeFlags,
    },
}

/// What `launch` and `relay` do with the flow they make.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct MadeFlags {
    /// Print the equivalent flow file instead of running it.
    #[arg(long, env = "FBP_PRINT_FLOW")]
    pub(crate) print_flow: bool,
    /// Keep what goes to the sink (the last element) in a disk buffer in DIR (store
    /// and forward: rides out the sink's outages, survives kill -9; docs/operations.md).
    #[arg(long, value_name = "DIR", env = "FBP_BUFFER")]
    pub(crate) buffer: Option<String>,
    #[command(flatten)]
    pub(crate) env: EnvFile,
    #[command(flatten)]
    pub(crate) run: RunFlags,
}

/// Values for `${VAR}` from a file.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct EnvFile {
    /// Read `${VAR}` values from FILE: `KEY=VALUE` lines, `#` comments, values
    /// optionally quoted. A variable set in the process environment wins over
    /// the file (the file holds defaults; the shell overrides them).
    #[arg(long, value_name = "FILE", env = "FBP_ENV_FILE")]
    pub(crate) env_file: Option<PathBuf>,
}

/// How `run`, `launch` and `relay` run a flow.
#[derive(clap::Args, Debug, Clone, Copy)]
pub(crate) struct RunFlags {
    /// How long a graceful shutdown may take.
    #[arg(long, env = "FBP_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub(crate) shutdown_timeout: Duration,
    /// How often to log a status line with the counts so far (`0s`: never).
    #[arg(long, env = "FBP_STATUS_INTERVAL", default_value = "10s", value_parser = duration)]
    pub(crate) status_interval: Duration,
    /// Treat the check's warnings as errors: do not run (exit 2).
    #[arg(long, env = "FBP_DENY_WARNINGS")]
    pub(crate) deny_warnings: bool,
    /// Before starting, try each connector once as `check --connect` does;
    /// do not start (exit 1) if one fails.
    #[arg(long, env = "FBP_REQUIRE_HEALTHY")]
    pub(crate) require_healthy: bool,
    /// How long each connector's try may take, with `--require-healthy`.
    #[arg(long, env = "FBP_CONNECT_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub(crate) connect_timeout: Duration,
}

/// `check --connect`: try each connector once.
#[derive(clap::Args, Debug, Clone, Copy)]
pub(crate) struct ProbeFlags {
    /// Also try each connector of the flow once (connect to its broker or
    /// database, bind its address, open its file; nothing is created, sent
    /// or written): one line per component, exit 1 if any fails.
    #[arg(long, env = "FBP_CONNECT")]
    pub(crate) connect: bool,
    /// How long each connector's try may take.
    #[arg(long, env = "FBP_CONNECT_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub(crate) connect_timeout: Duration,
}

/// `fbp components` output.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum ListFormat {
    /// One line per type.
    Text,
    /// The `docs/components.md` page.
    Markdown,
}

/// `fbp describe` output.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum DescribeFormat {
    /// For people.
    Text,
    /// One JSON object.
    Json,
}

/// `fbp graph` output.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum GraphFormat {
    /// Graphviz.
    Dot,
    /// Mermaid.
    Mermaid,
}

fn duration(s: &str) -> Result<Duration, String> {
    fbp_runtime::units::parse_duration(s)
}
