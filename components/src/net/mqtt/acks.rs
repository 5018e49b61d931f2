//! The bookkeeping of acknowledgements, apart from any socket (unit-tested here).
//!
//! - [`ArrivalOrder`] (`mqtt-subscribe`): MQTT 3.1.1 wants PUBACKs in the
//!   order the PUBLISHes arrived. Each message gets an id in arrival order;
//!   its outcome may come back in any order; [`ArrivalOrder::release`] gives
//!   the acknowledgements that may go now, holding a finished message behind
//!   an earlier unfinished one.
//! - [`Window`] (`mqtt-publish`): which messages of a window of publishes
//!   the broker has confirmed, matching rumqttc's events (a publish written
//!   with a packet id, then its PUBACK / PUBCOMP) to messages, across
//!   reconnections.

use std::collections::{HashMap, VecDeque};

use fbp_runtime::Outcome;
use rumqttc::QoS;

/// An acknowledgement to send: the packet to acknowledge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ToAck {
    pub(super) qos: QoS,
    pub(super) pkid: u16,
}

#[derive(Debug)]
struct Arrival {
    generation: u64,
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
        self.waiting.push_back(Arrival { generation, ack: ToAck { qos, pkid }, outcome: None });
        self.first + self.waiting.len() as u64 - 1
    }

    /// Records how message `id`'s journey ended.
    pub(super) fn settle(&mut self, id: u64, outcome: Outcome) {
        if let Some(a) = id.checked_sub(self.first).and_then(|i| self.waiting.get_mut(i as usize)) {
            a.outcome.get_or_insert(outcome);
        }
    }

    /// The acknowledgements that may be sent now on connection `generation`,
    /// in arrival order. A delivered message from an earlier connection is
    /// not acknowledged (its packet id means nothing on this one; the broker
    /// sends it again, a duplicate), nor is a rejected one (left for the
    /// broker to deliver again after a reconnection).
    pub(super) fn release(&mut self, generation: u64) -> Vec<ToAck> {
        let mut out = Vec::new();
        while let Some(a) = self.waiting.front() {
            match a.outcome {
                None => break,
                Some(Outcome::Delivered) if a.generation == generation => out.push(a.ack),
                Some(_) => {}
            }
            self.waiting.pop_front();
            self.first += 1;
        }
        out
    }

    /// Messages not acknowledged yet.
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }
}

/// The publishes of one window, until the broker has confirmed each.
///
/// rumqttc tells what it wrote (`Outgoing::Publish(pkid)`, in the order the
/// requests were made, 0 for QoS 0) and what the broker confirmed (PUBACK or
/// PUBCOMP with the packet id). Requests not written yet wait in `unwritten`
/// in request order; a write takes the first of them, unless it is a packet
/// id already known (rumqttc writing again, after a reconnection, what it had
/// written). When a reconnection starts a new session, rumqttc drops what it
/// held: [`Window::new_session`] says which messages must be published again.
#[derive(Debug, Default)]
pub(super) struct Window {
    confirmed: Vec<bool>,
    remaining: usize,
    unwritten: VecDeque<usize>,
    written: HashMap<u16, usize>,
}

impl Window {
    /// A window of `len` messages, none confirmed.
    pub(super) fn new(len: usize) -> Self {
        Window { confirmed: vec![false; len], remaining: len, ..Window::default() }
    }

    /// Message `i` was requested to be published.
    pub(super) fn requested(&mut self, i: usize) {
        self.unwritten.push_back(i);
    }

    /// Message `i` needs no confirmation (it went to `err`).
    pub(super) fn skip(&mut self, i: usize) {
        self.confirm(i);
    }

    /// rumqttc wrote a publish with packet id `pkid` (0: QoS 0, done once written).
    pub(super) fn written(&mut self, pkid: u16) {
        if pkid != 0 && self.written.contains_key(&pkid) {
            return;
        }
        let Some(i) = self.unwritten.pop_front() else { return };
        if pkid == 0 {
            self.confirm(i);
        } else {
            self.written.insert(pkid, i);
        }
    }

    /// The broker confirmed packet id `pkid`.
    pub(super) fn confirmed(&mut self, pkid: u16) {
        if let Some(i) = self.written.remove(&pkid) {
            self.confirm(i);
        }
    }

    /// A new session began: rumqttc dropped what it had written and the first
    /// `dropped_unwritten` requests it had not. Returns the messages to publish
    /// again (they must be requested again, in this order).
    pub(super) fn new_session(&mut self, dropped_unwritten: usize) -> Vec<usize> {
        let dropped = dropped_unwritten.min(self.unwritten.len());
        let mut again: Vec<usize> = self.unwritten.drain(..dropped).collect();
        again.extend(self.written.drain().map(|(_, i)| i));
        again.retain(|i| !self.confirmed[*i]);
        again.sort_unstable();
        again.dedup();
        again
    }

    /// Every message confirmed, and no request of this window still pending
    /// (so no event of it can be taken for the next window's).
    pub(super) fn done(&self) -> bool {
        self.remaining == 0 && self.unwritten.is_empty() && self.written.is_empty()
    }

    fn confirm(&mut self, i: usize) {
        if !std::mem::replace(&mut self.confirmed[i], true) {
            self.remaining -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q1: QoS = QoS::AtLeastOnce;

    fn pkids(acks: Vec<ToAck>) -> Vec<u16> {
        acks.into_iter().map(|a| a.pkid).collect()
    }

    #[test]
    fn acks_go_in_arrival_order_whatever_order_outcomes_come_in() {
        let mut order = ArrivalOrder::default();
        let ids: Vec<u64> = (1..=4).map(|pkid| order.arrive(1, Q1, pkid)).collect();
        order.settle(ids[2], Outcome::Delivered);
        order.settle(ids[1], Outcome::Delivered);
        assert!(order.release(1).is_empty(), "the first is not done: nothing may go");
        order.settle(ids[0], Outcome::Delivered);
        assert_eq!(pkids(order.release(1)), [1, 2, 3]);
        assert_eq!(order.len(), 1);
        order.settle(ids[3], Outcome::Delivered);
        assert_eq!(pkids(order.release(1)), [4]);
        assert_eq!(order.len(), 0);
    }

    #[test]
    fn rejected_and_stale_messages_are_not_acknowledged_and_do_not_block() {
        let mut order = ArrivalOrder::default();
        let old = order.arrive(1, Q1, 7);
        let rejected = order.arrive(2, Q1, 1);
        let good = order.arrive(2, Q1, 2);
        order.settle(good, Outcome::Delivered);
        order.settle(rejected, Outcome::Rejected);
        order.settle(old, Outcome::Delivered);
        assert_eq!(pkids(order.release(2)), [2]);
        order.settle(good, Outcome::Rejected);
        assert_eq!(order.len(), 0, "a late second outcome changes nothing");
    }

    #[test]
    fn a_window_is_done_when_every_publish_is_confirmed() {
        let mut w = Window::new(3);
        (0..3).for_each(|i| w.requested(i));
        w.written(5);
        w.written(6);
        w.written(7);
        w.confirmed(6);
        w.confirmed(5);
        assert!(!w.done());
        w.confirmed(9); // not ours
        w.confirmed(7);
        assert!(w.done());
    }

    #[test]
    fn qos0_is_done_once_written_and_errors_are_skipped() {
        let mut w = Window::new(2);
        w.skip(0);
        w.requested(1);
        assert!(!w.done());
        w.written(0);
        assert!(w.done());
    }

    #[test]
    fn a_resumed_session_rewrites_known_packet_ids_without_taking_new_messages() {
        let mut w = Window::new(3);
        (0..3).for_each(|i| w.requested(i));
        w.written(1); // message 0
        // Connection lost, session resumed (so no `new_session`): rumqttc
        // writes packet 1 again, then the requests it had not written.
        w.written(1);
        w.written(2);
        w.written(3);
        [1, 2, 3].into_iter().for_each(|p| w.confirmed(p));
        assert!(w.done());
    }

    #[test]
    fn a_new_session_publishes_again_what_was_lost_and_keeps_later_requests() {
        let mut w = Window::new(5);
        (0..5).for_each(|i| w.requested(i));
        w.written(1); // message 0
        w.written(2); // message 1
        w.confirmed(1); // message 0 confirmed
        // Lost: message 1 was written, 2 and 3 were queued in rumqttc and
        // dropped with the session; 4 was requested after and still goes out.
        let again = w.new_session(2);
        assert_eq!(again, [1, 2, 3]);
        again.iter().for_each(|i| w.requested(*i));
        w.written(3); // message 4 (requested before the republish)
        w.written(4); // 1
        w.written(5); // 2
        w.written(6); // 3
        for p in [4, 5, 6] {
            w.confirmed(p);
        }
        assert!(!w.done(), "message 4 is not confirmed yet");
        w.confirmed(3);
        assert!(w.done());
    }
}
