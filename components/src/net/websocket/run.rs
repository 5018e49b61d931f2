//! The `websocket` task: connect, run a session until it ends, and on a lost
//! connection wait the [`Link`]'s backoff and connect again, forever.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fbp_runtime::link::Link;
use fbp_runtime::queue::{InPort, OutPort};
use fbp_runtime::{Context, Failure, Message, Task, TaskFuture};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::WebSocket;
use super::frames::{self, Received};
use crate::net::payload;
use crate::net::tls;

/// How long a TCP connection, TLS and the WebSocket handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A plain or TLS stream.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Socket = WebSocketStream<Box<dyn Io>>;

/// How a session ended.
enum End {
    /// Nothing more to do: shutdown, or the input ended with nothing to receive.
    Done,
    /// The connection was lost; why.
    Lost(String),
}

/// What a session carries over to the next one.
struct Session<'a> {
    ctx: &'a Context,
    input: InPort,
    out: OutPort,
    /// Whether `out` leads anywhere (then the component runs until shutdown).
    receive: bool,
    /// Whether `in` may still bring messages.
    input_open: bool,
    /// A message whose write failed, sent first on the next connection.
    pending: Option<Message>,
}

impl Task for WebSocket {
    fn run(self: Box<Self>, mut ctx: Context) -> TaskFuture {
        Box::pin(async move {
            let tls = match &self.tls {
                Some(files) => Some(tls::client_config(files).map_err(Failure)?),
                None => None,
            };
            let input = ctx.input("in");
            let out = ctx.output("out");
            let receive = out.is_connected();
            let mut session = Session { ctx: &ctx, input, out, receive, input_open: true, pending: None };
            let mut link = Link::new(ctx.name.clone(), format!("websocket {}", self.url), self.backoff);
            loop {
                let connected = tokio::select! {
                    biased;
                    _ = ctx.shutdown().cancelled() => return session.unsent().await,
                    c = tokio::time::timeout(CONNECT_TIMEOUT, self.connect(tls.as_ref())) => {
                        c.unwrap_or_else(|_| Err("timed out".into()))
                    }
                };
                let error = match connected {
                    Ok(socket) => {
                        link.up();
                        match self.session(&mut session, socket).await? {
                            End::Done => return Ok(()),
                            End::Lost(e) => e,
                        }
                    }
                    Err(e) => e,
                };
                let delay = link.down(&error);
                tokio::select! {
                    biased;
                    _ = ctx.shutdown().cancelled() => return session.unsent().await,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        })
    }
}

impl WebSocket {
    /// TCP, TLS for `wss://`, then the WebSocket handshake.
    async fn connect(&self, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Socket, String> {
        let host = self.url.host_str().unwrap_or_default().trim_matches(|c| c == '[' || c == ']').to_string();
        let port = self.url.port_or_known_default().unwrap_or(80);
        let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match tls {
            Some(config) => {
                let name =
                    rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| format!("`{host}`: {e}"))?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                Box::new(connector.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?)
            }
            None => Box::new(tcp),
        };
        let config =
            WebSocketConfig::default().max_message_size(Some(self.max_message)).max_frame_size(Some(self.max_message));
        let (socket, _response) = tokio_tungstenite::client_async_with_config(self.url.as_str(), io, Some(config))
            .await
            .map_err(|e| e.to_string())?;
        Ok(socket)
    }

    /// Receives and sends on one connection until it ends. At shutdown it
    /// stops receiving but goes on sending until `in` ends, as upstream drains.
    async fn session(&self, s: &mut Session<'_>, socket: Socket) -> Result<End, Failure> {
        let ctx = s.ctx;
        let (mut tx, mut rx) = socket.split();
        if let Some(msg) = s.pending.take()
            && let Err(e) = tx.send(frames::to_send(self.format, &msg.payload)).await
        {
            s.pending = Some(msg);
            return Ok(End::Lost(e.to_string()));
        }
        let mut ping = tokio::time::interval(self.ping_interval);
        ping.tick().await;
        let mut heard = Instant::now();
        let mut stopping = false;
        loop {
            if stopping && !s.input_open {
                let _ = tx.send(Frame::Close(None)).await;
                return Ok(End::Done);
            }
            tokio::select! {
                biased;
                _ = ctx.shutdown().cancelled(), if !stopping => stopping = true,
                frame = rx.next(), if !stopping => {
                    let frame = match frame {
                        None => return Ok(End::Lost("the connection closed".into())),
                        Some(Err(e)) => return Ok(End::Lost(e.to_string())),
                        Some(Ok(frame)) => frame,
                    };
                    match frames::received(self.format, frame) {
                        Received::Payload(v) => tokio::select! {
                            biased;
                            // A message received as the flow stops is lost (at-most-once).
                            _ = ctx.shutdown().cancelled() => stopping = true,
                            sent = s.out.send(Message::new(v, ctx.meta())) => sent?,
                        },
                        Received::Bad(text, e) => ctx.reject(&payload::bad_frame(ctx, &text, self.url.as_str()), &e).await?,
                        Received::Control => {}
                        Received::Close(why) => return Ok(End::Lost(why)),
                    }
                    heard = Instant::now();
                }
                msg = s.input.recv(), if s.input_open => match msg {
                    None => {
                        s.input_open = false;
                        stopping |= !s.receive;
                    }
                    Some(msg) => {
                        if let Err(e) = tx.send(frames::to_send(self.format, &msg.payload)).await {
                            s.pending = Some(msg);
                            return Ok(End::Lost(e.to_string()));
                        }
                        // Written and flushed: dropping it acknowledges it.
                    }
                },
                _ = ping.tick(), if !stopping => {
                    if heard.elapsed() > self.ping_interval * 2 {
                        return Ok(End::Lost(format!("nothing heard for {}", humantime::format_duration(heard.elapsed()))));
                    }
                    if let Err(e) = tx.send(Frame::Ping(bytes::Bytes::new())).await {
                        return Ok(End::Lost(e.to_string()));
                    }
                }
            }
        }
    }
}

impl Session<'_> {
    /// The flow stops while the connection is down: what is still to send
    /// goes to `err`, as upstream drains, so the shutdown does not wait for
    /// the server.
    async fn unsent(&mut self) -> Result<(), Failure> {
        let error = "not sent: the WebSocket connection was down when the flow stopped";
        if let Some(msg) = self.pending.take() {
            self.ctx.reject(&msg, error).await?;
        }
        while self.input_open {
            match self.input.recv().await {
                Some(msg) => self.ctx.reject(&msg, error).await?,
                None => self.input_open = false,
            }
        }
        Ok(())
    }
}
