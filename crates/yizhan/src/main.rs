//! The `yizhan` binary.
#![forbid(unsafe_code)]

fn main() {}
