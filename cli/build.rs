//! Link settings for the `fbp` binary.
//!
//! On Linux with glibc 2.36 or later, the dynamic relocations are packed
//! (`DT_RELR`, binutils 2.38 or later): the loader reads a few kilobytes at
//! start-up instead of about 580 KB of `.rela.dyn`, which otherwise stays
//! resident for the life of the process. The binary stays position
//! independent (ASLR). Elsewhere (an older glibc, which could not load such a
//! binary, or a cross build) nothing changes; an older linker ignores the
//! option with a warning.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=cli/build.rs");
    let linux_gnu = env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    let native = env::var("HOST").ok() == env::var("TARGET").ok();
    if linux_gnu && native && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether this machine's glibc (`getconf GNU_LIBC_VERSION`: "glibc 2.36")
/// is at least `major.minor`.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().nth(1).unwrap_or("").split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}
