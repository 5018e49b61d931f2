//! Programs as components: `exec` runs any program that speaks JSON lines on
//! its stdin and stdout (the DStream provider protocol), as a source, a
//! transform or a sink, so components can be written in any language.

pub mod exec;
