//! An error with its root cause: client libraries often show a bare "db
//! error" or "connection error" and keep the server's text in `source()`.

/// `e` and each of its sources, joined by `: `; a source whose text the
/// line already holds is skipped.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut next = e.source();
    while let Some(source) = next {
        let text = source.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        next = source.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("db error")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn the_root_cause_is_shown_once() {
        let io = || std::io::Error::other("database \"nope\" does not exist");
        assert_eq!(chain(&Outer(io())), "db error: database \"nope\" does not exist");
        assert_eq!(chain(&Repeats(io())), "cannot connect: database \"nope\" does not exist");
    }
}
