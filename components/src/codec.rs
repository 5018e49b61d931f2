//! Payload codecs shared by components: CSV records (`decode`, `encode`,
//! `file-read`), JSON lines in the wire envelope (`file-read`, `stdin`, `exec`) and
//! the raw text or bytes of a payload.

pub(crate) mod csv;
pub(crate) mod envelope;

use bytes::Bytes;
use fbp_runtime::value::{self, Value};

/// The raw contents of a text or bytes payload; other payloads are a message error.
pub(crate) fn raw_bytes(v: &Value) -> Result<&Bytes, String> {
    match v {
        Value::TStr(b) | Value::BStr(b) => Ok(b),
        other => Err(format!("expected bytes or text, found {}", value::type_name(other))),
    }
}

/// `bytes` as a text value, or an error naming where the UTF-8 breaks.
pub(crate) fn utf8_text(bytes: &Bytes) -> Result<Value, String> {
    match std::str::from_utf8(bytes) {
        Ok(_) => Ok(Value::utf8_str(bytes.clone())),
        Err(e) => Err(format!("not UTF-8 text: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_takes_text_and_bytes_only() {
        assert_eq!(&raw_bytes(&value::string("ab")).unwrap()[..], b"ab");
        assert_eq!(&raw_bytes(&Value::byte_str(vec![1u8])).unwrap()[..], &[1]);
        assert_eq!(raw_bytes(&value::int(1)).unwrap_err(), "expected bytes or text, found number");
    }

    #[test]
    fn utf8_text_rejects_broken_utf8() {
        assert!(matches!(utf8_text(&Bytes::from_static(b"ok")).unwrap(), Value::TStr(_)));
        let err = utf8_text(&Bytes::from_static(b"a\xff")).unwrap_err();
        assert!(err.starts_with("not UTF-8 text: invalid utf-8 sequence"), "{err}");
    }
}
