//! Instruction-count benchmarks of the protocol core under callgrind (gungraun): the same
//! workloads as `proto.rs`, counted in instructions, which do not drift with machine noise.
//!
//! Needs valgrind and `gungraun-runner` of the same version as the `gungraun` dev-dependency:
//! `cargo install gungraun-runner --version 0.20.0 --locked` (bench/callgrind does it), then
//! `cargo bench -p yizhan-proto --bench proto_instructions`.

use std::hint::black_box;

use gungraun::{library_benchmark, library_benchmark_group, main};

mod common;

#[library_benchmark]
fn command_parse_transaction() -> usize {
    black_box(common::parse_commands())
}

#[library_benchmark]
#[bench::kib_1(common::wire_message(1024))]
#[bench::kib_100(common::wire_message(100 * 1024))]
fn data_reader(wire: Vec<u8>) -> u64 {
    black_box(common::read_data(black_box(&wire), 16 * 1024))
}

#[library_benchmark]
#[bench::kib_1(common::session_script(&common::wire_message(1024)))]
#[bench::kib_100(common::session_script(&common::wire_message(100 * 1024)))]
fn session(script: Vec<Vec<u8>>) -> usize {
    black_box(common::run_session(black_box(&script), 16 * 1024))
}

library_benchmark_group!(
    name = proto;
    benchmarks = command_parse_transaction, data_reader, session
);

main!(library_benchmark_groups = proto);
