//! `fbp new 'mqtt-subscribe ! window ! sqlite'`: a commented flow file to
//! start from, written from the components' declarations. Every key is there:
//! the required ones with a value to replace (`TODO`, or what the pipeline
//! set), the others commented out with their defaults.

use std::fmt::Write as _;

use crate::launch::{self, Element, LaunchError};
use crate::spec::{Catalogue, ComponentSpec, KeySpec, KeyType};

/// Why no skeleton could be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkeletonError {
    /// The pipeline does not read.
    #[error(transparent)]
    Pipeline(#[from] LaunchError),
    /// A type the catalogue does not have.
    #[error("unknown component type `{ty}`{hint}")]
    Unknown {
        /// As written.
        ty: String,
        /// ", did you mean ...?" or a pointer to `fbp components`.
        hint: String,
    },
}

/// Comment lines are wrapped to this width.
const WIDTH: usize = 88;

/// The flow file for `pipeline`.
pub fn flow(pipeline: &str, catalogue: &Catalogue) -> Result<String, SkeletonError> {
    let elements = launch::elements(pipeline)?;
    let specs = elements
        .iter()
        .map(|e| {
            catalogue.get(&e.ty).ok_or_else(|| SkeletonError::Unknown {
                ty: e.ty.clone(),
                hint: match crate::flow::diag::did_you_mean(&e.ty, catalogue.names()) {
                    Some(best) => format!("; did you mean `{best}`?"),
                    None => "; `fbp components` lists the types".into(),
                },
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = format!(
        "# A flow made by `fbp new {}`.\n# Replace each TODO, then `fbp check` this file and `fbp run` it.\n\n\
         [flow]\nname = \"new-flow\"\n{}",
        launch::quote(pipeline),
        launch::chain(&elements)
    );
    for (element, spec) in elements.iter().zip(specs) {
        component(&mut out, element, spec);
    }
    Ok(out)
}

fn component(out: &mut String, element: &Element, spec: &ComponentSpec) {
    out.push('\n');
    comment(out, "", spec.summary);
    let _ = writeln!(out, "[components.{}]\ntype = {}", launch::key(&element.name), launch::quote(spec.name));
    if spec.config.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n[components.{}.config]", launch::key(&element.name));
    for key in spec.config {
        let given = element.settings.iter().find(|(k, _)| k == key.name).map(|(_, v)| v.as_str());
        setting(out, key, given);
    }
}

/// One key: its doc as a comment, then `key = value`, commented out unless
/// the key is required or the pipeline set it.
fn setting(out: &mut String, key: &KeySpec, given: Option<&str>) {
    let what = if key.required { " (required)" } else { "" };
    comment(out, "", &format!("{}{what}", key.doc));
    let line = match (given, key.default) {
        (Some(v), _) => format!("{} = {}", launch::key(key.name), launch::literal(v, Some(key.ty))),
        (None, _) if key.required => format!("{} = {}", launch::key(key.name), placeholder(key.ty)),
        (None, Some(default)) => format!("# {} = {default}", launch::key(key.name)),
        (None, None) => format!("# {} = {}", launch::key(key.name), placeholder(key.ty)),
    };
    out.push_str(&line);
    out.push('\n');
}

/// A value of the key's type that says it is to be replaced.
fn placeholder(ty: KeyType) -> String {
    match ty {
        KeyType::String | KeyType::Expr | KeyType::Any => "\"TODO\"".into(),
        KeyType::Integer | KeyType::Number => "0  # TODO".into(),
        KeyType::Bool => "false  # TODO".into(),
        KeyType::Duration => "\"1s\"  # TODO".into(),
        KeyType::Enum(options) => format!("{}  # TODO: {}", launch::quote(options[0]), options.join(", ")),
        KeyType::StringList => "[\"TODO\"]".into(),
        KeyType::NumberList => "[]  # TODO".into(),
        KeyType::Table(keys) => {
            let fields: Vec<String> = keys.iter().map(|k| format!("{k} = \"TODO\"")).collect();
            format!("{{ {} }}", fields.join(", "))
        }
    }
}

/// `text` as `# ` lines of at most [`WIDTH`] columns.
fn comment(out: &mut String, indent: &str, text: &str) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + 2 + line.len() + 1 + word.len() > WIDTH {
            let _ = writeln!(out, "{indent}# {line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{indent}# {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Acks, Delivery, Kind, PortSpec};

    static SOURCE: ComponentSpec = ComponentSpec {
        name: "src",
        summary: "Make things.",
        doc: "",
        kind: Kind::Source,
        inputs: &[],
        outputs: &[PortSpec { name: "out", ty: "any", doc: "" }],
        config: &[
            KeySpec::required("url", KeyType::String, "Where from."),
            KeySpec::new("qos", KeyType::Integer, "1", "How hard to try."),
            KeySpec::optional("user", KeyType::String, "Who."),
        ],
        delivery: Delivery::AtMostOnce,
        acks: Acks::Prompt,
        stateless: false,
        example: "",
        build: |_| Err("not built".into()),
        ports: None,
        probe: None,
    };
    static SINK: ComponentSpec = ComponentSpec {
        name: "sink",
        summary: "Keep things.",
        kind: Kind::Sink,
        inputs: &[PortSpec { name: "in", ty: "any", doc: "" }],
        outputs: &[],
        config: &[],
        ..SOURCE
    };
    static CATALOGUE: Catalogue = Catalogue(&[&SOURCE, &SINK]);

    #[test]
    fn every_key_is_there_the_required_to_fill_in_and_the_rest_commented_with_defaults() {
        let text = flow("src qos=2 ! sink", &CATALOGUE).unwrap();
        let expected = "\
# A flow made by `fbp new \"src qos=2 ! sink\"`.
# Replace each TODO, then `fbp check` this file and `fbp run` it.

[flow]
name = \"new-flow\"
connections = [
  \"src -> sink\",
]

# Make things.
[components.src]
type = \"src\"

[components.src.config]
# Where from. (required)
url = \"TODO\"
# How hard to try.
qos = 2
# Who.
# user = \"TODO\"

# Keep things.
[components.sink]
type = \"sink\"
";
        assert_eq!(text, expected);
        toml::from_str::<toml::Table>(&text).unwrap();
    }

    #[test]
    fn an_unknown_type_is_named_with_a_suggestion() {
        let err = flow("src ! sinc", &CATALOGUE).unwrap_err();
        assert_eq!(err.to_string(), "unknown component type `sinc`; did you mean `sink`?");
    }
}
