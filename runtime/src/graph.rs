//! Renders a flow as a graph: Graphviz `dot` or Mermaid.

use crate::flow::{Edge, Flow};

/// Output formats of `fbp graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Graphviz dot.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

fn port_names<'a>(flow: &'a Flow, e: &Edge) -> (&'a str, &'a str) {
    (&flow.nodes[e.from.node].outputs[e.from.port].name, &flow.nodes[e.to.node].inputs[e.to.port].name)
}

/// Renders `flow` in `format`.
pub fn render(flow: &Flow, format: Format) -> String {
    match format {
        Format::Dot => dot(flow),
        Format::Mermaid => mermaid(flow),
    }
}

fn dot(flow: &Flow) -> String {
    let mut s = format!("digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, style=rounded];\n", escape(&flow.name));
    for n in &flow.nodes {
        s.push_str(&format!("  \"{}\" [label=\"{}\\n({})\"];\n", escape(&n.name), escape(&n.name), n.spec.name));
    }
    for e in &flow.edges {
        let (from, to) = port_names(flow, e);
        let (a, b) = (&flow.nodes[e.from.node].name, &flow.nodes[e.to.node].name);
        let style = if from == "err" { ", style=dashed, color=red" } else { "" };
        s.push_str(&format!("  \"{}\" -> \"{}\" [label=\"{from} -> {to}\"{style}];\n", escape(a), escape(b)));
    }
    s.push_str("}\n");
    s
}

fn mermaid(flow: &Flow) -> String {
    let id = |i: usize| format!("n{i}");
    let mut s = String::from("flowchart LR\n");
    for (i, n) in flow.nodes.iter().enumerate() {
        s.push_str(&format!("  {}[\"{}<br/>({})\"]\n", id(i), n.name.replace('"', "#quot;"), n.spec.name));
    }
    for e in &flow.edges {
        let (from, to) = port_names(flow, e);
        let arrow = if from == "err" { "-.->" } else { "-->" };
        s.push_str(&format!("  {} {arrow}|{from} -> {to}| {}\n", id(e.from.node), id(e.to.node)));
    }
    s
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
