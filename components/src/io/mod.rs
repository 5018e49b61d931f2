//! The process's own standard streams: `stdin`, a source that reads JSON
//! lines (or text lines) piped into fbp. (Standard output is `console`.)

pub mod stdin;
