//! Link settings for the `fbp` binary.
//!
//! On Linux with glibc 2.36 or later, the dynamic relocations are packed
//! (`DT_RELR`, binutils 2.38 or later): the loader reads a few kilobytes at
//! start-up instead of about 580 KB of `.rela.dyn`, which otherwise stays
//! resident for the life of the process. The binary stays position
//! independent (ASLR). Elsewhere (an older glibc, which could not load such a
//! binary, or a cross build) nothing changes; an older linker ignores the
//! option with a warning.
//!
//! A release build for x86_64 Linux linked by the toolchain's own `rust-lld`
//! (the default since Rust 1.90, unless `RUSTFLAGS` picks a linker) also places
//! the functions listed in `cli/symbol-order.txt` first in `.text`, hottest
//! first: the code an idle or working relay runs then shares a few of the
//! kernel's 64 KB fault-around windows instead of keeping pages resident all
//! over the binary. `scripts/symbol-order.py` regenerates the list; the linker
//! skips names it no longer matches without a warning (`benches/broker_bench.py`
//! counts them), so a stale list costs only the packing.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=cli/build.rs");
    println!("cargo:rerun-if-changed=cli/symbol-order.txt");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let linux_gnu = env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    let native = env::var("HOST").ok() == env::var("TARGET").ok();
    if linux_gnu && native && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let release = env::var("PROFILE").as_deref() == Ok("release");
    if release && native && env::var("TARGET").as_deref() == Ok("x86_64-unknown-linux-gnu") && rust_lld() {
        let order = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("cli/symbol-order.txt");
        if order.is_file() {
            println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
    }
}

/// Whether the link goes through the toolchain's `rust-lld`: rustc 1.90 or
/// later, and no linker chosen in the flags.
fn rust_lld() -> bool {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker") || flags.contains("fuse-ld") {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    version_at_least(Command::new(rustc).arg("--version"), (1, 90))
}

/// Whether this machine's glibc (`getconf GNU_LIBC_VERSION`: "glibc 2.36")
/// is at least `major.minor`.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    version_at_least(Command::new("getconf").arg("GNU_LIBC_VERSION"), (major, minor))
}

/// Whether the second word `command` prints ("glibc 2.36", "rustc 1.95.0 (...)")
/// is a version of at least `(major, minor)`.
fn version_at_least(command: &mut Command, least: (u32, u32)) -> bool {
    let Ok(out) = command.output() else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().nth(1).unwrap_or("").split('.').map(|p| p.parse::<u32>().ok());
    matches!((parts.next().flatten(), parts.next().flatten()), (Some(a), Some(b)) if (a, b) >= least)
}
