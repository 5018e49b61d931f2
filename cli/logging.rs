//! Logs go to stderr, as text or JSON; stdout belongs to data.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::args::LogFormat;

/// Client libraries that log every failed attempt, I/O error or connection
/// event themselves, and how much of it to keep below debug level: the
/// component's link already logs each outage once (`RUST_LOG` is taken as it is).
const CHATTY: &[(&str, &str)] = &[("lapin", "off"), ("async_nats", "warn")];

pub(crate) fn init(level: Option<&str>, format: LogFormat) {
    let quiet = |l: &str| {
        let mut f = EnvFilter::try_new(l).unwrap_or_else(|_| EnvFilter::new("info"));
        if !matches!(l, "debug" | "trace") {
            for (lib, level) in CHATTY {
                f = f.add_directive(format!("{lib}={level}").parse().expect("a valid directive"));
            }
        }
        f
    };
    let filter = match level {
        Some(l) => quiet(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| quiet("info")),
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
