//! LineReader, DataReader and BdatReader: split input gives the same result as whole input.
//! The logic lives in `yizhan_testkit::harness::readers`, shared with the regression test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| yizhan_testkit::harness::readers(data));
