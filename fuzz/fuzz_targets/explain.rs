//! `yizhan explain` on any bytes, as a transcript and as a packet capture: never panics, in
//! every language and format. The logic lives in `yizhan_testkit::harness::explain`, shared
//! with the regression test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| yizhan_testkit::harness::explain(data));
