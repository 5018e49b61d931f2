//! File descriptors: the process's limit, raised at start, and the share of
//! it a listener may take by default, so that one listener's flood of clients
//! never leaves another without a descriptor to accept with.

use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::resource::{Resource, getrlimit, setrlimit};

static LIMIT: AtomicU64 = AtomicU64::new(0);

/// Raises the soft limit on open descriptors to the hard limit (once) and
/// returns it.
pub fn raise_limit() -> u64 {
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() => hard,
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    };
    LIMIT.store(soft, Ordering::Relaxed);
    soft
}

/// The limit on open descriptors, as [`raise_limit`] left it.
pub fn limit() -> u64 {
    match LIMIT.load(Ordering::Relaxed) {
        0 => raise_limit(),
        n => n,
    }
}

/// A listener's default cap on its connections: `wanted`, or a quarter of
/// the descriptor limit when that is less, leaving the rest for the other
/// listeners, clients, files and databases of the flow.
pub fn connection_cap(wanted: usize) -> usize {
    wanted.min(usize::try_from(limit() / 4).unwrap_or(usize::MAX)).max(1)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one_and_caps_fit_in_it() {
        let raised = super::raise_limit();
        let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((soft, raised), (hard, hard));
        assert!(super::connection_cap(usize::MAX) as u64 <= hard / 4);
        assert_eq!(super::connection_cap(1), 1);
    }
}
