//! Secrets kept out of what fbp shows: a URL's password and token-like query
//! values become `***` in every log line, error and message that names the URL.

use std::borrow::Cow;

/// Query parameters whose values are secrets (compared without case).
pub const SECRET_PARAMS: &[&str] =
    &["token", "key", "apikey", "api_key", "access_token", "password", "passwd", "secret", "sig", "signature"];

/// What a secret is shown as.
pub const MASK: &str = "***";

/// `text` with every URL in it masked: the password of its userinfo, and the
/// value of each query parameter named in [`SECRET_PARAMS`]. Text without a
/// URL comes back as it is, unallocated.
pub fn mask_urls(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        // The URL starts at its scheme, the letters before `://`.
        let scheme = rest[..at].rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c))).map_or(0, |i| i + 1);
        let end = rest[at..].find(|c: char| c.is_whitespace() || "\"'<>`".contains(c)).map_or(rest.len(), |i| at + i);
        out.push_str(&rest[..scheme]);
        out.push_str(&mask_url(&rest[scheme..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// One URL, masked.
fn mask_url(url: &str) -> Cow<'_, str> {
    let Some(after) = url.find("://").map(|i| i + 3) else { return Cow::Borrowed(url) };
    let authority_end = url[after..].find(['/', '?', '#']).map_or(url.len(), |i| after + i);
    let mut masked = String::with_capacity(url.len());
    masked.push_str(&url[..after]);
    let authority = &url[after..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => masked.push_str(&format!("{user}:{MASK}")),
                None => masked.push_str(userinfo),
            }
            masked.push_str(&authority[at..]);
        }
        None => masked.push_str(authority),
    }
    let tail = &url[authority_end..];
    match tail.split_once('?') {
        Some((path, query)) => {
            let (query, fragment) = query.split_once('#').map_or((query, None), |(q, f)| (q, Some(f)));
            masked.push_str(path);
            masked.push('?');
            let pairs: Vec<String> = query.split('&').map(mask_pair).collect();
            masked.push_str(&pairs.join("&"));
            if let Some(f) = fragment {
                masked.push('#');
                masked.push_str(f);
            }
        }
        None => masked.push_str(tail),
    }
    if masked == url { Cow::Borrowed(url) } else { Cow::Owned(masked) }
}

fn mask_pair(pair: &str) -> String {
    match pair.split_once('=') {
        Some((k, v)) if !v.is_empty() && is_secret_param(k) => format!("{k}={MASK}"),
        _ => pair.to_string(),
    }
}

/// Whether a query parameter (or config key) named `name` holds a secret.
pub fn is_secret_param(name: &str) -> bool {
    let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    SECRET_PARAMS.iter().any(|s| name.eq_ignore_ascii_case(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_token_like_parameters_are_masked_wherever_a_url_stands() {
        assert_eq!(mask_urls("nats nats://bob:hunter2@127.0.0.1:4222"), "nats nats://bob:***@127.0.0.1:4222");
        assert_eq!(
            mask_urls("GET https://api.example.com/v1/items?page=2&Token=s3cret&sig=abc#top failed"),
            "GET https://api.example.com/v1/items?page=2&Token=***&sig=***#top failed"
        );
        assert_eq!(
            mask_urls("a mqtt://u:p@[::1]:1883/t and postgresql://x:y@db/test?sslmode=require&password=z"),
            "a mqtt://u:***@[::1]:1883/t and postgresql://x:***@db/test?sslmode=require&password=***"
        );
        assert_eq!(mask_urls("url=\"http://h/p?apikey=k\""), "url=\"http://h/p?apikey=***\"");
        assert_eq!(mask_urls("http://user@h/x?key="), "http://user@h/x?key=");
        assert!(matches!(mask_urls("no url here: a=b"), Cow::Borrowed(_)));
        assert!(matches!(mask_urls("http://h:80/x?page=1"), Cow::Owned(s) if s == "http://h:80/x?page=1"));
    }
}
