//! The connection both NATS components share: servers, credentials, TLS,
//! reconnection, and the link state logged once per change.
//!
//! The client is made with `retry_on_initial_connect` and no limit on
//! reconnections, so a flow starts while NATS is down and never fails
//! because of it: async-nats keeps trying (with the backoff of the
//! `reconnect` key) and buffers what is published meanwhile, and its events
//! drive a [`Link`] that logs "connected", one warning per outage, and
//! "reconnected". Components watch [`Connection::up`] to stop taking input
//! while the server is away.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use fbp_runtime::link::{Backoff, Link};
use fbp_runtime::queue::InPort;
use fbp_runtime::spec::{KeySpec, KeyType};
use fbp_runtime::{BuildContext, Failure};
use serde::Deserialize;
use tokio::sync::watch;

use crate::net::tls::{self, TlsFiles};

/// `url`: one server or several, comma-separated.
pub(super) const URL: KeySpec = KeySpec::new(
    "url",
    KeyType::String,
    "\"nats://127.0.0.1:4222\"",
    "The NATS server, or several separated by commas (`nats://a:4222,nats://b:4222`): the client \
     connects to one and fails over to the others. `tls://` requires TLS.",
);

/// The credential and TLS keys, the same on both components.
pub(super) const AUTH_KEYS: [KeySpec; 9] = [
    KeySpec::optional("creds_file", KeyType::String, "A `.creds` file (JWT and NKey seed) to authenticate with."),
    KeySpec::optional("token", KeyType::String, "A token to authenticate with (use `${NATS_TOKEN}`)."),
    KeySpec::optional("username", KeyType::String, "User name; needs `password`."),
    KeySpec::optional("password", KeyType::String, "Password for `username` (use `${NATS_PASSWORD}`)."),
    KeySpec::optional("nkey_seed_file", KeyType::String, "A file holding an NKey seed (`SU...`) to authenticate with."),
    KeySpec::new("tls", KeyType::Bool, "false", "Require TLS (also implied by a `tls://` URL or a `ca_file`)."),
    KeySpec::optional("ca_file", KeyType::String, "CA certificates (PEM) to trust instead of the system's."),
    KeySpec::optional("cert_file", KeyType::String, "Client certificate (PEM) for mutual TLS; needs `key_file`."),
    KeySpec::optional("key_file", KeyType::String, "The client certificate's private key (PEM)."),
];

/// A component's config keys: `url`, then its own `keys`, then `reconnect`
/// and the credential and TLS keys every NATS component has.
macro_rules! config_keys {
    ($($key:expr),* $(,)?) => {
        &[
            $crate::net::nats::connect::URL,
            $($key,)*
            fbp_runtime::link::RECONNECT_KEY,
            $crate::net::nats::connect::AUTH_KEYS[0],
            $crate::net::nats::connect::AUTH_KEYS[1],
            $crate::net::nats::connect::AUTH_KEYS[2],
            $crate::net::nats::connect::AUTH_KEYS[3],
            $crate::net::nats::connect::AUTH_KEYS[4],
            $crate::net::nats::connect::AUTH_KEYS[5],
            $crate::net::nats::connect::AUTH_KEYS[6],
            $crate::net::nats::connect::AUTH_KEYS[7],
            $crate::net::nats::connect::AUTH_KEYS[8],
        ]
    };
}
pub(super) use config_keys;

/// Messages the client buffers per subscription of a publisher (JetStream
/// PubAcks, at most a batch in flight).
pub(super) const REPLY_CAPACITY: usize = 4096;

/// The connection settings as the flow gives them.
#[derive(Debug, Deserialize)]
pub(super) struct ConnConfig {
    url: String,
    reconnect: String,
    creds_file: Option<String>,
    token: Option<String>,
    username: Option<String>,
    password: Option<String>,
    nkey_seed_file: Option<String>,
    tls: bool,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
}

/// How to authenticate.
#[derive(Debug, Clone)]
enum Auth {
    None,
    Creds(PathBuf),
    Token(String),
    User(String, String),
    NKey(PathBuf),
}

/// Checked connection settings: build them at build time (no I/O), connect at run time.
#[derive(Debug, Clone)]
pub(super) struct Conn {
    servers: Vec<ServerAddr>,
    target: String,
    backoff: Backoff,
    auth: Auth,
    tls: Option<TlsFiles>,
}

/// A connected (or connecting) client and its link state.
pub(super) struct Connection {
    /// The client; usable at once, it queues while connecting.
    pub(super) client: Client,
    /// `true` while connected.
    pub(super) up: watch::Receiver<bool>,
    /// Where it connects, for logs.
    pub(super) target: String,
    /// The reconnection backoff, for retries of the component's own.
    pub(super) backoff: Backoff,
    /// Messages the client dropped for a full subscription ("slow consumer"),
    /// as it reported them (at least that many).
    pub(super) slow: Arc<AtomicU64>,
    /// Set when the server refused the credentials: no reconnection helps.
    refused: watch::Receiver<Option<String>>,
}

impl Conn {
    /// Checks the settings.
    pub(super) fn new(c: &ConnConfig, ctx: &BuildContext) -> Result<Conn, String> {
        let servers = c
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| u.parse::<ServerAddr>().map_err(|e| format!("`url`: `{u}` is not a NATS URL: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err("`url` is empty; write e.g. `nats://127.0.0.1:4222`".into());
        }
        // `nats://USER:PASS@HOST`: the user and password in the URL, as for other clients.
        let in_url = servers.iter().find(|s| s.has_user_pass());
        let auth = match (&c.creds_file, &c.token, &c.username, &c.password, &c.nkey_seed_file) {
            (None, None, None, None, None) => match in_url {
                Some(s) => Auth::User(
                    s.username().unwrap_or_default().to_string(),
                    s.password().unwrap_or_default().to_string(),
                ),
                None => Auth::None,
            },
            (Some(f), None, None, None, None) => Auth::Creds(ctx.path(f)),
            (None, Some(t), None, None, None) => Auth::Token(t.clone()),
            (None, None, Some(u), Some(p), None) => Auth::User(u.clone(), p.clone()),
            (None, None, Some(_), None, None) => return Err("`username` needs `password`".into()),
            (None, None, None, Some(_), None) => return Err("`password` needs `username`".into()),
            (None, None, None, None, Some(f)) => Auth::NKey(ctx.path(f)),
            _ => {
                return Err("give one way to authenticate: `creds_file`, `token`, `username`/`password` or \
                            `nkey_seed_file`"
                    .into());
            }
        };
        let files = TlsFiles {
            ca_file: c.ca_file.as_deref().map(|p| ctx.path(p)),
            cert_file: c.cert_file.as_deref().map(|p| ctx.path(p)),
            key_file: c.key_file.as_deref().map(|p| ctx.path(p)),
        };
        if files.cert_file.is_some() != files.key_file.is_some() {
            return Err("a client certificate needs both `cert_file` and `key_file`".into());
        }
        let wants_tls = c.tls || files != TlsFiles::default() || servers.iter().any(|s| s.scheme() == "tls");
        Ok(Conn {
            target: format!("nats {}", fbp_runtime::secret::url(c.url.trim())),
            servers,
            backoff: Backoff::parse("reconnect", &c.reconnect)?,
            auth,
            tls: wants_tls.then_some(files),
        })
    }

    /// Starts the client (it connects in the background and never gives up),
    /// buffering at most `capacity` messages per subscription before it
    /// drops (core NATS "slow consumer"). Fails only on local problems: an
    /// unreadable credentials or TLS file.
    pub(super) async fn connect(&self, component: &Arc<str>, capacity: usize) -> Result<Connection, Failure> {
        let (tx, up) = watch::channel(false);
        let (refused_tx, refused) = watch::channel(None);
        let events = Events::new(Link::new(component.clone(), self.target.clone(), self.backoff), tx, refused_tx);
        let slow = events.slow.clone();
        let backoff = self.backoff;
        let mut opts = ConnectOptions::new()
            .name(format!("fbp {component}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .subscription_capacity(capacity)
            .reconnect_delay_callback(move |attempts| delay(backoff, attempts))
            .event_callback(move |event| {
                events.on(event);
                std::future::ready(())
            });
        let local = |e: String| Failure(format!("{}: {e}", self.target));
        opts = self.secured(opts).await.map_err(local)?;
        let client = opts.connect(self.servers.clone()).await.map_err(|e| local(e.to_string()))?;
        Ok(Connection { client, up, target: self.target.clone(), backoff: self.backoff, slow, refused })
    }

    /// `opts` with the credentials and TLS settings; reads their files.
    async fn secured(&self, opts: ConnectOptions) -> Result<ConnectOptions, String> {
        let mut opts = match &self.auth {
            Auth::None => opts,
            Auth::Creds(path) => {
                opts.credentials_file(path).await.map_err(|e| format!("cannot use `{}`: {e}", path.display()))?
            }
            Auth::Token(t) => opts.token(t.clone()),
            Auth::User(u, p) => opts.user_and_password(u.clone(), p.clone()),
            Auth::NKey(path) => {
                let seed =
                    std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
                opts.nkey(seed.trim().to_string())
            }
        };
        if let Some(files) = &self.tls {
            let config = tls::client_config(files)?;
            opts = opts.require_tls(true).tls_client_config((*config).clone());
        }
        Ok(opts)
    }
}

impl Connection {
    /// What says the server refused the credentials, apart from the
    /// connection (which the work borrows).
    pub(super) fn refusal(&self) -> Refusal {
        Refusal { target: self.target.clone(), refused: self.refused.clone() }
    }

    /// Waits until connected (`true`); `false` if `input` ends meanwhile
    /// (nothing is left to publish, so a flow stopping while the server is
    /// away need not wait for it); an error if the client is gone.
    pub(super) async fn wait_up(&mut self, input: &InPort) -> Result<bool, Failure> {
        tokio::select! {
            up = self.up.wait_for(|up| *up) => match up {
                Ok(_) => Ok(true),
                Err(_) => Err(Failure(format!("{}: the client closed", self.target))),
            },
            () = input.done() => Ok(false),
        }
    }
}

/// Watches for the server refusing the credentials.
pub(super) struct Refusal {
    target: String,
    refused: watch::Receiver<Option<String>>,
}

impl Refusal {
    /// Runs `work` until it ends, or until the server refuses the
    /// credentials: then a permanent failure, as no reconnection helps.
    pub(super) async fn unless_refused(
        mut self,
        ctx: &fbp_runtime::Context,
        work: impl std::future::Future<Output = Result<(), Failure>>,
    ) -> Result<(), Failure> {
        tokio::select! {
            done = work => done,
            Ok(why) = self.refused.wait_for(Option::is_some) => {
                Err(ctx.permanent(format!("{}: {}", self.target, why.as_deref().unwrap_or_default())))
            }
        }
    }
}

/// Reconnection delay before attempt `attempts` (1-based): none for the
/// first, then the `reconnect` range, doubling, with jitter.
fn delay(backoff: Backoff, attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let doublings = (attempts - 2).min(30) as u32;
    let d = backoff.min.saturating_mul(1 << doublings).min(backoff.max);
    let jitter = fastrand::u64(0..=d.as_millis() as u64 / 4);
    d.saturating_sub(Duration::from_millis(jitter))
}

/// Turns async-nats events into link changes (logged once per change).
struct Events {
    link: Mutex<Link>,
    up: watch::Sender<bool>,
    refused: watch::Sender<Option<String>>,
    slow: Arc<AtomicU64>,
}

impl Events {
    fn new(link: Link, up: watch::Sender<bool>, refused: watch::Sender<Option<String>>) -> Arc<Events> {
        Arc::new(Events { link: Mutex::new(link), up, refused, slow: Arc::default() })
    }

    fn on(self: &Arc<Self>, event: Event) {
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Connected => {
                link.up();
                self.up.send_replace(true);
            }
            Event::Disconnected => {
                link.down(&"disconnected");
                self.up.send_replace(false);
            }
            Event::ClientError(e) if e.to_string().contains("authorization violation") => {
                self.refused.send_replace(Some(format!(
                    "{e}; check the credentials (`username`/`password`, `token`, `creds_file` or `nkey_seed_file`)"
                )));
            }
            Event::ClientError(e) => {
                if link.state() != fbp_runtime::link::State::Up {
                    link.down(&e);
                } else {
                    tracing::debug!(error = %e, "NATS client error.");
                }
            }
            Event::ServerError(e) => tracing::warn!(error = %e, "NATS server error."),
            // One event per message dropped; the subscriber counts and warns.
            Event::SlowConsumer(_) => {
                self.slow.fetch_add(1, Ordering::Relaxed);
            }
            Event::LameDuckMode => tracing::info!("NATS server entered lame duck mode."),
            Event::Draining | Event::Closed => {}
        }
    }
}

pub(super) mod probe;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_doubles_from_the_second_attempt_up_to_the_limit() {
        let b = Backoff { min: Duration::from_millis(100), max: Duration::from_millis(400) };
        assert_eq!(delay(b, 1), Duration::ZERO);
        for (attempt, hi) in [(2, 100), (3, 200), (4, 400), (9, 400), (100, 400)] {
            let d = delay(b, attempt).as_millis() as u64;
            assert!(d <= hi && d >= hi * 3 / 4, "attempt {attempt}: {d}");
        }
    }
}
