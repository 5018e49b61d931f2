//! Logs go to stderr, as text or JSON; stdout belongs to data.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::args::LogFormat;

pub(crate) fn init(level: Option<&str>, format: LogFormat) {
    let filter = match level {
        Some(l) => EnvFilter::try_new(quiet_clients(l)).unwrap_or_else(|_| EnvFilter::new(quiet_clients("info"))),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(quiet_clients("info"))),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `level`, with client libraries that log every connection attempt and
/// event at info (async-nats) kept to warnings: fbp's own components log
/// their connection state once per change. `RUST_LOG` overrides it.
fn quiet_clients(level: &str) -> String {
    if level.contains('=') { level.to_string() } else { format!("{level},async_nats=warn") }
}
