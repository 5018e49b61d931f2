//! Subflows: a flow file with `[ports]` used as a component, `type = "flow:PATH"`.
//!
//! A subflow is checked on its own, then expanded into the flow that uses it:
//! its components join the outer flow as `NAME/INNER` (so logs, metrics and
//! graphs name them), its connections come along, and the outer flow's
//! connections to `NAME.PORT` are wired to the inner port that `[ports]`
//! exports. At run time there is no subflow any more, only components.

use std::collections::HashMap;
use std::ops::Range;

use super::check::Checker;
use super::diag::{Diagnostic, did_you_mean};
use super::raw::{RawValue, Sp};
use super::{Export, Flow, Node, PortRef};

/// How deep subflows may nest.
const MAX_DEPTH: usize = 8;

impl Checker<'_> {
    /// Loads `path` (relative to this flow's folder) as a subflow.
    pub(super) fn load_subflow(&mut self, path: &str, span: Range<usize>) -> Option<Flow> {
        let full = self.base_dir.join(path);
        let canonical = full.canonicalize().unwrap_or_else(|_| full.clone());
        if self.stack.contains(&canonical) {
            self.err(
                Diagnostic::at(span, format!("subflow `{path}` includes itself"))
                    .help("a subflow cannot use the flow that uses it"),
            );
            return None;
        }
        if self.stack.len() >= MAX_DEPTH {
            self.err(Diagnostic::at(span, format!("subflows nest deeper than {MAX_DEPTH} levels")));
            return None;
        }
        match super::load_nested(&full, self.catalogue, self.env, self.stack) {
            Ok(sub) => Some(sub),
            Err(d) => {
                let n = d.errors.len();
                let first = d.errors.first().map_or_else(String::new, |e| {
                    let at = e.span.as_ref().map(|s| d.line_col(s.start));
                    let at = at.map_or_else(|| d.path.clone(), |(l, c)| format!("{}:{l}:{c}", d.path));
                    format!("{at}: {}", e.message)
                });
                self.err(
                    Diagnostic::at(
                        span,
                        format!("subflow `{path}` does not load ({n} error{})", if n == 1 { "" } else { "s" }),
                    )
                    .help(format!("first: {first}; run `fbp check {}` for all", d.path)),
                );
                None
            }
        }
    }

    /// Moves every loaded subflow's components and connections into `flow`.
    pub(super) fn expand_subflows(&mut self, flow: &mut Flow) {
        for (name, sub) in std::mem::take(&mut self.subflows) {
            let offset = flow.nodes.len();
            let shift = |p: PortRef| PortRef { node: p.node + offset, port: p.port };
            flow.nodes.extend(sub.nodes.into_iter().map(|n| Node { name: format!("{name}/{}", n.name).into(), ..n }));
            flow.edges.extend(sub.edges.into_iter().map(|e| super::Edge { from: shift(e.from), to: shift(e.to), ..e }));
            let exports = sub.exports.into_iter().map(|x| Export { port: shift(x.port), ..x }).collect();
            self.expansions.insert(name, exports);
        }
    }

    /// The inner port behind `comp.port`, where `comp` is a subflow.
    pub(super) fn exported(
        &mut self,
        exports: &[Export],
        comp: &str,
        port: &str,
        span: Range<usize>,
        is_from: bool,
    ) -> Option<PortRef> {
        let side: Vec<&Export> = exports.iter().filter(|x| x.input != is_from).collect();
        if let Some(x) = side.iter().find(|x| x.name == port) {
            return Some(x.port);
        }
        let kind = if is_from { "out-port" } else { "in-port" };
        let names: Vec<&str> = side.iter().map(|x| x.name.as_str()).collect();
        let d = Diagnostic::at(span, format!("subflow `{comp}` exports no {kind} `{port}`"));
        let d = match did_you_mean(port, names.iter().copied()) {
            Some(best) => d.help(format!("did you mean `{best}`?")),
            None if names.is_empty() => d.help(format!("its `[ports]` table exports no {kind}")),
            None => d.help(format!("it exports: {}", names.join(", "))),
        };
        self.err(d);
        None
    }

    /// Reads `[ports]`: `in = "decode.in"`, `out = "store.out"`.
    pub(super) fn exports(
        &mut self,
        ports: &[(Sp<String>, Sp<RawValue>)],
        nodes: &[Node],
        names: &HashMap<&str, usize>,
    ) -> Vec<Export> {
        let mut out = Vec::new();
        for (key, value) in ports {
            let Some(target) = self.string(value, "an exported port") else { continue };
            let Some((comp, port)) = target.split_once('.') else {
                self.err(
                    Diagnostic::at(value.span.clone(), format!("`{target}` is not `COMPONENT.PORT`"))
                        .help("write e.g. `in = \"decode.in\"`"),
                );
                continue;
            };
            match self.export_target(comp, port, nodes, names) {
                Some((port_ref, input)) => out.push(Export { name: key.value.clone(), port: port_ref, input }),
                // A component that did not load has been reported already.
                None if self.declared.iter().any(|d| d == comp) && !names.contains_key(comp) => {}
                None => self.err(
                    Diagnostic::at(value.span.clone(), format!("`{target}` is not a port of this flow"))
                        .help("name a component of this file and one of its in- or out-ports"),
                ),
            }
        }
        out
    }

    fn export_target(
        &self,
        comp: &str,
        port: &str,
        nodes: &[Node],
        names: &HashMap<&str, usize>,
    ) -> Option<(PortRef, bool)> {
        if let Some(exports) = self.expansions.get(comp) {
            return exports.iter().find(|x| x.name == port).map(|x| (x.port, x.input));
        }
        let node = *names.get(comp)?;
        if let Some(i) = nodes[node].input_names().iter().position(|p| *p == port) {
            return Some((PortRef { node, port: i }, true));
        }
        nodes[node].output_names().iter().position(|p| *p == port).map(|i| (PortRef { node, port: i }, false))
    }
}
