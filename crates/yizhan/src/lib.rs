//! The library half of the `yizhan` binary: the configuration file ([`config`]), so that the
//! binary and the tests that run the real server (the golden dialogues in
//! `tests/dialogs.rs`) read the same TOML into the same [`yizhan_server::settings::Settings`].
#![forbid(unsafe_code)]

pub mod ca_file;
pub mod config;
