//! pvchannel rings against rtrb, ringbuf and crossbeam-queue's ArrayQueue,
//! measured in the same run. Producer and consumer threads are pinned to
//! different CPUs (producer: CPU 0, consumer: CPU 1); the drivers are in
//! `common/mod.rs`, shared with the interleaved-rounds run (`rounds.rs`).
//!
//! `cargo bench -p pvchannel --bench rings`; results in docs/BENCHMARKS.md.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use ringbuf::HeapRb;
use ringbuf::traits::{Consumer as _, Producer as _, Split as _};

use common::{Run, WORKLOADS, cpus};

/// Slots in every ring under test.
const CAP: usize = 4096;
/// Items moved per criterion iteration.
const PER_ITER: u64 = 1 << 16;

// ---- the groups ---------------------------------------------------------

fn throughput_group(c: &mut Criterion, name: &str, runs: &[(&str, Run); 4]) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(PER_ITER));
    for &(ring, run) in runs {
        g.bench_function(BenchmarkId::from_parameter(ring), |b| {
            b.iter_custom(|iters| run(iters * PER_ITER, CAP))
        });
    }
    g.finish();
}

fn rings(c: &mut Criterion) {
    assert!(cpus().len() >= 2, "the benchmark needs two CPUs");
    for (name, runs) in &WORKLOADS {
        throughput_group(c, name, runs);
    }

    // Same-thread round trip: push one item and pop it again.
    let mut g = c.benchmark_group("roundtrip_same_thread");
    g.throughput(Throughput::Elements(1));
    {
        let (mut p, mut q) = pvchannel::owned::ring::<u64>(CAP as u32).unwrap();
        g.bench_function("pvchannel", |b| {
            b.iter(|| {
                p.push(black_box(7)).unwrap();
                q.pop().unwrap()
            })
        });
    }
    {
        let (mut p, mut q) = rtrb::RingBuffer::<u64>::new(CAP);
        g.bench_function("rtrb", |b| {
            b.iter(|| {
                p.push(black_box(7)).unwrap();
                q.pop().unwrap()
            })
        });
    }
    {
        let (mut p, mut q) = HeapRb::<u64>::new(CAP).split();
        g.bench_function("ringbuf", |b| {
            b.iter(|| {
                p.try_push(black_box(7)).unwrap();
                q.try_pop().unwrap()
            })
        });
    }
    {
        let q = ArrayQueue::<u64>::new(CAP);
        g.bench_function("arrayqueue", |b| {
            b.iter(|| {
                q.push(black_box(7)).unwrap();
                q.pop().unwrap()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = rings
}
criterion_main!(benches);
