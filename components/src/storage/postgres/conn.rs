//! The connection to PostgreSQL that `postgres` and `postgres-read` share:
//! the connection string checked at build, connecting with a [`Link`] until
//! the server answers, and which errors mean "the server is gone".

use std::time::Duration;

use fbp_runtime::link::{Backoff, Link};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_util::sync::CancellationToken;

use crate::net::tls::{self, TlsFiles};

/// The stream under a connection (in the clear with `sslmode = "disable"`).
pub(crate) type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// How `sslmode` says to reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tls {
    /// In the clear.
    Disable,
    /// Encrypted, the server's certificate not checked (warned about).
    Require,
    /// Encrypted, the certificate checked against `ca_file` (or the system's
    /// roots) and the host name.
    VerifyFull,
}

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A server to connect to: its settings, and how logs name it (never with the password).
#[derive(Clone, Debug)]
pub(crate) struct Server {
    config: Config,
    tls: Tls,
    connector: Connector,
    /// `postgres HOST:PORT/DB`, for logs.
    pub(crate) target: String,
    pub(crate) backoff: Backoff,
}

impl Server {
    /// Reads a connection string (`host=.. user=..` or `postgresql://..`) and
    /// the `sslmode` key (`disable`, `require`, `verify-full`; a `sslmode` of
    /// `require` in the string counts as the key's `require`). Unset, a
    /// server on this host is reached in the clear and any other with
    /// `verify-full`.
    pub(crate) fn parse(url: &str, sslmode: Option<&str>, reconnect: &str) -> Result<Server, String> {
        let mut config: Config = url.parse().map_err(|e| format!("`url`: not a PostgreSQL connection string: {e}"))?;
        let tls = match (sslmode, config.get_ssl_mode()) {
            (Some("verify-full"), _) => Tls::VerifyFull,
            (Some("require"), _) | (_, SslMode::Require) => Tls::Require,
            (Some("disable"), _) | (None, SslMode::Disable) => Tls::Disable,
            (None, _) if on_this_host(&config) => Tls::Disable,
            (None, _) => Tls::VerifyFull,
            (Some(other), _) => {
                return Err(format!("`sslmode`: `{other}` is not one of `disable`, `require`, `verify-full`"));
            }
        };
        config.ssl_mode(if tls == Tls::Disable { SslMode::Disable } else { SslMode::Require });
        config.connect_timeout(CONNECT_TIMEOUT);
        config.keepalives(true).keepalives_idle(Duration::from_secs(30));
        if config.get_user().is_none() {
            config.user("postgres");
        }
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let db = config.get_dbname().unwrap_or("").to_string();
        let target = format!("postgres {host}:{port}/{db}");
        let backoff = Backoff::parse("reconnect", reconnect)?;
        let connector = Connector(connector(tls, None)?);
        Ok(Server { config, tls, connector, target, backoff })
    }

    /// The same server, its certificate checked against the CA in `path`
    /// (`sslmode = "verify-full"`); the TLS settings are checked now.
    pub(crate) fn with_ca_file(mut self, path: Option<PathBuf>) -> Result<Server, String> {
        if path.is_some() && self.tls != Tls::VerifyFull {
            return Err("`ca_file` is for `sslmode = \"verify-full\"`".into());
        }
        self.connector = Connector(connector(self.tls, path)?);
        Ok(self)
    }

    /// Whether the server's certificate goes unchecked (`sslmode = "require"`).
    pub(crate) fn unverified(&self) -> bool {
        self.tls == Tls::Require
    }

    /// Whether it speaks in the clear to a server on another host.
    pub(crate) fn in_clear_beyond_this_host(&self) -> bool {
        self.tls == Tls::Disable && !on_this_host(&self.config)
    }

    /// One connection attempt; the caller drives the connection.
    pub(crate) async fn connect(&self) -> Result<(Client, Connection<Socket, Stream>), tokio_postgres::Error> {
        let tls = self.connector.0.clone();
        if self.config.get_hosts().is_empty() {
            let mut config = self.config.clone();
            config.host("localhost");
            return config.connect(tls).await;
        }
        self.config.connect(tls).await
    }

    /// One connection attempt, the connection driven by a task of its own.
    pub(crate) async fn connect_driven(&self) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.connect().await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Connects, retrying with `link`'s backoff until it works (the connection
    /// is driven by a task of its own), or `None` if `stop` fires first.
    pub(crate) async fn connect_until_up(&self, link: &mut Link, stop: &CancellationToken) -> Option<Client> {
        loop {
            match self.connect_driven().await {
                Ok(client) => {
                    link.up();
                    return Some(client);
                }
                Err(e) => {
                    let delay = link.down(&fbp_runtime::cause::chain(&e));
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.cancelled() => return None,
                    }
                }
            }
        }
    }
}

/// Whether every host of `config` is this one: a Unix socket, `localhost`
/// or a loopback address (none given means `localhost`).
fn on_this_host(config: &Config) -> bool {
    config.get_hosts().iter().all(|h| match h {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            let name = name.trim_start_matches('[').trim_end_matches(']');
            name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    })
}

/// The TLS connector `sslmode` asks for (unused with `disable`), with the
/// CA file read now, so a bad one is an error at check time.
fn connector(mode: Tls, ca_file: Option<PathBuf>) -> Result<MakeRustlsConnect, String> {
    let config = match mode {
        Tls::VerifyFull => (*tls::client_config(&TlsFiles { ca_file, ..TlsFiles::default() })?).clone(),
        Tls::Disable | Tls::Require => {
            tls::ensure_provider();
            let provider = rustls::crypto::ring::default_provider();
            rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
                .with_no_client_auth()
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// A TLS connector, shown in debug output by name only.
#[derive(Clone)]
struct Connector(MakeRustlsConnect);

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

/// `sslmode = "require"`: the server's certificate is taken as it is (the
/// signatures of the handshake are still checked), as libpq does.
#[derive(Debug)]
struct Unchecked(rustls::crypto::CryptoProvider);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether an error means the connection or the server is gone (so the work
/// is retried once reconnected), rather than something about the statement.
pub(crate) fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    let Some(db) = e.as_db_error() else {
        return true;
    };
    let code = db.code().code();
    code.starts_with("08")
        || [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW].contains(db.code())
}

/// Why no reconnection can succeed, when the server refused the connection
/// itself: a database that does not exist, credentials refused (class 28).
pub(crate) fn refused_for_good(e: &tokio_postgres::Error) -> Option<&'static str> {
    let db = e.as_db_error()?;
    match db.code().code() {
        "3D000" => Some("create the database, or fix the database name in `url`"),
        code if code.starts_with("28") => Some("fix the user or password in `url`, or the server's pg_hba.conf"),
        _ => None,
    }
}

/// Whether an error refuses the work for now on a connection that is still
/// good, so the same work is worth trying again after a pause: a cancelled
/// statement (an admin, `statement_timeout`), a serialization failure or a
/// deadlock, a lock not available (`lock_timeout`), the server out of
/// resources (class 53).
pub(crate) fn is_passing_error(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        let code = db.code();
        code.code().starts_with("53")
            || [SqlState::QUERY_CANCELED, SqlState::T_R_SERIALIZATION_FAILURE, SqlState::T_R_DEADLOCK_DETECTED]
                .contains(code)
            || *code == SqlState::LOCK_NOT_AVAILABLE
    })
}

/// Whether an error is about the data of a record (a value the column's type
/// does not take, a constraint), so that record is refused and not the batch.
pub(crate) fn is_record_error(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        let code = db.code().code();
        code.starts_with("22") || code.starts_with("23")
    })
}

/// An error as one line: the server's message (and detail) when it sent one.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({detail})", db.message()),
            None => db.message().to_string(),
        },
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_connection_string_forms_and_sslmode() {
        let s = Server::parse("postgresql://app:secret@db.local:5433/metrics", Some("disable"), "100ms..10s").unwrap();
        assert_eq!(s.target, "postgres db.local:5433/metrics");
        let s = Server::parse("host=127.0.0.1 user=postgres dbname=test", Some("disable"), "100ms..10s").unwrap();
        assert_eq!(s.target, "postgres 127.0.0.1:5432/test");
        assert!(Server::parse("host=x", Some("require"), "100ms..10s").unwrap().unverified());
        assert!(Server::parse("postgresql://x/db?sslmode=require", None, "100ms..10s").unwrap().unverified());
        let verified = Server::parse("host=x", Some("verify-full"), "100ms..10s").unwrap();
        assert!(!verified.unverified());
        let err = verified.with_ca_file(Some("/nonexistent/ca.pem".into())).unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let err = Server::parse("host=x", Some("disable"), "1s..2s").unwrap().with_ca_file(Some("ca.pem".into()));
        assert!(err.unwrap_err().contains("verify-full"));
        assert!(Server::parse("host=x", Some("prefer"), "1s..2s").unwrap_err().contains("`sslmode`"));
        assert!(Server::parse("postgresql://x/db?bogus=1", None, "100ms..10s").unwrap_err().contains("`url`"));
        assert!(Server::parse("host=x", None, "soon").is_err());
        // Unset: in the clear on this host, verified beyond it.
        for (url, beyond) in [
            ("host=localhost", false),
            ("host=127.0.0.1", false),
            ("host=::1", false),
            ("host=/run/pg", false),
            ("host=db.plant", true),
        ] {
            let s = Server::parse(url, None, "1s..2s").unwrap();
            assert_eq!((s.tls == Tls::VerifyFull, s.in_clear_beyond_this_host()), (beyond, false), "{url}");
        }
        assert!(Server::parse("host=10.0.0.5", Some("disable"), "1s..2s").unwrap().in_clear_beyond_this_host());
        assert!(
            Server::parse("postgresql://db/x?sslmode=disable", None, "1s..2s").unwrap().in_clear_beyond_this_host()
        );
    }
}
