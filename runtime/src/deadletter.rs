//! Where messages a component could not process go: its `err` port if it is
//! connected, else the flow's dead-letter file, else the log. Each is counted.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::component::Failure;
use crate::message::Message;
use crate::metrics::Metrics;
use crate::queue::OutPort;
use crate::value;

/// The flow's dead-letter sink: one envelope per line.
#[derive(Debug)]
pub struct DeadLetter {
    file: Mutex<BufWriter<File>>,
}

impl DeadLetter {
    /// Opens (appends to) the dead-letter file.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(DeadLetter { file: Mutex::new(BufWriter::new(file)) })
    }

    fn write(&self, msg: &Message) -> std::io::Result<()> {
        let mut line = msg.to_envelope();
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(line.as_bytes())?;
        f.flush()
    }
}

/// The error route of one component.
#[derive(Clone)]
pub(crate) struct ErrorRoute {
    pub(crate) component: Arc<str>,
    pub(crate) type_name: &'static str,
    pub(crate) port: OutPort,
    pub(crate) dead_letter: Option<Arc<DeadLetter>>,
    pub(crate) metrics: Arc<Metrics>,
}

impl ErrorRoute {
    /// The `err` message for `msg`: DESIGN §3b's shape, original metadata kept.
    fn error_message(&self, msg: &Message, error: &str, attempts: u32) -> Message {
        msg.with_payload(value::object([
            ("error", value::string(error)),
            ("component", value::string(&*self.component)),
            ("type", value::string(self.type_name)),
            ("attempts", value::int(attempts.into())),
            ("data", msg.payload.clone()),
        ]))
    }

    pub(crate) async fn route(&self, msg: &Message, error: &str, attempts: u32) -> Result<(), Failure> {
        let err = self.error_message(msg, error, attempts);
        if self.port.is_connected() {
            // Counted once the send is over (a send cancelled while it waits counts nothing).
            let sent = self.port.send(err).await;
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
            sent?;
            return Ok(());
        }
        self.metrics.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(dl) = &self.dead_letter {
            match dl.write(&err) {
                Ok(()) => {
                    self.metrics.dead_lettered.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::error!(component = %self.component, error = %e, "Could not write to the dead-letter file; the message is logged instead.");
                    self.log_rejected(&err);
                }
            }
        } else {
            self.log_rejected(&err);
        }
        Ok(())
    }

    /// Logs a message nothing else takes: the first few of each interval in
    /// full, then how many more there were (every one is counted in `errors`).
    fn log_rejected(&self, err: &Message) {
        let verdict = self.metrics.rejected_log.check();
        if verdict.left_out > 0 {
            tracing::warn!(
                component = %self.component,
                left_out = verdict.left_out,
                "More messages rejected in the last {} s than logged; they are counted in `errors`.",
                crate::ratelimit::INTERVAL.as_secs()
            );
        }
        if verdict.log {
            log_rejected(err);
        }
    }
}

fn log_rejected(err: &Message) {
    let field = |k| value::get(&err.payload, k).map(value::to_json_string).unwrap_or_default();
    tracing::warn!(
        component = %field("component"),
        error = %field("error"),
        data = %value::get(&err.payload, "data").map(value::to_json_string).unwrap_or_default(),
        "Message rejected; no err connection and no dead_letter in the flow."
    );
}
