//! The connection: a task that owns rumqttc's `EventLoop` and polls it
//! without pause (never cancelling a `poll`), reconnects with the link's
//! backoff, and hands the component only the events it needs, through a
//! bounded channel.
//!
//! When that channel is full (the component is blocked on a full out-port),
//! the task keeps the connection alive without reading without bound: it
//! holds what it already polled, and polls again only once half the
//! keep-alive has passed since its last ping, until the next ping is
//! written. What it holds is capped at [`HELD_MAX`] events; past that it
//! stops polling altogether (the broker may then drop the connection after
//! 1.5 keep-alives, and QoS 1/2 messages not acknowledged are delivered
//! again after the reconnection).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use fbp_runtime::link::Link;
use rumqttc::{
    AsyncClient, ConnectionError, Event as RawEvent, EventLoop, Incoming, MqttOptions, Outgoing, Publish, Request,
    SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

/// Events held by the polling task beyond the channel, at most.
const HELD_MAX: usize = 256;

/// What the component learns from the connection.
#[derive(Debug)]
pub(super) enum Event {
    /// Connected (again): `generation` counts connections.
    Connected {
        generation: u64,
        session_present: bool,
        /// Publish requests rumqttc had not written and dropped with the old session.
        dropped_unwritten: usize,
    },
    /// A message arrived on connection `generation`.
    Message { generation: u64, publish: Publish },
    /// rumqttc wrote a publish with this packet id (0 for QoS 0).
    Written(u16),
    /// The broker confirmed the publish with this packet id (PUBACK, PUBCOMP).
    Confirmed(u16),
}

/// A running connection: the client to make requests, the events, and the
/// polling task (aborted when this is dropped).
pub(super) struct Session {
    pub(super) client: AsyncClient,
    pub(super) events: mpsc::Receiver<Event>,
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    /// Starts polling; `requests` bounds rumqttc's request channel, `events`
    /// the channel to the component; `subscriptions` are made on every
    /// connection that does not resume a session.
    pub(super) fn start(
        name: Arc<str>,
        options: MqttOptions,
        link: Link,
        requests: usize,
        events: usize,
        subscriptions: Vec<SubscribeFilter>,
    ) -> Session {
        let (client, mut eventloop) = AsyncClient::new(options, requests);
        // Acknowledgements and publishes are small packets written one at a
        // time: Nagle's algorithm would hold each behind the previous one's
        // TCP ACK.
        let mut network = eventloop.network_options();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
        let (tx, rx) = mpsc::channel(events);
        let wake = Arc::new(Notify::new());
        let poller = Poller {
            name,
            eventloop,
            client: client.clone(),
            tx,
            link,
            subscriptions,
            held: VecDeque::new(),
            wake: wake.clone(),
        };
        Session { client, events: rx, wake, task: tokio::spawn(poller.run()) }
    }

    /// Tells the polling task that requests (acknowledgements) were queued:
    /// if it is held up by a full channel, it polls once more to write them.
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Disconnects cleanly (no last will; a persistent session is kept) and
    /// waits a moment for the DISCONNECT to be written.
    pub(super) async fn close(mut self) {
        if self.client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
        }
    }
}

struct Poller {
    name: Arc<str>,
    eventloop: EventLoop,
    client: AsyncClient,
    tx: mpsc::Sender<Event>,
    link: Link,
    subscriptions: Vec<SubscribeFilter>,
    held: VecDeque<Event>,
    wake: Arc<Notify>,
}

impl Poller {
    async fn run(mut self) {
        let keep_alive = self.eventloop.mqtt_options.keep_alive();
        let mut generation = 0;
        let mut last_ping = Instant::now();
        let mut unwritten = 0;
        loop {
            if self.eventloop.network.is_none() {
                unwritten = self.unwritten();
            }
            match self.eventloop.poll().await {
                Ok(RawEvent::Incoming(Incoming::ConnAck(ack))) => {
                    self.link.up();
                    generation += 1;
                    last_ping = Instant::now();
                    if !ack.session_present {
                        self.subscribe();
                    }
                    let dropped_unwritten =
                        if ack.session_present { 0 } else { drop_writes(&mut self.eventloop.state.events) + unwritten };
                    self.held.push_back(Event::Connected {
                        generation,
                        session_present: ack.session_present,
                        dropped_unwritten,
                    });
                }
                Ok(RawEvent::Incoming(Incoming::Publish(publish))) => {
                    self.held.push_back(Event::Message { generation, publish })
                }
                Ok(RawEvent::Incoming(Incoming::PubAck(a))) => self.held.push_back(Event::Confirmed(a.pkid)),
                Ok(RawEvent::Incoming(Incoming::PubComp(c))) => self.held.push_back(Event::Confirmed(c.pkid)),
                Ok(RawEvent::Incoming(Incoming::SubAck(ack))) => {
                    if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                        tracing::error!(component = %self.name, "The broker refused a subscription (not authorised, or a bad filter).");
                    }
                }
                Ok(RawEvent::Outgoing(Outgoing::Publish(pkid))) => self.held.push_back(Event::Written(pkid)),
                Ok(RawEvent::Outgoing(Outgoing::PingReq)) => last_ping = Instant::now(),
                Ok(RawEvent::Outgoing(Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(ConnectionError::RequestsDone) => return,
                Err(e) => {
                    let delay = self.link.down(&e);
                    tokio::time::sleep(delay).await;
                }
            }
            if !self.forward(last_ping + keep_alive / 2).await {
                return;
            }
        }
    }

    /// Publish requests rumqttc holds for the next connection and never wrote.
    fn unwritten(&self) -> usize {
        self.eventloop.pending.iter().filter(|r| matches!(r, Request::Publish(p) if p.pkid == 0)).count()
    }

    fn subscribe(&self) {
        if !self.subscriptions.is_empty() && self.client.try_subscribe_many(self.subscriptions.clone()).is_err() {
            tracing::error!(component = %self.name, "Cannot queue the subscription request.");
        }
    }

    /// Hands what is held to the component. Returns `false` once the
    /// component has gone. While the channel is full it waits, but no later
    /// than `poll_by` (then the caller polls once more, for the keep-alive)
    /// or a wake-up (requests to write), unless it already holds
    /// [`HELD_MAX`] events.
    async fn forward(&mut self, poll_by: Instant) -> bool {
        while let Some(event) = self.held.pop_front() {
            let event = match self.tx.try_send(event) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
                Err(mpsc::error::TrySendError::Full(event)) => event,
            };
            let permit = if self.held.len() + 1 >= HELD_MAX {
                self.tx.reserve().await
            } else {
                tokio::select! {
                    permit = self.tx.reserve() => permit,
                    _ = tokio::time::sleep_until(poll_by) => {
                        self.held.push_front(event);
                        return true;
                    }
                    _ = self.wake.notified() => {
                        self.held.push_front(event);
                        return true;
                    }
                }
            };
            match permit {
                Ok(permit) => permit.send(event),
                Err(_) => return false,
            }
        }
        true
    }
}

/// After a new session began: removes from rumqttc's buffered `events` the
/// notices of publishes written on the connection that ended (a flush that
/// failed leaves its own) and says how many. Those publishes went with the
/// old session, and the component never learnt their packet ids: they count
/// as never written, so they are published again, and a late notice cannot
/// pair an old packet id with a newer message.
fn drop_writes(events: &mut VecDeque<RawEvent>) -> usize {
    let before = events.len();
    events.retain(|e| !matches!(e, RawEvent::Outgoing(Outgoing::Publish(_))));
    before - events.len()
}

#[cfg(test)]
mod tests {
    use rumqttc::PubAck;

    use super::super::acks::Window;
    use super::*;

    /// A flush fails right after rumqttc wrote message 1 (packet id 7): its
    /// notice is still buffered when the new session's CONNACK comes.
    /// Counted as dropped, message 1 is published again; left in place, the
    /// notice paired packet id 7 with message 1 in the new session, and the
    /// new session's own packet id 7 (message 2) then confirmed message 1,
    /// which was never published again: lost.
    #[test]
    fn a_write_notice_left_from_the_old_connection_counts_as_dropped() {
        let mut buffered: VecDeque<RawEvent> = VecDeque::from([
            RawEvent::Outgoing(Outgoing::Publish(7)),
            RawEvent::Incoming(Incoming::PubAck(PubAck::new(3))),
        ]);
        let mut w = Window::default();
        w.requested(1);
        let dropped = drop_writes(&mut buffered);
        assert_eq!(dropped, 1);
        assert_eq!(buffered.len(), 1, "other events stay");
        assert_eq!(w.new_session(dropped), [1], "message 1 is published again");
        w.requested(1);
        w.requested(2);
        assert_eq!(w.written(7), None);
        assert_eq!(w.written(8), None);
        assert_eq!(w.confirmed(7), Some(1));
        assert_eq!(w.confirmed(8), Some(2));
    }
}
