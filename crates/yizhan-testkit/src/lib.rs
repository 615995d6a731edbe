//! Test helpers for yizhan (dev-only; nothing here ships in the binary). Sans-I/O like the
//! protocol core: the runners that use them live with the tests.
//!
//! | module | what |
//! | --- | --- |
//! | [`dialog`] | the `.dialog` transcript format of the golden dialogues and its one parser ([`dialog::parse_dialog`], [`dialog::read_dialog`]); the runner is `crates/yizhan/tests/dialogs.rs` (the real server, in memory and over TCP) |
//! | [`harness`] | the fuzz harnesses (parser, readers, whole session), shared by `fuzz/` and the regression test that replays crashers |
#![forbid(unsafe_code)]

pub mod dialog;
pub mod harness;

pub use dialog::{Dialog, DialogError, parse_dialog, read_dialog};
