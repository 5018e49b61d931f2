//! Who holds a source's acknowledgements: the components downstream of it,
//! directly or through pass-through components, that keep their inputs'
//! acknowledgements for a time ([`crate::spec::Acks::Holds`]). `fbp check`
//! warns about them and a source names them when its broker stops sending.

use std::sync::Arc;
use std::time::Duration;

use std::ops::Range;

use super::{Diagnostic, Flow};
use crate::spec::{Acks, Delivery};

/// A hold from this long up is more than a source with a broker's budget can
/// afford: at a modest rate it fills mosquitto's 20 in flight.
pub const AFFORDABLE: Duration = Duration::from_secs(1);

/// A component that holds a source's acknowledgements for a time.
#[derive(Clone, Debug, PartialEq)]
pub struct AckHolder {
    /// Its name in the flow.
    pub name: Arc<str>,
    /// Its type.
    pub type_name: &'static str,
    /// How long it may hold them; [`Duration::MAX`] when its config sets no bound in time.
    pub hold: Duration,
    /// What to change so that it holds none.
    pub fix: &'static str,
}

impl AckHolder {
    /// `` `avg` (window) holds them up to 5s ``.
    pub fn describe(&self) -> String {
        let hold = if self.hold == Duration::MAX {
            "with no bound in time".to_string()
        } else {
            format!("up to {}", humantime::format_duration(self.hold))
        };
        format!("`{}` ({}) holds them {hold}", self.name, self.type_name)
    }
}

/// The components downstream of node `source` that hold its messages'
/// acknowledgements for a time, in the order reached. The walk goes on
/// through pass-through components that hold none and stops at a holder (its
/// outputs are settled when it lets go) and at anything else.
pub fn holders(flow: &Flow, source: usize) -> Vec<AckHolder> {
    let mut seen = vec![false; flow.nodes.len()];
    let (mut next, mut out) = (vec![source], Vec::new());
    while let Some(at) = next.pop() {
        for to in flow.edges.iter().filter(|e| e.from.node == at).map(|e| e.to.node) {
            if std::mem::replace(&mut seen[to], true) {
                continue;
            }
            let node = &flow.nodes[to];
            match node.spec.acks.hold(&node.config) {
                Some(hold) => {
                    let fix = match node.spec.acks {
                        Acks::Holds { fix, .. } => fix,
                        _ => "",
                    };
                    out.push(AckHolder { name: node.name.clone(), type_name: node.spec.name, hold, fix });
                }
                None if node.spec.delivery == Delivery::PassThrough => next.push(to),
                None => {}
            }
        }
    }
    out
}

/// A warning for each component that holds, for [`AFFORDABLE`] or longer, the
/// acknowledgements of a source whose broker bounds what it leaves
/// unacknowledged; at the component's place (`span_of` its name).
pub(crate) fn warnings(flow: &Flow, span_of: impl Fn(&str) -> Option<Range<usize>>) -> Vec<Diagnostic> {
    let sources = flow.nodes.iter().enumerate().filter(|(_, n)| n.spec.acks.budgeted(&n.config));
    let mut out = Vec::new();
    for (i, source) in sources {
        for h in holders(flow, i).into_iter().filter(|h| h.hold >= AFFORDABLE) {
            let message = format!(
                "`{}` holds the acknowledgements of `{}` ({}) longer than its broker lets them wait",
                h.name, source.name, source.spec.name
            );
            let d = match span_of(&h.name) {
                Some(span) => Diagnostic::at(span, message),
                None => Diagnostic::whole(message),
            };
            let broker = match source.spec.acks {
                Acks::Budget { limit, .. } => limit,
                _ => "",
            };
            let label = h.describe().replacen(" them", &format!(" `{}`'s acknowledgements", source.name), 1);
            out.push(d.label(label).help(help(&h, broker)));
        }
    }
    out
}

fn help(h: &AckHolder, broker: &str) -> String {
    let fix = if h.fix.is_empty() { "hold them for less time".to_string() } else { h.fix.to_string() };
    format!("in `{}`, {fix}; {broker}", h.name)
}
