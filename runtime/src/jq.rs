//! jq programs (via jaq) for `map`, `filter`, `switch` and templates.
//!
//! `.` is the payload and `$meta` the metadata. A program is compiled once, at
//! check time for errors and at build time for use; running it converts
//! nothing, because payloads already are jaq values.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data};

use crate::message::Message;
use crate::value::Value;

type Data = data::JustLut<Value>;

/// A compiled jq program.
pub struct Program {
    filter: jaq_core::Filter<Data>,
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
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
        let funs = jaq_core::funs::<Data>().chain(jaq_std::funs()).chain(jaq_json::funs());
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
            Compiler::<_, Data>::default().with_funs(funs).with_global_vars(["$meta"]).compile(modules).map_err(
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

    fn each(&self, msg: &Message, mut f: impl FnMut(Value) -> bool) -> Result<(), String> {
        let meta = if self.uses_meta { msg.meta.to_value() } else { Value::Null };
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([meta]));
        for r in self.filter.id.run((ctx, msg.payload.clone())) {
            match jaq_core::unwrap_valr(r) {
                Ok(v) => {
                    if !f(v) {
                        break;
                    }
                }
                Err(e) => return Err(format!("jq error: {e}")),
            }
        }
        Ok(())
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
    fn filter_sees_first_output() {
        let p = Program::compile(".avg > 28").unwrap();
        assert_eq!(p.first(&msg(r#"{"avg": 30}"#)).unwrap(), Some(Value::Bool(true)));
    }
}
