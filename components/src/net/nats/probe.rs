//! What `fbp check --connect` tries for `nats-subscribe` and `nats-publish`:
//! one connection with the component's settings (no retry), and with a
//! JetStream `stream`, that the stream exists, or that the component will
//! create it (`create_stream = true`). Nothing is published or created.

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::{ConnectOptions, ServerAddr};
use fbp_runtime::spec::{BuildContext, ProbeFuture, ProbeResult};
use serde::Deserialize;

use super::connect::{Conn, ConnConfig};
use crate::net::tls::{self, TlsFiles};

/// The keys the probe reads besides what [`Conn`] checks.
#[derive(Deserialize)]
struct Keys {
    url: String,
    creds_file: Option<String>,
    token: Option<String>,
    username: Option<String>,
    password: Option<String>,
    nkey_seed_file: Option<String>,
    tls: bool,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    stream: Option<String>,
    #[serde(default)]
    create_stream: bool,
}

/// Connects once; checks the stream.
pub(super) fn probe(ctx: &BuildContext) -> ProbeFuture {
    let ctx = ctx.clone();
    Box::pin(async move {
        let conn: ConnConfig = ctx.parse()?;
        Conn::new(&conn, &ctx)?;
        let keys: Keys = ctx.parse()?;
        let target = format!("nats {}", fbp_runtime::secret::url(keys.url.trim()));
        let client = connect(&ctx, &keys).await.map_err(|e| format!("{target}: {e}"))?;
        let what = match &keys.stream {
            None => format!("{target}: connected"),
            Some(stream) => format!(
                "{target}: connected; {}",
                check_stream(client.clone(), stream, keys.create_stream).await.map_err(|e| format!("{target}: {e}"))?
            ),
        };
        let _ = client.drain().await;
        Ok(what)
    })
}

/// One connection attempt with the component's credentials and TLS.
async fn connect(ctx: &BuildContext, k: &Keys) -> Result<async_nats::Client, String> {
    let mut opts = ConnectOptions::new().name(format!("fbp probe {}", ctx.name));
    if let Some(path) = &k.creds_file {
        let path = ctx.path(path);
        opts = opts.credentials_file(&path).await.map_err(|e| format!("cannot use `{}`: {e}", path.display()))?;
    }
    if let Some(path) = &k.nkey_seed_file {
        let path = ctx.path(path);
        let seed = std::fs::read_to_string(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        opts = opts.nkey(seed.trim().to_string());
    }
    match (&k.token, &k.username, &k.password) {
        (Some(t), _, _) => opts = opts.token(t.clone()),
        (None, Some(u), Some(p)) => opts = opts.user_and_password(u.clone(), p.clone()),
        _ => {}
    }
    let servers: Vec<ServerAddr> =
        k.url.split(',').map(str::trim).filter(|u| !u.is_empty()).filter_map(|u| u.parse().ok()).collect();
    let files = TlsFiles {
        ca_file: k.ca_file.as_deref().map(|p| ctx.path(p)),
        cert_file: k.cert_file.as_deref().map(|p| ctx.path(p)),
        key_file: k.key_file.as_deref().map(|p| ctx.path(p)),
    };
    if k.tls || files != TlsFiles::default() || servers.iter().any(|s| s.scheme() == "tls") {
        let config = tls::client_config(&files)?;
        opts = opts.require_tls(true).tls_client_config((*config).clone());
    }
    opts.connect(servers).await.map_err(|e| format!("{e}; check `url`, the credentials and that the server runs"))
}

/// Whether `stream` exists, or will be created.
async fn check_stream(client: async_nats::Client, stream: &str, create: bool) -> ProbeResult {
    let js = async_nats::jetstream::new(client);
    match js.get_stream(stream).await {
        Ok(_) => Ok(format!("stream `{stream}` exists")),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND && create => {
                Ok(format!("stream `{stream}` does not exist; the component will create it"))
            }
            GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => Err(format!(
                "stream `{stream}` does not exist; create it (`nats stream add`) or set `create_stream = true`"
            )),
            _ => Err(format!("stream `{stream}`: {e}; is JetStream enabled on the server?")),
        },
    }
}
