//! One function per subcommand; each maps the runtime's answer to an exit code:
//! 0 ok, 1 run-time failure, 2 usage or flow-file error.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use fbp_components::CATALOGUE;
use fbp_runtime::flow::{self, Diagnostics, Flow};
use fbp_runtime::network::{self, RunError, RunOptions};
use fbp_runtime::{docs, graph, launch, relay, skeleton};
use tokio_util::sync::CancellationToken;

use crate::args::{
    Cli, Color, Command, DescribeFormat, EnvFile, GraphFormat, ListFormat, LogFormat, MadeFlags, ProbeFlags, RunFlags,
};

const USAGE: u8 = 2;

pub(crate) fn dispatch(command: Command, log: LogFormat, colour: bool) -> ExitCode {
    let out_of = Output { colour };
    match command {
        Command::Run { flow, sets, env, run: flags } => {
            let vars = match env_file(&env) {
                Ok(v) => v,
                Err(code) => return code,
            };
            let lookup = lookup(&vars);
            let options = flow::Options { env: &lookup, sets: &sets };
            match flow::load_with(&flow, &CATALOGUE, &options) {
                Err(d) => out_of.report(&d),
                Ok(f) if flags.deny_warnings && f.warnings.is_some() => out_of.denied(&f),
                Ok(f) => run(f, flags, log),
            }
        }
        Command::Check { flows, deny_warnings, env, probe } => match env_file(&env) {
            Ok(vars) => check(&flows, deny_warnings, &vars, probe, out_of),
            Err(code) => code,
        },
        Command::Components { format } => {
            match format {
                ListFormat::Text => out(&docs::list(&CATALOGUE)),
                ListFormat::Markdown => out(&docs::markdown(&CATALOGUE)),
            }
            ExitCode::SUCCESS
        }
        Command::Describe { component, format } => describe(&component, format),
        Command::New { pipeline, output } => new(&pipeline, output.as_deref()),
        Command::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "fbp", &mut text);
            out(&String::from_utf8_lossy(&text));
            ExitCode::SUCCESS
        }
        Command::Graph { flow, format } => match flow::load(&flow, &CATALOGUE) {
            Err(d) => out_of.report(&d),
            Ok(f) => {
                let format = match format {
                    GraphFormat::Dot => graph::Format::Dot,
                    GraphFormat::Mermaid => graph::Format::Mermaid,
                };
                out(&graph::render(&f, format));
                ExitCode::SUCCESS
            }
        },
        Command::Launch { pipeline, sets, made } => {
            let text = launch::to_flow_toml(&pipeline, &CATALOGUE);
            let from = Generated { name: "<launch>", made: &made, sets: &sets, log };
            generated(from, text, out_of, |t, d| launch::point_into(&pipeline, t, d))
        }
        Command::Relay { source, sink, sets, made } => {
            let text = relay::to_flow_toml(&source, &sink, &sets, &CATALOGUE);
            // The relay's `--set` is applied as it builds the flow.
            let from = Generated { name: "<relay>", made: &made, sets: &[], log };
            generated(from, text, out_of, |t, d| relay::point_into(&source, &sink, t, d))
        }
    }
}

/// Writes a command's output. A reader that went away (`fbp components |
/// head -1`) ends the output, not the command: nothing is left to say to it.
/// Any other write error is the command's failure.
fn out(text: &str) {
    let written = std::io::stdout().lock().write_all(text.as_bytes());
    if let Err(e) = written.and_then(|()| std::io::stdout().flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        err(&format!("error: cannot write the output: {e}\n"));
        std::process::exit(1);
    }
}

/// Writes to stderr; if even that is gone, the exit code still tells.
fn err(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Whether diagnostics are coloured: `--color`, else a terminal on stderr
/// and no `NO_COLOR`.
pub(crate) fn colour(choice: Color) -> bool {
    use std::io::IsTerminal;
    match choice {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal(),
    }
}

/// How diagnostics are shown.
#[derive(Clone, Copy)]
struct Output {
    colour: bool,
}

impl Output {
    fn report(self, diags: &Diagnostics) -> ExitCode {
        err(&diags.render_in(self.colour));
        ExitCode::from(USAGE)
    }

    fn warn(self, flow: &Flow) {
        if let Some(w) = &flow.warnings {
            err(&w.render_warnings_in(self.colour));
        }
    }

    /// `--deny-warnings` and the check warned: the warnings are the errors.
    fn denied(self, flow: &Flow) -> ExitCode {
        self.warn(flow);
        let path = flow.warnings.as_ref().map_or("", |w| w.path.as_str());
        err(&format!("error: could not load `{path}`: warnings denied (--deny-warnings)\n"));
        ExitCode::from(USAGE)
    }
}

/// The variables of `--env-file`, if given.
fn env_file(flags: &EnvFile) -> Result<HashMap<String, String>, ExitCode> {
    let Some(path) = &flags.env_file else { return Ok(HashMap::new()) };
    flow::overrides::read_env_file(path).map_err(|e| {
        err(&format!("error: {e}\n  = help: write one `KEY=VALUE` a line; `#` starts a comment\n"));
        ExitCode::from(USAGE)
    })
}

/// `${VAR}` lookup: the process environment, then the env file.
fn lookup(file: &HashMap<String, String>) -> impl Fn(&str) -> Option<String> + '_ {
    move |k| std::env::var(k).ok().or_else(|| file.get(k).cloned())
}

fn check(
    paths: &[std::path::PathBuf],
    deny_warnings: bool,
    vars: &HashMap<String, String>,
    probe: ProbeFlags,
    o: Output,
) -> ExitCode {
    let mut code = ExitCode::SUCCESS;
    let lookup = lookup(vars);
    for path in paths {
        match flow::load_with(path, &CATALOGUE, &flow::Options { env: &lookup, sets: &[] }) {
            Ok(f) if deny_warnings && f.warnings.is_some() => code = o.denied(&f),
            Ok(f) => {
                o.warn(&f);
                out(&format!(
                    "{}: ok ({} component{}, {} connection{})\n",
                    path.display(),
                    f.nodes.len(),
                    if f.nodes.len() == 1 { "" } else { "s" },
                    f.edges.len(),
                    if f.edges.len() == 1 { "" } else { "s" }
                ));
                if probe.connect && !probes_pass(&f, probe.connect_timeout, out) && code == ExitCode::SUCCESS {
                    code = ExitCode::FAILURE;
                }
            }
            Err(d) => code = o.report(&d),
        }
    }
    code
}

fn describe(name: &str, format: DescribeFormat) -> ExitCode {
    match CATALOGUE.get(name) {
        Some(spec) => {
            match format {
                DescribeFormat::Text => out(&docs::describe(spec)),
                DescribeFormat::Json => out(&format!("{:#}\n", docs::describe_json(spec))),
            }
            ExitCode::SUCCESS
        }
        None => {
            let hint = flow::diag::did_you_mean(name, CATALOGUE.names())
                .map_or_else(|| "`fbp components` lists the types".to_string(), |b| format!("did you mean `{b}`?"));
            err(&format!("error: unknown component type `{name}`\n  = help: {hint}\n"));
            ExitCode::from(USAGE)
        }
    }
}

/// `fbp new`: the skeleton on stdout, or in a new file.
fn new(pipeline: &str, output: Option<&Path>) -> ExitCode {
    let text = match skeleton::flow(pipeline, &CATALOGUE) {
        Ok(text) => text,
        Err(e) => {
            err(&format!("error: {e}\n"));
            return ExitCode::from(USAGE);
        }
    };
    let Some(path) = output else {
        out(&text);
        return ExitCode::SUCCESS;
    };
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    match written {
        Ok(()) => {
            err(&format!("wrote {}; replace each TODO, then `fbp check {}`\n", path.display(), path.display()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            err(&format!("error: cannot write `{}`: {e}\n", path.display()));
            ExitCode::FAILURE
        }
    }
}

/// Where a flow built from the command line comes from, and what to do with it.
struct Generated<'a> {
    /// How diagnostics name it.
    name: &'a str,
    /// `--print-flow`, `--buffer`, `--env-file` and how to run it.
    made: &'a MadeFlags,
    /// `--set` entries applied when it is checked.
    sets: &'a [String],
    log: LogFormat,
}

/// A flow file built from the command line (`launch`, `relay`): given its
/// `--buffer`, checked, then printed or run like a flow file.
fn generated(
    from: Generated<'_>,
    text: Result<String, impl std::fmt::Display>,
    o: Output,
    place: impl Fn(&str, Diagnostics) -> Diagnostics,
) -> ExitCode {
    let text = match (text, &from.made.buffer) {
        (Ok(t), Some(dir)) => relay::buffered(&t, dir),
        (Ok(t), None) => t,
        (Err(e), _) => {
            err(&format!("error: {e}\n"));
            return ExitCode::from(USAGE);
        }
    };
    let vars = match env_file(&from.made.env) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let lookup = lookup(&vars);
    let cwd = std::env::current_dir().unwrap_or_default();
    let options = flow::Options { env: &lookup, sets: from.sets };
    let loaded = flow::check::check_source_with(from.name, &text, &cwd, &CATALOGUE, &options);
    let flags = from.made.run;
    match loaded {
        Err(d) => o.report(&place(&text, d)),
        Ok(_) if from.made.print_flow => {
            out(&text);
            ExitCode::SUCCESS
        }
        Ok(f) if flags.deny_warnings && f.warnings.is_some() => o.denied(&f),
        // Its text is not what the user typed: failures are not shown in it.
        Ok(f) => run(Flow { written: None, ..f }, flags, from.log),
    }
}

fn run(flow: Flow, flags: RunFlags, log: LogFormat) -> ExitCode {
    let write = match log {
        LogFormat::Text => err,
        LogFormat::Json => log_check,
    };
    if flags.require_healthy && !probes_pass(&flow, flags.connect_timeout, write) {
        err("error: a connector failed its check (--require-healthy); not starting\n");
        return ExitCode::FAILURE;
    }
    for w in flow.warnings.iter().flat_map(|d| &d.errors) {
        tracing::warn!(warning = %w.message, help = w.help.as_deref().unwrap_or(""), "The flow check warns.");
    }
    let shutdown = CancellationToken::new();
    watch_signals(shutdown.clone());
    let status_every = Some(flags.status_interval).filter(|d| !d.is_zero());
    let options = RunOptions { shutdown_timeout: flags.shutdown_timeout, shutdown, threads: None, status_every };
    let written = flow.written.clone();
    let report = network::run(flow, options);
    match log {
        // A person reads a table; a machine gets one record per component.
        LogFormat::Text if tracing::enabled!(tracing::Level::INFO) => {
            err(&fbp_runtime::report::table(&report.summaries))
        }
        LogFormat::Text => {}
        LogFormat::Json => {
            for s in &report.summaries {
                tracing::info!(
                    component = %s.component, r#type = s.type_name, received = s.received, sent = s.sent,
                    errors = s.errors, dead_lettered = s.dead_lettered, dropped = s.dropped, restarts = s.restarts,
                    ran_ms = s.ran.as_millis() as u64, "Component summary."
                );
            }
        }
    }
    match report.result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match log {
                LogFormat::Text => match placed(&e, written.as_deref()) {
                    Some(d) => err(&d.render_errors(false)),
                    None => err(&format!("error: {e}\n")),
                },
                LogFormat::Json => tracing::error!(error = %e, "Flow failed."),
            }
            ExitCode::FAILURE
        }
    }
}

/// A failure no restart can fix, shown at the key of the flow file it names.
fn placed(e: &RunError, written: Option<&flow::Written>) -> Option<Diagnostics> {
    match e {
        RunError::ComponentFailed { component, reason, permanent: true } => written?.failure(component, reason),
        _ => None,
    }
}

/// Tries each component's probe once, all at once, each within `timeout`;
/// writes one aligned line per component with `write` (`ok`, `FAIL`, or `-`
/// for nothing to check) and a count. Whether every probe passed.
fn probes_pass(flow: &Flow, timeout: Duration, write: fn(&str)) -> bool {
    let results = match probe_all(flow, timeout) {
        Ok(r) => r,
        Err(e) => {
            err(&format!("error: cannot start the connector checks: {e}\n"));
            return false;
        }
    };
    let name_width = flow.nodes.iter().map(|n| n.name.len()).max().unwrap_or(0);
    let type_width = flow.nodes.iter().map(|n| n.spec.name.len()).max().unwrap_or(0);
    let mut failed = 0;
    for (node, result) in flow.nodes.iter().zip(&results) {
        let (status, text) = match result {
            None => ("-", "nothing to check".to_string()),
            Some(Ok(what)) => ("ok", what.clone()),
            Some(Err(cause)) => ("FAIL", cause.clone()),
        };
        failed += usize::from(status == "FAIL");
        let text = fbp_runtime::secret::urls_in(&text);
        write(&format!("  {status:<4} {:<name_width$}  {:<type_width$}  {text}\n", node.name, node.spec.name));
    }
    let checked = results.iter().filter(|r| r.is_some()).count();
    write(&format!("  {checked} checked, {failed} failed\n"));
    failed == 0
}

/// A connector check's lines as log records, for `--log-format json`.
fn log_check(text: &str) {
    for line in text.lines() {
        tracing::info!(check = line.trim(), "Connector check.");
    }
}

/// Each node's probe result, in node order; `None` for nothing to check.
fn probe_all(flow: &Flow, timeout: Duration) -> std::io::Result<Vec<Option<Result<String, String>>>> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let tasks: Vec<_> = flow
        .nodes
        .iter()
        .map(|node| {
            let ctx = fbp_runtime::BuildContext {
                name: node.name.clone(),
                config: node.config.clone(),
                base_dir: node.base_dir.clone(),
            };
            node.spec.probe.map(|probe| {
                let attempt = (probe.run)(&ctx);
                rt.spawn(async move { tokio::time::timeout(timeout, attempt).await })
            })
        })
        .collect();
    let results = rt.block_on(async move {
        let mut results = Vec::with_capacity(tasks.len());
        for task in tasks {
            results.push(match task {
                None => None,
                Some(t) => Some(match t.await {
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => Err(format!(
                        "no answer within {}; check the address, or raise --connect-timeout",
                        humantime(timeout)
                    )),
                    Err(e) => Err(format!("the check failed: {e}")),
                }),
            });
        }
        results
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(results)
}

/// A duration as the flags take it (`5s`, `1500ms`).
fn humantime(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

/// A second signal sooner than this after the first is the same request:
/// coreutils `timeout` sends SIGTERM to fbp and again to its process group.
const SAME_SIGNAL: Duration = Duration::from_secs(1);

/// SIGINT or SIGTERM starts a graceful shutdown; a second one (past
/// [`SAME_SIGNAL`]) exits at once.
fn watch_signals(shutdown: CancellationToken) {
    std::thread::Builder::new()
        .name("fbp-signals".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
                    return;
                };
                let mut first = None;
                loop {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                    match first {
                        None => {
                            first = Some(std::time::Instant::now());
                            tracing::info!("Signal received; draining.");
                            shutdown.cancel();
                        }
                        Some(at) if at.elapsed() < SAME_SIGNAL => {}
                        Some(_) => {
                            err("error: second signal; exiting without draining\n");
                            std::process::exit(1);
                        }
                    }
                }
            });
        })
        .ok();
}
