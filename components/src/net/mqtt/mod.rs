//! MQTT 3.1.1 (rumqttc): `mqtt-subscribe`, a source, and `mqtt-publish`, a sink.
//!
//! - `config`: the connection keys both share, their checks, the rumqttc options;
//! - `session`: the task that polls rumqttc's event loop, reconnects with
//!   backoff and hands over the events that matter;
//! - `acks`: the bookkeeping of acknowledgements, without I/O;
//! - `template`: topic templates and topic checks;
//! - `subscribe`, `publish`: the two components.
//!
//! # The connection
//!
//! rumqttc's `EventLoop::poll` does everything: it connects, reads, writes
//! the requests the client queued and sends the keep-alive pings; after an
//! error, the next call reconnects at once (a tight loop). So each component
//! runs one task that polls without pause and never cancels a `poll`
//! half-way; after an error it sleeps the [`Link`]'s backoff (logged once per
//! outage, not per attempt) and polls again. A broker that is down never
//! fails the flow: the source produces nothing and the sink takes no input
//! while it is away, so bounded queues hold upstream.
//!
//! # Back-pressure (subscribe)
//!
//! The polling task hands messages to the component through a bounded
//! channel; the component sends them on its out-port and blocks while the
//! out-port is full. Then the channel fills and the polling task stops
//! reading the socket, so TCP flow control holds the broker back, and with
//! QoS 1/2 the broker's own in-flight window (Mosquitto's
//! `max_inflight_messages`) stops it sending more until messages are
//! acknowledged. Not polling at all would stop the keep-alive pings too and
//! the broker would drop the connection after 1.5 keep-alives; so while it
//! is held up the task polls again once half the keep-alive has passed since
//! its last ping, until the next ping goes out, and when the component has
//! queued acknowledgements (so they reach the broker, which then sends more),
//! holding what those polls bring (at most 256 events; past that it stops polling, the connection may
//! drop, and unacknowledged messages are delivered again after the
//! reconnection). Memory is thus bounded by the channel, the held events and
//! rumqttc's read batch, whatever the broker holds.
//!
//! # Acknowledgements (subscribe)
//!
//! With QoS 1/2 the client acknowledges by hand (`set_manual_acks`): each
//! message carries an [`Ack`](fbp_runtime::Ack); when every copy is
//! committed by the sinks, dropped or dead-lettered, the component sends the
//! PUBACK (PUBREC for QoS 2). MQTT 3.1.1 wants acknowledgements in the order
//! the messages arrived, so one that is done waits for the ones before it. A
//! message rejected (a sink could not write it) is not acknowledged: the
//! broker delivers it again after a reconnection (with a persistent
//! session). QoS 0 is at-most-once: nothing to acknowledge, a crash loses
//! what is in flight. A message that is not in the configured format (bad
//! JSON, text that is not UTF-8) goes to `err` with its topic, as text or
//! bytes, and is acknowledged once dead-lettered; so is one whose payload is
//! over `max_payload_size` (without its payload: the client reads past it,
//! see `config`). An acknowledgement is written only on the connection its
//! message came on (`session`): after a reconnection the broker delivers
//! again what was not acknowledged if it kept the session, and a packet id
//! of the old connection never acknowledges a new message. QoS 2 works as
//! QoS 1 end to end (at least once), also with a persistent session: the
//! patched client answers the broker's PUBREL of an earlier connection or
//! process. Held acknowledgements are
//! what the broker's in-flight window counts: when messages stay
//! unacknowledged with nothing moving for a few seconds, the component warns
//! once, naming the components downstream that hold them (`net::budget`).
//!
//! # Confirmations (publish)
//!
//! `AsyncClient::publish` returns when the request is queued, not when the
//! broker has it. The sink publishes up to `inflight` messages ahead and
//! drops each (acknowledging it upstream) only once the broker has
//! confirmed it: PUBACK for QoS 1, PUBCOMP for QoS 2, written to the socket
//! for QoS 0. rumqttc reports each publish it writes with its packet id, in
//! request order, then each confirmation by packet id; `acks::Window` matches
//! them to messages. After a reconnection that resumes the session rumqttc
//! sends again what was not confirmed; when the session is new it drops it,
//! and the sink publishes those messages again (duplicates are possible,
//! losses are not).
//!
//! [`Link`]: fbp_runtime::link::Link

mod acks;
mod config;
mod probe;
pub mod publish;
mod session;
pub mod subscribe;
mod template;

use fbp_runtime::KeySpec;

/// The shared keys followed by a component's own: `N` is the total.
const fn keys<const N: usize>(common: &[KeySpec], own: &[KeySpec]) -> [KeySpec; N] {
    let mut out = [common[0]; N];
    let mut i = 0;
    while i < common.len() {
        out[i] = common[i];
        i += 1;
    }
    let mut j = 0;
    while j < own.len() {
        out[i + j] = own[j];
        j += 1;
    }
    assert!(i + j == N, "the key count is wrong");
    out
}
