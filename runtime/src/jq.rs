//! jq programs (via jaq) for `map`, `filter`, `switch` and templates.
//!
//! `.` is the payload and `$meta` the metadata. A program is compiled once, at
//! check time for errors and at build time for use; running it converts
//! nothing, because payloads already are jaq values.
//!
//! A flow author's program runs under a budget ([`Limits`], `[flow.limits]`):
//! a recursion that would overflow the stack, a program that runs past its
//! time or step budget, more outputs than allowed for one message, or an
//! output nested deeper than `max_depth` is an error on that message, never
//! an abort or unbounded memory. jaq asks its data for the program's lookup
//! table at every step it takes, so that is where the budget is checked; a
//! step over budget unwinds out of jaq (without the panic hook) and
//! [`Program::each`] turns it into the message's error.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Bind, Compiler, Ctx, Exn, Vars, data, native};

use crate::message::Message;
use crate::value::{self, Value};

/// What a jq program may do with one message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Wall-clock time for one message.
    pub timeout: Duration,
    /// Steps (terms evaluated, `range` values made) for one message.
    pub max_steps: u64,
    /// Outputs for one message.
    pub max_outputs: u64,
}

impl Limits {
    /// One second, a million steps, a hundred thousand outputs.
    pub const DEFAULT: Limits = Limits { timeout: Duration::from_secs(1), max_steps: 1_000_000, max_outputs: 100_000 };
}

static TIMEOUT_MS: AtomicU64 = AtomicU64::new(1_000);
static MAX_STEPS: AtomicU64 = AtomicU64::new(Limits::DEFAULT.max_steps);
static MAX_OUTPUTS: AtomicU64 = AtomicU64::new(Limits::DEFAULT.max_outputs);

/// Sets the limits of every jq program in the process (`[flow.limits]`).
pub fn set_limits(l: Limits) {
    TIMEOUT_MS.store(l.timeout.as_millis().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    MAX_STEPS.store(l.max_steps, Ordering::Relaxed);
    MAX_OUTPUTS.store(l.max_outputs, Ordering::Relaxed);
}

/// The limits every jq program runs under.
pub fn limits() -> Limits {
    Limits {
        timeout: Duration::from_millis(TIMEOUT_MS.load(Ordering::Relaxed)),
        max_steps: MAX_STEPS.load(Ordering::Relaxed),
        max_outputs: MAX_OUTPUTS.load(Ordering::Relaxed),
    }
}

/// Stack a program may use below where it started. Threads that run
/// components have at least 2 MiB; what is left is for the caller, printing
/// and unwinding.
const STACK_BUDGET: usize = 1 << 20;

/// Steps between two looks at the stack and the step count (a power of two).
const LOOK_EVERY: u64 = 8;

/// Steps between two looks at the clock (a program that takes fewer never
/// reads it; a multiple of [`LOOK_EVERY`]).
const CLOCK_EVERY: u64 = 1 << 12;

/// The longest jq program taken.
const MAX_PROGRAM: usize = 16 * 1024;

/// Stack for compiling one: room for a [`MAX_PROGRAM`] nested all the way
/// down (only what is touched is memory).
const COMPILE_STACK: usize = 256 << 20;

/// Why a program was stopped.
#[derive(Debug)]
enum Over {
    Recursion,
    Time(Duration),
    Steps(u64),
}

/// The budget of one run of a program.
struct Budget {
    stack_top: usize,
    steps: Cell<u64>,
    started: Cell<Option<Instant>>,
    limits: Limits,
}

impl Budget {
    fn new(limits: Limits) -> Budget {
        Budget { stack_top: stack_address(), steps: Cell::new(0), started: Cell::new(None), limits }
    }

    /// One step of the program: unwinds out of it when over budget. The
    /// stack and the step count are looked at every [`LOOK_EVERY`] steps
    /// (a few levels of recursion), the clock every [`CLOCK_EVERY`].
    #[inline]
    fn step(&self) {
        let n = self.steps.get() + 1;
        self.steps.set(n);
        if n & (LOOK_EVERY - 1) == 0 {
            self.look(n);
        }
    }

    #[cold]
    fn look(&self, n: u64) {
        if self.stack_top.saturating_sub(stack_address()) > STACK_BUDGET {
            panic::resume_unwind(Box::new(Over::Recursion));
        }
        if n > self.limits.max_steps {
            panic::resume_unwind(Box::new(Over::Steps(self.limits.max_steps)));
        }
        if n.is_multiple_of(CLOCK_EVERY) {
            match self.started.get() {
                None => self.started.set(Some(Instant::now())),
                Some(t) if t.elapsed() > self.limits.timeout => {
                    panic::resume_unwind(Box::new(Over::Time(self.limits.timeout)))
                }
                Some(_) => {}
            }
        }
    }
}

/// Roughly where the stack is now (it grows down on every target fbp runs on).
#[inline(always)]
fn stack_address() -> usize {
    let here = 0u8;
    std::ptr::addr_of!(here) as usize
}

/// The data a running program sees: its lookup table and its budget.
struct Guarded;

impl data::DataT for Guarded {
    type V<'a> = Value;
    type Data<'a> = Run<'a>;
}

#[derive(Clone)]
struct Run<'a> {
    lut: &'a jaq_core::Lut<Guarded>,
    budget: &'a Budget,
}

impl<'a> data::HasLut<'a, Guarded> for Run<'a> {
    fn lut(&self) -> &'a jaq_core::Lut<Guarded> {
        self.budget.step();
        self.lut
    }
}

/// Filters of ours that take the place of jaq's: `fromjson` reads with the
/// nesting limit, `range` counts each value it makes against the budget.
fn guarded_funs() -> impl Iterator<Item = native::Fun<Guarded>> {
    let vars = |n: usize| -> Box<[Bind]> { (0..n).map(|_| Bind::Var(())).collect() };
    let fromjson: jaq_core::RunPtr<Guarded> = |cv| {
        let out = match value::as_str(&cv.1) {
            Some(text) => value::parse_json(text.as_bytes())
                .map_err(|e| Exn::from(jaq_core::Error::str(format_args!("cannot parse as JSON: {e}")))),
            None => Err(Exn::from(jaq_core::Error::str(format_args!(
                "cannot parse {} as JSON: not a string",
                value::type_name(&cv.1)
            )))),
        };
        Box::new(std::iter::once(out))
    };
    let range: jaq_core::RunPtr<Guarded> = |mut cv| {
        let by = cv.0.pop_var();
        let to = cv.0.pop_var();
        let from = cv.0.pop_var();
        let budget = cv.0.data().budget;
        Box::new(range(from, to, by).inspect(move |_| budget.step()))
    };
    [native::run::<Guarded>(("fromjson", vars(0), fromjson)), native::run::<Guarded>(("range", vars(3), range))]
        .into_iter()
}

/// `range($from; $upto; $by)` as jq defines it: from `$from` in steps of
/// `$by` while short of `$upto`; a `$by` of 0 repeats `$from` for ever (the
/// budget ends it).
fn range<'a>(from: Value, to: Value, by: Value) -> impl Iterator<Item = jaq_core::ValX<'a, Value>> + 'a {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let direction = by.partial_cmp(&Value::from(0isize)).unwrap_or(Equal);
    let mut next = Some(Ok(from));
    std::iter::from_fn(move || {
        let x = match next.take()? {
            Ok(x) => x,
            Err(e) => return Some(Err(e)),
        };
        let more = match direction {
            Greater => x < to,
            Less => x > to,
            Equal => x != to,
        };
        if !more {
            return None;
        }
        next = Some((x.clone() + by.clone()).map_err(Exn::from));
        Some(Ok(x))
    })
}

/// A compiled jq program.
pub struct Program {
    filter: jaq_core::Filter<Guarded>,
    uses_meta: bool,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Program")
    }
}

impl Program {
    /// Compiles `code`, or explains why it does not compile.
    pub fn compile(code: &str) -> Result<Program, String> {
        // jaq's parser recurses once per level of nesting (brackets, `if`s,
        // operator chains): a bounded program parsed on a thread with room
        // for the deepest it can hold never overflows a stack.
        if code.len() > MAX_PROGRAM {
            return Err(format!("invalid jq program: longer than {} KiB", MAX_PROGRAM / 1024));
        }
        let code = code.to_string();
        let compile = std::thread::Builder::new().name("fbp-jq-compile".into()).stack_size(COMPILE_STACK);
        match compile.spawn(move || Program::compile_here(&code)) {
            Ok(thread) => thread.join().unwrap_or_else(|_| Err("invalid jq program: the compiler failed".into())),
            Err(e) => Err(format!("cannot compile the jq program: {e}")),
        }
    }

    fn compile_here(code: &str) -> Result<Program, String> {
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
        // The first filter of a name wins, so ours replace jaq's.
        let funs = guarded_funs().chain(jaq_core::funs()).chain(jaq_std::funs()).chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let modules = loader.load(&arena, File { code, path: () }).map_err(|errs| {
            let mut out = Vec::new();
            for (_, e) in errs {
                match e {
                    jaq_core::load::Error::Io(v) => out.extend(v.into_iter().map(|(_, m)| m)),
                    jaq_core::load::Error::Lex(v) => out.extend(
                        v.into_iter().map(|(exp, at)| format!("expected {} at `{}`", exp.as_str(), snippet(at))),
                    ),
                    jaq_core::load::Error::Parse(v) => out.extend(
                        v.into_iter().map(|(exp, at)| format!("expected {} at `{}`", exp.as_str(), snippet(at))),
                    ),
                }
            }
            format!("invalid jq program: {}", out.join("; "))
        })?;
        let filter =
            Compiler::<_, Guarded>::default().with_funs(funs).with_global_vars(["$meta"]).compile(modules).map_err(
                |errs| {
                    let out: Vec<String> = errs
                        .into_iter()
                        .flat_map(|(_, v)| v)
                        .map(|(name, undef)| format!("undefined {} `{name}`", undef.as_str()))
                        .collect();
                    format!("invalid jq program: {}", out.join("; "))
                },
            )?;
        Ok(Program { filter, uses_meta: code.contains("$meta") })
    }

    /// Runs the program on a message; every output, or the first error.
    pub fn run(&self, msg: &Message) -> Result<Vec<Value>, String> {
        let mut out = Vec::with_capacity(1);
        self.each(msg, |v| {
            out.push(v);
            true
        })?;
        Ok(out)
    }

    /// The first output of the program, or `None` when it has none.
    pub fn first(&self, msg: &Message) -> Result<Option<Value>, String> {
        let mut first = None;
        self.each(msg, |v| {
            first = Some(v);
            false
        })?;
        Ok(first)
    }

    /// Runs the program on a message, giving each output to `f` until it
    /// returns `false`: the outputs go where they are wanted as they come,
    /// never collected here. An error, or the program going over its budget
    /// (recursion, time, steps, outputs, an output nested deeper than
    /// `max_depth`), is the message's error.
    pub fn each(&self, msg: &Message, mut f: impl FnMut(Value) -> bool) -> Result<(), String> {
        let meta = if self.uses_meta { msg.meta.to_value() } else { Value::Null };
        let limits = limits();
        let max_depth = value::max_depth();
        let budget = Budget::new(limits);
        let run = Run { lut: &self.filter.lut, budget: &budget };
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            let ctx = Ctx::<Guarded>::new(run, Vars::new([meta]));
            let mut outputs = 0u64;
            for r in self.filter.id.run((ctx, msg.payload.clone())) {
                let v = jaq_core::unwrap_valr(r).map_err(|e| format!("jq error: {e}"))?;
                outputs += 1;
                if outputs > limits.max_outputs {
                    value::drop_deep(v);
                    return Err(format!(
                        "jq program made more than {} outputs for one message (`[flow.limits] jq_max_outputs`)",
                        limits.max_outputs
                    ));
                }
                if value::deeper_than(&v, max_depth) {
                    value::drop_deep(v);
                    return Err(format!("jq output nested deeper than {max_depth} levels (the flow's `max_depth`)"));
                }
                if !f(v) {
                    break;
                }
            }
            Ok(())
        }));
        match outcome {
            Ok(r) => r,
            Err(payload) => match payload.downcast::<Over>() {
                Ok(over) => Err(match *over {
                    Over::Recursion => "jq program recursed too deep (stopped before it overflowed the stack)".into(),
                    Over::Time(t) => format!(
                        "jq program ran longer than {} on one message (`[flow.limits] jq_timeout`)",
                        humantime::format_duration(t)
                    ),
                    Over::Steps(n) => {
                        format!("jq program took more than {n} steps on one message (`[flow.limits] jq_max_steps`)")
                    }
                }),
                Err(other) => panic::resume_unwind(other),
            },
        }
    }
}

fn snippet(s: &str) -> String {
    let s: String = s.chars().take(20).collect();
    if s.is_empty() { "end of program".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Meta;
    use crate::value;

    fn msg(json: &str) -> Message {
        let mut meta = Meta::new("src".into(), 3);
        meta.topic = Some("a/b".into());
        Message::new(value::parse_json(json.as_bytes()).unwrap(), meta)
    }

    #[test]
    fn maps_and_reads_meta() {
        let p = Program::compile("{v: .value, t: $meta.topic}").unwrap();
        let out = p.run(&msg(r#"{"value": 2}"#)).unwrap();
        assert_eq!(value::to_json_string(&out[0]), r#"{"v":2,"t":"a/b"}"#);
    }

    #[test]
    fn reports_errors_clearly() {
        let err = Program::compile(".value >").unwrap_err();
        assert!(err.starts_with("invalid jq program"), "{err}");
        let err = Program::compile("nosuchfn(1)").unwrap_err();
        assert!(err.contains("nosuchfn"), "{err}");
        let p = Program::compile(".a + 1").unwrap();
        assert!(p.run(&msg(r#"{"a": "x"}"#)).unwrap_err().starts_with("jq error"));
    }

    #[test]
    fn a_runaway_program_is_an_error_on_its_message() {
        let err = |code: &str| Program::compile(code).unwrap().run(&msg("{}")).unwrap_err();
        assert!(err("def f: [f]; f").contains("recursed too deep"), "{}", err("def f: [f]; f"));
        let over = |e: String| e.contains("more than 1000000 steps") || e.contains("ran longer than 1s");
        assert!(over(err("[range(1e8)]")), "{}", err("[range(1e8)]"));
        assert!(over(err("def f: f; f")), "{}", err("def f: f; f"));
        let many = Program::compile("range(.n)").unwrap().run(&msg(r#"{"n": 1e9}"#)).unwrap_err();
        assert!(many.contains("more than 100000 outputs"), "{many}");
        let deep = err("reduce range(200) as $i (0; [.])");
        assert!(deep.contains("nested deeper than 128 levels"), "{deep}");
        // The program still works on the next message.
        let p = Program::compile("def f: [f]; if .stop then 1 else f end").unwrap();
        assert!(p.run(&msg(r#"{"stop": false}"#)).is_err());
        assert_eq!(p.run(&msg(r#"{"stop": true}"#)).unwrap(), [value::int(1)]);
    }

    #[test]
    fn a_program_nested_as_deep_as_it_can_be_compiles_or_is_refused_never_overflows() {
        let deep = |open: &str, close: &str, n: usize| format!("{}1{}", open.repeat(n), close.repeat(n));
        for code in [deep("(", ")", 8000), deep("[", "]", 8000), "1+".repeat(8000) + "1", "-".repeat(16000) + "1"] {
            let _ = Program::compile(&code);
        }
        let long = Program::compile(&" ".repeat(MAX_PROGRAM + 1)).unwrap_err();
        assert!(long.contains("longer than 16 KiB"), "{long}");
        assert!(Program::compile(&deep("(", ")", 100)).is_ok());
    }

    #[test]
    fn fromjson_reads_with_the_nesting_limit() {
        let deep = format!("\"{}{}\"", "[".repeat(100_000), "]".repeat(100_000));
        let p = Program::compile(".s | fromjson").unwrap();
        let e = p.run(&msg(&format!(r#"{{"s": {deep}}}"#))).unwrap_err();
        assert!(e.contains("nested deeper than 128 levels"), "{e}");
        let ok = p.run(&msg(r#"{"s": "{\"a\": [1, 2]}"}"#)).unwrap();
        assert_eq!(value::to_json_string(&ok[0]), r#"{"a":[1,2]}"#);
    }

    #[test]
    fn legitimate_recursion_over_the_deepest_document_runs() {
        let doc = format!("{}1{}", "[".repeat(128), "]".repeat(128));
        let p = Program::compile("walk(if type == \"number\" then . + 1 else . end) | [paths] | length").unwrap();
        assert_eq!(p.run(&msg(&doc)).unwrap(), [value::int(128)]);
        let ranged = Program::compile("[range(0; 10; 3)], [range(5; 0; -2)], [range(3)]").unwrap();
        let out: Vec<String> = ranged.run(&msg("null")).unwrap().iter().map(value::to_json_string).collect();
        assert_eq!(out, ["[0,3,6,9]", "[5,3,1]", "[0,1,2]"]);
    }

    #[test]
    fn filter_sees_first_output() {
        let p = Program::compile(".avg > 28").unwrap();
        assert_eq!(p.first(&msg(r#"{"avg": 30}"#)).unwrap(), Some(Value::Bool(true)));
    }
}
