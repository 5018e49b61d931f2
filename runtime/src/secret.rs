//! Secrets kept out of what fbp shows: in a URL, the password in
//! a URL's userinfo (`http://user:***@host/`; a userinfo without a password,
//! often a token, is masked whole) and the value of each token-like query
//! parameter (`?token=***`).
//!
//! [`url`] masks one URL; [`urls_in`] each URL in a text, such as an error a
//! client library wrote with the URL in it, or a link's target (so every
//! connection log line is masked in one place, [`crate::link::Link`]).

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Query parameter names whose values are secrets; also matched as the end of
/// a name after `_` or `-` (`client_secret`, `x-api-key`), case-insensitively.
pub const SECRET_PARAMS: &[&str] =
    &["token", "key", "apikey", "api_key", "access_token", "password", "passwd", "secret", "sig", "signature"];

/// `text`, a URL, with its userinfo password and token-like query values masked.
pub fn url(text: &str) -> String {
    let (before_fragment, fragment) = split_keep(text, '#');
    let (head, query) = split_keep(before_fragment, '?');
    let mut out = userinfo_masked(head).into_owned();
    if let Some(query) = query {
        out.push('?');
        out.push_str(&query_masked(query));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// `text` with every URL in it (`scheme://...` up to a space or a quote) masked.
pub fn urls_in(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(sep) = rest.find("://") {
        let start = rest[..sep].rfind(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c))).map_or(0, |i| i + 1);
        let end =
            rest[sep..].find(|c: char| c.is_whitespace() || "()\"'`<>".contains(c)).map_or(rest.len(), |i| sep + i);
        out.push_str(&rest[..start]);
        out.push_str(&url(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// `text` split at the first `sep`, without it.
fn split_keep(text: &str, sep: char) -> (&str, Option<&str>) {
    match text.split_once(sep) {
        Some((a, b)) => (a, Some(b)),
        None => (text, None),
    }
}

/// The scheme, authority and path, with the userinfo's password masked.
fn userinfo_masked(head: &str) -> Cow<'_, str> {
    let Some(sep) = head.find("://") else { return Cow::Borrowed(head) };
    let authority_start = sep + 3;
    let authority_end = head[authority_start..].find('/').map_or(head.len(), |i| authority_start + i);
    let Some(at) = head[authority_start..authority_end].rfind('@').map(|i| authority_start + i) else {
        return Cow::Borrowed(head);
    };
    let userinfo = &head[authority_start..at];
    let kept = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:{MASK}"),
        None => MASK.to_string(),
    };
    Cow::Owned(format!("{}{kept}{}", &head[..authority_start], &head[at..]))
}

/// A query with the values of secret-named parameters masked.
fn query_masked(query: &str) -> String {
    let pairs = query.split('&').map(|pair| match pair.split_once('=') {
        Some((name, _)) if is_secret_param(name) => format!("{name}={MASK}"),
        _ => pair.to_string(),
    });
    pairs.collect::<Vec<_>>().join("&")
}

/// Whether a query parameter named `name` (percent-encoded) holds a secret.
pub fn is_secret_param(name: &str) -> bool {
    let name = percent_decode_str(name).decode_utf8_lossy().to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|secret| {
        name == *secret || name.strip_suffix(secret).is_some_and(|head| head.ends_with('_') || head.ends_with('-'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_userinfo_passwords_and_token_like_parameters() {
        assert_eq!(url("http://user:hunter2@h:80/x?token=s3cret&n=1"), "http://user:***@h:80/x?token=***&n=1");
        assert_eq!(url("https://ghp_abc@github.com/o/r"), "https://***@github.com/o/r");
        assert_eq!(
            url("http://h/x?API_KEY=a&apikey=b&Access_Token=c&sig=d&password=e&Secret=f&key=g#frag"),
            "http://h/x?API_KEY=***&apikey=***&Access_Token=***&sig=***&password=***&Secret=***&key=***#frag"
        );
        assert_eq!(
            url("http://h/x?client_secret=a&x-api-key=b&api%5Fkey=c"),
            "http://h/x?client_secret=***&x-api-key=***&api%5Fkey=***"
        );
        assert_eq!(url("http://h/x?keyboard=1&monkey=2&tokens=3&sig"), "http://h/x?keyboard=1&monkey=2&tokens=3&sig");
        assert_eq!(url("http://h/a@b?q=1"), "http://h/a@b?q=1", "an @ in the path is no userinfo");
        assert_eq!(url("/next?page=2&token=t"), "/next?page=2&token=***");
        assert_eq!(url("http://h/x"), "http://h/x");
    }

    #[test]
    fn masks_each_url_in_a_text() {
        let e = "error sending request for url (http://u:hunter2@127.0.0.1:9/x?token=s3cret): connection refused";
        assert_eq!(
            urls_in(e),
            "error sending request for url (http://u:***@127.0.0.1:9/x?token=***): connection refused"
        );
        let two = "`https://a:b@h/?key=k` then ws://h/?sig=s.";
        assert_eq!(urls_in(two), "`https://a:***@h/?key=***` then ws://h/?sig=***");
        assert_eq!(urls_in("no url here: a://"), "no url here: a://");
        assert_eq!(urls_in("ünïcode http://h/?token=é ok"), "ünïcode http://h/?token=*** ok");
        assert_eq!(urls_in("nats nats://bob:hunter2@127.0.0.1:4222"), "nats nats://bob:***@127.0.0.1:4222");
        assert_eq!(
            urls_in("a mqtt://u:p@[::1]:1883/t and postgresql://x:y@db/test?sslmode=require&password=z"),
            "a mqtt://u:***@[::1]:1883/t and postgresql://x:***@db/test?sslmode=require&password=***"
        );
    }
}
