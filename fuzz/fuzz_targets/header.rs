//! The header-section scanner that removes forged Authentication-Results fields: total over any
//! bytes, body untouched, idempotent. The logic lives in `yizhan_testkit::harness::header`,
//! shared with the regression test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| yizhan_testkit::harness::header(data));
