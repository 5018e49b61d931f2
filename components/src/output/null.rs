//! `null`: counts and discards, for benchmarks and for draining a port.

use fbp_runtime::{Acks, BuildContext, ComponentSpec, Delivery, Instance, Kind, Message, Outbox, PortSpec, Transform};

/// The `null` declaration.
pub static SPEC: ComponentSpec = ComponentSpec {
    name: "null",
    summary: "Count and discard every message.",
    doc: "Discards every message it receives, acknowledging it at once, and logs how many it \
          discarded when its input ends. Useful in benchmarks and to drain a port.",
    kind: Kind::Sink,
    inputs: &[PortSpec { name: "in", ty: "any", doc: "messages to discard" }],
    outputs: &[],
    config: &[],
    delivery: Delivery::AtLeastOnce,
    acks: Acks::Prompt,
    stateless: true,
    example: "[components.sink]\ntype = \"null\"\n",
    build,
    ports: None,
    probe: None,
};

#[derive(Default)]
struct Null {
    discarded: u64,
}

fn build(_ctx: &BuildContext) -> Result<Instance, String> {
    Ok(Instance::transform(Null::default()))
}

impl Transform for Null {
    fn process(&mut self, _msg: &Message, _out: &mut Outbox) -> Result<(), String> {
        self.discarded += 1;
        Ok(())
    }

    fn finish(&mut self, _out: &mut Outbox) {
        tracing::info!(discarded = self.discarded, "Input ended; messages discarded.");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};

    use fbp_runtime::testing::Harness;
    use fbp_runtime::{Ack, Message, Meta, Outcome, value};
    use serde_json::json;

    #[tokio::test]
    async fn discards_and_acknowledges_everything() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut h = Harness::new(&super::SPEC, json!({}));
        for i in 0..3 {
            let s = seen.clone();
            let mut m = Message::new(value::int(i), Meta::new("t".into(), 0));
            m.ack = Some(Ack::new(move |o| s.lock().unwrap().push(o)));
            h.push_message("in", m);
        }
        h.push("in", value::string("any payload at all"));
        let out = h.run_to_end().await;
        assert!(matches!(out.result, Some(Ok(()))));
        assert!(out.messages("err").is_empty());
        assert_eq!(h.metrics().received.load(Ordering::Relaxed), 4);
        assert_eq!(*seen.lock().unwrap(), [Outcome::Delivered; 3]);
    }
}
