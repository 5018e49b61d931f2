//! `http-poll`: a source that requests a URL every `interval` and sends the
//! response body as a message, following pagination and splitting arrays.
//!
//! A server that is down, answers 5xx, 429 or 408 is an outage: the link logs
//! it once, and the same URL is asked again after a backoff (at least what
//! `Retry-After` says); the flow never fails for it. A 4xx answer or a body
//! that does not decode is a message error, sent to `err`; polling goes on at
//! the next interval.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fbp_runtime::jq::Program;
use fbp_runtime::link::{Backoff, Link, RECONNECT_KEY};
use fbp_runtime::queue::OutPort;
use fbp_runtime::spec::{KeySpec, KeyType, Port};
use fbp_runtime::value::{self, Value};
use fbp_runtime::{
    Acks, BuildContext, ComponentSpec, Context, Delivery, Failure, Instance, Kind, Message, PortSpec, Task, TaskFuture,
};
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use url::Url;

use super::client::{
    self, BASIC_KEY, BEARER_KEY, BodyError, CA_FILE_KEY, ClientSettings, Format, HEADERS_KEY, MAX_BODY_KEY, TIMEOUT_KEY,
};
use fbp_runtime::secret as mask;

/// The `http-poll` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "http-poll",
    summary: "Request a URL every interval and send each response body as a message.",
    doc: "Requests `url` every `interval` (the first time at start) and sends the body as one \
          message, decoded as `format`; the URL is the message's topic, and its headers hold \
          `status` and `content-type`. `paginate` is a jq program over each page (`.` the body, \
          `$meta` its metadata, so `$meta.headers` too) giving the next URL (relative URLs are \
          resolved against the page's), or `null` to stop; at most `max_pages` pages a poll. \
          `split` is a jq program giving an array: each item is sent as a message of its own. \
          A server that is unreachable or answers 5xx, 429 or 408 is an outage, logged once: the \
          same URL is asked again after a backoff (`reconnect`), and never sooner than its \
          `Retry-After` header (seconds or an HTTP date) says; the flow keeps running. A 4xx \
          answer (status and body excerpt) and a body that does not decode go to `err`, and \
          polling goes on at the next interval; so does a body larger than `max_body_size`, \
          which is not read past the limit (nor at all when its `Content-Length` says so). \
          Redirects are followed (up to 10). In logs, errors, `err` and the topic, a password in \
          the URL's userinfo and token-like query values (`token`, `key`, `api_key`, `sig`, ...) \
          read `***`.",
    kind: Kind::Source,
    inputs: &[],
    outputs: &[PortSpec { name: "out", ty: "json", doc: "one message per page, or per item with `split`" }],
    config: &[
        KeySpec::required("url", KeyType::String, "The URL to request: `http://` or `https://`."),
        KeySpec::new("interval", KeyType::Duration, "\"10s\"", "Time between the starts of two polls."),
        KeySpec::new(
            "method",
            KeyType::Enum(&["GET", "POST", "PUT", "PATCH", "DELETE"]),
            "\"GET\"",
            "The request method.",
        ),
        KeySpec::optional("body", KeyType::String, "A request body to send with each request (with `POST`)."),
        HEADERS_KEY,
        BEARER_KEY,
        BASIC_KEY,
        TIMEOUT_KEY,
        CA_FILE_KEY,
        KeySpec::new(
            "format",
            KeyType::Enum(&["json", "text", "bytes"]),
            "\"json\"",
            "How the body becomes a payload; a body that does not decode goes to `err`.",
        ),
        KeySpec::optional(
            "paginate",
            KeyType::Expr,
            "jq giving the next page's URL from a page, or `null` to stop, e.g. `.next` or \
             `$meta.headers.link`.",
        ),
        KeySpec::new("max_pages", KeyType::Integer, "100", "The most pages one poll follows."),
        KeySpec::optional(
            "split",
            KeyType::Expr,
            "jq giving an array from each page, e.g. `.items`: each item becomes a message \
             (`null` gives none).",
        ),
        MAX_BODY_KEY,
        RECONNECT_KEY,
    ],
    delivery: Delivery::AtMostOnce,
    acks: Acks::Prompt,
    stateless: false,
    example: "[components.orders]\ntype = \"http-poll\"\nconfig = { url = \"https://api.example.com/orders\", interval = \"30s\", bearer_token = \"${API_TOKEN:-}\", paginate = \".next\", split = \".items\" }\n",
    build,
    ports: Some(ports),
    probe: Some(crate::probe::HTTP),
};

#[derive(Deserialize)]
struct Config {
    url: String,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    interval: Duration,
    method: String,
    body: Option<String>,
    format: Format,
    paginate: Option<String>,
    max_pages: i64,
    split: Option<String>,
    reconnect: String,
}

struct Poll {
    url: Url,
    interval: Duration,
    method: reqwest::Method,
    body: Option<String>,
    client: ClientSettings,
    format: Format,
    paginate: Option<Program>,
    max_pages: u32,
    split: Option<Program>,
    reconnect: Backoff,
}

fn ports(config: &serde_json::Value) -> (Vec<Port>, Vec<Port>) {
    let ty =
        if config.get("split").is_some_and(|s| !s.is_null()) { "json" } else { client::format_of(config).port_type() };
    (Vec::new(), vec![Port { name: "out".into(), ty: ty.into() }])
}

fn build(ctx: &BuildContext) -> Result<Instance, String> {
    let config: Config = ctx.parse()?;
    let url = parse_url(&config.url)?;
    if config.interval.is_zero() {
        return Err("`interval` must be more than 0".into());
    }
    let max_pages = u32::try_from(config.max_pages).ok().filter(|n| *n > 0);
    Ok(Instance::task(Poll {
        url,
        interval: config.interval,
        method: config.method.parse().map_err(|_| format!("`{}` is not a method", config.method))?,
        body: config.body,
        client: ClientSettings::from_config(ctx)?,
        format: config.format,
        paginate: config.paginate.as_deref().map(Program::compile).transpose()?,
        max_pages: max_pages.ok_or("`max_pages` must be 1 or more")?,
        split: config.split.as_deref().map(Program::compile).transpose()?,
        reconnect: Backoff::parse("reconnect", &config.reconnect)?,
    }))
}

/// An absolute `http://` or `https://` URL; errors show it with its secrets masked.
pub(crate) fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{}` is not a URL: {e}", mask::url(text)))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("`{}`: the scheme must be `http` or `https`, not `{other}`", mask::url(text))),
    }
}

/// What one request gave.
enum Fetched {
    /// A 2xx answer.
    Page { status: u16, content_type: Option<String>, body: Bytes },
    /// The server cannot serve now: try again later, not sooner than `retry_after`.
    Unavailable { error: String, retry_after: Option<Duration> },
    /// The server refused the request (4xx and the like).
    Refused { error: String, body: Bytes },
}

/// Whether to go on after a step of the poll loop.
enum Step {
    Go,
    Stop,
}

impl Task for Poll {
    fn run(self: Box<Self>, ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let client = self.client.client().map_err(Failure)?;
            let out = ctx.output("out");
            let mut link = Link::new(ctx.name.clone(), mask::url(self.url.as_str()), self.reconnect);
            let mut ticker = tokio::time::interval(self.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ctx.shutdown().cancelled() => return Ok(()),
                    _ = ticker.tick() => {}
                }
                if let Step::Stop = self.poll(&ctx, &client, &out, &mut link).await? {
                    return Ok(());
                }
            }
        })
    }
}

impl Poll {
    /// One poll: the first page and the ones `paginate` leads to.
    async fn poll(
        &self,
        ctx: &Context,
        client: &reqwest::Client,
        out: &OutPort,
        link: &mut Link,
    ) -> Result<Step, Failure> {
        let mut url = self.url.clone();
        let mut pages = 0;
        // Retries during an outage ask for the same page again: only pages served count.
        while pages < self.max_pages {
            let fetched = tokio::select! {
                f = self.fetch(client, &url) => f,
                _ = ctx.shutdown().cancelled() => return Ok(Step::Stop),
            };
            let (status, content_type, body) = match fetched {
                Fetched::Page { status, content_type, body } => {
                    link.up();
                    pages += 1;
                    (status, content_type, body)
                }
                Fetched::Unavailable { error, retry_after } => {
                    let delay = link.down(&mask::urls_in(&error)).max(retry_after.unwrap_or_default());
                    if !sleep(ctx, delay).await {
                        return Ok(Step::Stop);
                    }
                    continue;
                }
                Fetched::Refused { error, body } => {
                    link.up();
                    let msg = Message::new(client::raw_payload(body), self.meta(ctx, &url, None, None));
                    reject(ctx, &msg, &error).await?;
                    return Ok(Step::Go);
                }
            };
            let meta = self.meta(ctx, &url, Some(status), content_type);
            let page = match self.format.decode(body.clone()) {
                Ok(payload) => Message::new(payload, meta),
                Err(e) => {
                    reject(ctx, &Message::new(client::raw_payload(body), meta), &e).await?;
                    return Ok(Step::Go);
                }
            };
            let next = match self.next_url(&page, &url) {
                Ok(next) => next,
                Err(e) => {
                    reject(ctx, &page, &e).await?;
                    return Ok(Step::Go);
                }
            };
            if let Step::Stop = self.emit(ctx, out, page).await? {
                return Ok(Step::Stop);
            }
            match next {
                Some(next) => url = next,
                None => return Ok(Step::Go),
            }
        }
        tracing::warn!(component = %ctx.name, max_pages = self.max_pages, "Stopped following pages at `max_pages`.");
        Ok(Step::Go)
    }

    async fn fetch(&self, client: &reqwest::Client, url: &Url) -> Fetched {
        let mut request = client.request(self.method.clone(), url.clone());
        if let Some(body) = &self.body {
            request = request.body(body.clone());
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Fetched::Unavailable { error: fbp_runtime::cause::chain(&e), retry_after: None },
        };
        let status = response.status();
        let retry_after = client::retry_after(response.headers(), SystemTime::now());
        let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = match client::read_body(response, self.client.max_body).await {
            Ok(b) => b,
            Err(e @ BodyError::TooLarge { .. }) => {
                return Fetched::Refused {
                    error: format!("HTTP {status} from {url}: {}", e.describe()),
                    body: Bytes::new(),
                };
            }
            Err(e) => return Fetched::Unavailable { error: e.describe(), retry_after: None },
        };
        if status.is_success() {
            Fetched::Page { status: status.as_u16(), content_type, body }
        } else if client::is_transient(status) {
            Fetched::Unavailable { error: format!("HTTP {status}: {}", client::excerpt(&body)), retry_after }
        } else {
            Fetched::Refused { error: format!("HTTP {status} from {url}: {}", client::excerpt(&body)), body }
        }
    }

    fn meta(&self, ctx: &Context, url: &Url, status: Option<u16>, content_type: Option<String>) -> fbp_runtime::Meta {
        let mut meta = ctx.meta();
        meta.topic = Some(mask::url(url.as_str()).into());
        if let Some(status) = status {
            meta.headers.insert("status".into(), status.to_string());
        }
        if let Some(ct) = content_type {
            meta.headers.insert("content-type".into(), ct);
        }
        meta
    }

    /// The next page's URL, from `paginate`.
    fn next_url(&self, page: &Message, url: &Url) -> Result<Option<Url>, String> {
        let Some(paginate) = &self.paginate else { return Ok(None) };
        match paginate.first(page)? {
            None | Some(Value::Null) => Ok(None),
            Some(v @ Value::TStr(_)) => {
                let text = value::as_str(&v).unwrap_or_default().into_owned();
                if text.is_empty() {
                    return Ok(None);
                }
                let next =
                    url.join(&text).map_err(|e| format!("`paginate` gave `{}`, not a URL: {e}", mask::url(&text)))?;
                if &next == url {
                    return Err(format!("`paginate` gave the page's own URL `{next}`"));
                }
                Ok(Some(next))
            }
            Some(other) => Err(format!("`paginate` gave {}, not a URL string or null", value::type_name(&other))),
        }
    }

    /// Sends a page, or each item of it with `split`.
    async fn emit(&self, ctx: &Context, out: &OutPort, page: Message) -> Result<Step, Failure> {
        let Some(split) = &self.split else { return send(ctx, out, page).await };
        let items = match split.first(&page) {
            Ok(None | Some(Value::Null)) => return Ok(Step::Go),
            Ok(Some(Value::Arr(items))) => items,
            Ok(Some(other)) => {
                let e = format!("`split` gave {}, not an array", value::type_name(&other));
                reject(ctx, &page, &e).await?;
                return Ok(Step::Go);
            }
            Err(e) => {
                reject(ctx, &page, &e).await?;
                return Ok(Step::Go);
            }
        };
        for item in items.iter() {
            let mut meta = ctx.meta();
            meta.topic = page.meta.topic.clone();
            meta.headers = page.meta.headers.clone();
            if let Step::Stop = send(ctx, out, Message::new(item.clone(), meta)).await? {
                return Ok(Step::Stop);
            }
        }
        Ok(Step::Go)
    }
}

/// Sends `msg`, unless the flow shuts down while the port is full.
async fn send(ctx: &Context, out: &OutPort, msg: Message) -> Result<Step, Failure> {
    tokio::select! {
        biased;
        r = out.send(msg) => r.map(|()| Step::Go).map_err(Failure::from),
        _ = ctx.shutdown().cancelled() => Ok(Step::Stop),
    }
}

/// Sends `msg` to `err` (or the dead letter), the URLs in `error` masked.
async fn reject(ctx: &Context, msg: &Message, error: &str) -> Result<(), Failure> {
    ctx.reject(msg, &mask::urls_in(error)).await
}

/// Waits `delay`; `false` when the flow shuts down first.
async fn sleep(ctx: &Context, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = ctx.shutdown().cancelled() => false,
    }
}

#[cfg(test)]
#[path = "poll_tests.rs"]
mod tests;
