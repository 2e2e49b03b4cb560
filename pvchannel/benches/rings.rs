//! pvchannel rings against rtrb, ringbuf and crossbeam-queue's ArrayQueue,
//! measured in the same run. Producer and consumer threads are pinned to
//! different CPUs (producer: CPU 0, consumer: CPU 1).
//!
//! `cargo bench -p pvchannel --bench rings`; results in docs/BENCHMARKS.md.

use std::hint::{black_box, spin_loop};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_queue::ArrayQueue;
use pvchannel::Descriptor;
use ringbuf::HeapRb;
use ringbuf::traits::{Consumer as _, Producer as _, Split as _};

/// Slots in every ring under test.
const CAP: usize = 4096;
/// Items moved per criterion iteration.
const PER_ITER: u64 = 1 << 16;
/// Batch size of the batch workload.
const BATCH: usize = 64;

/// The CPUs, read once before anything is pinned (`get_core_ids` lists the
/// calling thread's allowed CPUs, which shrink once it is pinned).
fn cpus() -> &'static [core_affinity::CoreId] {
    static CPUS: OnceLock<Vec<core_affinity::CoreId>> = OnceLock::new();
    CPUS.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default())
}

fn pin(cpu: usize) {
    let ids = cpus();
    if let Some(id) = ids.get(cpu % ids.len().max(1)) {
        assert!(
            core_affinity::set_for_current(*id),
            "cannot pin to CPU {cpu}"
        );
    }
}

/// Move `n` items: the consumer runs on a new thread pinned to CPU 1, the
/// producer on this thread (pinned to CPU 0). Returns the time from the
/// start signal until the consumer has received everything.
fn two_threads<P, C>(
    n: u64,
    (mut p, mut c): (P, C),
    produce: impl FnOnce(&mut P, u64),
    consume: impl FnOnce(&mut C, u64) + Send + 'static,
) -> Duration
where
    C: Send + 'static,
{
    pin(0);
    let go = Arc::new(AtomicBool::new(false));
    let go2 = go.clone();
    let consumer = thread::spawn(move || {
        pin(1);
        while !go2.load(Ordering::Acquire) {
            spin_loop();
        }
        consume(&mut c, n);
    });
    // Give the consumer time to start spinning on `go`.
    thread::sleep(Duration::from_millis(1));
    let start = Instant::now();
    go.store(true, Ordering::Release);
    produce(&mut p, n);
    consumer.join().unwrap();
    start.elapsed()
}

/// One item of each type, made from a sequence number.
trait Item: Copy + Send + 'static {
    fn make(i: u64) -> Self;
}
impl Item for u64 {
    #[inline]
    fn make(i: u64) -> Self {
        i
    }
}
impl Item for Descriptor {
    #[inline]
    fn make(i: u64) -> Self {
        Descriptor::new(1, i).with_args([i])
    }
}

// ---- single items -------------------------------------------------------

fn single_pvchannel<T: Item + pvchannel::Slot>(n: u64) -> Duration {
    let ends = pvchannel::owned::ring::<T>(CAP as u32).unwrap();
    two_threads(
        n,
        ends,
        |p, n| {
            for i in 0..n {
                while p.push(T::make(i)).is_err() {
                    spin_loop();
                }
            }
        },
        |c, n| {
            for _ in 0..n {
                loop {
                    match c.pop() {
                        Ok(v) => {
                            black_box(v);
                            break;
                        }
                        Err(_) => spin_loop(),
                    }
                }
            }
        },
    )
}

fn single_rtrb<T: Item>(n: u64) -> Duration {
    two_threads(
        n,
        rtrb::RingBuffer::<T>::new(CAP),
        |p, n| {
            for i in 0..n {
                while p.push(T::make(i)).is_err() {
                    spin_loop();
                }
            }
        },
        |c, n| {
            for _ in 0..n {
                loop {
                    match c.pop() {
                        Ok(v) => {
                            black_box(v);
                            break;
                        }
                        Err(_) => spin_loop(),
                    }
                }
            }
        },
    )
}

fn single_ringbuf<T: Item>(n: u64) -> Duration {
    two_threads(
        n,
        HeapRb::<T>::new(CAP).split(),
        |p, n| {
            for i in 0..n {
                while p.try_push(T::make(i)).is_err() {
                    spin_loop();
                }
            }
        },
        |c, n| {
            for _ in 0..n {
                loop {
                    match c.try_pop() {
                        Some(v) => {
                            black_box(v);
                            break;
                        }
                        None => spin_loop(),
                    }
                }
            }
        },
    )
}

fn single_arrayqueue<T: Item>(n: u64) -> Duration {
    let q = Arc::new(ArrayQueue::<T>::new(CAP));
    two_threads(
        n,
        (q.clone(), q),
        |p, n| {
            for i in 0..n {
                while p.push(T::make(i)).is_err() {
                    spin_loop();
                }
            }
        },
        |c, n| {
            for _ in 0..n {
                loop {
                    match c.pop() {
                        Some(v) => {
                            black_box(v);
                            break;
                        }
                        None => spin_loop(),
                    }
                }
            }
        },
    )
}

// ---- batches of 64 ------------------------------------------------------

fn batch_source() -> [u64; BATCH] {
    core::array::from_fn(|i| i as u64)
}

fn batch_pvchannel(n: u64) -> Duration {
    let ends = pvchannel::owned::ring::<u64>(CAP as u32).unwrap();
    two_threads(
        n,
        ends,
        |p, n| {
            let src = batch_source();
            for _ in 0..n / BATCH as u64 {
                // All 64 or nothing, like rtrb's `write_chunk_uninit(64)`.
                while p.push_all(black_box(&src)).is_err() {
                    spin_loop();
                }
            }
        },
        |c, n| {
            let mut out = [0u64; BATCH];
            let mut got = 0u64;
            while got < n {
                let k = c.pop_slice(&mut out).unwrap();
                if k == 0 {
                    spin_loop();
                }
                black_box(&out);
                got += k as u64;
            }
        },
    )
}

fn batch_rtrb(n: u64) -> Duration {
    two_threads(
        n,
        rtrb::RingBuffer::<u64>::new(CAP),
        |p, n| {
            let src = batch_source();
            for _ in 0..n / BATCH as u64 {
                loop {
                    if let Ok(chunk) = p.write_chunk_uninit(BATCH) {
                        chunk.fill_from_iter(black_box(&src).iter().copied());
                        break;
                    }
                    spin_loop();
                }
            }
        },
        |c, n| {
            let mut out = [0u64; BATCH];
            let mut got = 0u64;
            while got < n {
                let k = c.slots().min(BATCH);
                if k == 0 {
                    spin_loop();
                    continue;
                }
                let chunk = c.read_chunk(k).unwrap();
                let (a, b) = chunk.as_slices();
                out[..a.len()].copy_from_slice(a);
                out[a.len()..a.len() + b.len()].copy_from_slice(b);
                chunk.commit_all();
                black_box(&out);
                got += k as u64;
            }
        },
    )
}

fn batch_ringbuf(n: u64) -> Duration {
    two_threads(
        n,
        HeapRb::<u64>::new(CAP).split(),
        |p, n| {
            let src = batch_source();
            for _ in 0..n / BATCH as u64 {
                let mut sent = 0;
                while sent < BATCH {
                    let k = p.push_slice(black_box(&src[sent..]));
                    if k == 0 {
                        spin_loop();
                    }
                    sent += k;
                }
            }
        },
        |c, n| {
            let mut out = [0u64; BATCH];
            let mut got = 0u64;
            while got < n {
                let k = c.pop_slice(&mut out);
                if k == 0 {
                    spin_loop();
                }
                black_box(&out);
                got += k as u64;
            }
        },
    )
}

fn batch_arrayqueue(n: u64) -> Duration {
    let q = Arc::new(ArrayQueue::<u64>::new(CAP));
    two_threads(
        n,
        (q.clone(), q),
        |p, n| {
            let src = batch_source();
            for _ in 0..n / BATCH as u64 {
                for &v in black_box(&src) {
                    while p.push(v).is_err() {
                        spin_loop();
                    }
                }
            }
        },
        |c, n| {
            let mut out = [0u64; BATCH];
            let mut got = 0u64;
            while got < n {
                let mut k = 0;
                while k < BATCH {
                    match c.pop() {
                        Some(v) => {
                            out[k] = v;
                            k += 1;
                        }
                        None => break,
                    }
                }
                if k == 0 {
                    spin_loop();
                }
                black_box(&out);
                got += k as u64;
            }
        },
    )
}

// ---- the groups ---------------------------------------------------------

/// A named two-thread run: moves `n` items, returns the time taken.
type Run<'a> = (&'a str, fn(u64) -> Duration);

fn throughput_group(c: &mut Criterion, name: &str, runs: [Run<'_>; 4]) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(PER_ITER));
    for (ring, run) in runs {
        g.bench_function(BenchmarkId::from_parameter(ring), |b| {
            b.iter_custom(|iters| run(iters * PER_ITER))
        });
    }
    g.finish();
}

fn rings(c: &mut Criterion) {
    assert!(cpus().len() >= 2, "the benchmark needs two CPUs");
    throughput_group(
        c,
        "u64_single",
        [
            ("pvchannel", single_pvchannel::<u64>),
            ("rtrb", single_rtrb::<u64>),
            ("ringbuf", single_ringbuf::<u64>),
            ("arrayqueue", single_arrayqueue::<u64>),
        ],
    );
    throughput_group(
        c,
        "desc64_single",
        [
            ("pvchannel", single_pvchannel::<Descriptor>),
            ("rtrb", single_rtrb::<Descriptor>),
            ("ringbuf", single_ringbuf::<Descriptor>),
            ("arrayqueue", single_arrayqueue::<Descriptor>),
        ],
    );
    throughput_group(
        c,
        "u64_batch64",
        [
            ("pvchannel", batch_pvchannel),
            ("rtrb", batch_rtrb),
            ("ringbuf", batch_ringbuf),
            ("arrayqueue", batch_arrayqueue),
        ],
    );

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
