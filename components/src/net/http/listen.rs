//! `http-listen`: a server whose request bodies become messages (webhook ingest).
//!
//! Connections are served by the shared server ([`crate::net::server`]:
//! `max_connections`, `read_timeout` for the request head, `idle_timeout`,
//! `tls`, `auth`) with axum as the handler; this file bounds the body:
//! `read_timeout` again for the whole of it (a timer around reading it), and
//! `max_body_size`.
//!
//! The answer says what became of the message: with `respond = "delivered"`
//! 200 once every sink committed it (the source's acknowledgement, DESIGN §4),
//! 500 if it was rejected; with `"queued"`, 200 once queued. 503 when the
//! out-port stays full for `queue_timeout`; 400 for a body that does not
//! decode (answered to the client, not sent to `err`: the client still holds
//! the data and is told why).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fbp_runtime::queue::OutPort;
use fbp_runtime::spec::{KeySpec, KeyType, Port};
use fbp_runtime::units::positive_size;
use fbp_runtime::{
    Acks, BuildContext, ComponentSpec, Context, Delivery, Instance, Kind, Message, Outcome, PortSpec, Task, TaskFuture,
};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::client::{self, Format};
use crate::net::server::body::{BodyError, read_body};
use crate::net::server::{self, Limits};

/// The `http-listen` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "http-listen",
    summary: "Receive messages as HTTP requests (webhooks): each request body is a message.",
    doc: "Serves HTTP/1.1 on `bind`. A request to `path` (exactly, or below it when it ends \
          with `/`) with one of `methods` has its body decoded as `format` and sent as a \
          message: the request path is the topic, and the request headers named in `headers` \
          are kept in the metadata (lower-case). The answer tells the client what became of \
          it: with `respond = \"delivered\"` (the default) 200 once every sink has committed \
          the message (or it was dead-lettered), 500 if it was rejected, 504 if that takes \
          longer than `response_timeout` (the message stays in the flow); with `\"queued\"`, \
          200 as soon as it is queued. 503 (with `Retry-After: 1`) when the flow is saturated: \
          the out-port stayed full for `queue_timeout`. 400 for a body that does not decode \
          (answered, counted as an error, not sent to `err`), 413 for one over \
          `max_body_size`, 408 for a body that takes longer than `read_timeout` to arrive \
          (a connection whose request head takes longer, an idle keep-alive one too, is \
          closed; so is one on which nothing moves for `idle_timeout`), 404 for another path, \
          405 for another method. With `auth = { token = \"${TOKEN}\" }` a request without \
          `Authorization: Bearer TOKEN` gets 401 (before anything else); with `tls = { cert, \
          key }` it serves HTTPS. At most `max_connections` connections are served at once; \
          more wait in the kernel's backlog. A `bind` beyond loopback without `auth` is \
          warned about. On shutdown it stops accepting, answers the requests in hand and closes \
          idle connections. Delivery is at-least-once when clients retry on anything but 200.",
    kind: Kind::Source,
    inputs: &[],
    outputs: &[PortSpec { name: "out", ty: "json", doc: "one message per request body" }],
    config: &[
        KeySpec::new("bind", KeyType::String, "\"127.0.0.1:8080\"", "The address and port to listen on."),
        KeySpec::new(
            "path",
            KeyType::String,
            "\"/\"",
            "The path served: exactly this path, or every path below it when it ends with `/` \
             (so `/` serves every path).",
        ),
        KeySpec::new("methods", KeyType::StringList, "[\"POST\", \"PUT\"]", "The methods accepted; others get 405."),
        KeySpec::new(
            "format",
            KeyType::Enum(&["json", "text", "bytes"]),
            "\"json\"",
            "How the body becomes a payload; a body that does not decode gets 400.",
        ),
        KeySpec::new("max_body_size", KeyType::String, "\"1MiB\"", "The largest body accepted; larger gets 413."),
        KeySpec::new(
            "headers",
            KeyType::StringList,
            "[\"content-type\"]",
            "Request headers to keep in the message's metadata.",
        ),
        KeySpec::new(
            "respond",
            KeyType::Enum(&["delivered", "queued"]),
            "\"delivered\"",
            "When to answer 200: once every sink committed the message, or once it is queued.",
        ),
        KeySpec::new(
            "queue_timeout",
            KeyType::Duration,
            "\"1s\"",
            "How long a request waits for room in a full out-port before it gets 503.",
        ),
        KeySpec::new(
            "response_timeout",
            KeyType::Duration,
            "\"30s\"",
            "With `respond = \"delivered\"`: how long to wait for the sinks before answering 504.",
        ),
        server::READ_TIMEOUT_KEY,
        server::IDLE_TIMEOUT_KEY,
        server::MAX_CONNECTIONS_KEY,
        server::AUTH_KEY,
        server::TLS_KEY,
    ],
    delivery: Delivery::AtLeastOnce,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.hooks]\ntype = \"http-listen\"\nconfig = { bind = \"0.0.0.0:8080\", path = \"/hooks/\", max_body_size = \"256KiB\", headers = [\"content-type\", \"x-github-event\"] }\n",
    build,
    ports: Some(ports),
    probe: Some(crate::probe::TCP_BIND),
};

#[derive(Deserialize)]
struct Config {
    bind: String,
    path: String,
    methods: Vec<String>,
    format: Format,
    max_body_size: String,
    headers: Vec<String>,
    respond: Respond,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    queue_timeout: Duration,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    response_timeout: Duration,
}

/// When the client gets its 200.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Respond {
    Delivered,
    Queued,
}

/// What the handler needs, shared by every connection.
struct Settings {
    path: String,
    methods: Vec<Method>,
    format: Format,
    max_body: usize,
    headers: Vec<header::HeaderName>,
    respond: Respond,
    queue_timeout: Duration,
    response_timeout: Duration,
    read_timeout: Duration,
}

struct Listen {
    bind: SocketAddr,
    limits: Limits,
    settings: Arc<Settings>,
}

fn ports(config: &serde_json::Value) -> (Vec<Port>, Vec<Port>) {
    (Vec::new(), vec![Port { name: "out".into(), ty: client::format_of(config).port_type().into() }])
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let c: Config = ctx.parse()?;
    let bind =
        c.bind.parse().map_err(|_| format!("`bind = \"{}\"` is not an address like \"127.0.0.1:8080\"", c.bind))?;
    if !c.path.starts_with('/') {
        return Err(format!("`path = \"{}\"` must start with `/`", c.path));
    }
    let methods = c
        .methods
        .iter()
        .map(|m| m.to_ascii_uppercase().parse::<Method>().map_err(|_| format!("`methods`: `{m}` is not a method")))
        .collect::<Result<Vec<_>, _>>()?;
    if methods.is_empty() {
        return Err("`methods` is empty".into());
    }
    let headers = c
        .headers
        .iter()
        .map(|h| header::HeaderName::try_from(h.as_str()).map_err(|_| format!("`headers`: `{h}` is not a header name")))
        .collect::<Result<Vec<_>, _>>()?;
    for (key, d) in [("queue_timeout", c.queue_timeout), ("response_timeout", c.response_timeout)] {
        if d.is_zero() {
            return Err(format!("`{key}` must be more than 0"));
        }
    }
    let limits = Limits::from_config(ctx)?;
    Ok(Instance::task(Listen {
        bind,
        settings: Arc::new(Settings {
            path: c.path,
            methods,
            format: c.format,
            max_body: positive_size("max_body_size", &c.max_body_size)?,
            headers,
            respond: c.respond,
            queue_timeout: c.queue_timeout,
            response_timeout: c.response_timeout,
            read_timeout: limits.read_timeout,
        }),
        limits,
    }))
}

/// The handler's state.
struct Shared {
    ctx: Context,
    out: OutPort,
    settings: Arc<Settings>,
}

impl Task for Listen {
    fn run(self: Box<Self>, ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let listener = TcpListener::bind(self.bind)
                .await
                .map_err(|e| crate::net::bind_failure(&ctx, "listen", &self.bind.to_string(), &e))?;
            let local = listener.local_addr()?;
            tracing::info!(component = %ctx.name, address = %local, tls = self.limits.tls(), "Listening.");
            let shutdown = ctx.shutdown().clone();
            let out = ctx.output("out");
            let shared = Arc::new(Shared { ctx, out, settings: self.settings.clone() });
            let router = axum::Router::new().fallback(handle).with_state(shared);
            server::serve(listener, router, self.limits, shutdown).await;
            Ok(())
        })
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let s = &shared.settings;
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    if !(path == s.path || (s.path.ends_with('/') && path.starts_with(&s.path))) {
        return (StatusCode::NOT_FOUND, "no such path\n").into_response();
    }
    if !s.methods.contains(&parts.method) {
        let allow = s.methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, allow)], "method not allowed\n").into_response();
    }
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > s.max_body as u64) {
        return too_large(s.max_body);
    }
    let body = match tokio::time::timeout(s.read_timeout, read_body(body, s.max_body)).await {
        Err(_) => return (StatusCode::REQUEST_TIMEOUT, "the body took too long to arrive\n").into_response(),
        Ok(Err(BodyError::TooLarge)) => return too_large(s.max_body),
        Ok(Err(BodyError::Broken(e))) => {
            return (StatusCode::BAD_REQUEST, format!("cannot read the body: {e}\n")).into_response();
        }
        Ok(Ok(body)) => body,
    };
    let payload = match s.format.decode(body) {
        Ok(p) => p,
        Err(e) => {
            shared.ctx.metrics().errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    let mut meta = shared.ctx.meta();
    meta.topic = Some(path.into());
    meta.headers = kept_headers(&parts.headers, &s.headers);
    let mut msg = Message::new(payload, meta);
    let outcome = match s.respond {
        Respond::Queued => None,
        Respond::Delivered => {
            let (tx, rx) = oneshot::channel();
            let tx = Mutex::new(Some(tx));
            msg.ack = Some(shared.ctx.ack(move |o| {
                if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                    let _ = tx.send(o);
                }
            }));
            Some(rx)
        }
    };
    match tokio::time::timeout(s.queue_timeout, shared.out.send(msg)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => return saturated(),
    }
    let Some(outcome) = outcome else { return (StatusCode::OK, "queued\n").into_response() };
    match tokio::time::timeout(s.response_timeout, outcome).await {
        Ok(Ok(Outcome::Delivered)) => (StatusCode::OK, "delivered\n").into_response(),
        Ok(Ok(Outcome::Rejected) | Err(_)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "the flow could not deliver the message\n").into_response()
        }
        Err(_) => (StatusCode::GATEWAY_TIMEOUT, "queued, not yet delivered\n").into_response(),
    }
}

fn kept_headers(headers: &HeaderMap, names: &[header::HeaderName]) -> BTreeMap<String, String> {
    names.iter().filter_map(|n| Some((n.as_str().to_string(), headers.get(n)?.to_str().ok()?.to_string()))).collect()
}

fn too_large(max: usize) -> Response {
    (StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {max} bytes\n")).into_response()
}

fn saturated() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], "the flow is saturated, retry later\n")
        .into_response()
}

#[cfg(test)]
#[path = "listen_tests.rs"]
mod tests;
