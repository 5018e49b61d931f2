//! What a run tells a person: where each sink writes, a status line now and
//! then, and a table of every component's counters at the end.

use std::fmt::Write as _;
use std::time::Duration;

use crate::flow::Node;
use crate::metrics::Summary;
use crate::spec::Kind;

/// Config keys that say where a sink's data goes, in the order they are shown.
const WHERE: &[&str] = &[
    "url",
    "host",
    "port",
    "path",
    "table",
    "topic",
    "subject",
    "stream",
    "exchange",
    "routing_key",
    "queue",
    "command",
];

/// Where a sink writes, from its config: `path=readings.db table=readings`,
/// with any password in a URL masked; `stdout` for one that prints.
pub fn destination(node: &Node) -> Option<String> {
    if node.spec.kind != Kind::Sink {
        return None;
    }
    let shown: Vec<String> = WHERE
        .iter()
        .filter_map(|key| {
            let value = node.config.get(*key)?;
            let text = match value {
                serde_json::Value::String(s) => crate::secret::url(s),
                serde_json::Value::Null => return None,
                other => other.to_string(),
            };
            Some(format!("{key}={text}"))
        })
        .collect();
    match (shown.is_empty(), node.spec.inputs.is_empty()) {
        (false, _) => Some(shown.join(" ")),
        (true, false) if node.spec.name == "console" => Some("stdout".into()),
        _ => None,
    }
}

/// The status line's counts: messages the sources took in, those that
/// reached a sink (written, or being written: a sink counts what it wrote
/// only once its input has drained), and every component's errors and drops.
pub fn totals(summaries: &[Summary], sources: &[bool]) -> (u64, u64, u64, u64) {
    let mut t = (0, 0, 0, 0);
    for (s, source) in summaries.iter().zip(sources) {
        if *source {
            t.0 += s.sent;
        }
        if s.sink {
            t.1 += s.received;
        }
        t.2 += s.errors;
        t.3 += s.dropped;
    }
    t
}

/// What a sink wrote: what it took, less what it refused or dropped.
fn written(s: &Summary) -> u64 {
    s.received.saturating_sub(s.errors + s.dropped)
}

/// The end-of-run table, aligned, one row per component.
pub fn table(summaries: &[Summary]) -> String {
    let header = ["component", "type", "in", "out/written", "errors", "dead-lettered", "dropped", "restarts", "ran"];
    let rows: Vec<[String; 9]> = summaries
        .iter()
        .map(|s| {
            [
                s.component.clone(),
                s.type_name.to_string(),
                s.received.to_string(),
                if s.sink { written(s) } else { s.sent }.to_string(),
                s.errors.to_string(),
                s.dead_lettered.to_string(),
                s.dropped.to_string(),
                s.restarts.to_string(),
                seconds(s.ran),
            ]
        })
        .collect();
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0);
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        for (i, cell) in cells.iter().enumerate() {
            let sep = if i == 0 { "" } else { "  " };
            // Names left, numbers right.
            let _ = match i {
                0 | 1 => write!(out, "{sep}{cell:<w$}", w = widths[i]),
                _ => write!(out, "{sep}{cell:>w$}", w = widths[i]),
            };
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
    };
    line(&header);
    for r in &rows {
        line(&r.each_ref().map(String::as_str));
    }
    out
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(component: &str, type_name: &'static str, sink: bool, counts: [u64; 6]) -> Summary {
        let [received, sent, errors, dropped, restarts, dead_lettered] = counts;
        Summary {
            component: component.into(),
            type_name,
            sink,
            received,
            sent,
            errors,
            dropped,
            restarts,
            dead_lettered,
            ran: Duration::from_millis(12_340),
        }
    }

    #[test]
    fn the_table_aligns_names_left_and_numbers_right_and_shows_what_sinks_wrote() {
        let table = table(&[
            summary("sensors", "sensor-sim", false, [0, 120, 0, 0, 0, 0]),
            summary("store", "sqlite", true, [120, 0, 3, 0, 1, 3]),
        ]);
        let expected = "\
component  type         in  out/written  errors  dead-lettered  dropped  restarts    ran
sensors    sensor-sim    0          120       0              0        0         0  12.3s
store      sqlite      120          117       3              3        0         1  12.3s
";
        assert_eq!(table, expected);
    }

    #[test]
    fn totals_count_what_sources_took_and_sinks_were_given() {
        let s = [
            summary("a", "counter", false, [0, 10, 0, 0, 0, 0]),
            summary("m", "map", false, [10, 9, 1, 0, 0, 0]),
            summary("b", "sqlite", true, [9, 0, 0, 2, 0, 0]),
        ];
        assert_eq!(totals(&s, &[true, false, false]), (10, 9, 1, 2));
    }
}
