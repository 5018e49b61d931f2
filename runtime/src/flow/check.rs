//! From spanned values to a checked [`Flow`]: types, config, ports,
//! connections. Every error is collected; nothing stops at the first.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::de::DeTable;

use super::diag::{Diagnostic, Diagnostics, did_you_mean};
use super::raw::{self, RawValue, Sp};
use super::{DEFAULT_CAPACITY, Edge, EdgeBuffer, Export, Flow, Limits, Node, OnFailure, Policy, PortRef, Restart};
use crate::buffer::WhenFull as BufferFull;
use crate::port::PortType;
use crate::queue::WhenFull;
use crate::spec::{BuildContext, Catalogue, ComponentSpec, KeyType};
use crate::units::parse_duration;
use crate::value::{DEFAULT_MAX_DEPTH, MAX_MAX_DEPTH};

type Table = Vec<(Sp<String>, Sp<RawValue>)>;
/// A connection's ends and keys: from, to, capacity, when_full, buffer.
type ConnectionKeys = (End, End, Option<usize>, WhenFull, Option<EdgeBuffer>);

const TOP_KEYS: &[&str] = &["flow", "components", "ports"];
const FLOW_KEYS: &[&str] = &["name", "description", "connections", "dead_letter", "on_component_failure", "limits"];
const LIMIT_KEYS: &[&str] = &["max_depth", "jq_timeout", "jq_max_steps", "jq_max_outputs"];
const COMPONENT_KEYS: &[&str] = &["type", "config", "restart", "capacity", "workers", "description"];
const RESTART_KEYS: &[&str] = &["policy", "max_restarts", "within", "backoff"];
const EDGE_KEYS: &[&str] = &["from", "to", "capacity", "when_full", "buffer"];
const BUFFER_KEYS: &[&str] = &["type", "path", "max_size", "when_full"];

/// Checks a flow file's text.
pub fn check_source(
    path: &str,
    text: &str,
    base_dir: &Path,
    catalogue: &Catalogue,
    env: raw::Env<'_>,
) -> Result<Flow, Diagnostics> {
    check_nested(path, text, base_dir, catalogue, &super::Options { env, sets: &[] }, &[])
}

/// [`check_source`] with overrides (`--set`, `--env-file`).
pub fn check_source_with(
    path: &str,
    text: &str,
    base_dir: &Path,
    catalogue: &Catalogue,
    options: &super::Options<'_>,
) -> Result<Flow, Diagnostics> {
    check_nested(path, text, base_dir, catalogue, options, &[])
}

/// [`check_source`] for a file that the files on `stack` include as subflows.
pub(crate) fn check_nested(
    path: &str,
    text: &str,
    base_dir: &Path,
    catalogue: &Catalogue,
    options: &super::Options<'_>,
    stack: &[PathBuf],
) -> Result<Flow, Diagnostics> {
    let mut errors = Vec::new();
    let flow = check_text(text, base_dir, catalogue, options, stack, &mut errors);
    // In file order, as the user reads them; errors about the whole file first.
    errors.sort_by_key(|d| d.span.as_ref().map(|s| s.start));
    match flow {
        Some(mut flow) if errors.is_empty() => {
            if let Some(w) = &mut flow.warnings {
                w.path = path.to_string();
            }
            if let Some(w) = flow.written.as_mut().and_then(Arc::get_mut) {
                w.path = path.to_string();
            }
            Ok(flow)
        }
        _ => Err(Diagnostics { path: path.to_string(), source: text.to_string(), errors }),
    }
}

fn check_text(
    text: &str,
    base_dir: &Path,
    catalogue: &Catalogue,
    options: &super::Options<'_>,
    stack: &[PathBuf],
    errors: &mut Vec<Diagnostic>,
) -> Option<Flow> {
    let env = options.env;
    if text.trim().is_empty() {
        errors.push(
            Diagnostic::whole("the flow file is empty")
                .help("a flow starts with `[flow]` and a `name`, then `[components.NAME]` tables"),
        );
        return None;
    }
    let (parsed, syntax) = DeTable::parse_recoverable(text);
    // The parser recovers and goes on, but what follows a slip is mostly
    // follow-on noise (a missing `]` swallows the next tables): one error.
    if let Some(e) = syntax.into_iter().min_by_key(|e| e.span().map_or(0, |s| s.start)) {
        errors.push(syntax_error(text, &e));
        return None;
    }
    let mut top = raw::table(parsed.get_ref(), text, env, errors);
    super::overrides::apply(&mut top, options.sets, catalogue, env, errors);
    let reported = errors.iter().filter_map(|d| d.span.clone()).collect();
    Checker {
        catalogue,
        declared: Vec::new(),
        reported,
        errors,
        base_dir,
        source: text,
        env,
        stack,
        subflows: Vec::new(),
        expansions: HashMap::new(),
    }
    .flow(&top)
}

/// A TOML syntax error; a key defined twice shows where it was first.
fn syntax_error(text: &str, e: &toml::de::Error) -> Diagnostic {
    let span = e.span().unwrap_or(0..0);
    let message = e.message().trim_end();
    if message != "duplicate key" {
        let d = Diagnostic::at(span, format!("invalid TOML: {message}"));
        return if message.starts_with("missing comma between array elements") {
            d.help("an array ends with `]`: is one missing before this?")
        } else {
            d
        };
    }
    let written = text.get(span.clone()).unwrap_or("");
    let name = written.trim().trim_matches(|c| c == '"' || c == '\'');
    let line_start = text[..span.start.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let what = if text[line_start..].trim_start().starts_with("[components.") { "component " } else { "" };
    let d = Diagnostic::at(span.clone(), format!("{what}`{name}` is defined twice")).label("defined again here");
    let d = match first_definition(text, &span) {
        Some(first) => d.note_at(first, "first defined here"),
        None => d,
    };
    d.help(format!("remove one of the two `{name}`, or rename one"))
}

/// Where the key or table that `dup` (a span in `text`) repeats was first
/// written: the same `[header]` line earlier in the file, or the same key
/// earlier in the same table. The parser keeps only the later one.
fn first_definition(text: &str, dup: &Range<usize>) -> Option<Range<usize>> {
    let line_start = text[..dup.start.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..].find('\n').map_or(text.len(), |i| line_start + i);
    let line = &text[line_start..line_end];
    let column = dup.start - line_start;
    let mut lines = text[..line_start].split_inclusive('\n').scan(0, |at, l| {
        let start = *at;
        *at += l.len();
        Some((start, l))
    });
    let earlier: Vec<(usize, &str)> = lines.by_ref().collect();
    if line.trim_start().starts_with('[') {
        let header = line.trim();
        let (at, _) = earlier.iter().find(|(_, l)| l.trim() == header)?;
        return Some(at + column..at + column + dup.len());
    }
    let key = text.get(dup.clone())?.trim();
    for (at, l) in earlier.iter().rev() {
        let t = l.trim_start();
        if t.starts_with('[') {
            return None;
        }
        if let Some((k, _)) = t.split_once('=')
            && k.trim() == key
        {
            let offset = at + (l.len() - t.len());
            return Some(offset..offset + key.len());
        }
    }
    None
}

/// One end of a connection as written, `comp.port` or `comp`.
struct End {
    name: String,
    /// Where it is in the file.
    span: Range<usize>,
    /// Whether it came from an environment variable (never shown in errors).
    hidden: bool,
}

pub(super) struct Checker<'a> {
    pub(super) catalogue: &'a Catalogue,
    /// Every `[components.NAME]`, loaded or not (a broken one is reported once, not at each use).
    pub(super) declared: Vec<String>,
    /// Where reading the values found errors (a missing variable): not reported again.
    pub(super) reported: Vec<Range<usize>>,
    pub(super) errors: &'a mut Vec<Diagnostic>,
    pub(super) base_dir: &'a Path,
    /// The file's text, to place errors inside strings.
    pub(super) source: &'a str,
    pub(super) env: raw::Env<'a>,
    /// The files that include this one as a subflow (to refuse cycles).
    pub(super) stack: &'a [PathBuf],
    /// Subflows used as components, loaded, not yet expanded.
    pub(super) subflows: Vec<(String, Flow)>,
    /// Expanded subflows: their exported ports, by component name.
    pub(super) expansions: HashMap<String, Vec<Export>>,
}

fn unknown_key(key: &Sp<String>, what: &str, known: &[&str]) -> Diagnostic {
    let d = Diagnostic::at(key.span.clone(), format!("unknown {what} `{}`", key.value));
    match did_you_mean(&key.value, known.iter().copied()) {
        Some(best) => d.help(format!("did you mean `{best}`?")),
        None => d.help(format!("expected one of: {}", known.join(", "))),
    }
}

impl Checker<'_> {
    /// Records an error, unless it is a follow-on of one found while reading the value.
    pub(super) fn err(&mut self, d: Diagnostic) {
        let follow_on =
            d.span.as_ref().is_some_and(|s| self.reported.iter().any(|r| s.start < r.end && r.start < s.end));
        if !follow_on {
            self.errors.push(d);
        }
    }

    /// Where a string value's text starts in the file, when it is written there
    /// verbatim between its quotes (no escapes, no variables).
    fn verbatim(&self, v: &Sp<RawValue>) -> Option<usize> {
        let text = v.value.as_str()?;
        let written = self.source.get(v.span.clone())?;
        let quote = if written.starts_with("\"\"\"") || written.starts_with("'''") { 3 } else { 1 };
        let inside = written.get(quote..written.len().checked_sub(quote)?)?;
        // A multi-line string drops a newline right after its opening quotes.
        let skip = match inside {
            _ if quote == 1 => 0,
            s if s.starts_with("\r\n") => 2,
            s if s.starts_with('\n') => 1,
            _ => 0,
        };
        (inside[skip..] == *text).then_some(v.span.start + quote + skip)
    }

    fn flow(&mut self, top: &Table) -> Option<Flow> {
        for (k, _) in top {
            if !TOP_KEYS.contains(&k.value.as_str()) {
                let d = unknown_key(k, "top-level table", TOP_KEYS);
                self.err(d);
            }
        }
        let get = |name: &str| top.iter().find(|(k, _)| k.value == name).map(|(_, v)| v);
        let mut flow = Flow {
            name: String::new(),
            description: String::new(),
            nodes: Vec::new(),
            edges: Vec::new(),
            dead_letter: None,
            on_component_failure: OnFailure::Stop,
            limits: Limits::default(),
            exports: Vec::new(),
            warnings: None,
            written: None,
        };
        let flow_table = match get("flow") {
            None => {
                self.err(
                    Diagnostic::at(0..0, "missing `[flow]` table")
                        .help("start the file with `[flow]`, a `name` and `connections = [...]`"),
                );
                None
            }
            Some(v) => self.table_of(v, "`[flow]`"),
        };
        let components = get("components").and_then(|v| self.table_of(v, "`[components]`")).unwrap_or_default();
        self.declared = components.iter().map(|(name, _)| name.value.clone()).collect();
        let spans: HashMap<String, Range<usize>> =
            components.iter().map(|(name, _)| (name.value.clone(), name.span.clone())).collect();
        let mut written = super::Written { source: self.source.to_string(), ..Default::default() };
        for (name, body) in components {
            let keys = config_spans(&body);
            written.components.push(super::WrittenComponent {
                name: name.value.clone(),
                span: name.span.clone(),
                keys,
            });
            if let Some(node) = self.component(&name, &body) {
                flow.nodes.push(node);
            }
        }
        flow.written = Some(Arc::new(written));
        self.expand_subflows(&mut flow);
        let names: HashMap<String, usize> =
            flow.nodes.iter().enumerate().map(|(i, n)| (n.name.to_string(), i)).collect();
        let names: HashMap<&str, usize> = names.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let mut edge_spans = Vec::new();
        if let Some(ft) = flow_table {
            self.flow_settings(&ft, &mut flow);
            if let Some((_, conns)) = ft.iter().find(|(k, _)| k.value == "connections") {
                let (edges, spans): (Vec<Edge>, Vec<Range<usize>>) =
                    self.connections(conns, &flow.nodes, &names).into_iter().unzip();
                let first = flow.edges.len();
                flow.edges.extend(edges);
                self.type_check(&mut flow, first, &spans);
                edge_spans = std::iter::repeat_n(None, first).chain(spans.into_iter().map(Some)).collect();
            }
        }
        if let Some(ports) = get("ports").and_then(|p| self.table_of(p, "`[ports]`")) {
            flow.exports = self.exports(&ports, &flow.nodes, &names);
        }
        // A subflow's component is shown at the `[components.NAME]` that uses it.
        let span_of = |name: &str| spans.get(name.split('/').next().unwrap_or(name)).cloned();
        let mut warnings = super::acks::warnings(&flow, span_of);
        warnings.extend(super::listeners::warnings(&flow, span_of));
        warnings.extend(super::lint::warnings(&flow, span_of, &edge_spans));
        warnings.sort_by_key(|d| d.span.as_ref().map(|s| s.start));
        if !warnings.is_empty() {
            flow.warnings =
                Some(Diagnostics { path: String::new(), source: self.source.to_string(), errors: warnings });
        }
        Some(flow)
    }

    fn table_of(&mut self, v: &Sp<RawValue>, what: &str) -> Option<Table> {
        match &v.value {
            RawValue::Table(t) => Some(t.clone()),
            other => {
                self.err(Diagnostic::at(
                    v.span.clone(),
                    format!("{what} must be a table, found {}", other.type_name()),
                ));
                None
            }
        }
    }

    pub(super) fn string(&mut self, v: &Sp<RawValue>, what: &str) -> Option<String> {
        match v.value.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.err(Diagnostic::at(
                    v.span.clone(),
                    format!("{what} must be a string, found {}", v.value.type_name()),
                ));
                None
            }
        }
    }

    fn positive(&mut self, v: &Sp<RawValue>, what: &str) -> Option<usize> {
        match int_of(&v.value) {
            Some(n) if n > 0 => Some(n as usize),
            _ => {
                self.err(Diagnostic::at(
                    v.span.clone(),
                    format!("`{what}` must be a positive integer, found {}", v.value.shown()),
                ));
                None
            }
        }
    }

    fn flow_settings(&mut self, ft: &Table, flow: &mut Flow) {
        for (k, v) in ft {
            match k.value.as_str() {
                "name" => flow.name = self.string(v, "`name`").unwrap_or_default(),
                "description" => flow.description = self.string(v, "`description`").unwrap_or_default(),
                "connections" => {}
                "dead_letter" => {
                    if let Some(s) = self.string(v, "`dead_letter`") {
                        let path = s.strip_prefix("file:").unwrap_or(&s);
                        flow.dead_letter = Some(self.base_dir.join(path));
                    }
                }
                "on_component_failure" => match v.value.as_str() {
                    Some("stop") => flow.on_component_failure = OnFailure::Stop,
                    Some("isolate") => flow.on_component_failure = OnFailure::Isolate,
                    _ => self.err(
                        Diagnostic::at(
                            v.span.clone(),
                            format!(
                                "`on_component_failure` must be \"stop\" or \"isolate\", found {}",
                                v.value.shown()
                            ),
                        )
                        .suggest(v.value.as_str().unwrap_or(""), ["stop", "isolate"]),
                    ),
                },
                "limits" => {
                    if let Some(t) = self.table_of(v, "`[flow.limits]`") {
                        self.limits(&t, &mut flow.limits);
                    }
                }
                _ => {
                    let d = unknown_key(k, "`[flow]` key", FLOW_KEYS);
                    self.err(d);
                }
            }
        }
    }

    /// `[flow.limits]`: what a peer's message or a jq program may make fbp do.
    fn limits(&mut self, t: &Table, limits: &mut Limits) {
        for (k, v) in t {
            match k.value.as_str() {
                "max_depth" => match int_of(&v.value) {
                    Some(n) if (1..=MAX_MAX_DEPTH as i64).contains(&n) => limits.max_depth = n as usize,
                    _ => self.err(
                        Diagnostic::at(
                            v.span.clone(),
                            format!("`max_depth` must be from 1 to {MAX_MAX_DEPTH} levels, found {}", v.value.shown()),
                        )
                        .help(format!("the default, {DEFAULT_MAX_DEPTH}, fits any sensor reading or API answer")),
                    ),
                },
                "jq_timeout" => match v.value.as_str().map(parse_duration) {
                    Some(Ok(d)) if !d.is_zero() => limits.jq.timeout = d,
                    _ => self.err(
                        Diagnostic::at(
                            v.span.clone(),
                            format!("`jq_timeout` must be a duration like \"1s\", found {}", v.value.shown()),
                        )
                        .help("durations are a number and a unit: 500ms, 1s, 2m"),
                    ),
                },
                "jq_max_steps" => {
                    if let Some(n) = self.positive(v, "jq_max_steps") {
                        limits.jq.max_steps = n as u64;
                    }
                }
                "jq_max_outputs" => {
                    if let Some(n) = self.positive(v, "jq_max_outputs") {
                        limits.jq.max_outputs = n as u64;
                    }
                }
                _ => {
                    let d = unknown_key(k, "`[flow.limits]` key", LIMIT_KEYS);
                    self.err(d);
                }
            }
        }
    }

    fn component(&mut self, name: &Sp<String>, body: &Sp<RawValue>) -> Option<Node> {
        if name.value.contains('.') || name.value.contains(' ') || name.value.is_empty() {
            self.err(
                Diagnostic::at(name.span.clone(), format!("invalid component name `{}`", name.value))
                    .help("names are letters, digits, `-` and `_`; no dots or spaces"),
            );
        }
        let table = self.table_of(body, &format!("component `{}`", name.value))?;
        let get = |key: &str| table.iter().find(|(k, _)| k.value == key).map(|(_, v)| v);
        for (k, _) in &table {
            if !COMPONENT_KEYS.contains(&k.value.as_str()) {
                let mut d = unknown_key(k, "component key", COMPONENT_KEYS);
                if d.help.as_deref().is_some_and(|h| h.starts_with("expected")) {
                    d = d.help("component settings go under `config = { ... }`; beside `type` sit only type, config, restart, capacity, workers, description");
                }
                self.err(d);
            }
        }
        let Some(ty) = get("type") else {
            self.err(
                Diagnostic::at(name.span.clone(), format!("component `{}` has no `type`", name.value))
                    .help("add `type = \"...\"`; `fbp components` lists the types"),
            );
            return None;
        };
        let ty_name = self.string(ty, "`type`")?;
        if let Some(path) = ty_name.strip_prefix("flow:") {
            if let Some(sub) = self.load_subflow(path, ty.span.clone()) {
                self.subflows.push((name.value.clone(), sub));
            }
            return None;
        }
        let Some(spec) = self.catalogue.get(&ty_name) else {
            let hidden = matches!(ty.value, RawValue::Str { from_var: true, .. });
            let d = Diagnostic::at(ty.span.clone(), format!("unknown component type `{ty_name}`"))
                .label("not a known type");
            let d = match did_you_mean(&ty_name, self.catalogue.names()) {
                // A value from a variable is never shown, nor hinted at.
                _ if hidden => Diagnostic::at(ty.span.clone(), "unknown component type (from the environment)")
                    .help("`fbp components` lists the types"),
                Some(best) => d.help(format!("did you mean `{best}`?")),
                None => d.help(format!(
                    "the nearest types are {}; `fbp components` lists them all",
                    nearest(&ty_name, self.catalogue)
                )),
            };
            self.err(d);
            return None;
        };
        let config = self.config(spec, name, get("config"), ty.span.clone());
        if let Some(c) = &config {
            self.try_build(spec, name, c, get("config"), ty.span.clone());
        }
        let restart = get("restart").map_or(Some(Restart::default_for(spec)), |r| self.restart(spec, r));
        let capacity = get("capacity").map_or(Some(DEFAULT_CAPACITY), |v| self.positive(v, "capacity"));
        let workers = get("workers").map_or(Some(1), |v| self.positive(v, "workers"));
        if let (Some(w), Some(v)) = (workers, get("workers"))
            && w > 1
            && !spec.stateless
        {
            self.err(
                Diagnostic::at(
                    v.span.clone(),
                    format!("`{}` keeps state, so it cannot run as several workers", spec.name),
                )
                .help("remove `workers`, or split the stream upstream"),
            );
        }
        // On an error here the flow is rejected anyway; keep the node so its
        // connections are still checked.
        let config = config.unwrap_or_default();
        let (inputs, outputs) = spec.resolve_ports(&config);
        Some(Node {
            name: Arc::from(name.value.as_str()),
            spec,
            inputs,
            outputs,
            config,
            restart: restart.unwrap_or(Restart::default_for(spec)),
            capacity: capacity.unwrap_or(DEFAULT_CAPACITY),
            workers: workers.unwrap_or(1),
            base_dir: self.base_dir.to_path_buf(),
        })
    }

    /// Builds the component once, without running it, so that what only its
    /// build function checks (cross-key rules, names, sizes) is reported now.
    fn try_build(
        &mut self,
        spec: &ComponentSpec,
        name: &Sp<String>,
        config: &serde_json::Value,
        raw: Option<&Sp<RawValue>>,
        type_span: Range<usize>,
    ) {
        let ctx = BuildContext {
            name: name.value.as_str().into(),
            config: config.clone(),
            base_dir: self.base_dir.to_path_buf(),
        };
        if let Err(e) = (spec.build)(&ctx) {
            let mut secrets = Vec::new();
            if let Some(raw) = raw {
                from_environment(&raw.value, &mut secrets);
            }
            let e = secrets.iter().fold(e, |m, s| m.replace(s.as_str(), "***"));
            let span = raw.map_or(type_span, |r| named_key(&e, r).unwrap_or_else(|| r.span.clone()));
            self.err(Diagnostic::at(span, format!("invalid config for `{}` ({})", name.value, spec.name)).label(e));
        }
    }

    fn config(
        &mut self,
        spec: &ComponentSpec,
        name: &Sp<String>,
        config: Option<&Sp<RawValue>>,
        type_span: Range<usize>,
    ) -> Option<serde_json::Value> {
        let table = match config {
            Some(c) => self.table_of(c, "`config`")?,
            None => Vec::new(),
        };
        let before = self.errors.len();
        let mut out = serde_json::Map::new();
        for (k, v) in &table {
            let Some(key) = spec.key(&k.value) else {
                let known: Vec<&str> = spec.config.iter().map(|k| k.name).collect();
                let d = Diagnostic::at(k.span.clone(), format!("unknown config key `{}`", k.value))
                    .label(format!("not a key of `{}`", spec.name));
                let d = match did_you_mean(&k.value, known.iter().copied()) {
                    _ if COMPONENT_KEYS.contains(&k.value.as_str()) => {
                        d.help(format!("`{}` sits beside `type`, not under `config`", k.value))
                    }
                    Some(best) => d.help(format!("did you mean `{best}`?")),
                    None if known.is_empty() => d.help(format!("`{}` takes no config", spec.name)),
                    None => d.help(format!("`{}` takes: {}", spec.name, known.join(", "))),
                };
                self.err(d);
                continue;
            };
            if let Some(j) = self.key_value(key.name, key.ty, v) {
                out.insert(key.name.to_string(), j);
            }
        }
        for key in spec.config {
            if out.contains_key(key.name) {
                continue;
            }
            if key.required && !table.iter().any(|(k, _)| k.value == key.name) {
                let span = config.map_or(type_span.clone(), |c| c.span.clone());
                self.err(
                    Diagnostic::at(span, format!("component `{}` needs config key `{}`", name.value, key.name))
                        .help(format!("add `{} = ...` to its config: {}", key.name, key.doc)),
                );
            } else if let Some(default) = key.default {
                out.insert(key.name.to_string(), default_json(default));
            }
        }
        (self.errors.len() == before).then_some(serde_json::Value::Object(out))
    }

    fn key_value(&mut self, name: &str, ty: KeyType, v: &Sp<RawValue>) -> Option<serde_json::Value> {
        let expected = |what: &str| {
            Diagnostic::at(v.span.clone(), format!("`{name}` must be {what}, found {}", v.value.type_name()))
        };
        let whole_var = matches!(&v.value, RawValue::Str { whole_var: true, .. });
        let text = v.value.as_str();
        match ty {
            KeyType::Any => Some(v.value.to_json()),
            KeyType::Table(keys) => self.string_table(name, keys, v),
            KeyType::String => text.map(|s| s.into()).or_else(|| {
                self.err(expected("a string"));
                None
            }),
            KeyType::Integer => match (&v.value, text) {
                (RawValue::Int(i), _) => Some((*i).into()),
                (_, Some(s)) if whole_var && s.trim().parse::<i64>().is_ok() => {
                    Some(s.trim().parse::<i64>().ok()?.into())
                }
                _ => {
                    self.err(expected("an integer"));
                    None
                }
            },
            KeyType::Number => match (&v.value, text) {
                (RawValue::Int(i), _) => Some((*i).into()),
                (RawValue::Float(f), _) => serde_json::Number::from_f64(*f).map(Into::into),
                (_, Some(s)) if whole_var && s.trim().parse::<f64>().is_ok() => {
                    serde_json::Number::from_f64(s.trim().parse().ok()?).map(Into::into)
                }
                _ => {
                    self.err(expected("a number"));
                    None
                }
            },
            KeyType::Bool => match (&v.value, text) {
                (RawValue::Bool(b), _) => Some((*b).into()),
                (_, Some("true")) if whole_var => Some(true.into()),
                (_, Some("false")) if whole_var => Some(false.into()),
                _ => {
                    self.err(expected("`true` or `false`"));
                    None
                }
            },
            KeyType::Duration => match text.map(parse_duration) {
                Some(Ok(_)) => text.map(Into::into),
                Some(Err(_)) => {
                    self.err(
                        Diagnostic::at(v.span.clone(), format!("`{name}` is not a duration: {}", v.value.shown()))
                            .help("write durations like \"200ms\", \"10s\", \"1m\" or \"1h\""),
                    );
                    None
                }
                None => {
                    self.err(expected("a duration string like \"10s\""));
                    None
                }
            },
            KeyType::Expr => match text.map(crate::jq::Program::compile) {
                Some(Ok(_)) => text.map(Into::into),
                Some(Err(e)) => {
                    let d = Diagnostic::at(v.span.clone(), format!("`{name}` is not a valid jq program"));
                    // The compiler's message may quote the program: not when it came from a variable.
                    let hidden = matches!(v.value, RawValue::Str { from_var: true, .. });
                    self.err(if hidden { d.label("(from the environment)") } else { d.label(e) });
                    None
                }
                None => {
                    self.err(expected("a jq program (a string)"));
                    None
                }
            },
            KeyType::Enum(options) => match text {
                Some(s) if options.contains(&s) => Some(s.into()),
                _ => {
                    let d = Diagnostic::at(
                        v.span.clone(),
                        format!("`{name}` must be one of {}, found {}", KeyType::Enum(options).name(), v.value.shown()),
                    );
                    let d = d.suggest(text.unwrap_or(""), options.iter().copied());
                    self.err(d);
                    None
                }
            },
            KeyType::StringList | KeyType::NumberList => {
                let want_str = ty == KeyType::StringList;
                let ok = match &v.value {
                    RawValue::Array(items) => items.iter().all(|i| {
                        if want_str {
                            i.value.as_str().is_some()
                        } else {
                            matches!(i.value, RawValue::Int(_) | RawValue::Float(_))
                        }
                    }),
                    _ => false,
                };
                if ok {
                    Some(v.value.to_json())
                } else {
                    self.err(expected(if want_str { "an array of strings" } else { "an array of numbers" }));
                    None
                }
            }
        }
    }

    /// A table with exactly `keys`, each a string; every mistake reported at its place.
    fn string_table(
        &mut self,
        name: &str,
        keys: &'static [&'static str],
        v: &Sp<RawValue>,
    ) -> Option<serde_json::Value> {
        let RawValue::Table(table) = &v.value else {
            let shape = KeyType::Table(keys).name();
            self.err(Diagnostic::at(
                v.span.clone(),
                format!("`{name}` must be a {shape}, found {}", v.value.type_name()),
            ));
            return None;
        };
        let before = self.errors.len();
        for (k, item) in table {
            if !keys.contains(&k.value.as_str()) {
                let d = Diagnostic::at(k.span.clone(), format!("unknown key `{}` in `{name}`", k.value))
                    .label(format!("`{name}` takes {}", keys.join(", ")));
                self.err(d.suggest(&k.value, keys.iter().copied()));
            } else if item.value.as_str().is_none() {
                let d = format!("`{name}.{}` must be a string, found {}", k.value, item.value.type_name());
                self.err(Diagnostic::at(item.span.clone(), d));
            }
        }
        for key in keys.iter().filter(|key| !table.iter().any(|(k, _)| k.value == **key)) {
            self.err(Diagnostic::at(v.span.clone(), format!("`{name}` needs `{key}`")));
        }
        (self.errors.len() == before).then(|| v.value.to_json())
    }

    fn restart(&mut self, spec: &ComponentSpec, v: &Sp<RawValue>) -> Option<Restart> {
        let mut r = Restart::default_for(spec);
        match &v.value {
            RawValue::Str { .. } => r.policy = self.policy(v)?,
            RawValue::Table(t) => {
                for (k, val) in t {
                    match k.value.as_str() {
                        "policy" => r.policy = self.policy(val)?,
                        "max_restarts" => match int_of(&val.value) {
                            Some(n) if n >= 0 => r.max_restarts = n as u32,
                            _ => self.err(Diagnostic::at(
                                val.span.clone(),
                                "`max_restarts` must be a whole number, 0 or more",
                            )),
                        },
                        "within" => match val.value.as_str().map(parse_duration) {
                            Some(Ok(d)) => r.within = d,
                            _ => self.err(Diagnostic::at(val.span.clone(), "`within` must be a duration like \"1m\"")),
                        },
                        "backoff" => match val.value.as_str().and_then(parse_backoff) {
                            Some((lo, hi)) => (r.backoff_min, r.backoff_max) = (lo, hi),
                            None => self.err(Diagnostic::at(
                                val.span.clone(),
                                "`backoff` must be a range of durations like \"100ms..30s\"",
                            )),
                        },
                        _ => {
                            let d = unknown_key(k, "restart key", RESTART_KEYS);
                            self.err(d);
                        }
                    }
                }
            }
            other => self.err(Diagnostic::at(
                v.span.clone(),
                format!("`restart` must be a string or a table, found {}", other.type_name()),
            )),
        }
        Some(r)
    }

    fn policy(&mut self, v: &Sp<RawValue>) -> Option<Policy> {
        match v.value.as_str() {
            Some("always") => Some(Policy::Always),
            Some("on-failure") => Some(Policy::OnFailure),
            Some("never") => Some(Policy::Never),
            other => {
                let d = Diagnostic::at(
                    v.span.clone(),
                    format!(
                        "restart policy must be \"always\", \"on-failure\" or \"never\", found {}",
                        v.value.shown()
                    ),
                )
                .suggest(other.unwrap_or(""), ["always", "on-failure", "never"]);
                self.err(d);
                None
            }
        }
    }

    fn connections(
        &mut self,
        conns: &Sp<RawValue>,
        nodes: &[Node],
        names: &HashMap<&str, usize>,
    ) -> Vec<(Edge, Range<usize>)> {
        let RawValue::Array(items) = &conns.value else {
            self.err(
                Diagnostic::at(conns.span.clone(), "`connections` must be an array")
                    .help("write `connections = [\"a.out -> b.in\", ...]`"),
            );
            return Vec::new();
        };
        let edges: Vec<(Edge, Range<usize>)> =
            items.iter().filter_map(|item| Some((self.connection(item, nodes, names)?, item.span.clone()))).collect();
        self.shared_buffer_dirs(&edges);
        edges
    }

    fn connection(&mut self, item: &Sp<RawValue>, nodes: &[Node], names: &HashMap<&str, usize>) -> Option<Edge> {
        let (from, to, capacity, when_full, buffer) = match &item.value {
            RawValue::Str { text, from_var, .. } => {
                let Some((a, b)) = text.split_once("->").filter(|(a, b)| !a.trim().is_empty() && !b.trim().is_empty())
                else {
                    self.err(
                        Diagnostic::at(
                            item.span.clone(),
                            format!("a connection must look like `A.port -> B.port`, found {}", item.value.shown()),
                        )
                        .help("`\"a -> b\"` connects the default ports `out` and `in`"),
                    );
                    return None;
                };
                let (a_span, b_span) = match self.verbatim(item) {
                    Some(offset) => {
                        let b_at = offset + a.len() + 2;
                        (offset + leading(a)..offset + a.trim_end().len(), b_at + leading(b)..b_at + b.trim_end().len())
                    }
                    None => (item.span.clone(), item.span.clone()),
                };
                (
                    End { name: a.trim().to_string(), span: a_span, hidden: *from_var },
                    End { name: b.trim().to_string(), span: b_span, hidden: *from_var },
                    None,
                    WhenFull::Block,
                    None,
                )
            }
            RawValue::Table(t) => self.connection_table(item, t)?,
            other => {
                self.err(Diagnostic::at(
                    item.span.clone(),
                    format!("a connection must be a string or a table, found {}", other.type_name()),
                ));
                return None;
            }
        };
        let from_ref = self.port_ref(&from, nodes, names, true);
        let to_ref = self.port_ref(&to, nodes, names, false);
        let (from, to) = (from_ref?, to_ref?);
        let capacity = capacity.unwrap_or(nodes[to.node].capacity);
        Some(Edge { from, to, capacity, when_full, check: None, buffer })
    }

    fn connection_table(&mut self, item: &Sp<RawValue>, t: &Table) -> Option<ConnectionKeys> {
        let (mut from, mut to, mut capacity, mut when_full, mut buffer) = (None, None, None, WhenFull::Block, None);
        for (k, v) in t {
            match k.value.as_str() {
                "from" => from = self.end(v, "`from`"),
                "to" => to = self.end(v, "`to`"),
                "capacity" => capacity = self.positive(v, "capacity"),
                "buffer" => buffer = self.edge_buffer(v),
                "when_full" => match v.value.as_str().and_then(WhenFull::parse) {
                    Some(w) => when_full = w,
                    None => {
                        let d = Diagnostic::at(
                            v.span.clone(),
                            format!(
                                "`when_full` must be one of block, drop_newest, drop_oldest, found {}",
                                v.value.shown()
                            ),
                        )
                        .suggest(v.value.as_str().unwrap_or(""), WhenFull::NAMES.iter().copied());
                        self.err(d);
                    }
                },
                _ => {
                    let d = unknown_key(k, "connection key", EDGE_KEYS);
                    self.err(d);
                }
            }
        }
        if from.is_none() || to.is_none() {
            self.err(
                Diagnostic::at(item.span.clone(), "a connection table needs `from` and `to`")
                    .help("write `{ from = \"a.out\", to = \"b.in\" }`"),
            );
            return None;
        }
        Some((from?, to?, capacity, when_full, buffer))
    }

    /// A connection's `buffer = { type = "disk", path = "DIR", max_size = "1GiB", when_full = "block" }`.
    fn edge_buffer(&mut self, v: &Sp<RawValue>) -> Option<EdgeBuffer> {
        let t = self.table_of(v, "`buffer`")?;
        let (mut kind, mut path, mut max_size, mut when_full) = (None, None, Some(1 << 30), Some(BufferFull::Block));
        for (k, v) in &t {
            match k.value.as_str() {
                "type" => kind = self.string(v, "`type`").map(|s| (s, v.span.clone())),
                "path" => path = self.buffer_dir(v),
                "max_size" => max_size = self.buffer_size(v),
                "when_full" => when_full = self.buffer_full(v),
                _ => {
                    let d = unknown_key(k, "buffer key", BUFFER_KEYS);
                    self.err(d);
                }
            }
        }
        match &kind {
            Some((k, _)) if k == "disk" => {}
            Some((k, span)) => self.err(
                Diagnostic::at(span.clone(), format!("buffer `type` must be `disk`, found `{k}`"))
                    .help("the one buffer type is `disk`"),
            ),
            None => self.err(Diagnostic::at(v.span.clone(), "a buffer needs `type = \"disk\"`")),
        }
        if path.is_none() && !t.iter().any(|(k, _)| k.value == "path") {
            self.err(Diagnostic::at(v.span.clone(), "a buffer needs `path`, the directory it keeps its files in"));
        }
        let buffer = EdgeBuffer { path: path?, max_size: max_size?, when_full: when_full? };
        kind.filter(|(k, _)| k == "disk").map(|_| buffer)
    }

    fn buffer_dir(&mut self, v: &Sp<RawValue>) -> Option<PathBuf> {
        let dir = self.base_dir.join(self.string(v, "`path`")?);
        if dir.exists() && !dir.is_dir() {
            self.err(Diagnostic::at(v.span.clone(), format!("buffer `path` {} is not a directory", dir.display())));
            return None;
        }
        Some(dir)
    }

    fn buffer_size(&mut self, v: &Sp<RawValue>) -> Option<u64> {
        let text = self.string(v, "`max_size`")?;
        match crate::units::parse_size(&text) {
            Ok(n) if n > 0 => Some(n),
            Ok(_) => {
                self.err(Diagnostic::at(v.span.clone(), "buffer `max_size` must be more than 0"));
                None
            }
            Err(e) => {
                self.err(Diagnostic::at(v.span.clone(), format!("buffer `max_size`: {e}")).help("write e.g. \"1GiB\""));
                None
            }
        }
    }

    fn buffer_full(&mut self, v: &Sp<RawValue>) -> Option<BufferFull> {
        match v.value.as_str() {
            Some("block") => Some(BufferFull::Block),
            Some("drop_oldest") => Some(BufferFull::DropOldest),
            other => {
                let d = Diagnostic::at(
                    v.span.clone(),
                    format!("buffer `when_full` must be block or drop_oldest, found {}", v.value.shown()),
                )
                .suggest(other.unwrap_or(""), ["block", "drop_oldest"]);
                self.err(d);
                None
            }
        }
    }

    /// Two connections buffering in one directory would mix their records.
    fn shared_buffer_dirs(&mut self, edges: &[(Edge, Range<usize>)]) {
        let buffers: Vec<(&Path, &Range<usize>)> =
            edges.iter().filter_map(|(e, span)| Some((e.buffer.as_ref()?.path.as_path(), span))).collect();
        for (i, &(dir, span)) in buffers.iter().enumerate() {
            if let Some((_, first)) = buffers[..i].iter().find(|(d, _)| *d == dir) {
                self.err(
                    Diagnostic::at(
                        span.clone(),
                        format!("buffer `path` {} is used by another connection", dir.display()),
                    )
                    .note_at((*first).clone(), "first used here")
                    .help("give each buffered connection its own directory"),
                );
            }
        }
    }

    /// One end of a connection table, `from` or `to`.
    fn end(&mut self, v: &Sp<RawValue>, what: &str) -> Option<End> {
        let name = self.string(v, what)?;
        let span = match self.verbatim(v) {
            Some(at) => at..at + name.len(),
            None => v.span.clone(),
        };
        let hidden = matches!(v.value, RawValue::Str { from_var: true, .. });
        Some(End { name, span, hidden })
    }

    fn port_ref(&mut self, end: &End, nodes: &[Node], names: &HashMap<&str, usize>, is_from: bool) -> Option<PortRef> {
        // Sub-spans only when the span is the text itself (written verbatim); a
        // fallback span is the whole quoted string, always longer than its text.
        let exact = end.span.len() == end.name.len();
        let (comp, port, comp_span, port_span) = match end.name.split_once('.') {
            Some((c, p)) if exact => {
                let at = end.span.start + c.len() + 1;
                (c.trim(), p.trim(), end.span.start..end.span.start + c.len(), at..end.span.end)
            }
            Some((c, p)) => (c.trim(), p.trim(), end.span.clone(), end.span.clone()),
            None => (end.name.as_str(), if is_from { "out" } else { "in" }, end.span.clone(), end.span.clone()),
        };
        if let Some(exports) = self.expansions.get(comp).cloned() {
            return self.exported(&exports, comp, port, port_span, is_from);
        }
        let Some(&node) = names.get(comp) else {
            if self.declared.iter().any(|d| d == comp) {
                return None;
            }
            if end.hidden {
                self.err(Diagnostic::at(
                    end.span.clone(),
                    "a connection names an unknown component (from the environment)",
                ));
                return None;
            }
            let d = Diagnostic::at(comp_span, format!("unknown component `{comp}` in a connection"));
            let d = match did_you_mean(comp, names.keys().copied()) {
                Some(best) => d.help(format!("did you mean `{best}`?")),
                None => d.help(format!(
                    "add a `[components.{comp}]` table, or use one of: {}",
                    sorted(names.keys().copied())
                )),
            };
            self.err(d);
            return None;
        };
        let spec = nodes[node].spec;
        let (ports, other) = if is_from {
            (nodes[node].output_names(), nodes[node].input_names())
        } else {
            (nodes[node].input_names(), nodes[node].output_names())
        };
        if let Some(i) = ports.iter().position(|p| *p == port) {
            return Some(PortRef { node, port: i });
        }
        let side = if is_from { "out-port" } else { "in-port" };
        if end.hidden {
            self.err(Diagnostic::at(
                end.span.clone(),
                format!("`{comp}` ({}) has no such {side} (from the environment)", spec.name),
            ));
            return None;
        }
        let mut d = Diagnostic::at(port_span, format!("`{comp}` ({}) has no {side} `{port}`", spec.name));
        d = if other.contains(&port) {
            d.help(format!(
                "`{port}` is an {} of `{comp}`; connections go from an out-port to an in-port",
                if is_from { "in-port" } else { "out-port" }
            ))
        } else if ports.is_empty() {
            d.help(format!("`{}` has no {side}s", spec.name))
        } else {
            match did_you_mean(port, ports.iter().copied()) {
                Some(best) => d.help(format!("did you mean `{best}`?")),
                None => d.help(format!("its {side}s are: {}", ports.join(", "))),
            }
        };
        self.err(d);
        None
    }

    /// Checks every connection's types; marks those that need a per-message check.
    fn type_check(&mut self, flow: &mut Flow, first: usize, spans: &[Range<usize>]) {
        for (i, span) in spans.iter().enumerate() {
            let i = first + i;
            let e = &flow.edges[i];
            let out_ty = out_type(flow, e.from, &mut Vec::new());
            let in_ty = in_type(flow, e.to);
            match out_ty.connects_to(&in_ty) {
                Ok(()) if in_ty.needs_check_from(&out_ty) => flow.edges[i].check = Some(in_ty),
                Ok(()) => {}
                Err(m) => {
                    let (a, b) = (&flow.nodes[e.from.node], &flow.nodes[e.to.node]);
                    let label = format!("`{}` sends `{out_ty}`, `{}` takes `{in_ty}`", a.name, b.name);
                    self.err(Diagnostic::at(span.clone(), m.message).label(label).help(m.help));
                }
            }
        }
    }
}

/// The type an out-port produces, following pass-through (`same`) components upstream.
pub(crate) fn out_type(flow: &Flow, at: PortRef, seen: &mut Vec<usize>) -> PortType {
    let node = &flow.nodes[at.node];
    let Some(port) = node.outputs.get(at.port) else {
        return PortType::Any;
    };
    let ty = PortType::parse(&port.ty).unwrap_or(PortType::Any);
    if ty != PortType::Same || seen.contains(&at.node) {
        return if ty == PortType::Same { PortType::Any } else { ty };
    }
    seen.push(at.node);
    let upstream: Vec<PortType> = flow
        .edges
        .iter()
        .filter(|e| e.to.node == at.node && e.to.port == 0)
        .map(|e| out_type(flow, e.from, seen))
        .collect();
    match upstream.as_slice() {
        [] => in_type(flow, PortRef { node: at.node, port: 0 }),
        [one] => one.clone(),
        [first, rest @ ..] if rest.iter().all(|t| t == first) => first.clone(),
        _ => PortType::Any,
    }
}

fn in_type(flow: &Flow, at: PortRef) -> PortType {
    flow.nodes[at.node].inputs.get(at.port).and_then(|p| PortType::parse(&p.ty).ok()).unwrap_or(PortType::Any)
}

fn int_of(v: &RawValue) -> Option<i64> {
    match v {
        RawValue::Int(i) => Some(*i),
        RawValue::Str { text, whole_var: true, .. } => text.trim().parse().ok(),
        _ => None,
    }
}

fn parse_backoff(s: &str) -> Option<(std::time::Duration, std::time::Duration)> {
    let (lo, hi) = s.split_once("..")?;
    let (lo, hi) = (parse_duration(lo).ok()?, parse_duration(hi).ok()?);
    (lo <= hi && !lo.is_zero()).then_some((lo, hi))
}

fn default_json(literal: &str) -> serde_json::Value {
    toml::from_str::<toml::Table>(&format!("v = {literal}"))
        .ok()
        .and_then(|t| t.get("v").cloned())
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Where the value of the first config key that `message` names in
/// backticks (`` `qos` `` or `` `qos = 3` ``) is written, if `config` has it.
fn named_key(message: &str, config: &Sp<RawValue>) -> Option<Range<usize>> {
    let RawValue::Table(table) = &config.value else {
        return None;
    };
    super::diag::first_named(message, table.iter().map(|(k, v)| (k.value.as_str(), &v.span))).cloned()
}

/// Each config key of a component's table, with where its value is written.
fn config_spans(body: &Sp<RawValue>) -> Vec<(String, Range<usize>)> {
    let RawValue::Table(table) = &body.value else { return Vec::new() };
    let config = table.iter().find(|(k, _)| k.value == "config").map(|(_, v)| &v.value);
    match config {
        Some(RawValue::Table(keys)) => keys.iter().map(|(k, v)| (k.value.clone(), v.span.clone())).collect(),
        _ => Vec::new(),
    }
}

/// The strings in a value that came from environment variables (never shown).
fn from_environment(v: &RawValue, out: &mut Vec<String>) {
    match v {
        RawValue::Str { text, from_var: true, .. } if !text.is_empty() => out.push(text.clone()),
        RawValue::Array(a) => a.iter().for_each(|v| from_environment(&v.value, out)),
        RawValue::Table(t) => t.iter().for_each(|(_, v)| from_environment(&v.value, out)),
        _ => {}
    }
}

fn nearest(wrong: &str, catalogue: &Catalogue) -> String {
    let mut scored: Vec<(f64, &str)> = catalogue.names().map(|n| (strsim::jaro_winkler(wrong, n), n)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.iter().take(3).map(|(_, n)| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

fn leading(s: &str) -> usize {
    s.len() - s.trim_start().len()
}

fn sorted<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut v: Vec<_> = names.collect();
    v.sort();
    v.join(", ")
}
