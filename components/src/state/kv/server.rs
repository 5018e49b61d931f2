//! The HTTP API (axum): list keys, read the state, subscribe (WebSocket and
//! Server-Sent Events), and `PUT` an update, which the task applies and sends
//! into the flow.
//!
//! The server only reads the state; updates go to the task through a bounded
//! channel, so the task stays the one writer and orders `PUT`s with the
//! updates from its in-port. Every subscriber stream and the server itself end
//! when `stop` fires.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fbp_runtime::value::{self, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::state::{Refused, Shared, Subscription};

/// An update pushed through the API, on its way to the task.
pub(crate) struct Put {
    pub(crate) key: String,
    pub(crate) value: Value,
    /// The new version (or why it was refused), once applied and sent on `out`.
    pub(crate) reply: oneshot::Sender<Result<u64, Refused>>,
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) shared: Arc<Shared>,
    pub(crate) puts: mpsc::Sender<Put>,
    pub(crate) stop: CancellationToken,
}

/// Serves the API on `listener` until `stop` fires.
pub(crate) async fn serve(listener: TcpListener, api: Api, max_body: usize) -> std::io::Result<()> {
    let stop = api.stop.clone();
    let app = Router::new()
        .route("/keys", get(keys))
        .route("/state", get(all))
        .route("/state/{*key}", get(one).put(put))
        .route("/subscribe", get(websocket))
        .route("/events", get(events))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(api);
    axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await
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

async fn put(State(api): State<Api>, Path(key): Path<String>, body: Bytes) -> Response {
    let value = match value::parse_json(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")),
    };
    let (reply, answer) = oneshot::channel();
    let queued = tokio::select! {
        sent = api.puts.send(Put { key: key.clone(), value, reply }) => sent.is_ok(),
        _ = api.stop.cancelled() => false,
    };
    let shutting_down = || error(StatusCode::SERVICE_UNAVAILABLE, "the flow is shutting down".into());
    if !queued {
        return shutting_down();
    }
    match answer.await {
        Ok(Ok(version)) => {
            json(StatusCode::ACCEPTED, serde_json::json!({ "key": key, "version": version }).to_string())
        }
        Ok(Err(Refused::UnknownKey)) => error(StatusCode::NOT_FOUND, format!("unknown key `{key}`")),
        Ok(Err(e @ Refused::WrongType { .. })) => error(StatusCode::UNPROCESSABLE_ENTITY, format!("`{key}`: {e}")),
        Ok(Err(e @ Refused::Full(_))) => error(StatusCode::INSUFFICIENT_STORAGE, format!("`{key}`: {e}")),
        Err(_) => shutting_down(),
    }
}

async fn websocket(State(api): State<Api>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| follow_ws(socket, api.shared.subscribe(), api.stop))
}

/// Sends the subscription's events as text frames until the client leaves or `stop` fires.
async fn follow_ws(mut socket: WebSocket, mut sub: Subscription, stop: CancellationToken) {
    loop {
        tokio::select! {
            (_, _, event) = sub.next() => {
                if socket.send(WsMessage::Text(event.as_ref().into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {} // pings are answered by the library; other frames are ignored
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
    let stream = futures_util::stream::unfold((api.shared.subscribe(), api.stop), |(mut sub, stop)| async move {
        tokio::select! {
            (kind, version, data) = sub.next() => {
                let event = Event::default().event(kind.as_str()).id(version.to_string()).data(data.as_ref());
                Some((Ok(event), (sub, stop)))
            }
            _ = stop.cancelled() => None,
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
