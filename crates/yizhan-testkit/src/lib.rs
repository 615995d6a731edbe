//! Test helpers for yizhan (dev-only; nothing here ships in the binary).
//!
//! | module | what |
//! | --- | --- |
//! | [`fake`] | [`fake::FakePolicy`], the answers the golden dialogues expect (it mirrors the test configuration of the real server), and [`fake::InMemoryServer`], a `ServerSession` driven in memory by it |
//! | [`dialog`] | the `.dialog` transcript format: [`dialog::parse_dialog`] (shared with the TCP runner) and [`dialog::run_dialog_in_memory`] |
//! | [`harness`] | the fuzz harnesses (parser, readers, whole session), shared by `fuzz/` and the regression test that replays crashers |
#![forbid(unsafe_code)]

pub mod dialog;
pub mod fake;
pub mod harness;

pub use dialog::{Dialog, DialogError, parse_dialog, run_dialog, run_dialog_in_memory};
pub use fake::{FakePolicy, FakeSettings, InMemoryServer};
