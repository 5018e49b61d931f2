//! A message as a buffer record: its wire envelope
//! (`{"data": .., "metadata": {..}}`, [`Message::to_envelope`]) and back, so
//! topic, source, timestamp, sequence number, headers and bytes payloads
//! survive the disk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::message::{Message, Meta};
use crate::value::{self, Value};

/// The record for `msg`.
pub fn encode(msg: &Message) -> Vec<u8> {
    msg.to_envelope().into_bytes()
}

/// The message a record holds (without an acknowledgement), or why it is not one.
pub fn decode(record: &[u8]) -> Result<Message, String> {
    let v = value::parse_json(record).map_err(|e| format!("not JSON: {e}"))?;
    let (Some(data), Some(meta)) = (value::get(&v, "data"), value::get(&v, "metadata")) else {
        return Err("not an envelope: `data` or `metadata` missing".into());
    };
    let text = |key: &str| value::get(meta, key).and_then(value::as_str).map(|s| s.into_owned());
    let payload = match (text("encoding").as_deref(), data) {
        (Some("base64"), Value::TStr(b64)) => Value::byte_str(
            value::decode_base64(&String::from_utf8_lossy(b64)).map_err(|e| format!("bad base64 data: {e}"))?,
        ),
        _ => data.clone(),
    };
    let timestamp = text("timestamp").and_then(|t| humantime::parse_rfc3339(&t).ok()).unwrap_or_else(SystemTime::now);
    let meta = Meta {
        topic: text("topic").map(Arc::from),
        source: Arc::from(text("source").unwrap_or_default()),
        timestamp,
        seq: value::get(meta, "seq").and_then(value::as_f64).map_or(0, |n| n as u64),
        headers: string_pairs(value::get(meta, "headers")),
    };
    Ok(Message::new(payload, meta))
}

fn string_pairs(v: Option<&Value>) -> BTreeMap<String, String> {
    let Some(Value::Obj(map)) = v else { return BTreeMap::new() };
    let text = |v: &Value| value::as_str(v).map(|s| s.into_owned());
    map.iter().filter_map(|(k, v)| Some((text(k)?, text(v)?))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_survives_encoding_with_its_metadata() {
        let mut meta = Meta::new("src".into(), 42);
        meta.topic = Some("a/b".into());
        meta.headers.insert("k".into(), "v".into());
        let msg = Message::new(value::parse_json(br#"{"x":[1,2.5,"s"]}"#).unwrap(), meta);
        let back = decode(&encode(&msg)).unwrap();
        assert_eq!(value::to_json_string(&back.payload), r#"{"x":[1,2.5,"s"]}"#);
        assert_eq!(back.meta.topic.as_deref(), Some("a/b"));
        assert_eq!(&*back.meta.source, "src");
        assert_eq!(back.meta.seq, 42);
        assert_eq!(back.meta.headers.get("k").map(String::as_str), Some("v"));
        let ms = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis();
        assert_eq!(ms(back.meta.timestamp), ms(msg.meta.timestamp));
    }

    #[test]
    fn bytes_stay_bytes_and_garbage_is_an_error() {
        let msg = Message::new(Value::byte_str(vec![0u8, 255, 7]), Meta::new("s".into(), 1));
        let back = decode(&encode(&msg)).unwrap();
        assert!(matches!(back.payload, Value::BStr(_)));
        assert_eq!(value::to_json_string(&back.payload), value::to_json_string(&msg.payload));
        assert!(decode(b"{nope").is_err());
        assert!(decode(b"[1]").is_err());
    }
}
