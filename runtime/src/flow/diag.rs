//! Diagnostics in the style of rustc: what is wrong, where (file:line:column,
//! the line, a caret), and how to fix it.

use std::fmt;
use std::ops::Range;

use annotate_snippets::{AnnotationKind, Level, Renderer, Snippet};

use crate::secret;

/// One error found in a flow file.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// What is wrong, e.g. ``unknown config key `intervall` ``.
    pub message: String,
    /// Byte range in the file, when the error has a place.
    pub span: Option<Range<usize>>,
    /// A label under the caret.
    pub label: String,
    /// How to fix it, e.g. ``did you mean `interval`?``.
    pub help: Option<String>,
    /// Other places that explain this one, each with its label (``first defined here``).
    pub notes: Vec<(Range<usize>, String)>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn at(span: Range<usize>, message: impl Into<String>) -> Self {
        Diagnostic { message: message.into(), span: Some(span), label: String::new(), help: None, notes: Vec::new() }
    }

    /// An error about the whole file.
    pub fn whole(message: impl Into<String>) -> Self {
        Diagnostic { message: message.into(), span: None, label: String::new(), help: None, notes: Vec::new() }
    }

    /// Adds a label under the caret.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Adds a help line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds a secondary place, shown with its label beside the caret's line.
    pub fn note_at(mut self, span: Range<usize>, label: impl Into<String>) -> Self {
        self.notes.push((span, label.into()));
        self
    }

    /// Adds ``did you mean `X`?`` when a candidate is close to `wrong`.
    pub fn suggest<'a>(self, wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Self {
        match did_you_mean(wrong, candidates) {
            Some(best) => self.help(format!("did you mean `{best}`?")),
            None => self,
        }
    }
}

/// The closest candidate to `wrong`, if it is close enough to be a typo:
/// similar by Jaro-Winkler, or (for short names such as ports, where
/// Jaro-Winkler is harsh: `ot` / `out`) within a small edit distance.
pub fn did_you_mean<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let max_edits = (wrong.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(wrong, c), c))
        .filter(|(score, c)| *score > 0.8 || strsim::osa_distance(wrong, c) <= max_edits)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Among `keys` (name and span), the first one `message` names in backticks
/// (`` `qos` `` or `` `qos = 3` ``).
pub fn first_named<'a>(
    message: &str,
    keys: impl Iterator<Item = (&'a str, &'a Range<usize>)> + Clone,
) -> Option<&'a Range<usize>> {
    message.split('`').skip(1).step_by(2).find_map(|quoted| {
        let name = quoted.split(|c: char| c == '=' || c.is_whitespace()).next()?;
        keys.clone().find(|(k, _)| *k == name).map(|(_, span)| span)
    })
}

/// Every error found in one flow file, with the file to show them against.
#[derive(Clone, Debug)]
pub struct Diagnostics {
    /// The file's path, as the user gave it.
    pub path: String,
    /// The file's text (empty when it could not be read as text).
    pub source: String,
    /// The errors, in the order found.
    pub errors: Vec<Diagnostic>,
}

impl Diagnostics {
    /// The 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.source[..offset.min(self.source.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    /// These diagnostics shown against `source` instead, every span (and
    /// note) moved by `place`: for a flow file made from what the user typed.
    pub fn moved(mut self, source: String, place: impl Fn(&Range<usize>) -> Range<usize>) -> Diagnostics {
        for d in &mut self.errors {
            d.span = d.span.as_ref().map(&place);
            d.notes.iter_mut().for_each(|(s, _)| *s = place(s));
        }
        self.source = source;
        self
    }

    /// The positions `line:column` of every error, for tests and tools.
    pub fn positions(&self) -> Vec<Option<(usize, usize)>> {
        self.errors.iter().map(|d| d.span.as_ref().map(|s| self.line_col(s.start))).collect()
    }

    /// Renders every error and the closing count, as `fbp check` prints them.
    pub fn render(&self) -> String {
        self.render_in(false)
    }

    /// Each error, rendered, without the closing count: for an error at run
    /// time, when the file itself loaded.
    pub fn render_errors(&self, colour: bool) -> String {
        let renderer = renderer(colour);
        let mut out = String::new();
        for d in &self.errors {
            out.push_str(&self.render_one(&renderer, Level::ERROR, d));
            out.push_str("\n\n");
        }
        out
    }

    /// [`Diagnostics::render`], in colour when `colour` is set (for a terminal).
    pub fn render_in(&self, colour: bool) -> String {
        let mut out = self.render_errors(colour);
        let n = self.errors.len();
        out.push_str(&format!("error: could not load `{}`: {n} error{}\n", self.path, if n == 1 { "" } else { "s" }));
        out
    }

    /// Renders the diagnostics as warnings (the flow loads all the same) and
    /// the closing count.
    pub fn render_warnings(&self) -> String {
        self.render_warnings_in(false)
    }

    /// [`Diagnostics::render_warnings`], in colour when `colour` is set.
    pub fn render_warnings_in(&self, colour: bool) -> String {
        let renderer = renderer(colour);
        let mut out = String::new();
        for d in &self.errors {
            out.push_str(&self.render_one(&renderer, Level::WARNING, d));
            out.push_str("\n\n");
        }
        let n = self.errors.len();
        out.push_str(&format!("warning: `{}`: {n} warning{}\n", self.path, if n == 1 { "" } else { "s" }));
        out
    }

    fn render_one(&self, renderer: &Renderer, level: Level<'_>, d: &Diagnostic) -> String {
        let Some(span) = d.span.clone().filter(|_| !self.source.is_empty()) else {
            let name = if level == Level::WARNING { "warning" } else { "error" };
            let mut s = format!("{name}: {}\n  --> {}", d.message, self.path);
            if let Some(help) = &d.help {
                s.push_str(&format!("\n  = help: {help}"));
            }
            return s;
        };
        let span = clamp(&self.source, span);
        // A password, token or URL secret in the file is shown as `*`s,
        // keeping every position in the line.
        let (source, message, label) =
            (secret::blank_toml(&self.source), secret::urls_in(&d.message), secret::urls_in(&d.label));
        let notes: Vec<(Range<usize>, String)> =
            d.notes.iter().map(|(s, l)| (clamp(&self.source, s.clone()), secret::urls_in(l))).collect();
        let snippet = Snippet::source(&source)
            .path(&self.path)
            .line_start(1)
            .fold(true)
            .annotation(AnnotationKind::Primary.span(span).label(&label));
        let snippet =
            notes.iter().fold(snippet, |s, (at, l)| s.annotation(AnnotationKind::Context.span(at.clone()).label(l)));
        let mut group = level.primary_title(&message).element(snippet);
        if let Some(help) = &d.help {
            group = group.element(Level::HELP.message(help));
        }
        renderer.render(&[group]).to_string()
    }
}

fn renderer(colour: bool) -> Renderer {
    if colour { Renderer::styled() } else { Renderer::plain() }
}

fn clamp(source: &str, span: Range<usize>) -> Range<usize> {
    let len = source.len();
    let mut start = span.start.min(len);
    let mut end = span.end.clamp(start, len);
    while !source.is_char_boundary(start) {
        start -= 1;
    }
    while !source.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_rustc() {
        let source =
            "[flow]\nname = \"x\"\n[components.a]\ntype = \"counter\"\nconfig = { intervall = \"1s\" }\n".to_string();
        let at = source.find("intervall").unwrap();
        let d = Diagnostic::at(at..at + 9, "unknown config key `intervall`")
            .suggest("intervall", ["interval", "max_count"]);
        let diags = Diagnostics { path: "flows/x.toml".into(), source, errors: vec![d] };
        let text = diags.render();
        assert!(text.contains("error: unknown config key `intervall`"), "{text}");
        assert!(text.contains("--> flows/x.toml:5:12"), "{text}");
        assert!(text.contains("^^^^^^^^^"), "{text}");
        assert!(text.contains("= help: did you mean `interval`?"), "{text}");
        assert!(text.ends_with("1 error\n"), "{text}");
        assert_eq!(diags.positions(), vec![Some((5, 12))]);
    }

    #[test]
    fn warnings_render_as_warnings_with_their_count() {
        let source = "[flow]\nname = \"x\"\n[components.avg]\n".to_string();
        let at = source.find("avg").unwrap();
        let d = Diagnostic::at(at..at + 3, "`avg` holds acknowledgements").help("set `ack = \"on_fold\"`");
        let text = Diagnostics { path: "x.toml".into(), source, errors: vec![d] }.render_warnings();
        assert!(text.starts_with("warning: `avg` holds acknowledgements"), "{text}");
        assert!(text.contains("--> x.toml:3:13") && text.contains("= help: set `ack"), "{text}");
        assert!(text.ends_with("warning: `x.toml`: 1 warning\n") && !text.contains("error"), "{text}");
    }

    #[test]
    fn suggests_short_names_one_edit_away() {
        assert_eq!(did_you_mean("ot", ["out", "err"]), Some("out"));
        assert_eq!(did_you_mean("intervall", ["interval", "max_count"]), Some("interval"));
        assert_eq!(did_you_mean("xyz", ["out", "err"]), None);
    }
}
