//! What `fbp check --connect` tries for `nats-subscribe` and `nats-publish`:
//! one connection with the component's servers, credentials and TLS (no
//! retry), and with a JetStream `stream`, that the stream exists, or that
//! the component will create it (`create_stream = true`). Nothing is
//! published or created.

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::{Client, ConnectOptions};
use fbp_runtime::spec::{BuildContext, Probe, ProbeFuture, ProbeResult};
use serde::Deserialize;

use super::{Conn, ConnConfig};

/// The JetStream keys the probe reads besides the connection's.
#[derive(Deserialize)]
struct Stream {
    stream: Option<String>,
    #[serde(default)]
    create_stream: bool,
}

/// The probe both NATS components declare.
pub(in crate::net::nats) const PROBE: Probe = Probe {
    doc: "connects once with the component's servers, credentials and TLS; with a `stream`, that it exists \
          (or that `create_stream` will create it)",
    run: probe,
};

/// Connects once; checks the stream.
fn probe(ctx: &BuildContext) -> ProbeFuture {
    let ctx = ctx.clone();
    Box::pin(async move {
        let conn = Conn::new(&ctx.parse::<ConnConfig>()?, &ctx)?;
        let keys: Stream = ctx.parse()?;
        let client = connect(&conn, &ctx).await.map_err(|e| format!("{}: {e}", conn.target))?;
        let checked = match &keys.stream {
            None => Ok(format!("{}: connected", conn.target)),
            Some(stream) => check_stream(client.clone(), stream, keys.create_stream)
                .await
                .map(|s| format!("{}: connected; {s}", conn.target))
                .map_err(|e| format!("{}: {e}", conn.target)),
        };
        let _ = client.drain().await;
        checked
    })
}

/// One connection attempt, without the component's retries.
async fn connect(conn: &Conn, ctx: &BuildContext) -> Result<Client, String> {
    let opts = conn.secured(ConnectOptions::new().name(format!("fbp probe {}", ctx.name))).await?;
    opts.connect(conn.servers.clone())
        .await
        .map_err(|e| format!("{e}; check `url`, the credentials and that the server runs"))
}

/// Whether `stream` exists, or will be created.
async fn check_stream(client: Client, stream: &str, create: bool) -> ProbeResult {
    let js = async_nats::jetstream::new(client);
    let missing = |e: &GetStreamErrorKind| matches!(e, GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND);
    match js.get_stream(stream).await {
        Ok(_) => Ok(format!("stream `{stream}` exists")),
        Err(e) if missing(&e.kind()) && create => {
            Ok(format!("stream `{stream}` does not exist; the component will create it"))
        }
        Err(e) if missing(&e.kind()) => Err(format!(
            "stream `{stream}` does not exist; create it (`nats stream add`) or set `create_stream = true`"
        )),
        Err(e) => Err(format!("stream `{stream}`: {e}; is JetStream enabled on the server?")),
    }
}
