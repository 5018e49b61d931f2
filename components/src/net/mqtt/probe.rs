//! What `fbp check --connect` tries for `mqtt-subscribe` and `mqtt-publish`:
//! one connection to the broker with the component's settings, up to its
//! CONNACK, then a clean DISCONNECT (so no last will is published).
//!
//! The probe connects under a client id of its own with a clean session: the
//! component's fixed `client_id` would take over a running instance's
//! connection, and a persistent session would be touched.

use fbp_runtime::spec::{BuildContext, Probe, ProbeFuture};
use rumqttc::{AsyncClient, ConnectionError, Event, Packet};

use super::config::{Common, check};

/// The probe both MQTT components declare.
pub(super) const PROBE: Probe = Probe {
    doc: "connects to the broker with the component's settings (under a client id of its own, clean session) \
          and waits for the CONNACK, then disconnects; refused credentials fail",
    run: probe,
};

/// Connects once and waits for the CONNACK.
fn probe(ctx: &BuildContext) -> ProbeFuture {
    let ctx = ctx.clone();
    Box::pin(async move {
        let common: Common = ctx.parse()?;
        let conn = check(&common, &ctx.name, |p| ctx.path(p))?;
        let mut options = conn.options()?;
        options
            .set_client_id(format!("fbp-probe-{}-{:06x}", ctx.name, fastrand::u32(..0x100_0000)))
            .set_clean_session(true);
        let target = conn.target();
        let (client, mut events) = AsyncClient::new(options, 1);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => break,
                Ok(_) => {}
                Err(e) => return Err(format!("{target}: {e}; {}", fix(&e))),
            }
        }
        if client.try_disconnect().is_ok() {
            // Sends the DISCONNECT; the broker closing the connection ends the poll.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), events.poll()).await;
        }
        Ok(format!("{target}: connected (CONNACK)"))
    })
}

/// What to change for a failed connection.
fn fix(e: &ConnectionError) -> &'static str {
    match e {
        ConnectionError::ConnectionRefused(_) => "fix `username`/`password` or the broker's ACL",
        ConnectionError::Io(_) => "check `url`/`host`/`port` and that the broker runs",
        _ => "check the broker's address and TLS settings",
    }
}
