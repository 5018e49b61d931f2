//! `http-request`: sends each message as an HTTP request and forwards the response.
//!
//! Up to `concurrency` requests are in flight; responses leave in the order
//! the messages came (a slow request holds back the ones behind it). Each
//! response carries its input's acknowledgement, so the input is acknowledged
//! only after a 2xx answer and once the response itself is committed
//! downstream (or dropped, when `out` is unconnected).
//!
//! Failures are told apart: a server that cannot be reached is an outage
//! (the link logs it once; the request is retried with the `reconnect`
//! backoff until it is back, and back-pressure holds upstream meanwhile); a
//! server refusing for a while (429, 502, 503, 504) is waited out with the
//! `backoff` (never sooner than `Retry-After`), one `sink_retry::Retry` for
//! all requests; another 5xx, a 408 or a timeout is retried `retries` times
//! the same way, then sent to `err`; any other answer (4xx) goes to `err` at
//! once with its status and a body excerpt. A shutdown ends every wait at
//! once, the message rejected.

use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use fbp_runtime::link::{Backoff, Link, RECONNECT_KEY};
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::value::{self, Value};
use fbp_runtime::{
    Ack, Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, PortSpec, Task,
    TaskFuture,
};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::Deserialize;

use super::client::{
    self, BASIC_KEY, BEARER_KEY, BodyError, CA_FILE_KEY, ClientSettings, HEADERS_KEY, MAX_BODY_KEY, TIMEOUT_KEY,
};
use super::poll::parse_url;
use super::template::Template;
use fbp_runtime::secret as mask;
use tokio_util::sync::CancellationToken;

use crate::sink_retry::{self, Fault, Retry};

/// The `http-request` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "http-request",
    summary: "Send each message as an HTTP request (POST by default) and forward the response.",
    doc: "Sends each message to `url`, a template: `{{ jq }}` holes are filled from the message \
          (`http://h/items/{{ .id }}`, `{{ $meta.topic }}`), each value percent-encoded for where \
          it sits (host, path segment, query or fragment: all but `A-Z a-z 0-9 - . _ ~`), so a \
          message cannot add a path segment, a query or a fragment: `{ id = \"1?role=admin\" }` \
          gives `/items/1%3Frole%3Dadmin`, and `../admin` gives `/items/%2E%2E%2Fadmin`; a value \
          that makes a path segment `.` or `..` sends the message to `err`. A hole before `://` \
          (`{{ .url }}`) takes the value as it is. The body is the payload: a string or \
          bytes as they are (`text/plain`, `application/octet-stream`), anything else as JSON \
          (`application/json`), unless `headers` sets `content-type`; `GET` and `DELETE` send no \
          body. The response goes to `out` as `{status, headers, body, url}` with the input's \
          metadata, `body` decoded as `response_format`. Up to `concurrency` requests are in \
          flight; responses keep the input order. An unreachable server is an outage: the \
          request is retried (`reconnect` backoff) until it is back, logged once, and input \
          waits meanwhile. A server refusing for a while (429, 502, 503, 504) is waited out: the \
          request is sent again, waiting `backoff` (doubled each time, never less than \
          `Retry-After`), until it is answered, whatever `retries` says, logged once per episode. \
          Another 5xx, a 408 or a timeout is retried up to `retries` times the same way, then the \
          message goes to `err`; another non-2xx answer sends it to `err` at once, with the \
          status and the start of the body. At shutdown a wait ends at once: the message is \
          rejected, not acknowledged. In logs, errors, `err` and the response's `url`, a \
          password in the URL's userinfo and token-like query values (`token`, `key`, \
          `api_key`, `sig`, ...) read `***`. A response body larger than `max_body_size` is not \
          read past the limit (nor at all when its `Content-Length` says so): the message goes \
          to `err`. A message is acknowledged only after a 2xx answer.",
    kind: Kind::Transform,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "messages to send" }],
    outputs: &[PortSpec {
        name: "out",
        ty: "{ status = \"number\", headers = \"object\", url = \"string\" }",
        doc: "the responses: `{status, headers, body, url}`",
    }],
    config: &[
        KeySpec::required(
            "url",
            KeyType::String,
            "The URL, a template: `{{ jq }}` holes are filled from the message, each value \
             percent-encoded for its place.",
        ),
        KeySpec::new(
            "method",
            KeyType::Enum(&["POST", "PUT", "PATCH", "DELETE", "GET"]),
            "\"POST\"",
            "The request method.",
        ),
        HEADERS_KEY,
        BEARER_KEY,
        BASIC_KEY,
        TIMEOUT_KEY,
        CA_FILE_KEY,
        KeySpec::new(
            "retries",
            KeyType::Integer,
            "3",
            "Retries after a 5xx answer (but 502, 503 and 504, waited out), a 408 or a timeout.",
        ),
        KeySpec::new(
            "backoff",
            KeyType::String,
            "\"200ms..10s\"",
            "The wait before the first retry, doubled each time up to the second.",
        ),
        KeySpec::new("concurrency", KeyType::Integer, "4", "Requests in flight at once."),
        KeySpec::new(
            "response_format",
            KeyType::Enum(&["auto", "json", "text"]),
            "\"auto\"",
            "The response body: `auto` is JSON where it parses, else text; `json` sends a body that \
             is not JSON to `err`.",
        ),
        MAX_BODY_KEY,
        RECONNECT_KEY,
    ],
    delivery: Delivery::AtLeastOnce,
    acks: Acks::Prompt,
    stateless: true,
    example: "[components.push]\ntype = \"http-request\"\nconfig = { url = \"http://127.0.0.1:9000/items/{{ .id }}\", method = \"PUT\", retries = 5, concurrency = 8 }\n",
    build,
    ports: None,
    probe: Some(crate::probe::HTTP),
};

#[derive(Deserialize)]
struct Config {
    url: String,
    method: String,
    retries: i64,
    backoff: String,
    concurrency: i64,
    response_format: ResponseFormat,
    reconnect: String,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ResponseFormat {
    Auto,
    Json,
    Text,
}

struct Request {
    url: Template,
    method: reqwest::Method,
    client: ClientSettings,
    retries: u32,
    backoff: Backoff,
    concurrency: usize,
    response_format: ResponseFormat,
    reconnect: Backoff,
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let c: Config = ctx.parse()?;
    let url = Template::parse(&c.url).map_err(|e| mask::urls_in(&e))?;
    if let Some(fixed) = url.as_static() {
        parse_url(fixed)?;
    }
    Ok(Instance::task(Request {
        url,
        method: c.method.parse().map_err(|_| format!("`{}` is not a method", c.method))?,
        client: ClientSettings::from_config(ctx)?,
        retries: u32::try_from(c.retries).map_err(|_| "`retries` must be 0 or more")?,
        backoff: Backoff::parse("backoff", &c.backoff)?,
        concurrency: usize::try_from(c.concurrency).ok().filter(|n| *n > 0).ok_or("`concurrency` must be 1 or more")?,
        response_format: c.response_format,
        reconnect: Backoff::parse("reconnect", &c.reconnect)?,
    }))
}

/// How one message's request ended.
enum Done {
    /// A 2xx answer: the response message.
    Answered(Message),
    /// A message error: the message and why.
    Failed(Message, String),
    /// The flow shut down while the message waited to be sent again.
    Stopped(Message),
}

impl Task for Request {
    fn run(self: Box<Self>, mut ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let client = self.client.client().map_err(Failure)?;
            let mut input = ctx.input("in");
            let out = ctx.output("out");
            let link = Mutex::new(Link::new(ctx.name.clone(), self.url_label(), self.reconnect));
            let shutdown = ctx.shutdown().clone();
            // One episode for the server's refusals, whichever requests meet them.
            let refusing = Mutex::new(Retry::new(ctx.name.clone(), self.url_label(), self.backoff));
            let mut in_flight = FuturesOrdered::new();
            let mut open = true;
            loop {
                tokio::select! {
                    biased;
                    Some(done) = in_flight.next(), if !in_flight.is_empty() => match done {
                        Done::Answered(response) => out.send(response).await?,
                        Done::Failed(msg, error) => ctx.reject(&msg, &mask::urls_in(&error)).await?,
                        // Not sent at shutdown: its source learns it was not delivered.
                        Done::Stopped(msg) => msg.ack.iter().for_each(Ack::reject),
                    },
                    msg = input.recv(), if open && in_flight.len() < self.concurrency => match msg {
                        Some(msg) => in_flight.push_back(self.send(&client, &link, msg, &refusing, &shutdown)),
                        None => open = false,
                    },
                    else => return Ok(()),
                }
            }
        })
    }
}

impl Request {
    /// The URL for logs, its secrets masked: the template's fixed text, or that it is a template.
    fn url_label(&self) -> String {
        self.url.as_static().map(mask::url).unwrap_or_else(|| "a templated URL".into())
    }

    /// Sends `msg` until it is answered 2xx, refused, or out of retries; a
    /// server unreachable or refusing for a while (429, 502, 503, 504) is
    /// waited out, until `shutdown`.
    async fn send(
        &self,
        client: &reqwest::Client,
        link: &Mutex<Link>,
        msg: Message,
        refusing: &Mutex<Retry>,
        shutdown: &CancellationToken,
    ) -> Done {
        let url = match self.url.render(&msg) {
            Ok(u) => u,
            Err(e) => return Done::Failed(msg, format!("cannot make the URL: {e}")),
        };
        if let Err(e) = parse_url(&url) {
            return Done::Failed(msg, e);
        }
        let (body, content_type) = body_of(&msg.payload);
        let mut retries_left = self.retries;
        let mut delay = self.backoff.min;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut request = client.request(self.method.clone(), &url);
            if !matches!(self.method, reqwest::Method::GET | reqwest::Method::DELETE) {
                if !self.client.has_header(&CONTENT_TYPE) {
                    request = request.header(CONTENT_TYPE, HeaderValue::from_static(content_type));
                }
                request = request.body(body.clone());
            }
            let (wait, error) = match request.send().await {
                Err(e) if e.is_connect() => {
                    let pause = lock(link).down(&mask::urls_in(&fbp_runtime::cause::chain(&e)));
                    if !sink_retry::pause(pause, shutdown).await {
                        return Done::Stopped(msg);
                    }
                    attempts -= 1;
                    continue;
                }
                Err(e) => (None, fbp_runtime::cause::chain(&e)),
                Ok(response) => {
                    lock(link).up();
                    let status = response.status();
                    let retry_after = client::retry_after(response.headers(), SystemTime::now());
                    let headers = headers_of(response.headers());
                    let body = match client::read_body(response, self.client.max_body).await {
                        Ok(b) => b,
                        Err(e @ BodyError::TooLarge { .. }) => {
                            return Done::Failed(msg, format!("HTTP {status} from {url}: {}", e.describe()));
                        }
                        Err(e) => Bytes::from(format!("({})", e.describe())),
                    };
                    if status.is_success() {
                        lock(refusing).written();
                        return match self.response(&msg, &url, status.as_u16(), headers, body) {
                            Ok(m) => Done::Answered(m),
                            Err(e) => Done::Failed(msg, e),
                        };
                    }
                    let error = format!("HTTP {status} from {url}: {}", client::excerpt(&body));
                    if client::is_refusing(status) {
                        let pause = lock(refusing).next(Fault::Transient(error), retry_after.unwrap_or_default());
                        if let Ok(pause) = pause
                            && !sink_retry::pause(pause, shutdown).await
                        {
                            lock(refusing).stopped();
                            return Done::Stopped(msg);
                        }
                        attempts -= 1;
                        continue;
                    }
                    if !client::is_transient(status) {
                        return Done::Failed(msg, error);
                    }
                    (retry_after, error)
                }
            };
            if retries_left == 0 {
                return Done::Failed(msg, format!("{error} (after {attempts} attempts)"));
            }
            retries_left -= 1;
            if !sink_retry::pause(delay.max(wait.unwrap_or_default()), shutdown).await {
                return Done::Stopped(msg);
            }
            delay = (delay * 2).min(self.backoff.max);
        }
    }

    /// The response as a message carrying the input's metadata and acknowledgement.
    fn response(&self, msg: &Message, url: &str, status: u16, headers: Value, body: Bytes) -> Result<Message, String> {
        let body = match self.response_format {
            ResponseFormat::Json => value::parse_json(&body).map_err(|e| format!("the response is not JSON: {e}"))?,
            ResponseFormat::Text => client::raw_payload(body),
            ResponseFormat::Auto if body.is_empty() => Value::Null,
            ResponseFormat::Auto => value::parse_json(&body).unwrap_or_else(|_| client::raw_payload(body)),
        };
        let payload = value::object([
            ("status", value::int(status.into())),
            ("headers", headers),
            ("body", body),
            ("url", value::string(mask::url(url))),
        ]);
        Ok(msg.with_payload(payload))
    }
}

fn lock<T>(shared: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The request body and its content type for a payload.
fn body_of(payload: &Value) -> (Bytes, &'static str) {
    match payload {
        Value::TStr(b) => ((**b).clone(), "text/plain; charset=utf-8"),
        Value::BStr(b) => ((**b).clone(), "application/octet-stream"),
        other => (Bytes::from(value::to_json_string(other)), "application/json"),
    }
}

fn headers_of(headers: &reqwest::header::HeaderMap) -> Value {
    value::object(headers.iter().filter_map(|(k, v)| Some((k.as_str().to_string(), value::string(v.to_str().ok()?)))))
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
