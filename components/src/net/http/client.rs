//! What `http-poll` and `http-request` share: the client keys (headers,
//! authentication, timeout, TLS, `max_body_size`) and their checked form, the
//! `Retry-After` header, reading a response body within its limit, body
//! formats, and errors told with their causes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use bytes::BytesMut;
use fbp_runtime::cause::chain;
use fbp_runtime::spec::{BuildContext, KeySpec, KeyType};
use fbp_runtime::units::positive_size;
use fbp_runtime::value::{self, Value};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use serde::Deserialize;

use crate::codec::utf8_text;
use crate::net::tls::{self, TlsFiles};

/// `headers`.
pub(crate) const HEADERS_KEY: KeySpec = KeySpec::optional(
    "headers",
    KeyType::Any,
    "Request headers, a table of name = value, e.g. `{ accept = \"application/json\" }`.",
);
/// `bearer_token`.
pub(crate) const BEARER_KEY: KeySpec = KeySpec::optional(
    "bearer_token",
    KeyType::String,
    "Sends `Authorization: Bearer TOKEN`; write it as `\"${TOKEN}\"` to keep it out of the file.",
);
/// `basic_auth`.
pub(crate) const BASIC_KEY: KeySpec = KeySpec::optional(
    "basic_auth",
    KeyType::Any,
    "HTTP basic authentication: `{ username = \"u\", password = \"${PASSWORD}\" }`.",
);
/// `timeout`.
pub(crate) const TIMEOUT_KEY: KeySpec =
    KeySpec::new("timeout", KeyType::Duration, "\"10s\"", "The longest a request may take, connection included.");
/// `ca_file`.
pub(crate) const CA_FILE_KEY: KeySpec = KeySpec::optional(
    "ca_file",
    KeyType::String,
    "CA certificates (PEM) to trust for `https://`; unset: the system's.",
);

/// `max_body_size`.
pub(crate) const MAX_BODY_KEY: KeySpec = KeySpec::new(
    "max_body_size",
    KeyType::String,
    "\"8MiB\"",
    "The largest response body read, e.g. `\"512KiB\"`; a larger one is a message error (`err`), \
     and reading it stops there.",
);

/// Basic authentication credentials.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BasicAuth {
    username: String,
    #[serde(default)]
    password: String,
}

/// The client keys as the flow file has them.
#[derive(Deserialize)]
struct Keys {
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    bearer_token: Option<String>,
    basic_auth: Option<BasicAuth>,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    timeout: Duration,
    ca_file: Option<String>,
    max_body_size: String,
}

/// The client keys, checked: headers (authentication included), timeout and body limit.
#[derive(Clone, Debug)]
pub(crate) struct ClientSettings {
    headers: HeaderMap,
    timeout: Duration,
    ca_file: Option<PathBuf>,
    /// The largest response body read, in bytes.
    pub(crate) max_body: usize,
}

impl ClientSettings {
    /// Reads and checks the client keys of `ctx`'s config (no I/O).
    pub(crate) fn from_config(ctx: &BuildContext) -> Result<Self, String> {
        let keys: Keys = ctx.parse()?;
        let mut headers = HeaderMap::new();
        for (name, value) in keys.headers.unwrap_or_default() {
            let name =
                HeaderName::try_from(name.as_str()).map_err(|_| format!("`headers`: `{name}` is not a header name"))?;
            let value = HeaderValue::try_from(value)
                .map_err(|_| format!("`headers`: the value of `{name}` is not a header value"))?;
            headers.insert(name, value);
        }
        // An empty token (`"${TOKEN:-}"` with TOKEN unset) means none.
        let auth = match (keys.bearer_token.filter(|t| !t.is_empty()), keys.basic_auth) {
            (Some(_), Some(_)) => return Err("set `bearer_token` or `basic_auth`, not both".into()),
            (Some(token), None) => Some(format!("Bearer {token}")),
            (None, Some(b)) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", b.username, b.password))
            )),
            (None, None) => None,
        };
        if let Some(auth) = auth {
            let mut value =
                HeaderValue::try_from(auth).map_err(|_| "the credentials are not a header value".to_string())?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        if keys.timeout.is_zero() {
            return Err("`timeout` must be more than 0".into());
        }
        Ok(ClientSettings {
            headers,
            timeout: keys.timeout,
            ca_file: keys.ca_file.map(|p| ctx.path(&p)),
            max_body: positive_size("max_body_size", &keys.max_body_size)?,
        })
    }

    /// Whether the configured headers set `name`.
    pub(crate) fn has_header(&self, name: &HeaderName) -> bool {
        self.headers.contains_key(name)
    }

    /// Builds the client: reads the CA file (I/O), so call it when the instance runs.
    pub(crate) fn client(&self) -> Result<reqwest::Client, String> {
        tls::ensure_provider();
        let tls = tls::client_config(&TlsFiles { ca_file: self.ca_file.clone(), ..TlsFiles::default() })?;
        reqwest::Client::builder()
            .default_headers(self.headers.clone())
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .tls_backend_preconfigured((*tls).clone())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }
}

/// How long a `Retry-After` header asks to wait (seconds or an HTTP date), from `now`.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// Why a response body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The body is larger than `max_body_size` (`limit` bytes).
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The connection broke or timed out while the body came: why.
    Broken(String),
}

impl BodyError {
    /// The error for a message: what went wrong, without the URL.
    pub(crate) fn describe(&self) -> String {
        match self {
            BodyError::TooLarge { limit } => {
                format!("the response body is larger than `max_body_size` ({limit} bytes); not read further")
            }
            BodyError::Broken(e) => format!("the response body was lost: {e}"),
        }
    }
}

/// Reads `response`'s body as it comes, and stops as soon as it passes `limit`
/// bytes (at once when `Content-Length` says it will): a peer cannot make us
/// hold more than `limit`. Dropping the response then closes the connection.
pub(crate) async fn read_body(mut response: reqwest::Response, limit: usize) -> Result<Bytes, BodyError> {
    const FIRST_ALLOCATION: usize = 64 * 1024;
    let declared = response.content_length().map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(FIRST_ALLOCATION));
    let broken = |e: reqwest::Error| BodyError::Broken(chain(&e.without_url()));
    while let Some(chunk) = response.chunk().await.map_err(broken)? {
        if chunk.len() > limit - body.len() {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Whether a status means "the server cannot serve now, try later".
pub(crate) fn is_transient(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

/// Whether a status means "the server refuses for a while" (too many
/// requests, a gateway or the service unavailable): worth waiting out
/// whatever the retries left.
pub(crate) fn is_refusing(status: reqwest::StatusCode) -> bool {
    use reqwest::StatusCode as S;
    [S::TOO_MANY_REQUESTS, S::BAD_GATEWAY, S::SERVICE_UNAVAILABLE, S::GATEWAY_TIMEOUT].contains(&status)
}

/// The start of a body, as text, for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let text = text.trim();
    if body.len() > MAX { format!("{text}...") } else { text.to_string() }
}

/// How a body becomes a payload.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    /// A JSON document (a body that is not JSON is an error).
    Json,
    /// UTF-8 text.
    Text,
    /// Raw bytes.
    Bytes,
}

impl Format {
    /// The out-port type of payloads in this format.
    pub(crate) fn port_type(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Text => "text",
            Format::Bytes => "bytes",
        }
    }

    /// The payload of `body`, or why it does not decode.
    pub(crate) fn decode(self, body: Bytes) -> Result<Value, String> {
        match self {
            Format::Json => value::parse_json(&body).map_err(|e| format!("the body is not JSON: {e}")),
            Format::Text => utf8_text(&body).map_err(|e| format!("the body is {e}")),
            Format::Bytes => Ok(Value::byte_str(body)),
        }
    }
}

/// The raw body as a payload for an `err` message: text where it is UTF-8, else bytes.
pub(crate) fn raw_payload(body: Bytes) -> Value {
    utf8_text(&body).unwrap_or_else(|_| Value::byte_str(body))
}

/// The value of a config key `key` read as a format, for port functions.
pub(crate) fn format_of(config: &serde_json::Value) -> Format {
    match config.get("format").and_then(serde_json::Value::as_str) {
        Some("text") => Format::Text,
        Some("bytes") => Format::Bytes,
        _ => Format::Json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(config: serde_json::Value) -> Result<ClientSettings, String> {
        let mut config = config;
        config["timeout"] = "1s".into();
        config["max_body_size"] = "8MiB".into();
        ClientSettings::from_config(&BuildContext { name: "t".into(), config, base_dir: ".".into() })
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert(RETRY_AFTER, HeaderValue::try_from(later).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn authentication_becomes_one_sensitive_header() {
        let s = settings(serde_json::json!({"basic_auth": {"username": "u", "password": "p"}})).unwrap();
        let auth = s.headers.get(AUTHORIZATION).unwrap();
        assert_eq!(auth.to_str().unwrap(), "Basic dTpw");
        assert!(auth.is_sensitive());
        let s = settings(serde_json::json!({"bearer_token": "t0k", "headers": {"accept": "text/plain"}})).unwrap();
        assert_eq!(s.headers.get(AUTHORIZATION).unwrap(), "Bearer t0k");
        assert_eq!(s.headers.get("accept").unwrap(), "text/plain");
        let both = settings(serde_json::json!({"bearer_token": "t", "basic_auth": {"username": "u"}}));
        assert!(both.unwrap_err().contains("not both"));
        assert!(settings(serde_json::json!({"headers": {"bad name": "x"}})).unwrap_err().contains("bad name"));
    }

    #[test]
    fn formats_decode_or_explain() {
        assert_eq!(value::to_json_string(&Format::Json.decode(Bytes::from_static(b"{\"a\":1}")).unwrap()), "{\"a\":1}");
        assert!(Format::Json.decode(Bytes::from_static(b"{oops")).unwrap_err().contains("not JSON"));
        assert!(Format::Text.decode(Bytes::from_static(&[0xff])).unwrap_err().contains("UTF-8"));
        assert!(matches!(Format::Bytes.decode(Bytes::from_static(&[0xff])).unwrap(), Value::BStr(_)));
        assert_eq!(excerpt(&[b'x'; 300]).len(), 203);
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_its_limit_declared_or_chunked() {
        use axum::body::Body;
        use axum::routing::get;
        let chunks =
            || futures_util::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 10]))));
        let router = axum::Router::new()
            .route("/declared", get(|| async { vec![b'x'; 100] }))
            .route("/chunked", get(move || async move { Body::from_stream(chunks()) }));
        let server = crate::net::http::test_server::Server::start(router).await;
        tls::ensure_provider();
        let client = reqwest::Client::new();
        for path in ["/declared", "/chunked"] {
            let get = || client.get(server.url(path)).send();
            assert_eq!(read_body(get().await.unwrap(), 100).await.unwrap().len(), 100, "{path}");
            let e = read_body(get().await.unwrap(), 99).await.unwrap_err();
            assert!(matches!(e, BodyError::TooLarge { limit: 99 }), "{path}: {e:?}");
            assert!(e.describe().contains("`max_body_size` (99 bytes)"), "{}", e.describe());
        }
    }
}
