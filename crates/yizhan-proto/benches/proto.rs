//! Wall-clock micro-benchmarks of the protocol core (criterion): the command parser, the DATA
//! reader, and a full in-memory session. `cargo bench -p yizhan-proto --bench proto`.
//!
//! Wall-clock numbers on a shared VM drift with machine noise; the instruction counts of
//! `proto_instructions.rs` (same workloads, callgrind) are the regression gate.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use yizhan_proto::command::Command;

mod common;

fn command_parser(c: &mut Criterion) {
    let mut group = c.benchmark_group("command_parse");
    for (name, line) in common::COMMANDS {
        group.throughput(Throughput::Bytes(line.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), line, |b, line| {
            b.iter(|| Command::parse(black_box(line)))
        });
    }
    group.finish();
}

fn data_reader(c: &mut Criterion) {
    let mut group = c.benchmark_group("data_reader");
    for size in [1024usize, 100 * 1024] {
        let wire = common::wire_message(size);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        // 16 KiB reads, as the server's socket buffer delivers them.
        group.bench_with_input(BenchmarkId::from_parameter(size), &wire, |b, wire| {
            b.iter(|| common::read_data(black_box(wire), 16 * 1024))
        });
    }
    group.finish();
}

fn session(c: &mut Criterion) {
    let mut group = c.benchmark_group("session");
    for size in [1024usize, 100 * 1024] {
        let script = common::session_script(&common::wire_message(size));
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(size), &script, |b, script| {
            b.iter(|| common::run_session(black_box(script), 16 * 1024))
        });
    }
    group.finish();
}

criterion_group!(benches, command_parser, data_reader, session);
criterion_main!(benches);
