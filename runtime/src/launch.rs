//! `fbp launch 'a k=v ! b ! c'`: a GStreamer-like pipeline, turned into the
//! equivalent flow file (which `--print-flow` prints and `launch` then runs).

use crate::spec::{Catalogue, KeyType};

/// Why a pipeline could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    /// Quotes do not balance.
    #[error("unbalanced quotes in the pipeline")]
    Quotes,
    /// Nothing between two `!`.
    #[error("empty element at position {0} of the pipeline; elements are separated by `!`")]
    Empty(usize),
    /// A setting that is not `key=value`.
    #[error("`{0}` is not a setting; write `key=value` after the component type")]
    NotASetting(String),
}

/// One element of a pipeline: `TYPE key=value ...`, named uniquely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Its component name in the flow: the type, `-2`, `-3`... when repeated.
    pub name: String,
    /// The component type as written.
    pub ty: String,
    /// Its settings, as text.
    pub settings: Vec<(String, String)>,
}

/// Reads a pipeline into its elements, in order.
pub fn elements(pipeline: &str) -> Result<Vec<Element>, LaunchError> {
    let tokens = shlex::split(pipeline).ok_or(LaunchError::Quotes)?;
    let mut words: Vec<Vec<String>> = vec![Vec::new()];
    for t in tokens {
        if t == "!" {
            words.push(Vec::new());
        } else {
            words.last_mut().expect("one element").push(t);
        }
    }
    let mut elements: Vec<Element> = Vec::new();
    for (i, el) in words.iter().enumerate() {
        let Some((ty, settings)) = el.split_first() else {
            return Err(LaunchError::Empty(i + 1));
        };
        let taken: Vec<String> = elements.iter().map(|e| e.name.clone()).collect();
        let mut config = Vec::new();
        for s in settings {
            let (k, v) = s.split_once('=').ok_or_else(|| LaunchError::NotASetting(s.clone()))?;
            config.push((k.to_string(), v.to_string()));
        }
        elements.push(Element { name: unique_name(ty, &taken), ty: ty.clone(), settings: config });
    }
    Ok(elements)
}

/// The `connections` array of a chain of elements, one per line.
pub(crate) fn chain(elements: &[Element]) -> String {
    let lines: Vec<String> =
        elements.windows(2).map(|w| format!("  {},\n", quote(&format!("{} -> {}", w[0].name, w[1].name)))).collect();
    format!("connections = [\n{}]\n", lines.concat())
}

/// Turns a pipeline into flow-file TOML. Types, keys and ports are checked
/// afterwards by the flow loader, like any flow file.
pub fn to_flow_toml(pipeline: &str, catalogue: &Catalogue) -> Result<String, LaunchError> {
    let elements = elements(pipeline)?;
    let tables: String = elements.iter().map(|e| component_table(&e.name, &e.ty, &e.settings, catalogue)).collect();
    Ok(format!("[flow]\nname = \"launch\"\n{}{tables}", chain(&elements)))
}

fn unique_name(ty: &str, taken: &[String]) -> String {
    let base: String =
        ty.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    (1..)
        .map(|n| if n == 1 { base.clone() } else { format!("{base}-{n}") })
        .find(|c| !taken.contains(c))
        .expect("a free name")
}

/// The `[components.NAME]` table of a component of type `ty`, its settings
/// given as text: each value becomes the TOML literal its declared key type
/// wants (a string where in doubt). Shared by `launch` and `relay`.
pub(crate) fn component_table(name: &str, ty: &str, settings: &[(String, String)], catalogue: &Catalogue) -> String {
    let mut table = format!("\n[components.{}]\ntype = {}\n", key(name), quote(ty));
    if !settings.is_empty() {
        let config: Vec<String> = settings
            .iter()
            .map(|(k, v)| {
                let ty_of_key = catalogue.get(ty).and_then(|spec| spec.key(k)).map(|key| key.ty);
                format!("{} = {}", key(k), literal(v, ty_of_key))
            })
            .collect();
        table.push_str(&format!("config = {{ {} }}\n", config.join(", ")));
    }
    table
}

pub(crate) fn key(k: &str) -> String {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        k.to_string()
    } else {
        quote(k)
    }
}

/// `s` as a TOML string literal.
pub(crate) fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The TOML literal for a value, by the key's declared type.
pub(crate) fn literal(v: &str, ty: Option<KeyType>) -> String {
    let parses = |lit: &str| toml::from_str::<toml::Table>(&format!("v = {lit}")).is_ok();
    match ty {
        Some(
            KeyType::Integer
            | KeyType::Number
            | KeyType::Bool
            | KeyType::StringList
            | KeyType::NumberList
            | KeyType::Table(_)
            | KeyType::Any,
        )
        | None
            if parses(v) =>
        {
            v.to_string()
        }
        _ => quote(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static EMPTY: Catalogue = Catalogue(&[]);

    #[test]
    fn builds_a_chain_with_unique_names() {
        let toml =
            to_flow_toml(r#"counter max_count=3 ! map expr=".count + 1" ! map expr=. ! console"#, &EMPTY).unwrap();
        assert!(toml.contains("\"counter -> map\""), "{toml}");
        assert!(toml.contains("\"map -> map-2\""), "{toml}");
        assert!(toml.contains("\"map-2 -> console\""), "{toml}");
        assert!(toml.contains("config = { max_count = 3 }"), "{toml}");
        assert!(toml.contains("config = { expr = \".count + 1\" }"), "{toml}");
        toml::from_str::<toml::Table>(&toml).unwrap();
    }

    #[test]
    fn rejects_malformed_pipelines() {
        assert_eq!(to_flow_toml("counter ! ! console", &EMPTY), Err(LaunchError::Empty(2)));
        assert_eq!(to_flow_toml("counter max_count", &EMPTY), Err(LaunchError::NotASetting("max_count".into())));
        assert_eq!(to_flow_toml("map expr='.a", &EMPTY), Err(LaunchError::Quotes));
    }
}
