//! What `check` warns about in a flow's shape (the flow still loads): a
//! component with no connection at all, a connection written twice, a flow
//! with no source, a cycle that no source feeds (its messages can only come
//! from itself, so it never does anything).
//!
//! An unconnected out-port of a component that has other connections is not
//! warned about: most components have ports a flow may leave alone (`err`
//! goes to the dead letter, a branch may be unused on purpose).

use std::ops::Range;

use super::{Diagnostic, Flow};
use crate::spec::Kind;

/// The warnings about `flow`'s graph. `span_of` places a component (its
/// name); `edge_spans[i]` places `flow.edges[i]` when it was written here.
pub(crate) fn warnings(
    flow: &Flow,
    span_of: impl Fn(&str) -> Option<Range<usize>>,
    edge_spans: &[Option<Range<usize>>],
) -> Vec<Diagnostic> {
    let at = |span: Option<Range<usize>>, message: String| match span {
        Some(span) => Diagnostic::at(span, message),
        None => Diagnostic::whole(message),
    };
    let mut out = Vec::new();
    out.extend(unconnected(flow).map(|i| {
        let name = &flow.nodes[i].name;
        at(span_of(name), format!("`{name}` is not connected to anything"))
            .label("no connection goes to or from it")
            .help(format!("connect it in `connections = [...]`, or remove `[components.{name}]`"))
    }));
    out.extend(twice(flow, edge_spans));
    if !flow.nodes.is_empty() && flow.exports.is_empty() && !flow.nodes.iter().any(|n| n.spec.kind == Kind::Source) {
        out.push(
            Diagnostic::at(0..0, "the flow has no source: no message will ever enter it")
                .help("add a source component (`fbp components` lists them) and connect it"),
        );
    }
    for cycle in unfed_cycles(flow) {
        let names: Vec<String> = cycle.iter().map(|&i| format!("`{}`", flow.nodes[i].name)).collect();
        let first = &flow.nodes[cycle[0]].name;
        out.push(
            at(span_of(first), format!("{} form a cycle that no source feeds", names.join(", ")))
                .label("nothing enters this cycle")
                .help("connect a source into the cycle, or break it"),
        );
    }
    out
}

/// Components with no connection at all, in a flow of more than one component.
fn unconnected(flow: &Flow) -> impl Iterator<Item = usize> + '_ {
    let used = |i: usize| flow.edges.iter().any(|e| e.from.node == i || e.to.node == i);
    (0..flow.nodes.len()).filter(move |&i| flow.nodes.len() > 1 && !used(i))
}

/// A connection written a second time: each message would be delivered twice.
fn twice(flow: &Flow, edge_spans: &[Option<Range<usize>>]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (i, e) in flow.edges.iter().enumerate() {
        let Some(j) = flow.edges[..i].iter().position(|f| f.from == e.from && f.to == e.to) else { continue };
        let (Some(Some(span)), first) = (edge_spans.get(i), edge_spans.get(j).cloned().flatten()) else { continue };
        let d = Diagnostic::at(span.clone(), "this connection is written twice")
            .label("written again here")
            .help("each copy delivers every message once more; remove one");
        out.push(match first {
            Some(first) => d.note_at(first, "first written here"),
            None => d,
        });
    }
    out
}

/// The cycles no source reaches, each as its components in flow order.
fn unfed_cycles(flow: &Flow) -> Vec<Vec<usize>> {
    let n = flow.nodes.len();
    let next = |i: usize| flow.edges.iter().filter(move |e| e.from.node == i).map(|e| e.to.node);
    let reach = |from: &[usize]| {
        let mut seen = vec![false; n];
        let mut stack: Vec<usize> = from.iter().flat_map(|&i| next(i)).collect();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut seen[i], true) {
                stack.extend(next(i));
            }
        }
        seen
    };
    let sources: Vec<usize> = (0..n).filter(|&i| flow.nodes[i].spec.kind == Kind::Source).collect();
    let mut fed = reach(&sources);
    sources.iter().for_each(|&i| fed[i] = true);
    let mut cycles: Vec<Vec<usize>> = Vec::new();
    for i in (0..n).filter(|&i| !fed[i]) {
        let from_i = reach(&[i]);
        if !from_i[i] || cycles.iter().any(|c| c.contains(&i)) {
            continue;
        }
        cycles.push((0..n).filter(|&j| from_i[j] && reach(&[j])[i]).collect());
    }
    cycles
}
