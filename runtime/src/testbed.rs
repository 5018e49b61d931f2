//! Real servers for tests: a Mosquitto or a `nats-server` (with JetStream)
//! started on a free loopback port, owned by the test and ended by its PID;
//! and a TCP [`Proxy`] that cuts and restores the connections to a server the
//! test does not own (to take a broker "away" without touching it).
//!
//! Nothing here is used by a running flow; it is public so that component
//! unit tests and the integration tests share it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The path of `program`, looked up in `PATH` and in `/usr/sbin` (where
/// Debian puts `mosquitto` and `nats-server`), if installed.
pub fn program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Makes, with `openssl` in `dir`, a test CA (`ca.pem`, `ca.key`) and a
/// server certificate it signs (`server.pem`, `server.key`, P-256) for
/// `subject_alt_name` (`"IP:127.0.0.1"`, `"DNS:localhost"`), valid one day.
pub fn certificates(dir: &Path, subject_alt_name: &str) -> io::Result<()> {
    let openssl = |args: &[&str]| -> io::Result<()> {
        let out = Command::new("openssl").current_dir(dir).args(args).output()?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr))))
        }
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let ca = ["-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=fbp test CA"];
    openssl(&[&["req", "-x509"][..], &ec, &ca].concat())?;
    let cn = format!("/CN={}", subject_alt_name.split_once(':').map_or(subject_alt_name, |(_, name)| name));
    openssl(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", &cn]].concat())?;
    std::fs::write(dir.join("ext.cnf"), format!("subjectAltName={subject_alt_name}\nbasicConstraints=CA:FALSE\n"))?;
    let sign = ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"];
    openssl(&[&sign[..], &["-out", "server.pem", "-days", "1", "-extfile", "ext.cnf"]].concat())
}

/// Mosquitto config lines that lift its limits on what it holds for a client
/// (20 in flight, 1 000 queued): for tests whose publisher outruns a
/// subscriber on purpose (a burst, a broker restart with a backlog).
pub const UNLIMITED_QUEUE: &str = "max_queued_messages 0\nmax_inflight_messages 0";

/// The log of a Mosquitto started in `dir` (empty when there is none).
pub fn mosquitto_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default()
}

/// Which server a [`Server`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Mosquitto, with persistence in the server's folder.
    Mosquitto,
    /// nats-server with JetStream, storing in the server's folder.
    Nats,
}

/// A broker process this test started: killed by its PID when dropped.
#[derive(Debug)]
pub struct Server {
    kind: Kind,
    port: u16,
    dir: PathBuf,
    /// Lines added to Mosquitto's config.
    conf: String,
    child: Option<Child>,
}

impl Server {
    /// Starts Mosquitto on a free port, keeping its persistence file (and
    /// its log, `mosquitto.log`) in `dir`. Persistent sessions and their
    /// queued QoS 1/2 messages survive [`Server::restart`]. Its limits are
    /// the broker's own defaults, as users run it: 20 QoS 1/2 messages in
    /// flight to a client, 1 000 more queued for it, then the rest dropped.
    pub fn mosquitto(dir: &Path) -> io::Result<Server> {
        Server::mosquitto_with(dir, "")
    }

    /// [`Server::mosquitto`] with `conf` added to its config, e.g.
    /// [`UNLIMITED_QUEUE`] for a test whose own publisher outruns a
    /// subscriber on purpose.
    pub fn mosquitto_with(dir: &Path, conf: &str) -> io::Result<Server> {
        Server::start(Kind::Mosquitto, dir, free_port(), conf)
    }

    /// Starts nats-server with JetStream on a free port, storing in `dir`.
    pub fn nats(dir: &Path) -> io::Result<Server> {
        Server::start(Kind::Nats, dir, free_port(), "")
    }

    fn start(kind: Kind, dir: &Path, port: u16, conf: &str) -> io::Result<Server> {
        std::fs::create_dir_all(dir)?;
        let mut server = Server { kind, port, dir: dir.to_path_buf(), conf: conf.to_string(), child: None };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> io::Result<()> {
        let name = match self.kind {
            Kind::Mosquitto => "mosquitto",
            Kind::Nats => "nats-server",
        };
        let exe = program(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("`{name}` is not installed")))?;
        let mut cmd = Command::new(exe);
        match self.kind {
            Kind::Mosquitto => {
                let conf = self.dir.join("mosquitto.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\n\
                         persistence_location {dir}/\nautosave_interval 1\nlog_dest file {dir}/mosquitto.log\n{conf}\n",
                        port = self.port,
                        dir = self.dir.display(),
                        conf = self.conf
                    ),
                )?;
                cmd.arg("-c").arg(conf);
            }
            Kind::Nats => {
                cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"]).arg(&self.dir);
                cmd.arg("-l").arg(self.dir.join("nats-server.log"));
            }
        }
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        self.child = Some(child);
        if wait_for_port(self.port, Duration::from_secs(20)) {
            Ok(())
        } else {
            self.kill();
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{name} did not listen on port {} within 20 s", self.port),
            ))
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `HOST:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it with SIGKILL and waits for it to go.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it with SIGTERM (it saves its state) and waits for it to go.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same folder (after
    /// [`Server::kill`] or [`Server::stop`]).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        // The port may linger for a moment after the old process went.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy on a free loopback port to a target address. [`Proxy::cut`]
/// closes every connection through it and refuses new ones until
/// [`Proxy::restore`]: to the client, the server went away.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Starts a proxy to `target`.
    pub fn start(target: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let open = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (o, s, c) = (open.clone(), stop.clone(), conns.clone());
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) if o.load(Ordering::Relaxed) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(target) {
                            pipe(client, server, &c);
                        }
                    }
                    Ok((client, _)) => drop(client),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Proxy { port, open, conns, stop })
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::Relaxed);
        for c in self.conns.lock().expect("proxy connections").drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.open.store(true, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

fn pipe(client: TcpStream, server: TcpStream, conns: &Arc<Mutex<Vec<TcpStream>>>) {
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { return };
    {
        let mut list = conns.lock().expect("proxy connections");
        list.extend([client.try_clone(), server.try_clone()].into_iter().flatten());
    }
    thread::spawn(move || copy(client, s2));
    thread::spawn(move || copy(server, c2));
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_passes_bytes_and_cut_closes_the_connection() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        thread::spawn(move || {
            for mut s in server.incoming().flatten() {
                let mut b = [0u8; 5];
                if s.read_exact(&mut b).is_ok() {
                    let _ = s.write_all(&b);
                }
                thread::sleep(Duration::from_secs(30));
            }
        });
        let proxy = Proxy::start(addr).unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        c.write_all(b"hello").unwrap();
        let mut b = [0u8; 5];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hello");
        proxy.cut();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(c.read(&mut b).unwrap_or(0), 0, "the connection is closed after cut");
    }
}
