//! The HTTP API (axum): list keys, read the state, subscribe (WebSocket and
//! Server-Sent Events), `PUT` an update, which the task applies and sends
//! into the flow, and `DELETE` a key.
//!
//! The server only reads the state; updates go to the task through a bounded
//! channel, so the task stays the one writer and orders `PUT`s with the
//! updates from its in-port. Every subscriber stream and the server itself end
//! when `stop` fires.
//!
//! It is served by [`crate::net::server`] (connection limits, timeouts, TLS,
//! auth) behind [`host::require`]: a `Host` or `Origin` it does not answer
//! is refused before any route. Subscribers are pinged (WebSocket) or sent a
//! comment (SSE) every `keep_alive`, so a quiet stream is not idle; what a
//! WebSocket subscriber sends is read within `max_message` and ignored.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fbp_runtime::value::{self, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::state::{Refused, Shared, Subscription};
use crate::net::server::body::{BodyError, read_body};
use crate::net::server::{self, Limits, host};

/// Where the task answers a [`Put`]: the new version, or why it was refused.
pub(crate) type Reply = oneshot::Sender<Result<u64, Refused>>;

/// An update (`PUT`) or a removal (`DELETE`) pushed through the API, on its way to the task.
pub(crate) struct Put {
    pub(crate) key: String,
    /// The new value; `None` for a `DELETE`.
    pub(crate) value: Option<Value>,
    /// Answered once applied (and, for a `PUT`, sent on `out`).
    pub(crate) reply: Reply,
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) shared: Arc<Shared>,
    pub(crate) puts: mpsc::Sender<Put>,
    pub(crate) stop: CancellationToken,
    /// The largest `PUT` body.
    pub(crate) max_body: usize,
    /// The largest frame or message a WebSocket subscriber may send.
    pub(crate) max_message: usize,
    /// How long a `PUT` body may take to arrive.
    pub(crate) read_timeout: Duration,
    /// How often a quiet subscriber is pinged.
    pub(crate) keep_alive: Duration,
}

/// Serves the API on `listener` until `stop` fires.
pub(crate) async fn serve(listener: TcpListener, api: Api, limits: Limits, allowed: host::Allowed) {
    let stop = api.stop.clone();
    let app = Router::new()
        .route("/keys", get(keys))
        .route("/state", get(all))
        .route("/state/{*key}", get(one).put(put).delete(delete))
        .route("/subscribe", get(websocket))
        .route("/events", get(events))
        .layer(axum::middleware::from_fn_with_state(Arc::new(allowed), host::require))
        .with_state(api);
    server::serve(listener, app, limits, stop).await;
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error(status: StatusCode, message: String) -> Response {
    json(status, serde_json::json!({ "error": message }).to_string())
}

async fn keys(State(api): State<Api>) -> Response {
    let caps = api.shared.read().capabilities();
    json(StatusCode::OK, caps.to_string())
}

async fn all(State(api): State<Api>) -> Response {
    let (version, body) = {
        let state = api.shared.read();
        (state.version(), state.to_json())
    };
    let mut resp = json(StatusCode::OK, body);
    resp.headers_mut().insert("fbp-state-version", version.into());
    resp
}

async fn one(State(api): State<Api>, Path(key): Path<String>) -> Response {
    match api.shared.read().get(&key) {
        Some(entry) => json(StatusCode::OK, entry.json.to_string()),
        None => error(StatusCode::NOT_FOUND, format!("unknown key `{key}`")),
    }
}

async fn put(State(api): State<Api>, Path(key): Path<String>, headers: HeaderMap, body: Body) -> Response {
    let too_large = || error(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {} bytes", api.max_body));
    if headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        > Some(api.max_body as u64)
    {
        return too_large();
    }
    let body = match tokio::time::timeout(api.read_timeout, read_body(body, api.max_body)).await {
        Err(_) => return error(StatusCode::REQUEST_TIMEOUT, "the body took too long to arrive".into()),
        Ok(Err(BodyError::TooLarge)) => return too_large(),
        Ok(Err(BodyError::Broken(e))) => return error(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}")),
        Ok(Ok(body)) => body,
    };
    let value = match value::parse_json(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")),
    };
    match ask(&api, &key, Some(value)).await {
        Ok(version) => json(StatusCode::ACCEPTED, serde_json::json!({ "key": key, "version": version }).to_string()),
        Err(refused) => refused,
    }
}

async fn delete(State(api): State<Api>, Path(key): Path<String>) -> Response {
    match ask(&api, &key, None).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(refused) => refused,
    }
}

/// Hands an update (or, with `None`, a removal) to the task: the new version, or the error answer.
async fn ask(api: &Api, key: &str, value: Option<Value>) -> Result<u64, Response> {
    let (reply, answer) = oneshot::channel();
    let queued = tokio::select! {
        sent = api.puts.send(Put { key: key.to_string(), value, reply }) => sent.is_ok(),
        _ = api.stop.cancelled() => false,
    };
    let shutting_down = || error(StatusCode::SERVICE_UNAVAILABLE, "the flow is shutting down".into());
    if !queued {
        return Err(shutting_down());
    }
    match answer.await {
        Ok(Ok(version)) => Ok(version),
        Ok(Err(Refused::UnknownKey)) => Err(error(StatusCode::NOT_FOUND, format!("unknown key `{key}`"))),
        Ok(Err(e @ Refused::WrongType { .. })) => Err(error(StatusCode::UNPROCESSABLE_ENTITY, format!("`{key}`: {e}"))),
        Ok(Err(e @ Refused::Full(_))) => Err(error(StatusCode::INSUFFICIENT_STORAGE, format!("`{key}`: {e}"))),
        Err(_) => Err(shutting_down()),
    }
}

async fn websocket(State(api): State<Api>, ws: WebSocketUpgrade) -> Response {
    let ws = ws.max_message_size(api.max_message).max_frame_size(api.max_message);
    ws.on_upgrade(move |socket| follow_ws(socket, api.shared.subscribe(), api.stop, api.keep_alive))
}

/// Sends the subscription's events as text frames until the client leaves or `stop` fires.
async fn follow_ws(mut socket: WebSocket, mut sub: Subscription, stop: CancellationToken, keep_alive: Duration) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if socket.send(WsMessage::Ping(Bytes::new())).await.is_err() {
                    break;
                }
            }
            (_, _, event) = sub.next() => {
                if socket.send(WsMessage::Text(event.as_ref().into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                // Pings are answered by the library; other frames are not needed and ignored.
                Some(Ok(_)) => {}
            },
            _ = stop.cancelled() => {
                let _ = socket.send(WsMessage::Close(None)).await;
                break;
            }
        }
    }
    tracing::debug!(resyncs = sub.resyncs(), "WebSocket subscriber left.");
}

async fn events(State(api): State<Api>) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let keep_alive = api.keep_alive;
    let stream = futures_util::stream::unfold((api.shared.subscribe(), api.stop), |(mut sub, stop)| async move {
        tokio::select! {
            (kind, version, data) = sub.next() => {
                let event = Event::default().event(kind.as_str()).id(version.to_string()).data(data.as_ref());
                Some((Ok(event), (sub, stop)))
            }
            _ = stop.cancelled() => None,
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default().interval(keep_alive))
}
