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
//!
//! # Acknowledgements and connections
//!
//! A packet id names a message on one connection only. Each message carries
//! the `generation` of the connection it came on, and [`Session::ack`]
//! writes an acknowledgement only while that connection is the live one: the
//! task closes the gate (under its lock) as soon as a connection is lost, and
//! opens it for the next at its CONNACK. So no acknowledgement queued after a
//! loss reaches rumqttc; those queued before it are dropped by rumqttc when
//! the next connection has no session (patched, `vendor/rumqttc`), and
//! written on a resumed session, where they are still valid. Messages rumqttc
//! had read before the loss and not yet handed out keep the generation of
//! the connection they came on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fbp_runtime::link::Link;
use rumqttc::{
    AsyncClient, ConnectionError, Event as RawEvent, EventLoop, Incoming, MqttOptions, Outgoing, OversizedPublish,
    Publish, Request, SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::acks::ToAck;

/// Events held by the polling task beyond the channel, at most.
const HELD_MAX: usize = 256;

/// What the component learns from the connection.
#[derive(Debug)]
pub(super) enum Event {
    /// Connected (again).
    Connected {
        session_present: bool,
        /// Publish requests rumqttc had not written and dropped with the old session.
        dropped_unwritten: usize,
    },
    /// A message arrived on connection `generation`.
    Message { generation: u64, publish: Publish },
    /// A message over the packet size limit arrived on connection
    /// `generation`: its topic and packet id, its payload read past.
    Oversized { generation: u64, head: OversizedPublish },
    /// rumqttc wrote a publish with this packet id (0 for QoS 0).
    Written(u16),
    /// The broker confirmed the publish with this packet id (PUBACK, PUBCOMP).
    Confirmed(u16),
    /// The broker refused the connection for a reason no retry changes
    /// (credentials, authorisation, client id, protocol): the task has ended.
    Refused(String),
}

/// A running connection: the client to make requests, the events, and the
/// polling task (aborted when this is dropped).
pub(super) struct Session {
    pub(super) client: AsyncClient,
    pub(super) events: mpsc::Receiver<Event>,
    wake: Arc<Notify>,
    gate: Gate,
    task: tokio::task::JoinHandle<()>,
}

/// The generation of the live connection, 0 while there is none: whether
/// an acknowledgement may be written (see the module's docs).
#[derive(Clone, Default)]
struct Gate(Arc<Mutex<u64>>);

impl Gate {
    fn lock(&self) -> MutexGuard<'_, u64> {
        // A `u64` cannot be left half-written: a poisoned lock holds a good value.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set(&self, generation: u64) {
        *self.lock() = generation;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Session {
    /// Whether a connection is up now.
    pub(super) fn connected(&self) -> bool {
        *self.gate.lock() != 0
    }

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
        let gate = Gate::default();
        let poller = Poller {
            name,
            eventloop,
            client: client.clone(),
            tx,
            link,
            subscriptions,
            held: VecDeque::new(),
            wake: wake.clone(),
            gate: gate.clone(),
        };
        Session { client, events: rx, wake, gate, task: tokio::spawn(poller.run()) }
    }

    /// Queues in rumqttc the acknowledgements at the front of `acks`, in
    /// order, and drops those of a connection that is gone (their packet ids
    /// mean nothing on another: the broker delivers those messages again if
    /// it kept the session). Stops when rumqttc's request channel is full,
    /// leaving the rest in `acks`.
    pub(super) fn ack(&self, acks: &mut VecDeque<ToAck>) {
        let mut queued = false;
        {
            let live = self.gate.lock();
            while let Some(ack) = acks.front() {
                if ack.generation == *live {
                    let mut p = Publish::new("", ack.qos, Vec::new());
                    p.pkid = ack.pkid;
                    if self.client.try_ack(&p).is_err() {
                        break;
                    }
                    queued = true;
                }
                acks.pop_front();
            }
        }
        if queued {
            // Held up by a full channel, the task polls once more to write them.
            self.wake.notify_one();
        }
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
    gate: Gate,
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
                    self.gate.set(generation);
                    last_ping = Instant::now();
                    if !ack.session_present {
                        self.subscribe();
                    }
                    let dropped_unwritten =
                        if ack.session_present { 0 } else { drop_writes(&mut self.eventloop.state.events) + unwritten };
                    self.held.push_back(Event::Connected { session_present: ack.session_present, dropped_unwritten });
                }
                Ok(RawEvent::Incoming(Incoming::Publish(publish))) => {
                    self.held.push_back(Event::Message { generation, publish })
                }
                Ok(RawEvent::Incoming(Incoming::OversizedPublish(head))) => {
                    self.held.push_back(Event::Oversized { generation, head })
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
                Err(ConnectionError::ConnectionRefused(code)) if refused_for_good(code).is_some() => {
                    let fix = refused_for_good(code).unwrap_or_default();
                    self.held.push_back(Event::Refused(format!("the broker refused the connection ({code:?}); {fix}")));
                    self.forward(Instant::now()).await;
                    return;
                }
                Err(e) => {
                    self.lost(generation);
                    let delay = self.link.down(&e);
                    tokio::time::sleep(delay).await;
                }
            }
            if !self.forward(last_ping + keep_alive / 2).await {
                return;
            }
        }
    }

    /// Connection `generation` is lost: no acknowledgement may be queued
    /// until the next, and the messages rumqttc read on it but holds for the
    /// next poll are handed over now, as that connection's.
    fn lost(&mut self, generation: u64) {
        self.gate.set(0);
        let events = &mut self.eventloop.state.events;
        for _ in 0..events.len() {
            match events.pop_front() {
                Some(RawEvent::Incoming(Incoming::Publish(publish))) => {
                    self.held.push_back(Event::Message { generation, publish })
                }
                Some(RawEvent::Incoming(Incoming::OversizedPublish(head))) => {
                    self.held.push_back(Event::Oversized { generation, head })
                }
                Some(other) => events.push_back(other),
                None => break,
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
    use bytes::BytesMut;
    use rumqttc::{Codec, MqttState, Packet, PubAck, PubComp, PubRec, PubRel, QoS};
    use tokio_util::codec::{Decoder, Encoder};

    use super::super::acks::Window;
    use super::*;

    fn publish(topic: &str, pkid: u16, payload: Vec<u8>) -> Publish {
        let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
        p.pkid = pkid;
        p
    }

    /// A 100 000-byte payload against a 1 000-byte limit, arriving 4 KiB at
    /// a time: its head comes out (topic, packet id, size), its payload is
    /// dropped as it comes (the buffer never holds more than a read), and
    /// the packet after it decodes. (rumqttc as published refused the
    /// packet and the connection dropped, for ever on a persistent session.)
    #[test]
    fn an_oversized_publish_is_read_past_and_the_next_packet_follows() {
        let mut wire = BytesMut::new();
        let mut codec = Codec::new(1_000, 1 << 20);
        codec.encode(Packet::Publish(publish("cam/1", 7, vec![0xab; 100_000])), &mut wire).unwrap();
        codec.encode(Packet::Publish(publish("sensors/a", 8, br#"{"v":1}"#.to_vec())), &mut wire).unwrap();
        let (mut buf, mut got, mut most) = (BytesMut::new(), Vec::new(), 0);
        for chunk in wire.chunks(4096) {
            buf.extend_from_slice(chunk);
            most = most.max(buf.len());
            while let Some(packet) = codec.decode(&mut buf).unwrap() {
                got.push(packet);
            }
        }
        assert!(buf.is_empty() && most <= 4096 + 1_000, "held {most} bytes at most");
        let [Packet::OversizedPublish(head), Packet::Publish(next)] = &got[..] else { panic!("{got:?}") };
        assert_eq!((head.topic.as_str(), head.pkid, head.payload_size), ("cam/1", 7, 100_000));
        assert_eq!((next.pkid, &next.payload[..]), (8, &br#"{"v":1}"#[..]));
        // Any other packet over the limit is still an error.
        let mut sub = BytesMut::new();
        let filters = (0..100).map(|i| SubscribeFilter::new(format!("a/{i}/long/filter"), QoS::AtLeastOnce));
        codec.encode(Packet::Subscribe(rumqttc::Subscribe::new_many(filters)), &mut sub).unwrap();
        assert!(codec.decode(&mut sub).is_err());
    }

    /// After a reconnection or a restart that resumes the session the broker
    /// sends again the PUBREL of QoS 2 messages acknowledged before; a new
    /// state does not know them and answers PUBCOMP all the same (rumqttc as
    /// published refused them: the connection dropped, again and again).
    #[test]
    fn a_pubrel_of_an_earlier_connection_is_answered_with_pubcomp() {
        let mut state = MqttState::new(10, true);
        let answer = state.handle_incoming_packet(Incoming::PubRel(PubRel::new(201))).unwrap();
        assert_eq!(answer, Some(Packet::PubComp(PubComp::new(201))));
        let head = OversizedPublish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: "cam/1".into(),
            pkid: 9,
            payload_size: 1 << 20,
        };
        assert_eq!(state.handle_incoming_packet(Incoming::OversizedPublish(head)).unwrap(), None, "manual acks");
    }

    /// A session with no task, and its event loop (never polled).
    fn idle_session() -> (Session, EventLoop) {
        let options = MqttOptions::new("test", "127.0.0.1", 1);
        let (client, eventloop) = AsyncClient::new(options, 16);
        let (_, events) = mpsc::channel(1);
        let wake = Arc::new(Notify::new());
        (Session { client, events, wake, gate: Gate::default(), task: tokio::spawn(async {}) }, eventloop)
    }

    fn ack(generation: u64, pkid: u16) -> ToAck {
        ToAck { generation, qos: QoS::ExactlyOnce, pkid }
    }

    /// What the event loop was asked to write (`clean` moves the requests
    /// into `pending`, PUBRECs included).
    fn requested(eventloop: &mut EventLoop) -> Vec<Request> {
        eventloop.clean();
        eventloop.pending.drain(..).collect()
    }

    #[tokio::test]
    async fn only_acknowledgements_of_the_live_connection_are_queued() {
        let (session, mut eventloop) = idle_session();
        let mut acks = VecDeque::from([ack(1, 1)]);
        session.ack(&mut acks);
        assert!(acks.is_empty() && requested(&mut eventloop).is_empty(), "no connection: dropped");
        session.gate.set(2);
        let mut acks = VecDeque::from([ack(1, 1), ack(2, 2), ack(2, 3)]);
        session.ack(&mut acks);
        assert!(acks.is_empty());
        let want = [Request::PubRec(PubRec::new(2)), Request::PubRec(PubRec::new(3))];
        assert_eq!(requested(&mut eventloop), want, "the one of connection 1 is dropped");
    }

    /// rumqttc reads packets in batches and hands them out one per poll; a
    /// loss in the middle leaves the rest for the next polls, after the next
    /// CONNACK, where they passed for the new connection's and their
    /// acknowledgements went out on it (a stale PUBACK acknowledging some
    /// other message with that packet id).
    #[tokio::test]
    async fn messages_read_before_a_loss_keep_the_connection_they_came_on() {
        let (session, eventloop) = idle_session();
        let (tx, _rx) = mpsc::channel(4);
        let link = Link::new("sub".into(), "mqtt test", fbp_runtime::link::Backoff::default());
        let mut poller = Poller {
            name: "sub".into(),
            eventloop,
            client: session.client.clone(),
            tx,
            link,
            subscriptions: Vec::new(),
            held: VecDeque::new(),
            wake: session.wake.clone(),
            gate: session.gate.clone(),
        };
        poller.gate.set(3);
        let head = OversizedPublish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "cam/1".into(),
            pkid: 5,
            payload_size: 1 << 20,
        };
        poller.eventloop.state.events.extend([
            RawEvent::Incoming(Incoming::Publish(publish("a", 4, b"1".to_vec()))),
            RawEvent::Outgoing(Outgoing::Publish(9)),
            RawEvent::Incoming(Incoming::OversizedPublish(head)),
        ]);
        poller.lost(3);
        assert_eq!(*poller.gate.lock(), 0, "nothing may be acknowledged until the next CONNACK");
        let held: Vec<(u64, u16)> = poller
            .held
            .iter()
            .map(|e| match e {
                Event::Message { generation, publish } => (*generation, publish.pkid),
                Event::Oversized { generation, head } => (*generation, head.pkid),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(held, [(3, 4), (3, 5)]);
        assert_eq!(Vec::from(poller.eventloop.state.events.clone()), [RawEvent::Outgoing(Outgoing::Publish(9))]);
    }

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

/// What to change when a CONNACK refuses for good; `None` for a broker that
/// is only unavailable for now.
fn refused_for_good(code: rumqttc::ConnectReturnCode) -> Option<&'static str> {
    use rumqttc::ConnectReturnCode as C;
    match code {
        C::BadUserNamePassword => Some("check `username` and `password`"),
        C::NotAuthorized => {
            Some("the broker's ACL does not let this user connect; check `username` or the broker's config")
        }
        C::BadClientId => Some("the broker refuses this `client_id`; change it"),
        C::RefusedProtocolVersion => Some("the broker does not speak MQTT 3.1.1"),
        _ => None,
    }
}
