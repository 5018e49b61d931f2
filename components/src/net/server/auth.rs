//! `auth = { token = "..." }`: a Bearer token every request must carry.
//!
//! The token is compared in constant time (for tokens of its length) and
//! never printed: its `Debug` is `***`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// The `auth` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthConfig {
    token: String,
}

/// The token a client must send as `Authorization: Bearer TOKEN`.
#[derive(Clone)]
pub(crate) struct Token(Arc<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    /// The token of an `auth` table, which must not be empty.
    pub(super) fn new(config: AuthConfig) -> Result<Token, String> {
        let token = config.token.trim();
        if token.is_empty() {
            return Err("`auth.token` is empty".into());
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("`auth.token` must be printable ASCII without spaces".into());
        }
        Ok(Token(token.as_bytes().into()))
    }

    /// Whether `headers` carry this token.
    pub(crate) fn admits(&self, headers: &HeaderMap) -> bool {
        let given = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()).and_then(bearer);
        given.is_some_and(|g| same(g, &self.0))
    }
}

/// The credentials of an `Authorization: Bearer ...` value.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| rest.trim_ascii())
}

/// Equal bytes, in a time that depends on the length only.
fn same(given: &[u8], want: &[u8]) -> bool {
    if given.len() != want.len() {
        return false;
    }
    let diff = given.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

/// The middleware: 401 with `WWW-Authenticate: Bearer` unless the request carries the token.
pub(super) async fn require(State(token): State<Token>, request: Request, next: Next) -> Response {
    if token.admits(request.headers()) {
        return next.run(request).await;
    }
    let challenge = if request.headers().contains_key(header::AUTHORIZATION) {
        "Bearer realm=\"fbp\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"fbp\""
    };
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)], "a valid bearer token is required\n")
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let token = Token::new(AuthConfig { token: "s3cret".into() }).unwrap();
        assert!(token.admits(&headers("Bearer s3cret")));
        assert!(token.admits(&headers("bearer s3cret")));
        for wrong in ["Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret", "Bearer "] {
            assert!(!token.admits(&headers(wrong)), "{wrong}");
        }
        assert!(!token.admits(&HeaderMap::new()));
        assert_eq!(format!("{token:?}"), "Token(***)");
        assert!(Token::new(AuthConfig { token: " ".into() }).unwrap_err().contains("empty"));
    }
}
