//! The bookkeeping of acknowledgements, apart from any socket (unit-tested here).
//!
//! - [`ArrivalOrder`] (`mqtt-subscribe`): MQTT 3.1.1 wants PUBACKs in the
//!   order the PUBLISHes arrived. Each message gets an id in arrival order;
//!   its outcome may come back in any order; [`ArrivalOrder::release`] gives
//!   the acknowledgements that may go now, holding a finished message behind
//!   an earlier unfinished one. Each names the connection its message came
//!   on: the session writes it only on that one.
//! - [`Window`] (`mqtt-publish`): which published messages the broker has
//!   confirmed, matching rumqttc's events (a publish written
//!   with a packet id, then its PUBACK / PUBCOMP) to messages, across
//!   reconnections.

use std::collections::{HashMap, VecDeque};

use fbp_runtime::Outcome;
use rumqttc::QoS;

/// An acknowledgement to send: the packet to acknowledge and the connection
/// it came on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ToAck {
    pub(super) generation: u64,
    pub(super) qos: QoS,
    pub(super) pkid: u16,
}

#[derive(Debug)]
struct Arrival {
    ack: ToAck,
    outcome: Option<Outcome>,
}

/// Messages received with QoS 1/2, in arrival order, until acknowledged.
#[derive(Debug, Default)]
pub(super) struct ArrivalOrder {
    /// The id of `waiting[0]`.
    first: u64,
    waiting: VecDeque<Arrival>,
}

impl ArrivalOrder {
    /// Records a message that arrived on connection `generation`; its id.
    pub(super) fn arrive(&mut self, generation: u64, qos: QoS, pkid: u16) -> u64 {
        self.waiting.push_back(Arrival { ack: ToAck { generation, qos, pkid }, outcome: None });
        self.first + self.waiting.len() as u64 - 1
    }

    /// Records how message `id`'s journey ended.
    pub(super) fn settle(&mut self, id: u64, outcome: Outcome) {
        if let Some(a) = id.checked_sub(self.first).and_then(|i| self.waiting.get_mut(i as usize)) {
            a.outcome.get_or_insert(outcome);
        }
    }

    /// Adds to `out` the acknowledgements that may be sent now, in arrival
    /// order: those of the delivered messages not behind an unfinished one.
    /// A rejected message is not acknowledged (left for the broker to
    /// deliver again after a reconnection).
    pub(super) fn release(&mut self, out: &mut VecDeque<ToAck>) {
        while let Some(a) = self.waiting.front() {
            match a.outcome {
                None => break,
                Some(Outcome::Delivered) => out.push_back(a.ack),
                Some(_) => {}
            }
            self.waiting.pop_front();
            self.first += 1;
        }
    }

    /// Messages not acknowledged yet.
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }
}

/// The publishes in flight, until the broker has confirmed each.
///
/// Each message to publish has an id (increasing). rumqttc tells what it
/// wrote (`Outgoing::Publish(pkid)`, in the order the requests were made, 0
/// for QoS 0) and what the broker confirmed (PUBACK or PUBCOMP with the
/// packet id). Requests not written yet wait in `unwritten` in request order;
/// a write takes the first of them, unless it is a packet id already known
/// (rumqttc writing again, after a reconnection, what it had written). When a
/// reconnection starts a new session, rumqttc drops what it held:
/// [`Window::new_session`] says which messages must be published again.
#[derive(Debug, Default)]
pub(super) struct Window {
    unwritten: VecDeque<u64>,
    written: HashMap<u16, u64>,
}

impl Window {
    /// Message `id` was requested to be published.
    pub(super) fn requested(&mut self, id: u64) {
        self.unwritten.push_back(id);
    }

    /// rumqttc wrote a publish with packet id `pkid`; for QoS 0 (`pkid` 0)
    /// that is its confirmation: the message it was.
    pub(super) fn written(&mut self, pkid: u16) -> Option<u64> {
        if pkid != 0 && self.written.contains_key(&pkid) {
            return None;
        }
        let id = self.unwritten.pop_front()?;
        if pkid == 0 {
            return Some(id);
        }
        self.written.insert(pkid, id);
        None
    }

    /// The broker confirmed packet id `pkid`: the message it was, if ours.
    pub(super) fn confirmed(&mut self, pkid: u16) -> Option<u64> {
        self.written.remove(&pkid)
    }

    /// A new session began: rumqttc dropped what it had written and the first
    /// `dropped_unwritten` requests it had not. Returns the messages to publish
    /// again, oldest first (the caller skips those confirmed meanwhile).
    pub(super) fn new_session(&mut self, dropped_unwritten: usize) -> Vec<u64> {
        let dropped = dropped_unwritten.min(self.unwritten.len());
        let mut again: Vec<u64> = self.unwritten.drain(..dropped).collect();
        again.extend(self.written.drain().map(|(_, id)| id));
        again.sort_unstable();
        again.dedup();
        again
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q1: QoS = QoS::AtLeastOnce;

    /// The packet ids `order` releases now, with their connections.
    fn released(order: &mut ArrivalOrder) -> Vec<(u64, u16)> {
        let mut out = VecDeque::new();
        order.release(&mut out);
        out.into_iter().map(|a| (a.generation, a.pkid)).collect()
    }

    #[test]
    fn acks_go_in_arrival_order_whatever_order_outcomes_come_in() {
        let mut order = ArrivalOrder::default();
        let ids: Vec<u64> = (1..=4).map(|pkid| order.arrive(1, Q1, pkid)).collect();
        order.settle(ids[2], Outcome::Delivered);
        order.settle(ids[1], Outcome::Delivered);
        assert!(released(&mut order).is_empty(), "the first is not done: nothing may go");
        order.settle(ids[0], Outcome::Delivered);
        assert_eq!(released(&mut order), [(1, 1), (1, 2), (1, 3)]);
        assert_eq!(order.len(), 1);
        order.settle(ids[3], Outcome::Delivered);
        assert_eq!(released(&mut order), [(1, 4)]);
        assert_eq!(order.len(), 0);
    }

    #[test]
    fn rejected_messages_are_not_acknowledged_and_acks_keep_their_connection() {
        let mut order = ArrivalOrder::default();
        let old = order.arrive(1, Q1, 7);
        let rejected = order.arrive(2, Q1, 1);
        let good = order.arrive(2, Q1, 2);
        order.settle(good, Outcome::Delivered);
        order.settle(rejected, Outcome::Rejected);
        order.settle(old, Outcome::Delivered);
        assert_eq!(released(&mut order), [(1, 7), (2, 2)], "the session drops the one of connection 1");
        order.settle(good, Outcome::Rejected);
        assert_eq!(order.len(), 0, "a late second outcome changes nothing");
    }

    /// Feeds `events` to a window that requested messages `0..n`; the confirmed ids.
    fn confirmations(w: &mut Window, events: &[(&str, u16)]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|(what, pkid)| match *what {
                "written" => w.written(*pkid),
                _ => w.confirmed(*pkid),
            })
            .collect()
    }

    #[test]
    fn confirmations_map_back_to_messages_by_packet_id() {
        let mut w = Window::default();
        (0..3).for_each(|i| w.requested(i));
        let got = confirmations(
            &mut w,
            &[("written", 5), ("written", 6), ("written", 7), ("acked", 6), ("acked", 9), ("acked", 5), ("acked", 7)],
        );
        assert_eq!(got, [1, 0, 2], "packet 9 is not ours");
    }

    #[test]
    fn qos0_is_confirmed_once_written() {
        let mut w = Window::default();
        w.requested(4);
        w.requested(5);
        assert_eq!(confirmations(&mut w, &[("written", 0), ("written", 0), ("written", 0)]), [4, 5]);
    }

    #[test]
    fn a_resumed_session_rewrites_known_packet_ids_without_taking_new_messages() {
        let mut w = Window::default();
        (0..3).for_each(|i| w.requested(i));
        // Packet 1 (message 0) written, connection lost, session resumed (so
        // no `new_session`): rumqttc writes 1 again, then what it had not written.
        let events =
            [("written", 1), ("written", 1), ("written", 2), ("written", 3), ("acked", 1), ("acked", 2), ("acked", 3)];
        assert_eq!(confirmations(&mut w, &events), [0, 1, 2]);
    }

    #[test]
    fn a_new_session_publishes_again_what_was_lost_and_keeps_later_requests() {
        let mut w = Window::default();
        (0..5).for_each(|i| w.requested(i));
        assert_eq!(confirmations(&mut w, &[("written", 1), ("written", 2), ("acked", 1)]), [0]);
        // Lost: message 1 was written, 2 and 3 were queued in rumqttc and
        // dropped with the session; 4 was requested after and still goes out.
        let again = w.new_session(2);
        assert_eq!(again, [1, 2, 3]);
        again.iter().for_each(|i| w.requested(*i));
        let events = [
            ("written", 3),
            ("written", 4),
            ("written", 5),
            ("written", 6),
            ("acked", 4),
            ("acked", 5),
            ("acked", 6),
            ("acked", 3),
        ];
        assert_eq!(confirmations(&mut w, &events), [1, 2, 3, 4]);
    }
}
