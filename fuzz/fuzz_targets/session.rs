//! A whole ServerSession fed arbitrary bytes in arbitrary chunks, every question accepted.
//! The logic lives in `yizhan_testkit::harness::session`, shared with the regression test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| yizhan_testkit::harness::session(data));
