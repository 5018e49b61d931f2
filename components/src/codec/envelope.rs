//! The wire envelope `{"data": .., "metadata": {..}}` (DESIGN §3), read back:
//! what `file-read` unwraps and what an `exec` program writes on its stdout.

use std::collections::BTreeMap;

use fbp_runtime::value::{self, Value};

/// What an envelope carries into a message.
#[derive(Debug)]
pub(crate) struct Envelope {
    /// The data; base64 data with `"encoding": "base64"` becomes bytes.
    pub(crate) payload: Value,
    /// The metadata's topic, where it has one.
    pub(crate) topic: Option<String>,
    /// The metadata's headers; values that are not strings are kept as JSON text.
    pub(crate) headers: BTreeMap<String, String>,
}

/// Unwraps `v` when it is an envelope: an object with exactly `data` and an
/// object `metadata`. `Ok(None)` when it is not; `Err` for bad base64 data.
pub(crate) fn unwrap(v: &Value) -> Result<Option<Envelope>, String> {
    let Value::Obj(map) = v else {
        return Ok(None);
    };
    let (Some(data), Some(meta @ Value::Obj(_)), 2) = (value::get(v, "data"), value::get(v, "metadata"), map.len())
    else {
        return Ok(None);
    };
    let payload = match (value::get(meta, "encoding").and_then(value::as_str).as_deref(), data) {
        (Some("base64"), Value::TStr(b64)) => Value::byte_str(
            value::decode_base64(&String::from_utf8_lossy(b64)).map_err(|e| format!("bad base64 data: {e}"))?,
        ),
        _ => data.clone(),
    };
    let topic = value::get(meta, "topic").and_then(value::as_str).map(|t| t.into_owned());
    Ok(Some(Envelope { payload, topic, headers: headers(value::get(meta, "headers")) }))
}

fn headers(v: Option<&Value>) -> BTreeMap<String, String> {
    let Some(Value::Obj(map)) = v else {
        return BTreeMap::new();
    };
    map.iter()
        .filter_map(|(k, v)| {
            let text = match v {
                Value::TStr(s) => String::from_utf8_lossy(s).into_owned(),
                other => value::to_json_string(other),
            };
            Some((value::as_str(k)?.into_owned(), text))
        })
        .collect()
}
