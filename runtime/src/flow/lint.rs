//! What `check` warns about in a flow's shape (the flow still loads): a
//! component with no connection at all, a connection written twice, a flow
//! with no source, a cycle that no source feeds (its messages can only come
//! from itself, so it never does anything), and a fed cycle whose connections
//! all wait when full (once its queues fill, none of its components can go on).
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
    if !flow.nodes.is_empty() && flow.exports.is_empty() && !flow.nodes.iter().any(is_source) {
        out.push(
            Diagnostic::at(0..0, "the flow has no source: no message will ever enter it")
                .help("add a source component (`fbp components` lists them) and connect it"),
        );
    }
    for cycle in cycles(flow).into_iter().filter(|c| blocks(flow, c)) {
        let names: Vec<String> = cycle.iter().map(|&i| format!("`{}`", flow.nodes[i].name)).collect();
        let first = &flow.nodes[cycle[0]].name;
        out.push(
            at(span_of(first), format!("{} form a cycle whose connections all wait when full", names.join(", ")))
                .label("this cycle can fill up and stop")
                .help("give one connection of the cycle `when_full = \"drop_oldest\"` (or `drop_newest`)"),
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

/// A source type, or a component configured to take no input (`exec` in
/// `mode = "source"`).
fn is_source(node: &super::Node) -> bool {
    node.spec.kind == Kind::Source || node.inputs.is_empty()
}

/// Whether every connection inside `cycle` waits when full: once its queues
/// fill, each component waits on the next and none can go on.
fn blocks(flow: &Flow, cycle: &[usize]) -> bool {
    let inside = |e: &&super::Edge| cycle.contains(&e.from.node) && cycle.contains(&e.to.node);
    flow.edges.iter().filter(inside).all(|e| e.when_full == crate::queue::WhenFull::Block)
}

/// The cycles that a source feeds, each as its components in flow order
/// (those no source feeds are warned about as such).
fn cycles(flow: &Flow) -> Vec<Vec<usize>> {
    let unfed = unfed_cycles(flow);
    all_cycles(flow).into_iter().filter(|c| !unfed.contains(c)).collect()
}

/// The cycles no source reaches, each as its components in flow order.
fn unfed_cycles(flow: &Flow) -> Vec<Vec<usize>> {
    let fed = fed(flow);
    all_cycles(flow).into_iter().filter(|c| !c.iter().any(|&i| fed[i])).collect()
}

/// Which components a source's messages can reach (the sources included).
fn fed(flow: &Flow) -> Vec<bool> {
    let sources: Vec<usize> = (0..flow.nodes.len()).filter(|&i| is_source(&flow.nodes[i])).collect();
    let mut fed = reach(flow, &sources);
    sources.iter().for_each(|&i| fed[i] = true);
    fed
}

/// Which components the messages of `from` reach, one connection or more away.
fn reach(flow: &Flow, from: &[usize]) -> Vec<bool> {
    let next = |i: usize| flow.edges.iter().filter(move |e| e.from.node == i).map(|e| e.to.node);
    let mut seen = vec![false; flow.nodes.len()];
    let mut stack: Vec<usize> = from.iter().flat_map(|&i| next(i)).collect();
    while let Some(i) = stack.pop() {
        if !std::mem::replace(&mut seen[i], true) {
            stack.extend(next(i));
        }
    }
    seen
}

/// Every cycle (strongly connected group of two or more, or one that feeds
/// itself), each as its components in flow order.
fn all_cycles(flow: &Flow) -> Vec<Vec<usize>> {
    let n = flow.nodes.len();
    let from: Vec<Vec<bool>> = (0..n).map(|i| reach(flow, &[i])).collect();
    let mut cycles: Vec<Vec<usize>> = Vec::new();
    for i in (0..n).filter(|&i| from[i][i]) {
        if !cycles.iter().any(|c| c.contains(&i)) {
            cycles.push((0..n).filter(|&j| from[i][j] && from[j][i]).collect());
        }
    }
    cycles
}
