//! The connection to PostgreSQL that `postgres` and `postgres-read` share:
//! the connection string checked at build, connecting with a [`Link`] until
//! the server answers, and which errors mean "the server is gone".

use std::time::Duration;

use fbp_runtime::link::{Backoff, Link};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, Config, Connection, NoTls, Socket};
use tokio_util::sync::CancellationToken;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A server to connect to: its settings, and how logs name it (never with the password).
#[derive(Clone, Debug)]
pub(crate) struct Server {
    config: Config,
    /// `postgres HOST:PORT/DB`, for logs.
    pub(crate) target: String,
    pub(crate) backoff: Backoff,
}

impl Server {
    /// Reads a connection string (`host=.. user=..` or `postgresql://..`) and
    /// the `sslmode` key. TLS is not supported yet: `require` is refused.
    pub(crate) fn parse(url: &str, sslmode: &str, reconnect: &str) -> Result<Server, String> {
        let mut config: Config = url.parse().map_err(|e| format!("`url`: not a PostgreSQL connection string: {e}"))?;
        if config.get_ssl_mode() == SslMode::Require || sslmode == "require" {
            return Err("`sslmode = \"require\"`: TLS to PostgreSQL is not supported yet; use `disable` \
                        (or a TLS-terminating proxy on the gateway)"
                .into());
        }
        config.ssl_mode(SslMode::Disable);
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
        Ok(Server { config, target, backoff })
    }

    /// One connection attempt; the caller drives the connection.
    pub(crate) async fn connect(&self) -> Result<(Client, Connection<Socket, NoTlsStream>), tokio_postgres::Error> {
        if self.config.get_hosts().is_empty() {
            let mut config = self.config.clone();
            config.host("localhost");
            return config.connect(NoTls).await;
        }
        self.config.connect(NoTls).await
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
                    let delay = link.down(&e);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = stop.cancelled() => return None,
                    }
                }
            }
        }
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
        let s = Server::parse("postgresql://app:secret@db.local:5433/metrics", "disable", "100ms..10s").unwrap();
        assert_eq!(s.target, "postgres db.local:5433/metrics");
        let s = Server::parse("host=127.0.0.1 user=postgres dbname=test", "disable", "100ms..10s").unwrap();
        assert_eq!(s.target, "postgres 127.0.0.1:5432/test");
        let err = Server::parse("host=x", "require", "100ms..10s").unwrap_err();
        assert!(err.contains("not supported yet"), "{err}");
        let err = Server::parse("postgresql://x/db?sslmode=require", "disable", "100ms..10s").unwrap_err();
        assert!(err.contains("not supported yet"), "{err}");
        assert!(Server::parse("postgresql://x/db?bogus=1", "disable", "100ms..10s").unwrap_err().contains("`url`"));
        assert!(Server::parse("host=x", "disable", "soon").is_err());
    }
}
