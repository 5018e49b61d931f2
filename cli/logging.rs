//! Logs go to stderr, as text or JSON; stdout belongs to data.
//!
//! A level from `--log-level` (or none: `info`) is a list of `target=level`
//! directives, filtered with [`Targets`]; only `RUST_LOG`, or a
//! `--log-level` that needs span or field filters, takes the full
//! [`EnvFilter`] syntax. (`EnvFilter` compiles regular expressions to parse
//! even `warn`: a quarter of a megabyte of code resident in every process.)

use std::io::IsTerminal;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

use crate::args::LogFormat;

/// Client libraries that log every failed attempt, I/O error or connection
/// event themselves, and how much of it to keep below debug level: the
/// component's link already logs each outage once (`RUST_LOG` is taken as it is).
const CHATTY: &[(&str, LevelFilter)] = &[("lapin", LevelFilter::OFF), ("async_nats", LevelFilter::WARN)];

/// The filter of the run: `Targets` for levels, else `EnvFilter` (one of the two).
fn filter(level: Option<&str>) -> (Option<Targets>, Option<EnvFilter>) {
    let quiet = |l: &str| match l.parse::<Targets>() {
        Ok(t) if matches!(l, "debug" | "trace") => (Some(t), None),
        Ok(t) => (Some(t.with_targets(CHATTY.iter().copied())), None),
        Err(_) => (None, Some(EnvFilter::try_new(l).unwrap_or_else(|_| EnvFilter::new("info")))),
    };
    match level {
        Some(l) => quiet(l),
        None => match EnvFilter::try_from_default_env() {
            Ok(f) => (None, Some(f)),
            Err(_) => quiet("info"),
        },
    }
}

pub(crate) fn init(level: Option<&str>, format: LogFormat) {
    let layer = fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let layer: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    };
    let (targets, env) = filter(level);
    tracing_subscriber::registry().with(layer).with(targets).with(env).init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_are_targets_and_quiet_the_chatty_libraries() {
        let (Some(t), None) = filter(Some("warn")) else { panic!("`warn` is a Targets filter") };
        assert!(t.would_enable("fbp", &tracing::Level::WARN));
        assert!(!t.would_enable("fbp", &tracing::Level::INFO));
        assert!(!t.would_enable("lapin", &tracing::Level::ERROR));
        let (Some(t), None) = filter(Some("debug")) else { panic!("`debug` is a Targets filter") };
        assert!(t.would_enable("lapin", &tracing::Level::DEBUG));
        let (Some(t), None) = filter(Some("fbp_runtime=debug,info")) else { panic!("directives are Targets") };
        assert!(t.would_enable("fbp_runtime::link", &tracing::Level::DEBUG));
        assert!(!t.would_enable("fbp_components", &tracing::Level::DEBUG));
    }

    #[test]
    fn span_and_field_filters_take_the_env_filter() {
        assert!(matches!(filter(Some("fbp[run{flow=x}]=debug")), (None, Some(_))));
        assert!(matches!(filter(Some("[{component=sink}]=debug")), (None, Some(_))));
    }
}
