//! The aggregation state machine of `window`, apart from the async loop.
//!
//! [`Windows`] is told each message with the time it arrived ([`Windows::add`]),
//! asked what is due at a given time ([`Windows::flush_due`]) and, when the
//! input ends, for everything it holds ([`Windows::flush_all`]). It reads no
//! clock, so tests drive it with explicit times.
//!
//! Time windows are kept as *panes* of length `every` (aligned to multiples of
//! `every` since the Unix epoch), each holding running aggregates and its
//! messages' acknowledgements when it holds them (`ack = "on_emit"`): a
//! tumbling window is one pane, a sliding window of `size` the last
//! `size / every` panes. Memory grows with the number of messages only through
//! the acknowledgement handles held.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fbp_runtime::message::format_timestamp;
use fbp_runtime::value::{self, Value};
use fbp_runtime::{Ack, Message};

/// How windows are cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Shape {
    /// Windows of `size` ending at every multiple of `every`; tumbling when
    /// they are equal. `size` is a multiple of `every`.
    Time { every: Duration, size: Duration },
    /// A window per `n` messages of a group.
    Count(u64),
}

/// An aggregate the window can compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Agg {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    First,
    Last,
}

impl Agg {
    /// Every aggregate, as config spells them.
    pub(super) const NAMES: &'static [&'static str] = &["avg", "min", "max", "sum", "count", "first", "last"];
    const ALL: [Agg; 7] = [Agg::Avg, Agg::Min, Agg::Max, Agg::Sum, Agg::Count, Agg::First, Agg::Last];

    /// The aggregate called `name`.
    pub(super) fn parse(name: &str) -> Option<Agg> {
        Agg::NAMES.iter().position(|n| *n == name).map(|i| Agg::ALL[i])
    }

    fn name(self) -> &'static str {
        Agg::NAMES[self as usize]
    }

    fn value(self, s: &Stats) -> Value {
        match self {
            Agg::Avg => Value::from(s.sum / s.count as f64),
            Agg::Min => s.min.1.clone(),
            Agg::Max => s.max.1.clone(),
            Agg::Sum => Value::from(s.sum),
            Agg::Count => value::int(i64::try_from(s.count).unwrap_or(i64::MAX)),
            Agg::First => s.first.clone(),
            Agg::Last => s.last.clone(),
        }
    }
}

/// Running aggregates of one or more numbers (the original values are kept
/// for `min`, `max`, `first` and `last`, so integers stay integers).
#[derive(Clone, Debug)]
struct Stats {
    count: u64,
    sum: f64,
    min: (f64, Value),
    max: (f64, Value),
    first: Value,
    last: Value,
}

impl Stats {
    fn new(x: f64, v: &Value) -> Self {
        Stats { count: 1, sum: x, min: (x, v.clone()), max: (x, v.clone()), first: v.clone(), last: v.clone() }
    }

    fn add(&mut self, x: f64, v: &Value) {
        self.merge(&Stats::new(x, v));
    }

    /// Adds the numbers of `later`, which came after these.
    fn merge(&mut self, later: &Stats) {
        self.count += later.count;
        self.sum += later.sum;
        if later.min.0 < self.min.0 {
            self.min = later.min.clone();
        }
        if later.max.0 > self.max.0 {
            self.max = later.max.clone();
        }
        self.last = later.last.clone();
    }
}

/// Aggregates of some messages, their acknowledgements and when they came.
#[derive(Clone, Debug)]
struct Bucket {
    stats: Stats,
    acks: Vec<Ack>,
    first_at: SystemTime,
    last_at: SystemTime,
}

impl Bucket {
    fn new(sample: Sample, at: SystemTime) -> Self {
        Bucket {
            stats: Stats::new(sample.x, &sample.v),
            acks: sample.ack.into_iter().collect(),
            first_at: at,
            last_at: at,
        }
    }

    fn add(&mut self, sample: Sample, at: SystemTime) {
        self.stats.add(sample.x, &sample.v);
        self.acks.extend(sample.ack);
        self.last_at = at;
    }

    fn merge(&mut self, later: &Bucket) {
        self.stats.merge(&later.stats);
        self.acks.extend(later.acks.iter().cloned());
        self.last_at = later.last_at;
    }
}

/// What one message brings.
struct Sample {
    x: f64,
    v: Value,
    ack: Option<Ack>,
}

/// A window result: its payload and the acknowledgements of its inputs.
#[derive(Debug)]
pub(super) struct Emit {
    /// `{<group_by>, <aggregates>, count, window_start, window_end}`.
    pub(super) payload: Value,
    /// Merge these into the output's acknowledgement.
    pub(super) acks: Vec<Ack>,
}

/// What a result looks like: the group field and the aggregates asked for.
#[derive(Clone, Debug)]
pub(super) struct Layout {
    /// The field that groups messages, echoed in each result.
    pub(super) group_by: Option<String>,
    /// The aggregates, in the order asked for; `count` is added if missing.
    pub(super) aggregates: Vec<Agg>,
}

impl Layout {
    fn render(&self, group: &Value, b: &Bucket, start: SystemTime, end: SystemTime) -> Emit {
        let mut fields: Vec<(String, Value)> = Vec::with_capacity(self.aggregates.len() + 4);
        if let Some(name) = &self.group_by {
            fields.push((name.clone(), group.clone()));
        }
        fields.extend(self.aggregates.iter().map(|a| (a.name().to_string(), a.value(&b.stats))));
        if !self.aggregates.contains(&Agg::Count) {
            fields.push(("count".into(), Agg::Count.value(&b.stats)));
        }
        fields.push(("window_start".into(), value::string(format_timestamp(start))));
        fields.push(("window_end".into(), value::string(format_timestamp(end))));
        Emit { payload: value::object(fields), acks: b.acks.clone() }
    }
}

/// Idle count windows flushed per look.
const SWEEP_BATCH: usize = 1024;

/// How much state the windows may keep: groups at most, and how long a
/// partly filled count window may wait for its next message.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bounds {
    /// `max_groups`: past it the group seen first is flushed early.
    pub(super) max_groups: usize,
    /// `idle_timeout`: a count window with no message for this long is flushed.
    pub(super) idle_timeout: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds { max_groups: 100_000, idle_timeout: Duration::from_secs(600) }
    }
}

/// The windows of every group.
#[derive(Debug)]
pub(super) struct Windows {
    shape: Shape,
    layout: Layout,
    field: String,
    bounds: Bounds,
    /// Groups in the order they were first seen, and the other way round.
    born: BTreeMap<u64, Value>,
    group_born: BTreeMap<Value, u64>,
    next_born: u64,
    /// Results flushed before their time (a group past `max_groups`, an idle
    /// count window), to send with the next batch.
    early: Vec<Emit>,
    /// Groups flushed early because of `max_groups`, since the start.
    evicted: u64,
    /// Count windows: when to look for idle ones next.
    sweep_at: Option<SystemTime>,
    /// Idle count windows found and not flushed yet (a few at a time, so
    /// that 300 000 expiring at once do not make 300 000 results at once).
    expiring: Vec<Value>,
    /// Time windows: each group's panes, oldest first, keyed by pane end.
    panes: BTreeMap<Value, VecDeque<(SystemTime, Bucket)>>,
    /// Count windows: each group's open window.
    open: BTreeMap<Value, Bucket>,
    /// Time windows: the end of the next window to emit, while any is held.
    next_end: Option<SystemTime>,
    /// Whether results carry their inputs' acknowledgements (`on_emit`);
    /// otherwise an input is acknowledged once folded in, when the caller
    /// drops it.
    hold_acks: bool,
}

impl Windows {
    /// Windows of `shape` over the number in `field`; `hold_acks`: results
    /// carry their inputs' acknowledgements.
    pub(super) fn new(shape: Shape, layout: Layout, field: String, hold_acks: bool) -> Self {
        Windows {
            shape,
            layout,
            field,
            bounds: Bounds::default(),
            born: BTreeMap::new(),
            group_born: BTreeMap::new(),
            next_born: 0,
            early: Vec::new(),
            evicted: 0,
            sweep_at: None,
            expiring: Vec::new(),
            panes: BTreeMap::new(),
            open: BTreeMap::new(),
            next_end: None,
            hold_acks,
        }
    }

    /// The same windows, bounded by `bounds`.
    pub(super) fn bounded(self, bounds: Bounds) -> Self {
        Windows { bounds, ..self }
    }

    /// Results flushed early since the last call (see [`Bounds`]).
    pub(super) fn take_early(&mut self) -> Vec<Emit> {
        std::mem::take(&mut self.early)
    }

    /// Groups flushed early because of `max_groups`, since the start.
    pub(super) fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Notes a new group; past `max_groups`, flushes the one seen first.
    fn born(&mut self, group: &Value, now: SystemTime) {
        self.born.insert(self.next_born, group.clone());
        self.group_born.insert(group.clone(), self.next_born);
        self.next_born += 1;
        while self.group_born.len() > self.bounds.max_groups {
            let Some((_, oldest)) = self.born.pop_first() else { break };
            self.group_born.remove(&oldest);
            self.evicted += 1;
            self.flush_group(&oldest, now);
        }
    }

    /// Forgets a group whose state is gone.
    fn died(&mut self, group: &Value) {
        if let Some(born) = self.group_born.remove(group) {
            self.born.remove(&born);
        }
    }

    /// Flushes what `group` holds now, as a partial window, into `early`.
    fn flush_group(&mut self, group: &Value, now: SystemTime) {
        if let Some(b) = self.open.remove(group) {
            self.early.push(self.layout.render(group, &b, b.first_at, b.last_at));
        }
        if let Some(panes) = self.panes.remove(group) {
            let (Some((first_end, _)), Some((last_end, _))) = (panes.front(), panes.back()) else { return };
            let Shape::Time { every, .. } = self.shape else { return };
            let start = first_end.checked_sub(every).unwrap_or(UNIX_EPOCH);
            if let Some(b) = merge_panes(&panes, start, *last_end) {
                self.early.push(self.layout.render(group, &b, start, now.min(*last_end)));
            }
        }
    }

    /// Count windows: flushes those that have had no message for
    /// `idle_timeout`, [`SWEEP_BATCH`] at a time (due again at once while
    /// more are left); looks again in half of it while any is open.
    fn sweep(&mut self, now: SystemTime) {
        let timeout = self.bounds.idle_timeout;
        let idle = |b: &Bucket| b.last_at + timeout <= now;
        if self.expiring.is_empty() {
            self.expiring = self.open.iter().filter(|(_, b)| idle(b)).map(|(g, _)| g.clone()).collect();
        }
        let rest = self.expiring.len().saturating_sub(SWEEP_BATCH);
        for group in self.expiring.split_off(rest) {
            if self.open.get(&group).is_some_and(idle) {
                self.died(&group);
                self.flush_group(&group, now);
            }
        }
        self.sweep_at = match (self.expiring.is_empty(), self.open.is_empty()) {
            (false, _) => Some(now),
            (true, false) => Some(now + timeout / 2),
            (true, true) => None,
        };
    }

    /// Takes in a message that arrived at `now`. `Err` (the field is missing
    /// or not a number) means the message is not counted. A count window
    /// that fills up comes back at once.
    pub(super) fn add(&mut self, msg: &Message, now: SystemTime) -> Result<Option<Emit>, String> {
        let (group, sample) = self.read(msg)?;
        Ok(match self.shape {
            Shape::Count(n) => self.add_counted(group, sample, now, n),
            Shape::Time { every, .. } => {
                self.add_timed(group, sample, now, every);
                None
            }
        })
    }

    /// When the next window is due, or idle count windows are looked for.
    pub(super) fn next_due(&self) -> Option<SystemTime> {
        match (self.next_end, self.sweep_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The windows that ended at or before `now`, and count windows idle
    /// for `idle_timeout`.
    pub(super) fn flush_due(&mut self, now: SystemTime) -> Vec<Emit> {
        if self.sweep_at.is_some_and(|at| at <= now) {
            self.sweep(now);
        }
        let mut out = self.take_early();
        while let Some(end) = self.next_end.filter(|end| *end <= now) {
            self.emit_time_window(end, &mut out);
        }
        out
    }

    /// Everything held, as if time ran on with no more input: each time
    /// window that holds data, and each partly filled count window.
    pub(super) fn flush_all(&mut self) -> Vec<Emit> {
        let mut out = Vec::new();
        while let Some(end) = self.next_end {
            self.emit_time_window(end, &mut out);
        }
        for (group, b) in std::mem::take(&mut self.open) {
            out.push(self.layout.render(&group, &b, b.first_at, b.last_at));
        }
        self.born.clear();
        self.group_born.clear();
        self.sweep_at = None;
        self.expiring.clear();
        let mut early = self.take_early();
        early.append(&mut out);
        early
    }

    fn read(&self, msg: &Message) -> Result<(Value, Sample), String> {
        let v =
            value::get(&msg.payload, &self.field).ok_or_else(|| format!("no field `{}` to aggregate", self.field))?;
        let x = value::as_f64(v)
            .ok_or_else(|| format!("field `{}` is {}, not a number", self.field, value::type_name(v)))?;
        let group = match &self.layout.group_by {
            Some(name) => value::get(&msg.payload, name).cloned().unwrap_or(Value::Null),
            None => Value::Null,
        };
        let ack = if self.hold_acks { msg.ack.clone() } else { None };
        Ok((group, Sample { x, v: v.clone(), ack }))
    }

    fn add_counted(&mut self, group: Value, sample: Sample, now: SystemTime, n: u64) -> Option<Emit> {
        let count = match self.open.get_mut(&group) {
            Some(b) => {
                b.add(sample, now);
                b.stats.count
            }
            None => {
                self.open.insert(group.clone(), Bucket::new(sample, now));
                self.sweep_at.get_or_insert(now + self.bounds.idle_timeout / 2);
                self.born(&group, now);
                1
            }
        };
        if count < n {
            return None;
        }
        let b = self.open.remove(&group)?;
        self.died(&group);
        Some(self.layout.render(&group, &b, b.first_at, b.last_at))
    }

    fn add_timed(&mut self, group: Value, sample: Sample, now: SystemTime, every: Duration) {
        let pane_end = align_up(now, every);
        match self.panes.get_mut(&group) {
            Some(panes) => match panes.back_mut() {
                Some((end, b)) if *end == pane_end => b.add(sample, now),
                _ => panes.push_back((pane_end, Bucket::new(sample, now))),
            },
            None => {
                self.panes.insert(group.clone(), VecDeque::from([(pane_end, Bucket::new(sample, now))]));
                self.born(&group, now);
            }
        }
        self.next_end.get_or_insert(pane_end);
    }

    /// Emits the window ending at `end` for every group that has data in
    /// it, drops the panes no later window needs, and moves `next_end` on.
    fn emit_time_window(&mut self, end: SystemTime, out: &mut Vec<Emit>) {
        let Shape::Time { every, size } = self.shape else {
            self.next_end = None;
            return;
        };
        let start = end.checked_sub(size).unwrap_or(UNIX_EPOCH);
        for (group, panes) in &self.panes {
            if let Some(b) = merge_panes(panes, start, end) {
                out.push(self.layout.render(group, &b, start, end));
            }
        }
        let keep_after = (end + every).checked_sub(size).unwrap_or(UNIX_EPOCH);
        for panes in self.panes.values_mut() {
            while panes.front().is_some_and(|(e, _)| *e <= keep_after) {
                panes.pop_front();
            }
        }
        let gone: Vec<Value> = self.panes.iter().filter(|(_, p)| p.is_empty()).map(|(g, _)| g.clone()).collect();
        for group in &gone {
            self.panes.remove(group);
            self.died(group);
        }
        let oldest = self.panes.values().filter_map(|p| p.front().map(|(e, _)| *e)).min();
        self.next_end = oldest.map(|oldest| oldest.max(end + every));
    }
}

/// The panes ending in `(start, end]`, merged, if there are any.
fn merge_panes(panes: &VecDeque<(SystemTime, Bucket)>, start: SystemTime, end: SystemTime) -> Option<Bucket> {
    let mut inside = panes.iter().filter(|(e, _)| *e > start && *e <= end).map(|(_, b)| b);
    let mut merged = inside.next()?.clone();
    inside.for_each(|b| merged.merge(b));
    Some(merged)
}

/// The first multiple of `every` (since the Unix epoch) strictly after `t`.
fn align_up(t: SystemTime, every: Duration) -> SystemTime {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let step = every.as_nanos().max(1);
    let next = (since / step + 1) * step;
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(next).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use fbp_runtime::{Meta, Outcome};
    use serde_json::json;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn windows(shape: Shape, aggregates: &[&str]) -> Windows {
        let layout = Layout {
            group_by: Some("sensor".into()),
            aggregates: aggregates.iter().map(|a| Agg::parse(a).unwrap()).collect(),
        };
        Windows::new(shape, layout, "value".into(), true)
    }

    fn tumbling(every: u32) -> Shape {
        Shape::Time { every: every * SECOND, size: every * SECOND }
    }

    fn at(secs: f64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs_f64(secs)
    }

    fn msg(json: &str) -> Message {
        Message::new(value::parse_json(json.as_bytes()).unwrap(), Meta::new("t".into(), 0))
    }

    fn reading(sensor: &str, v: f64) -> Message {
        msg(&json!({"sensor": sensor, "value": v}).to_string())
    }

    fn add(w: &mut Windows, m: Message, secs: f64) -> Option<Emit> {
        w.add(&m, at(secs)).unwrap()
    }

    fn payloads(emits: &[Emit]) -> Vec<serde_json::Value> {
        emits.iter().map(|e| value::to_serde(&e.payload)).collect()
    }

    fn counts(emits: &[Emit]) -> Vec<u64> {
        payloads(emits).iter().map(|p| p["count"].as_u64().unwrap()).collect()
    }

    fn count_windows(n: u64, bounds: Bounds) -> Windows {
        windows(Shape::Count(n), &["sum"]).bounded(bounds)
    }

    #[test]
    fn a_count_window_idle_for_idle_timeout_is_flushed_and_forgotten() {
        let mut w = count_windows(3, Bounds { max_groups: 10, idle_timeout: 10 * SECOND });
        add(&mut w, reading("a", 1.0), 100.0);
        add(&mut w, reading("b", 2.0), 104.0);
        assert_eq!(w.next_due(), Some(at(105.0)), "looked for in half the timeout");
        assert!(w.flush_due(at(105.0)).is_empty(), "not idle yet");
        assert_eq!(w.next_due(), Some(at(110.0)));
        add(&mut w, reading("b", 3.0), 109.0);
        let expired = w.flush_due(at(110.0));
        assert_eq!(
            payloads(&expired),
            [json!({"sensor": "a", "sum": 1.0, "count": 1,
            "window_start": "1970-01-01T00:01:40.000Z", "window_end": "1970-01-01T00:01:40.000Z"})]
        );
        assert_eq!(counts(&w.flush_due(at(120.0))), [2], "b went idle at 119");
        assert_eq!(w.next_due(), None, "nothing held, nothing to look for");
        assert!(w.group_born.is_empty() && w.born.is_empty());
    }

    #[test]
    fn past_max_groups_the_group_seen_first_is_flushed_early() {
        let mut w = count_windows(5, Bounds { max_groups: 2, idle_timeout: 600 * SECOND });
        add(&mut w, reading("a", 1.0), 1.0);
        add(&mut w, reading("b", 1.0), 2.0);
        add(&mut w, reading("a", 1.0), 3.0);
        assert!(w.take_early().is_empty());
        add(&mut w, reading("c", 1.0), 4.0);
        let early = w.take_early();
        assert_eq!((payloads(&early)[0]["sensor"].clone(), counts(&early)), (json!("a"), vec![2]));
        assert_eq!(w.evicted(), 1);
        let mut t = windows(tumbling(10), &["sum"]).bounded(Bounds { max_groups: 1, idle_timeout: SECOND });
        add(&mut t, reading("x", 1.0), 1.0);
        add(&mut t, reading("y", 2.0), 2.0);
        assert_eq!(payloads(&t.take_early())[0]["sensor"], json!("x"));
        assert_eq!(payloads(&t.flush_due(at(10.0)))[0]["sensor"], json!("y"));
        assert!(t.group_born.is_empty(), "a closed group is forgotten");
    }

    #[test]
    fn tumbling_window_aggregates_per_group_when_it_ends() {
        let mut w = windows(tumbling(10), &["avg", "min", "max", "sum", "first", "last"]);
        add(&mut w, msg(r#"{"sensor": "a", "value": 1}"#), 1000.5);
        add(&mut w, msg(r#"{"sensor": "b", "value": 5.5}"#), 1001.0);
        add(&mut w, msg(r#"{"sensor": "a", "value": 3}"#), 1009.9);
        assert_eq!(w.next_due(), Some(at(1010.0)));
        assert!(w.flush_due(at(1009.99)).is_empty());
        let out = payloads(&w.flush_due(at(1010.0)));
        let span = ("1970-01-01T00:16:40.000Z", "1970-01-01T00:16:50.000Z");
        assert_eq!(
            out,
            [
                json!({"sensor": "a", "avg": 2.0, "min": 1, "max": 3, "sum": 4.0, "first": 1, "last": 3,
                       "count": 2, "window_start": span.0, "window_end": span.1}),
                json!({"sensor": "b", "avg": 5.5, "min": 5.5, "max": 5.5, "sum": 5.5, "first": 5.5, "last": 5.5,
                       "count": 1, "window_start": span.0, "window_end": span.1}),
            ]
        );
        assert_eq!(w.next_due(), None);
    }

    #[test]
    fn count_sits_where_the_aggregates_list_it() {
        let mut w = windows(tumbling(10), &["count", "max"]);
        add(&mut w, reading("a", 1.0), 1000.0);
        let keys: Vec<String> = match &w.flush_all()[0].payload {
            Value::Obj(o) => o.keys().map(|k| value::as_str(k).unwrap().into_owned()).collect(),
            other => panic!("{other}"),
        };
        assert_eq!(keys, ["sensor", "count", "max", "window_start", "window_end"]);
    }

    #[test]
    fn sliding_window_covers_size_and_is_emitted_every_every() {
        let shape = Shape::Time { every: 10 * SECOND, size: 30 * SECOND };
        let mut w = windows(shape, &["sum"]);
        add(&mut w, reading("a", 1.0), 1005.0);
        add(&mut w, reading("a", 2.0), 1015.0);
        let out = w.flush_due(at(1100.0));
        assert_eq!(counts(&out), [1, 2, 2, 1]);
        let ends: Vec<_> = payloads(&out).iter().map(|p| p["window_end"].clone()).collect();
        assert_eq!(ends[0], "1970-01-01T00:16:50.000Z");
        assert_eq!(ends[3], "1970-01-01T00:17:20.000Z");
        assert_eq!(payloads(&out)[1]["window_start"], "1970-01-01T00:16:30.000Z");
        assert_eq!(w.next_due(), None);
    }

    #[test]
    fn a_quiet_gap_is_skipped_not_walked() {
        let mut w = windows(tumbling(10), &["avg"]);
        add(&mut w, reading("a", 1.0), 1001.0);
        assert_eq!(w.flush_due(at(1010.0)).len(), 1);
        add(&mut w, reading("a", 1.0), 5001.0);
        assert_eq!(w.next_due(), Some(at(5010.0)));
    }

    #[test]
    fn count_windows_fill_per_group_and_partial_ones_flush_at_the_end() {
        let mut w = windows(Shape::Count(2), &["avg"]);
        assert!(add(&mut w, reading("a", 1.0), 1.0).is_none());
        assert!(add(&mut w, reading("b", 7.0), 2.0).is_none());
        let full = add(&mut w, reading("a", 3.0), 3.0).unwrap();
        assert_eq!(
            value::to_serde(&full.payload),
            json!({"sensor": "a", "avg": 2.0, "count": 2,
                   "window_start": "1970-01-01T00:00:01.000Z", "window_end": "1970-01-01T00:00:03.000Z"})
        );
        assert_eq!(w.next_due(), Some(at(301.0)), "b's idle window is looked for in half of idle_timeout");
        let rest = payloads(&w.flush_all());
        assert_eq!(rest.len(), 1);
        assert_eq!((&rest[0]["sensor"], &rest[0]["count"]), (&json!("b"), &json!(1)));
    }

    #[test]
    fn flush_all_emits_partial_time_windows() {
        let mut w = windows(tumbling(10), &["max"]);
        add(&mut w, reading("a", 4.0), 1003.0);
        add(&mut w, reading("a", 6.0), 1013.0);
        assert_eq!(counts(&w.flush_due(at(1010.0))), [1]);
        let out = payloads(&w.flush_all());
        assert_eq!(out.len(), 1);
        assert_eq!((&out[0]["max"], &out[0]["window_end"]), (&json!(6.0), &json!("1970-01-01T00:17:00.000Z")));
        assert_eq!(w.next_due(), None);
    }

    #[test]
    fn a_missing_or_non_numeric_field_is_refused_and_not_counted() {
        let mut w = windows(tumbling(10), &["avg"]);
        let err = w.add(&msg(r#"{"sensor": "a"}"#), at(1.0)).unwrap_err();
        assert!(err.contains("no field `value`"), "{err}");
        let err = w.add(&msg(r#"{"value": "hot"}"#), at(1.0)).unwrap_err();
        assert!(err.contains("string, not a number"), "{err}");
        assert!(w.add(&msg("[1]"), at(1.0)).is_err());
        assert_eq!(w.next_due(), None);
    }

    #[test]
    fn a_message_without_the_group_field_joins_the_null_group() {
        let mut w = windows(Shape::Count(1), &["avg"]);
        let out = add(&mut w, msg(r#"{"value": 2}"#), 1.0).unwrap();
        assert_eq!(value::to_serde(&out.payload)["sensor"], json!(null));
    }

    fn acked(w: &mut Windows, secs: f64, seen: &Arc<Mutex<Vec<Outcome>>>) {
        let seen = seen.clone();
        let mut m = reading("a", 1.0);
        m.ack = Some(Ack::new(move |o| seen.lock().unwrap().push(o)));
        add(w, m, secs);
    }

    #[test]
    fn inputs_are_acknowledged_once_every_window_holding_them_is_done() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shape = Shape::Time { every: 10 * SECOND, size: 20 * SECOND };
        let mut w = windows(shape, &["avg"]);
        acked(&mut w, 1005.0, &seen);
        acked(&mut w, 1006.0, &seen);
        let first = w.flush_due(at(1010.0));
        assert_eq!(first[0].acks.len(), 2);
        let merged = Ack::merge(first.into_iter().flat_map(|e| e.acks).collect());
        drop(merged);
        assert!(seen.lock().unwrap().is_empty(), "the second window still holds them");
        let second = w.flush_due(at(1020.0));
        assert!(seen.lock().unwrap().is_empty(), "the second window's output is not done yet");
        drop(second);
        assert_eq!(*seen.lock().unwrap(), [Outcome::Delivered, Outcome::Delivered]);
    }

    #[test]
    fn folded_inputs_are_not_held_unless_asked() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let layout = Layout { group_by: None, aggregates: vec![Agg::Sum] };
        let mut w = Windows::new(tumbling(10), layout, "value".into(), false);
        acked(&mut w, 1001.0, &seen);
        assert_eq!(*seen.lock().unwrap(), [Outcome::Delivered], "acknowledged once folded in");
        let out = w.flush_all();
        assert!(out[0].acks.is_empty());
        assert_eq!(counts(&out), [1]);
    }

    #[test]
    fn windows_align_to_multiples_of_every() {
        assert_eq!(align_up(at(1000.0), 10 * SECOND), at(1010.0));
        assert_eq!(align_up(at(1009.999), 10 * SECOND), at(1010.0));
        assert_eq!(align_up(at(59.0), 60 * SECOND), at(60.0));
    }
}
