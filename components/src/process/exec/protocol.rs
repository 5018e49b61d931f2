//! The DStream provider protocol, apart from pipes and processes.
//!
//! fbp writes the command envelope `{"command": "run", "config": {..}}` as the
//! first line of the program's stdin, then one wire envelope per message. The
//! program may answer first with `{"status": "ready"}` or `{"status": "error",
//! "message": ".."}`, then writes envelopes `{"data": .., "metadata": {..}}`.

use fbp_runtime::value::{self, Value};

use crate::codec::envelope::{self, Envelope};

/// What one line of the program's stdout says.
#[derive(Debug)]
pub(super) enum Line {
    /// Nothing: a blank line.
    Blank,
    /// `{"status": "ready"}`: the program has started.
    Ready,
    /// `{"status": "error", "message": ..}`: the program cannot go on.
    Error(String),
    /// An envelope: a message.
    Data(Envelope),
    /// Neither JSON nor an envelope nor a status; with the reason.
    Garbage(String),
}

/// The first line fbp writes: the command envelope with the provider's config.
pub(super) fn command_line(config: &serde_json::Value) -> String {
    let mut line = serde_json::json!({ "command": "run", "config": config }).to_string();
    line.push('\n');
    line
}

/// Reads one line of stdout (its newline, and a `\r` before it, already removed).
pub(super) fn parse(bytes: &[u8]) -> Line {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Line::Blank;
    }
    let v = match value::parse_json(bytes) {
        Ok(v) => v,
        Err(e) => return Line::Garbage(format!("not JSON: {e}")),
    };
    if let Some(status) = value::get(&v, "status").filter(|_| value::get(&v, "data").is_none()) {
        return self::status(status, &v);
    }
    match envelope::unwrap(&v) {
        Ok(Some(env)) => Line::Data(env),
        Ok(None) => Line::Garbage("not an envelope `{\"data\": .., \"metadata\": {..}}`".into()),
        Err(e) => Line::Garbage(e),
    }
}

fn status(status: &Value, line: &Value) -> Line {
    match value::as_str(status).as_deref() {
        Some("ready") => Line::Ready,
        Some("error") => {
            let message = value::get(line, "message").map_or_else(
                || "no message".to_string(),
                |m| value::as_str(m).map_or_else(|| value::to_json_string(m), |s| s.into_owned()),
            );
            Line::Error(message)
        }
        _ => Line::Garbage(format!("unknown status {}", value::to_json_string(status))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(line: &str) -> Envelope {
        match parse(line.as_bytes()) {
            Line::Data(env) => env,
            other => panic!("not data: {other:?}"),
        }
    }

    #[test]
    fn the_command_line_carries_the_provider_config() {
        let line = command_line(&serde_json::json!({"interval": 1}));
        assert_eq!(line, "{\"command\":\"run\",\"config\":{\"interval\":1}}\n");
    }

    #[test]
    fn status_lines_are_ready_or_error() {
        assert!(matches!(parse(br#"{"status": "ready"}"#), Line::Ready));
        assert!(matches!(parse(br#"{"status":"error","message":"no port"}"#), Line::Error(m) if m == "no port"));
        assert!(matches!(parse(br#"{"status":"error"}"#), Line::Error(m) if m == "no message"));
        assert!(matches!(parse(br#"{"status":"maybe"}"#), Line::Garbage(e) if e.contains("unknown status")));
    }

    #[test]
    fn envelopes_are_messages_with_topic_headers_and_bytes() {
        let env = data(r#"{"data": {"count": 3}, "metadata": {"topic": "t/1", "headers": {"k": "v"}}}"#);
        assert_eq!(value::to_json_string(&env.payload), r#"{"count":3}"#);
        assert_eq!(env.topic.as_deref(), Some("t/1"));
        assert_eq!(env.headers.get("k").map(String::as_str), Some("v"));
        let bytes = data(r#"{"data": "AP8=", "metadata": {"encoding": "base64"}}"#);
        assert!(matches!(bytes.payload, Value::BStr(b) if b[..] == [0, 255]));
    }

    #[test]
    fn an_envelope_whose_data_has_a_status_is_still_data() {
        let env = data(r#"{"data": {"status": "ready"}, "metadata": {}}"#);
        assert_eq!(value::to_json_string(&env.payload), r#"{"status":"ready"}"#);
    }

    #[test]
    fn garbage_is_not_json_or_not_an_envelope() {
        assert!(matches!(parse(b"hello"), Line::Garbage(e) if e.starts_with("not JSON")));
        assert!(matches!(parse(br#"{"count": 1}"#), Line::Garbage(e) if e.starts_with("not an envelope")));
        assert!(matches!(parse(b"42"), Line::Garbage(_)));
        let bad = br#"{"data": "!!", "metadata": {"encoding": "base64"}}"#;
        assert!(matches!(parse(bad), Line::Garbage(e) if e.starts_with("bad base64")));
        assert!(matches!(parse(b"  "), Line::Blank));
    }
}
