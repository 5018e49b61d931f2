//! Link settings for the `fbp` binary.
//!
//! On Linux with glibc, the dynamic relocations are packed (`DT_RELR`, glibc
//! 2.36 and binutils 2.38 or later): the loader reads a few kilobytes at
//! start-up instead of about 580 KB of `.rela.dyn`, which otherwise stays
//! resident for the life of the process. The binary stays position
//! independent (ASLR). An older linker ignores the option with a warning.

fn main() {
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if linux_gnu {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=cli/build.rs");
}
