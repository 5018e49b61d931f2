//! The HTTP server `http-listen` and kv-state's API share: the accept loop
//! and what bounds a client.
//!
//! - at most `max_connections` connections at once (more wait in the
//!   kernel's backlog); a connection's slot goes with its socket, through a
//!   WebSocket upgrade too;
//! - `read_timeout` for a TLS handshake and for each request head (hyper's
//!   header timer, which also runs while a keep-alive connection waits for
//!   its next request);
//! - `idle_timeout`: no byte moved either way for that long closes the
//!   connection, whatever it is doing ([`io`]);
//! - `tls = { cert, key }`: rustls, the certificate chain and key in PEM;
//! - `auth = { token }`: a Bearer token on every request ([`auth`]);
//! - [`body`]: a request body read within `max_body_size`;
//! - [`host`]: the `Host` and `Origin` checks kv-state's API adds.
//!
//! On shutdown the loop stops accepting, lets the requests in hand finish
//! and closes idle connections.

mod auth;
pub(crate) mod body;
pub(crate) mod host;
mod io;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use fbp_runtime::BuildContext;
use fbp_runtime::spec::{KeySpec, KeyType};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use self::auth::{AuthConfig, Token};
use self::io::Guarded;

/// `max_connections`.
pub(crate) const MAX_CONNECTIONS_KEY: KeySpec = KeySpec::optional(
    "max_connections",
    KeyType::Integer,
    "Connections served at once; more wait in the kernel's backlog. Unset: 1024, or a quarter \
     of the process's descriptor limit when that is less, so a flood of clients on this \
     listener never takes the descriptors the others need.",
);
/// `read_timeout`.
pub(crate) const READ_TIMEOUT_KEY: KeySpec = KeySpec::new(
    "read_timeout",
    KeyType::Duration,
    "\"10s\"",
    "The longest a client may take to send a request's head (and a TLS handshake), counted from \
     when the connection waits for it, so a keep-alive connection is closed after this long \
     without a new request too; and again its body (else 408).",
);
/// `idle_timeout`.
pub(crate) const IDLE_TIMEOUT_KEY: KeySpec = KeySpec::new(
    "idle_timeout",
    KeyType::Duration,
    "\"60s\"",
    "A connection on which no byte moves either way for this long is closed, whatever it is \
     doing (a client that stopped reading a response or a stream, a vanished peer).",
);
/// `auth`.
pub(crate) const AUTH_KEY: KeySpec = KeySpec::optional(
    "auth",
    KeyType::Table(&["token"]),
    "`{ token = \"${TOKEN}\" }`: every request must carry `Authorization: Bearer TOKEN`, else \
     401 with `WWW-Authenticate: Bearer`. Compared in constant time, never logged.",
);
/// `tls`.
pub(crate) const TLS_KEY: KeySpec = KeySpec::optional(
    "tls",
    KeyType::Table(&["cert", "key"]),
    "`{ cert = \"server.pem\", key = \"server.key\" }`: serve HTTPS with this PEM certificate \
     chain and private key (paths from the flow file's folder).",
);

/// The most `max_connections` may be (far more than any descriptor limit).
const MOST_CONNECTIONS: i64 = 1 << 20;

/// What bounds a client, as the keys set it.
#[derive(Clone)]
pub(crate) struct Limits {
    /// Connections served at once.
    pub(crate) max_connections: usize,
    /// For a TLS handshake and each request head.
    pub(crate) read_timeout: Duration,
    /// No byte moved either way.
    pub(crate) idle_timeout: Duration,
    tls: Option<TlsAcceptor>,
    token: Option<Token>,
}

#[derive(Deserialize)]
struct Keys {
    max_connections: Option<i64>,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    read_timeout: Duration,
    #[serde(deserialize_with = "fbp_runtime::units::duration")]
    idle_timeout: Duration,
    auth: Option<serde_json::Value>,
    tls: Option<serde_json::Value>,
}

/// The `tls` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsConfig {
    cert: String,
    key: String,
}

impl Limits {
    /// Reads the server keys of a component's config; a bad value, an
    /// unreadable certificate or key is an error naming the key.
    pub(crate) fn from_config(ctx: &BuildContext) -> Result<Limits, String> {
        let keys: Keys = ctx.parse()?;
        let max_connections = match keys.max_connections {
            Some(n) if !(1..=MOST_CONNECTIONS).contains(&n) => {
                return Err(format!("`max_connections` must be at least 1 and at most {MOST_CONNECTIONS}"));
            }
            Some(n) => usize::try_from(n).unwrap_or(1),
            None => fbp_runtime::fd::connection_cap(1024),
        };
        for (key, d) in [("read_timeout", keys.read_timeout), ("idle_timeout", keys.idle_timeout)] {
            if d.is_zero() {
                return Err(format!("`{key}` must be more than 0s"));
            }
        }
        let token = keys.auth.map(|a| table::<AuthConfig>("auth", a).and_then(Token::new)).transpose()?;
        let tls = keys.tls.map(|t| table::<TlsConfig>("tls", t).and_then(|t| acceptor(ctx, &t))).transpose()?;
        Ok(Limits { max_connections, read_timeout: keys.read_timeout, idle_timeout: keys.idle_timeout, tls, token })
    }

    /// Whether it serves HTTPS.
    pub(crate) fn tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// A table key read as `T`; its errors name the key.
fn table<T: serde::de::DeserializeOwned>(key: &str, value: serde_json::Value) -> Result<T, String> {
    serde_json::from_value(value).map_err(|e| format!("`{key}`: {e}"))
}

/// A TLS acceptor for the PEM files of `tls`.
fn acceptor(ctx: &BuildContext, config: &TlsConfig) -> Result<TlsAcceptor, String> {
    super::tls::ensure_provider();
    let (cert, key) = (ctx.path(&config.cert), ctx.path(&config.key));
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(super::tls::certs(&cert)?, super::tls::private_key(&key)?)
        .map_err(|e| {
            format!("`tls`: `{}` and `{}` do not make a server certificate: {e}", cert.display(), key.display())
        })?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Serves `router` on `listener` until `shutdown` fires, then waits for
/// every connection to close.
pub(crate) async fn serve(listener: TcpListener, router: Router, limits: Limits, shutdown: CancellationToken) {
    let router = match &limits.token {
        Some(token) => router.layer(axum::middleware::from_fn_with_state(token.clone(), auth::require)),
        None => router,
    };
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let limits = Arc::new(limits);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("never closed"),
            _ = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "Cannot accept a connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, slot, router.clone(), limits.clone(), shutdown.clone()));
    }
    drop(listener);
    // Every connection holds a slot: all are back once the last one closed.
    let _all = slots.acquire_many(u32::try_from(limits.max_connections).unwrap_or(u32::MAX)).await;
}

/// One connection: the TLS handshake if any, then HTTP/1.1 until it closes.
async fn connection(
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
    router: Router,
    limits: Arc<Limits>,
    shutdown: CancellationToken,
) {
    let Some(tls) = &limits.tls else {
        return http(Guarded::new(stream, limits.idle_timeout, slot), router, &limits, shutdown).await;
    };
    match tokio::time::timeout(limits.read_timeout, tls.accept(stream)).await {
        Ok(Ok(stream)) => http(Guarded::new(stream, limits.idle_timeout, slot), router, &limits, shutdown).await,
        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed."),
        Err(_) => tracing::debug!("TLS handshake took longer than `read_timeout`."),
    }
}

/// Serves HTTP/1.1 (and upgrades) on one connection.
async fn http<IO>(io: Guarded<IO>, router: Router, limits: &Limits, shutdown: CancellationToken)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.read_timeout);
    let conn = http.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
