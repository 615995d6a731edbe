//! Command::parse, and the format/parse round trip of every command it accepts.
//! The logic lives in `yizhan_testkit::harness::command`, shared with the regression test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| yizhan_testkit::harness::command(data));
