//! HTTP edges: `http-poll` (a source that polls a URL), `http-listen`
//! (webhook ingest: a server whose request bodies become messages) and
//! `http-request` (sends each message as a request, forwards the response).
//!
//! - `client`: what the two clients share: headers, authentication, timeout,
//!   TLS, `Retry-After`, body formats;
//! - `template`: `{{ jq }}` templates for request URLs;
//! - `poll`, `listen`, `request`: one component each.

mod client;
pub mod listen;
pub mod poll;
pub mod request;
mod template;

#[cfg(test)]
pub(crate) mod test_server {
    //! A local axum server for the unit tests, on a free port, stopped on drop.

    use std::net::SocketAddr;

    /// A server running `router` until dropped.
    pub(crate) struct Server {
        pub(crate) addr: SocketAddr,
        task: tokio::task::JoinHandle<()>,
    }

    impl Server {
        pub(crate) async fn start(router: axum::Router) -> Server {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            });
            Server { addr, task }
        }

        pub(crate) fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }
}
