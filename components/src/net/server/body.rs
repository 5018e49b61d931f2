//! Reading a request body within a limit.

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

/// Why a body was not read.
pub(crate) enum BodyError {
    /// Past the limit.
    TooLarge,
    /// The connection broke.
    Broken(axum::Error),
}

/// Reads the body, refusing it as soon as it passes `max`. A body that comes
/// in one chunk (the usual small webhook) is kept as it is, not copied.
pub(crate) async fn read_body(body: Body, max: usize) -> Result<Bytes, BodyError> {
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut len = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Broken)?;
        len += chunk.len();
        if len > max {
            return Err(BodyError::TooLarge);
        }
        match first.take() {
            None if buf.is_empty() => first = Some(chunk),
            held => {
                if let Some(held) = held {
                    buf.extend_from_slice(&held);
                }
                buf.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}
