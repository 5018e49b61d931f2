//! The JSON reader every payload goes through, with a nesting limit.
//!
//! It reads what jq reads (numbers kept exact: integers of any size, decimals
//! as written) into jq values, on jaq's lexer, and refuses a document nested
//! deeper than the limit before it can recurse any further: a peer that sends
//! `[[[[...` 100 000 levels deep gets a message error, not a stack overflow.

use hifijson::token::{Expect, Lex};
use hifijson::{LexAlloc, SliceLexer};
use jaq_json::{Map, Num, Val};

/// Why a document was refused.
pub(super) enum Error {
    /// Nested deeper than the limit.
    Depth(usize),
    /// Not JSON, at this byte offset.
    Syntax(usize, hifijson::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Depth(limit) => write!(f, "nested deeper than {limit} levels (the flow's `max_depth`)"),
            Error::Syntax(at, e) => write!(f, "byte offset {at}: {e}"),
        }
    }
}

/// Reads exactly one JSON value nested at most `max_depth` levels deep.
pub(super) fn parse(text: &[u8], max_depth: usize) -> Result<Val, Error> {
    let mut lexer = SliceLexer::new(text);
    let mut too_deep = false;
    let r = lexer.exactly_one(ws_peek, |next, lexer| value(next, lexer, max_depth, &mut too_deep));
    r.map_err(|e| match too_deep {
        true => Error::Depth(max_depth),
        false => Error::Syntax(text.len() - lexer.as_slice().len(), e),
    })
}

/// Skips whitespace (and `#` comments, as jq does), then peeks.
fn ws_peek<L: Lex>(lexer: &mut L) -> Option<u8> {
    loop {
        lexer.eat_whitespace();
        match lexer.peek_next() {
            Some(b'#') => lexer.skip_until(|c| c == b'\n'),
            next => return next,
        }
    }
}

/// One value starting at `next`, with `depth` levels of nesting left.
fn value<L: LexAlloc>(next: u8, lexer: &mut L, depth: usize, too_deep: &mut bool) -> Result<Val, hifijson::Error> {
    Ok(match next {
        b'n' if lexer.strip_prefix(b"null") => Val::Null,
        b't' if lexer.strip_prefix(b"true") => Val::Bool(true),
        b'f' if lexer.strip_prefix(b"false") => Val::Bool(false),
        b'N' if lexer.strip_prefix(b"NaN") => Val::Num(Num::Float(f64::NAN)),
        b'I' if lexer.strip_prefix(b"Infinity") => Val::Num(Num::Float(f64::INFINITY)),
        b'0'..=b'9' | b'+' | b'-' => Val::Num(number(lexer)?),
        b'"' => Val::utf8_str(string(lexer.discarded())?),
        b'[' => {
            let d = deeper(depth, too_deep)?;
            let lexer = lexer.discarded();
            let mut items = Vec::new();
            lexer.seq(b']', ws_peek, |next, lexer| {
                items.push(value(next, lexer, d, too_deep)?);
                Ok::<_, hifijson::Error>(())
            })?;
            Val::Arr(items.into())
        }
        b'{' => {
            let d = deeper(depth, too_deep)?;
            let lexer = lexer.discarded();
            let mut map = Map::default();
            lexer.seq(b'}', ws_peek, |next, lexer| {
                let key = value(next, lexer, d, too_deep)?;
                lexer.expect(ws_peek, b':').ok_or(Expect::Colon)?;
                let v = value(ws_peek(lexer).ok_or(Expect::Value)?, lexer, d, too_deep)?;
                map.insert(key, v);
                Ok::<_, hifijson::Error>(())
            })?;
            Val::obj(map)
        }
        _ => Err(Expect::Value)?,
    })
}

/// The levels left inside a container opened with `depth` left, or the
/// depth error (noted, so that it is not reported as a syntax error).
fn deeper(depth: usize, too_deep: &mut bool) -> Result<usize, hifijson::Error> {
    depth.checked_sub(1).ok_or_else(|| {
        *too_deep = true;
        hifijson::Error::Depth
    })
}

/// A number, exact: an integer of any size, or a decimal kept as written.
fn number<L: LexAlloc>(lexer: &mut L) -> Result<Num, hifijson::Error> {
    let (digits, parts) = lexer.num_string_with(hifijson::num::Num::signed_digits()).unvalidated();
    let digits = digits.as_ref();
    Ok(match digits {
        "+" if lexer.strip_prefix(b"Infinity") => Num::Float(f64::INFINITY),
        "-" if lexer.strip_prefix(b"Infinity") => Num::Float(f64::NEG_INFINITY),
        _ if digits.ends_with(|c: char| c.is_ascii_digit()) => match parts.is_int() {
            true => Num::from_str_radix(digits, 10).unwrap_or_else(|| Num::Dec(digits.to_string().into())),
            false => Num::Dec(digits.to_string().into()),
        },
        _ => Err(hifijson::num::Error::ExpectedDigit)?,
    })
}

/// The body of a string whose opening quote is consumed; invalid UTF-8 is
/// kept as it came.
fn string<L: LexAlloc>(lexer: &mut L) -> Result<Vec<u8>, hifijson::Error> {
    let plain = |bytes: &mut L::Bytes, out: &mut Vec<u8>| {
        out.extend(bytes.as_ref());
        Ok(())
    };
    let escaped = |lexer: &mut L, out: &mut Vec<u8>| {
        let c = lexer.take_next().ok_or(hifijson::escape::Error::Eof)?;
        out.extend(lexer.escape(c)?.encode_utf8(&mut [0; 4]).as_bytes());
        Ok(())
    };
    lexer.str_fold(Vec::new(), plain, escaped).map_err(hifijson::Error::Str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Vec<u8> {
        let mut s = vec![b'['; depth];
        s.extend(std::iter::repeat_n(b']', depth));
        s
    }

    #[test]
    fn reads_up_to_the_limit_and_refuses_deeper() {
        assert!(parse(&nested(128), 128).is_ok());
        assert!(matches!(parse(&nested(129), 128), Err(Error::Depth(128))));
        let deep_object = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
        assert!(matches!(parse(deep_object.as_bytes(), 128), Err(Error::Depth(128))));
    }

    #[test]
    fn a_hundred_thousand_levels_is_an_error_not_a_crash() {
        let e = parse(&nested(100_000), 128).err().unwrap();
        assert_eq!(e.to_string(), "nested deeper than 128 levels (the flow's `max_depth`)");
    }

    #[test]
    fn numbers_stay_exact_and_syntax_errors_say_where() {
        let v = parse(b"[1e400, 123456789012345678901234567890, 2.50]", 8).ok().unwrap();
        let Val::Arr(a) = v else { panic!("array") };
        assert!(matches!(&a[0], Val::Num(Num::Dec(s)) if s.as_str() == "1e400"));
        assert!(matches!(&a[1], Val::Num(Num::BigInt(_))));
        assert!(matches!(&a[2], Val::Num(Num::Dec(s)) if s.as_str() == "2.50"));
        let e = parse(br#"{"a": }"#, 8).err().unwrap();
        assert_eq!(e.to_string(), "byte offset 6: value expected");
        assert!(parse(b"[1] 2", 8).is_err());
    }
}
