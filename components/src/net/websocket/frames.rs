//! What a received WebSocket message becomes, and what a message is sent as.

use bytes::Bytes;
use fbp_runtime::value::{self, Value};
use tokio_tungstenite::tungstenite::Message as Frame;

use crate::net::payload::Format;

/// What a received frame asks for.
#[derive(Debug, PartialEq)]
pub(super) enum Received {
    /// A payload to send on `out`.
    Payload(Value),
    /// A text frame that did not decode: its text, and why.
    Bad(Bytes, String),
    /// Nothing to pass on (ping, pong).
    Control,
    /// The server closes the connection.
    Close(String),
}

/// Text frames decode per `format`, binary frames are bytes.
pub(super) fn received(format: Format, frame: Frame) -> Received {
    match frame {
        Frame::Text(text) => {
            let bytes = Bytes::from(text);
            match format.decode(bytes.clone()) {
                Ok(v) => Received::Payload(v),
                Err(e) => Received::Bad(bytes, e),
            }
        }
        Frame::Binary(bytes) => Received::Payload(Value::byte_str(bytes)),
        Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_) => Received::Control,
        Frame::Close(Some(close)) => {
            Received::Close(format!("the server closed the connection ({}: {})", close.code, close.reason))
        }
        Frame::Close(None) => Received::Close("the server closed the connection".into()),
    }
}

/// The frame sending `payload`: bytes as binary; with `format = "bytes"`,
/// text as binary too; a string as itself with `text`; JSON otherwise.
pub(super) fn to_send(format: Format, payload: &Value) -> Frame {
    match (format, payload) {
        (_, Value::BStr(b)) | (Format::Bytes, Value::TStr(b)) => Frame::Binary((**b).clone()),
        (Format::Text, Value::TStr(_)) => Frame::text(value::as_str(payload).unwrap_or_default().into_owned()),
        _ => Frame::text(value::to_json_string(payload)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    fn json(text: &str) -> Value {
        value::parse_json(text.as_bytes()).unwrap()
    }

    #[test]
    fn text_frames_follow_the_format_and_binary_frames_are_bytes() {
        assert_eq!(received(Format::Json, Frame::text("{\"a\":1}")), Received::Payload(json("{\"a\":1}")));
        assert!(
            matches!(received(Format::Json, Frame::text("{oops")), Received::Bad(b, e) if &b[..] == b"{oops" && e.starts_with("not JSON"))
        );
        assert_eq!(received(Format::Text, Frame::text("hi")), Received::Payload(value::string("hi")));
        assert!(matches!(
            received(Format::Text, Frame::Binary(Bytes::from_static(b"\x01"))),
            Received::Payload(Value::BStr(_))
        ));
        assert_eq!(received(Format::Json, Frame::Ping(Bytes::new())), Received::Control);
        let close = Frame::Close(Some(CloseFrame { code: CloseCode::Away, reason: "bye".into() }));
        assert!(matches!(received(Format::Json, close), Received::Close(r) if r.contains("bye")));
    }

    #[test]
    fn payloads_are_sent_as_json_text_or_binary() {
        assert_eq!(to_send(Format::Json, &json("{\"a\":1}")), Frame::text("{\"a\":1}"));
        assert_eq!(to_send(Format::Json, &value::string("s")), Frame::text("\"s\""));
        assert_eq!(to_send(Format::Text, &value::string("s")), Frame::text("s"));
        assert_eq!(to_send(Format::Text, &json("[1]")), Frame::text("[1]"));
        assert_eq!(to_send(Format::Bytes, &value::string("s")), Frame::Binary(Bytes::from_static(b"s")));
        assert_eq!(to_send(Format::Json, &Value::byte_str(vec![1u8])), Frame::Binary(Bytes::from_static(&[1])));
    }
}
