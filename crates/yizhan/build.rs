//! Link flags for the `yizhan` binary.
//!
//! On GNU/Linux the binary is linked with packed relative relocations (`-z
//! pack-relative-relocs`, DT_RELR, glibc 2.36 and binutils 2.38 or later): a PIE binary's
//! hundreds of KiB of `R_X86_64_RELATIVE` entries shrink to a few KiB, which the dynamic loader
//! reads at every start and which otherwise stay resident (file-backed memory of every
//! `yizhan serve`, see bench/README.md). The binary stays position independent (ASLR).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
