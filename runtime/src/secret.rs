//! Secrets kept out of what fbp shows: in a URL, the password in
//! a URL's userinfo (`http://user:***@host/`; a userinfo without a password,
//! often a token, is masked whole) and the value of each token-like query
//! parameter (`?token=***`).
//!
//! [`url`] masks one URL; [`urls_in`] each URL in a text, such as an error a
//! client library wrote with the URL in it, or a link's target (so every
//! connection log line is masked in one place, [`crate::link::Link`]).

use std::ops::Range;

use percent_encoding::percent_decode_str;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Query parameter names whose values are secrets; also matched as the end of
/// a name after `_` or `-` (`client_secret`, `x-api-key`), case-insensitively.
pub const SECRET_PARAMS: &[&str] =
    &["token", "key", "apikey", "api_key", "access_token", "password", "passwd", "secret", "sig", "signature"];

/// `text`, a URL, with its userinfo password and token-like query values masked.
pub fn url(text: &str) -> String {
    masked(text, spans(text))
}

/// `text` with every URL in it (`scheme://...` up to a space or a quote) masked.
pub fn urls_in(text: &str) -> String {
    masked(text, spans_in(text))
}

/// `text` with each of `spans` (in order) replaced by [`MASK`].
fn masked(text: &str, spans: Vec<Range<usize>>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for span in spans {
        out.push_str(&text[at..span.start]);
        out.push_str(MASK);
        at = span.end;
    }
    out.push_str(&text[at..]);
    out
}

/// `text` with each byte of every secret in its URLs replaced by `*`: the
/// same length, so positions in it (a diagnostic's caret) stay right.
pub fn blank_urls_in(text: &str) -> String {
    let mut out = text.to_string();
    for span in spans_in(text).into_iter().rev() {
        out.replace_range(span.clone(), &"*".repeat(span.len()));
    }
    out
}

/// TOML text with the string value of each secret-named key (`password =
/// "..."`, `token = '...'`) and every URL's secrets blanked as
/// [`blank_urls_in`] does, keeping every position.
pub fn blank_toml(text: &str) -> String {
    let mut out = blank_urls_in(text);
    let bytes = text.as_bytes();
    let mut blank = Vec::new();
    for (eq, _) in text.match_indices('=') {
        let key_end = text[..eq].trim_end().len();
        let key_start =
            text[..key_end].trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-').len();
        let value = eq + 1 + (text[eq + 1..].len() - text[eq + 1..].trim_start().len());
        let Some(&quote) = bytes.get(value).filter(|q| **q == b'"' || **q == b'\'') else { continue };
        let Some(len) = text[value + 1..].find(quote as char) else { continue };
        // `key` names a jq program or columns in a flow, not a secret.
        let key = &text[key_start..key_end];
        if key_start < key_end && key != "key" && is_secret_param(key) {
            blank.push(value + 1..value + 1 + len);
        }
    }
    for span in blank.into_iter().rev() {
        out.replace_range(span.clone(), &"*".repeat(span.len()));
    }
    out
}

/// The byte ranges of the secrets of every URL in `text`, in order.
fn spans_in(text: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(sep) = text[from..].find("://").map(|i| from + i) {
        let start = text[from..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
            .map_or(from, |i| from + i + 1);
        let end =
            text[sep..].find(|c: char| c.is_whitespace() || "()\"'`<>".contains(c)).map_or(text.len(), |i| sep + i);
        found.extend(spans(&text[start..end]).into_iter().map(|r| r.start + start..r.end + start));
        from = end.max(sep + 3);
    }
    found
}

/// The byte ranges of the secrets in one URL: the userinfo's password (the
/// whole userinfo when it has no password, as a token often is) and the
/// value of each token-like query parameter.
fn spans(url: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let before_fragment = url.find('#').unwrap_or(url.len());
    let query_at = url[..before_fragment].find('?');
    let head_end = query_at.unwrap_or(before_fragment);
    if let Some(sep) = url[..head_end].find("://") {
        let authority = sep + 3;
        let authority_end = url[authority..head_end].find('/').map_or(head_end, |i| authority + i);
        if let Some(at) = url[authority..authority_end].rfind('@').map(|i| authority + i) {
            match url[authority..at].find(':') {
                Some(colon) => found.push(authority + colon + 1..at),
                None => found.push(authority..at),
            }
        }
    }
    if let Some(q) = query_at {
        let mut pair_start = q + 1;
        for pair in url[q + 1..before_fragment].split('&') {
            if let Some(eq) = pair.find('=').filter(|&eq| is_secret_param(&pair[..eq])) {
                found.push(pair_start + eq + 1..pair_start + pair.len());
            }
            pair_start += pair.len() + 1;
        }
    }
    found.retain(|r| !r.is_empty());
    found
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
    fn toml_keeps_its_shape_with_secrets_blanked() {
        let toml = "config = { url = \"nats://bob:hunter2@h:4222\", password = \"pw\", token='t0k', key = \".k\" }";
        assert_eq!(blank_toml("név = \"x\"\nä✓=1 password='p' ✓"), "név = \"x\"\nä✓=1 password='*' ✓");
        assert_eq!(
            blank_toml(toml),
            "config = { url = \"nats://bob:*******@h:4222\", password = \"**\", token='***', key = \".k\" }"
        );
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
