//! Logs go to stderr, as text or JSON; stdout belongs to data.
//!
//! A level from `--log-level` (or none: `info`) is a list of `target=level`
//! directives, filtered with [`Targets`]; only `RUST_LOG`, or a
//! `--log-level` that needs span or field filters, takes the full
//! [`EnvFilter`] syntax. (`EnvFilter` compiles regular expressions to parse
//! even `warn`: a quarter of a megabyte of code resident in every process.)
//!
//! A bare level is fbp's own: other crates stay at `warn` (some print a
//! server URL with its password at debug level) unless a directive names them,
//! `--log-level debug,async_nats=debug`.

use std::io::IsTerminal;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

use crate::args::LogFormat;

/// Client libraries that log every failed attempt, I/O error or connection
/// event themselves, and how much of it to keep below debug level: the
/// component's link already logs each outage once (`RUST_LOG` is taken as it is).
const CHATTY: &[(&str, LevelFilter)] = &[("lapin", LevelFilter::OFF), ("async_nats", LevelFilter::WARN)];

/// fbp's own crates: a bare level is theirs.
const OURS: &[&str] = &["fbp", "fbp_runtime", "fbp_components"];

/// `--log-level` directives as `Targets`: a bare level for fbp's crates and at
/// most `warn` for the rest, named targets as given; `None` when they need
/// `EnvFilter`.
fn targets(spec: &str) -> Option<Targets> {
    let mut level = LevelFilter::INFO;
    let mut named: Vec<(String, LevelFilter)> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let t: Targets = part.parse().ok()?;
        match part.contains('=') {
            true => named.extend(t.iter().map(|(target, l)| (target.to_string(), l))),
            false => level = t.default_level().unwrap_or(LevelFilter::INFO),
        }
    }
    let is_named = |target: &str| named.iter().any(|(n, _)| n == target);
    let ours = OURS.iter().filter(|o| !is_named(o)).map(|o| (o.to_string(), level));
    let chatty = CHATTY.iter().filter(|(c, _)| !is_named(c)).map(|(c, l)| (c.to_string(), (*l).min(level)));
    let others = level.min(LevelFilter::WARN);
    Some(Targets::new().with_default(others).with_targets(chatty).with_targets(ours).with_targets(named))
}

/// The filter of the run: `Targets` for levels, else `EnvFilter` (one of the two).
fn filter(level: Option<&str>) -> (Option<Targets>, Option<EnvFilter>) {
    let quiet = |l: &str| match targets(l) {
        Some(t) => (Some(t), None),
        None => (None, Some(EnvFilter::try_new(l).unwrap_or_else(|_| EnvFilter::new("info")))),
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
        // A person reads the message and the fields, not the module path.
        LogFormat::Text => layer.with_target(false).boxed(),
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
        assert!(t.would_enable("fbp_components::net", &tracing::Level::DEBUG));
        assert!(!t.would_enable("lapin", &tracing::Level::ERROR));
        assert!(!t.would_enable("async_nats", &tracing::Level::INFO), "other crates stay at warn");
        assert!(!t.would_enable("rumqttc::state", &tracing::Level::DEBUG));
        assert!(t.would_enable("rumqttc::state", &tracing::Level::WARN));
        let (Some(t), None) = filter(Some("trace,async_nats=debug,lapin=info")) else { panic!("Targets") };
        assert!(t.would_enable("async_nats::connector", &tracing::Level::DEBUG), "named, so as asked");
        assert!(t.would_enable("lapin", &tracing::Level::INFO));
        assert!(t.would_enable("fbp", &tracing::Level::TRACE));
        assert!(!t.would_enable("hyper", &tracing::Level::INFO));
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
