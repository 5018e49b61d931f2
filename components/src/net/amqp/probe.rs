//! What `fbp check --connect` tries for `amqp-subscribe` and `amqp-publish`:
//! one connection with the component's `url` and one channel opened on it,
//! then both closed. Nothing is declared, bound or published.

use fbp_runtime::spec::{BuildContext, Probe, ProbeFuture};
use serde::Deserialize;

use super::Broker;

/// The keys the probe reads.
#[derive(Deserialize)]
struct Keys {
    url: String,
    reconnect: String,
}

/// The probe both AMQP components declare.
pub(super) const PROBE: Probe =
    Probe { doc: "connects to the broker and opens a channel, then closes both; nothing is declared", run: probe };

/// Connects once and opens a channel.
fn probe(ctx: &BuildContext) -> ProbeFuture {
    let ctx = ctx.clone();
    Box::pin(async move {
        let keys: Keys = ctx.parse()?;
        let broker = Broker::new(&keys.url, &keys.reconnect)?;
        match broker.connect().await {
            Ok((conn, channel)) => {
                let _ = channel.close(200, "probe done".into()).await;
                let _ = conn.close(200, "probe done".into()).await;
                Ok(format!("{}: connected, channel open", broker.target))
            }
            Err(e) if super::is_refusal(&e) => {
                Err(format!("{}: {e}; fix the user, password or vhost in `url`", broker.target))
            }
            Err(e) => Err(format!("{}: {e}; check `url` and that the broker runs", broker.target)),
        }
    })
}
