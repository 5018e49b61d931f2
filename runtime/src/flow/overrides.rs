//! Run-time overrides of a flow file: `--set component.key=value` replaces
//! or adds a config key before the flow is checked, and `--env-file FILE`
//! supplies values for `${VAR}`.
//!
//! A `--set` value is read as TOML where it parses for the key's declared
//! type (`qos=1`, `topics=["a/#"]`), else as a string, as `launch` reads its
//! settings. Errors in a set value are shown at the component's name.

use std::collections::HashMap;
use std::ops::Range;

use toml::de::DeTable;

use super::diag::{Diagnostic, did_you_mean};
use super::raw::{self, RawValue, Sp};
use crate::spec::Catalogue;

type Table = Vec<(Sp<String>, Sp<RawValue>)>;

/// Applies each `component.key=value` of `sets` to the components of `top`.
pub(crate) fn apply(
    top: &mut Table,
    sets: &[String],
    catalogue: &Catalogue,
    env: raw::Env<'_>,
    errors: &mut Vec<Diagnostic>,
) {
    for set in sets {
        if let Err(d) = apply_one(top, set, catalogue, env, errors) {
            errors.push(d);
        }
    }
}

fn apply_one(
    top: &mut Table,
    set: &str,
    catalogue: &Catalogue,
    env: raw::Env<'_>,
    errors: &mut Vec<Diagnostic>,
) -> Result<(), Diagnostic> {
    let shape = || {
        Diagnostic::whole(format!("`--set {set}` is not `COMPONENT.KEY=VALUE`")).help("write e.g. `--set source.qos=1`")
    };
    let (target, text) = set.split_once('=').ok_or_else(shape)?;
    let (component, key) = target.split_once('.').filter(|(c, k)| !c.is_empty() && !k.is_empty()).ok_or_else(shape)?;
    let components = top.iter_mut().find(|(k, _)| k.value == "components").map(|(_, v)| v);
    let Some(Sp { value: RawValue::Table(components), .. }) = components else {
        return Err(Diagnostic::whole(format!("`--set {set}`: the flow has no components")));
    };
    let names: Vec<String> = components.iter().map(|(k, _)| k.value.clone()).collect();
    let Some((name, body)) = components.iter_mut().find(|(k, _)| k.value == component) else {
        let d = Diagnostic::whole(format!("`--set {set}`: no component `{component}` in the flow"));
        return Err(match did_you_mean(component, names.iter().map(String::as_str)) {
            Some(best) => d.help(format!("did you mean `{best}`?")),
            None => d.help(format!("the components are: {}", names.join(", "))),
        });
    };
    let at = name.span.clone();
    let RawValue::Table(body) = &mut body.value else { return Ok(()) };
    let ty = body.iter().find(|(k, _)| k.value == "type").and_then(|(_, v)| v.value.as_str().map(str::to_string));
    let Some(spec) = ty.as_deref().and_then(|t| catalogue.get(t)) else {
        // An unknown type is reported by the check itself.
        return Ok(());
    };
    let Some(declared) = spec.key(key) else {
        let known = spec.config.iter().map(|k| k.name);
        let d = Diagnostic::whole(format!("`--set {set}`: `{}` has no config key `{key}`", spec.name));
        return Err(match did_you_mean(key, known) {
            Some(best) => d.help(format!("did you mean `{best}`?")),
            None => d.help(format!("`fbp describe {}` lists its keys", spec.name)),
        });
    };
    let value = parse_value(&crate::launch::literal(text, Some(declared.ty)), &at, env, errors);
    if !body.iter().any(|(k, _)| k.value == "config") {
        body.push((
            Sp { value: "config".into(), span: at.clone() },
            Sp { value: RawValue::Table(Vec::new()), span: at.clone() },
        ));
    }
    let Some((_, Sp { value: RawValue::Table(config), .. })) = body.iter_mut().find(|(k, _)| k.value == "config")
    else {
        // `config` that is not a table is reported by the check itself.
        return Ok(());
    };
    config.retain(|(k, _)| k.value != key);
    config.push((Sp { value: key.to_string(), span: at.clone() }, value));
    Ok(())
}

/// A TOML literal read as a value placed at `at` (the component's name).
fn parse_value(literal: &str, at: &Range<usize>, env: raw::Env<'_>, errors: &mut Vec<Diagnostic>) -> Sp<RawValue> {
    let text = format!("v = {literal}");
    let mut found = Vec::new();
    let value = DeTable::parse(&text)
        .ok()
        .and_then(|t| raw::table(t.get_ref(), &text, env, &mut found).into_iter().next())
        .map_or(RawValue::Str { text: literal.to_string(), from_var: false, whole_var: false }, |(_, v)| v.value);
    errors.extend(found.into_iter().map(|mut d| {
        d.span = Some(at.clone());
        d
    }));
    Sp { value: placed(value, at), span: at.clone() }
}

/// `v` with every span inside it moved to `at`.
fn placed(v: RawValue, at: &Range<usize>) -> RawValue {
    let sp = |v: Sp<RawValue>| Sp { value: placed(v.value, at), span: at.clone() };
    match v {
        RawValue::Array(a) => RawValue::Array(a.into_iter().map(sp).collect()),
        RawValue::Table(t) => {
            RawValue::Table(t.into_iter().map(|(k, v)| (Sp { value: k.value, span: at.clone() }, sp(v))).collect())
        }
        other => other,
    }
}

/// Why an env file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    /// The file could not be read.
    #[error("cannot read the env file `{path}`: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line that is not `KEY=VALUE`.
    #[error("`{path}` line {line}: expected `KEY=VALUE`, found `{text}`")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What the line holds.
        text: String,
    },
}

/// Reads an env file: `KEY=VALUE` lines, `#` comments and blank lines
/// skipped, an optional `export ` prefix, values optionally in `"` or `'`.
pub fn read_env_file(path: &std::path::Path) -> Result<HashMap<String, String>, EnvFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| EnvFileError::Read { path: shown.clone(), source })?;
    parse_env(&text).map_err(|(line, text)| EnvFileError::Line { path: shown, line, text })
}

/// The pairs of an env file's text, or the first bad line (number, text).
pub fn parse_env(text: &str) -> Result<HashMap<String, String>, (usize, String)> {
    let mut vars = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let pair = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = pair.split_once('=').filter(|(k, _)| valid_name(k.trim())) else {
            return Err((i + 1, line.to_string()));
        };
        vars.insert(k.trim().to_string(), unquote(v.trim()).to_string());
    }
    Ok(vars)
}

fn valid_name(k: &str) -> bool {
    !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !k.starts_with(|c: char| c.is_ascii_digit())
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_take_comments_quotes_and_export() {
        let vars = parse_env("# broker\nHOST=127.0.0.1\n\nexport PORT = 1883\nNAME=\"a b\"\nT='x#y'\n").unwrap();
        assert_eq!(vars["HOST"], "127.0.0.1");
        assert_eq!(vars["PORT"], "1883");
        assert_eq!(vars["NAME"], "a b");
        assert_eq!(vars["T"], "x#y");
        assert_eq!(vars.len(), 4);
    }

    #[test]
    fn a_line_without_equals_is_an_error_with_its_number() {
        assert_eq!(parse_env("A=1\nnonsense\n"), Err((2, "nonsense".into())));
        assert_eq!(parse_env("1A=1\n"), Err((1, "1A=1".into())));
    }
}
