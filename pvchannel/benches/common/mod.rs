//! The two-thread drivers shared by the criterion bench (`rings.rs`) and the
//! interleaved-rounds run (`rounds.rs`): pvchannel, rtrb, ringbuf and
//! crossbeam-queue's `ArrayQueue`, each moving `n` items from a producer
//! thread pinned to CPU 0 to a consumer thread pinned to CPU 1. Every ring
//! is driven the same way: single items with `push`/`pop` (each item
//! published and released on its own), spinning with `spin_loop()` while
//! full or empty; batches of 64 with each ring's own batch operations.
//! `stamped` is a design candidate measured beside them, not a peer.
//!
//! rtrb's and ringbuf's slot arrays start on a 128-byte boundary, as
//! pvchannel's do ([`line_aligned`]): where `malloc` put them decided
//! their batch rates by up to 1.37 times on the AMD EPYC development VM.

#![allow(dead_code)]

pub mod record;
pub mod stamped;

use std::hint::{black_box, spin_loop};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use pvchannel::Descriptor;
use ringbuf::traits::{Consumer as _, Producer as _, Split as _};
use ringbuf::{HeapCons, HeapProd, HeapRb};

/// Batch size of the batch workload.
pub const BATCH: usize = 64;

/// The CPUs, read once before anything is pinned (`get_core_ids` lists the
/// calling thread's allowed CPUs, which shrink once it is pinned).
pub fn cpus() -> &'static [core_affinity::CoreId] {
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

/// A value alone in its 128-byte block (two cache lines, the unit of the
/// adjacent-line prefetcher), so that nothing else shares its lines.
#[repr(align(128))]
struct Padded<T>(T);

/// Move `n` items: the producer and the consumer each run on a new thread,
/// pinned to CPU 0 and CPU 1. Returns the time from the start signal until
/// the consumer has received everything.
///
/// Each end is first moved into a cache-padded local on its own thread's
/// stack. Used in place instead, in the closures that `spawn` boxes one
/// after the other on the same heap, the ends' private state (cached
/// indices, written on every operation) can share cache lines between the
/// two threads: in the first runs on the development VM every ring was
/// about 4 times slower that way, and which ring suffered most was a matter
/// of allocation luck. pvchannel's ends are 128-byte aligned since and do
/// not need this; the peers' ends do.
pub fn two_threads<P, C>(
    n: u64,
    (p, c): (P, C),
    produce: impl FnOnce(&mut P, u64) + Send + 'static,
    consume: impl FnOnce(&mut C, u64) + Send + 'static,
) -> Duration
where
    P: Send + 'static,
    C: Send + 'static,
{
    cpus();
    let go = Arc::new(AtomicBool::new(false));
    let consumer = end_thread(1, c, go.clone(), move |c| {
        consume(c, n);
        Instant::now()
    });
    let producer = end_thread(0, p, go.clone(), move |p| produce(p, n));
    // Give both threads time to start spinning on `go`.
    thread::sleep(Duration::from_millis(2));
    let start = Instant::now();
    go.store(true, Ordering::Release);
    producer.join().unwrap();
    let end = consumer.join().unwrap();
    end - start
}

/// One end's thread of [`two_threads`]: pinned to `cpu`, with the end in a
/// cache-padded local, it waits for `go`, then runs `work` on the end.
fn end_thread<E: Send + 'static, R: Send + 'static>(
    cpu: usize,
    end: E,
    go: Arc<AtomicBool>,
    work: impl FnOnce(&mut E) -> R + Send + 'static,
) -> thread::JoinHandle<R> {
    thread::spawn(move || {
        pin(cpu);
        let mut end = Padded(end);
        while !go.load(Ordering::Acquire) {
            spin_loop();
        }
        work(black_box(&mut end.0))
    })
}

/// Where pvchannel's slots start (`SLOTS_OFFSET` in a page-aligned region)
/// and where the peers' are made to start.
pub const SLOTS_ALIGN: usize = 128;

/// Allocations [`line_aligned`] tries before it settles for a misaligned
/// one. Arrays from the heap take a few tries; an array mapped whole
/// (a large one) starts 16 bytes into a page, however often it is tried.
const ALIGN_TRIES: usize = 64;

/// A peer's ends, made again until `slots_addr` (the address of slot 0)
/// is [`SLOTS_ALIGN`]-aligned. A batch of 64 `u64`s that starts 16 bytes
/// into a line spans nine lines and shares one with the next batch, which
/// the producer writes while the consumer reads: pvchannel moved batches
/// 1.2 to 1.37 times as fast as such a ringbuf and more slowly than a
/// line-aligned one, and which one a run got was `malloc`'s choice.
///
/// The misses stay allocated until one fits, so that each try gets a new
/// address, each beside a small block whose size changes from try to try:
/// without it, tries whose allocations summed to a multiple of 128 bytes
/// all landed on the same offset in a line (this happened). After
/// [`ALIGN_TRIES`] it warns and keeps the last one.
pub fn line_aligned<E>(
    name: &str,
    make: impl Fn() -> E,
    slots_addr: impl Fn(&mut E) -> usize,
) -> E {
    let mut misses = Vec::new();
    loop {
        let mut ends = make();
        let addr = slots_addr(&mut ends);
        if addr.is_multiple_of(SLOTS_ALIGN) {
            return ends;
        }
        if misses.len() + 1 == ALIGN_TRIES {
            eprintln!(
                "{name}: slots at {addr:#x}, not {SLOTS_ALIGN}-byte aligned after {ALIGN_TRIES} tries; measured as allocated"
            );
            return ends;
        }
        let shift = Vec::<u8>::with_capacity(8 + 16 * (misses.len() % 7));
        misses.push((ends, shift));
    }
}

fn rtrb_ends<T: Item>(slots: usize) -> (rtrb::Producer<T>, rtrb::Consumer<T>) {
    line_aligned(
        "rtrb",
        || rtrb::RingBuffer::<T>::new(slots),
        // An empty chunk at the start of an empty ring begins at slot 0;
        // dropped uncommitted, it writes nothing.
        |(p, _)| p.write_chunk_uninit(0).unwrap().as_mut_slices().0.as_ptr() as usize,
    )
}

fn ringbuf_ends<T: Item>(slots: usize) -> (HeapProd<T>, HeapCons<T>) {
    line_aligned(
        "ringbuf",
        || HeapRb::<T>::new(slots).split(),
        // An empty ring's vacant space begins at slot 0.
        |(p, _)| p.vacant_slices_mut().0.as_ptr() as usize,
    )
}

/// One item of each type, made from a sequence number.
pub trait Item: Copy + Send + 'static {
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

/// A two-thread run: moves `n` items through a ring of `slots` slots and
/// returns the time taken.
pub type Run = fn(n: u64, slots: usize) -> Duration;

// ---- single items -------------------------------------------------------

/// The single-item workload on any ring: `push` offers one item (false:
/// full), `pop` takes one (`None`: empty). The four rings differ only in
/// those two calls, so all four run this one loop. (Closure types, not
/// function pointers: each ring's calls are inlined into its loop, as they
/// were when every ring had its own copy.)
fn single<T: Item, P: Send + 'static, C: Send + 'static>(
    n: u64,
    ends: (P, C),
    push: impl Fn(&mut P, T) -> bool + Send + 'static,
    pop: impl Fn(&mut C) -> Option<T> + Send + 'static,
) -> Duration {
    two_threads(
        n,
        ends,
        move |p, n| {
            for i in 0..n {
                while !push(p, T::make(i)) {
                    spin_loop();
                }
            }
        },
        move |c, n| {
            for _ in 0..n {
                loop {
                    match pop(c) {
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

pub fn single_pvchannel<T: Item + pvchannel::Slot>(n: u64, slots: usize) -> Duration {
    single(
        n,
        pvchannel::owned::ring::<T>(slots as u32).unwrap(),
        |p, v| p.push(v).is_ok(),
        |c| c.pop().ok(),
    )
}

pub fn single_rtrb<T: Item>(n: u64, slots: usize) -> Duration {
    single(
        n,
        rtrb_ends::<T>(slots),
        |p, v| p.push(v).is_ok(),
        |c| c.pop().ok(),
    )
}

pub fn single_ringbuf<T: Item>(n: u64, slots: usize) -> Duration {
    single(
        n,
        ringbuf_ends::<T>(slots),
        |p, v| p.try_push(v).is_ok(),
        |c| c.try_pop(),
    )
}

pub fn single_arrayqueue<T: Item>(n: u64, slots: usize) -> Duration {
    let q = Arc::new(ArrayQueue::<T>::new(slots));
    single(n, (q.clone(), q), |p, v| p.push(v).is_ok(), |c| c.pop())
}

pub fn single_stamped<T: Item + Default>(n: u64, slots: usize) -> Duration {
    single(n, stamped::ring::<T>(slots), |p, v| p.push(v), |c| c.pop())
}

// ---- batches of 64 ------------------------------------------------------

fn batch_source<T: Item>() -> [T; BATCH] {
    core::array::from_fn(|i| T::make(i as u64))
}

/// The consumer's loop of the batch workload: take up to a batch at a time
/// with `take` (how many it took) until `n` items have come.
fn drain_batches<T: Item, C>(c: &mut C, n: u64, take: impl Fn(&mut C, &mut [T]) -> usize) {
    let mut out = [T::make(0); BATCH];
    let mut got = 0u64;
    while got < n {
        let k = take(c, &mut out);
        if k == 0 {
            spin_loop();
        }
        black_box(&out);
        got += k as u64;
    }
}

/// The batch workload on a ring whose producer writes a whole batch or
/// nothing (`push_all`: false when it does not fit) and whose consumer
/// takes up to a batch (`pop_slice`: how many).
fn batch_whole<T: Item, P: Send + 'static, C: Send + 'static>(
    n: u64,
    ends: (P, C),
    push_all: impl Fn(&mut P, &[T]) -> bool + Send + 'static,
    pop_slice: impl Fn(&mut C, &mut [T]) -> usize + Send + 'static,
) -> Duration {
    two_threads(
        n,
        ends,
        move |p, n| {
            let src = batch_source::<T>();
            for _ in 0..n / BATCH as u64 {
                while !push_all(p, black_box(&src)) {
                    spin_loop();
                }
            }
        },
        move |c, n| drain_batches(c, n, pop_slice),
    )
}

pub fn batch_pvchannel<T: Item + pvchannel::Slot>(n: u64, slots: usize) -> Duration {
    batch_whole(
        n,
        pvchannel::owned::ring::<T>(slots as u32).unwrap(),
        // All 64 or nothing, like rtrb's `write_chunk_uninit(64)`.
        |p, src: &[T]| p.push_all(src).is_ok(),
        |c, out: &mut [T]| c.pop_slice(out).unwrap(),
    )
}

/// rtrb's batch write as the batch workload uses it: all of `src` or
/// nothing (false: it does not fit).
#[inline]
pub fn rtrb_push_all<T: Copy>(p: &mut rtrb::Producer<T>, src: &[T]) -> bool {
    match p.write_chunk_uninit(src.len()) {
        Ok(chunk) => {
            chunk.fill_from_iter(src.iter().copied());
            true
        }
        Err(_) => false,
    }
}

/// rtrb's batch read as the batch workload uses it: up to `out.len()`
/// items into `out`; how many.
#[inline]
pub fn rtrb_pop_slice<T: Copy>(c: &mut rtrb::Consumer<T>, out: &mut [T]) -> usize {
    let k = c.slots().min(out.len());
    if k == 0 {
        return 0;
    }
    let chunk = c.read_chunk(k).unwrap();
    let (a, b) = chunk.as_slices();
    out[..a.len()].copy_from_slice(a);
    out[a.len()..a.len() + b.len()].copy_from_slice(b);
    chunk.commit_all();
    k
}

pub fn batch_rtrb<T: Item>(n: u64, slots: usize) -> Duration {
    batch_whole(n, rtrb_ends::<T>(slots), rtrb_push_all, rtrb_pop_slice)
}

/// The batch workload on a ring whose producer writes as much of a batch
/// as fits (`push_slice`: how many) and whose consumer takes up to a batch
/// (`pop_slice`: how many).
fn batch_partial<T: Item, P: Send + 'static, C: Send + 'static>(
    n: u64,
    ends: (P, C),
    push_slice: impl Fn(&mut P, &[T]) -> usize + Send + 'static,
    pop_slice: impl Fn(&mut C, &mut [T]) -> usize + Send + 'static,
) -> Duration {
    two_threads(
        n,
        ends,
        move |p, n| {
            let src = batch_source::<T>();
            for _ in 0..n / BATCH as u64 {
                let mut sent = 0;
                while sent < BATCH {
                    let k = push_slice(p, black_box(&src[sent..]));
                    if k == 0 {
                        spin_loop();
                    }
                    sent += k;
                }
            }
        },
        move |c, n| drain_batches(c, n, pop_slice),
    )
}

pub fn batch_ringbuf<T: Item>(n: u64, slots: usize) -> Duration {
    batch_partial(
        n,
        ringbuf_ends::<T>(slots),
        |p, src: &[T]| p.push_slice(src),
        |c, out: &mut [T]| c.pop_slice(out),
    )
}

pub fn batch_arrayqueue<T: Item>(n: u64, slots: usize) -> Duration {
    let q = Arc::new(ArrayQueue::<T>::new(slots));
    two_threads(
        n,
        (q.clone(), q),
        |p, n| {
            let src = batch_source::<T>();
            for _ in 0..n / BATCH as u64 {
                for &v in black_box(&src) {
                    while p.push(v).is_err() {
                        spin_loop();
                    }
                }
            }
        },
        |c, n| {
            drain_batches(c, n, |c, out: &mut [T]| {
                let mut k = 0;
                while k < out.len() {
                    match c.pop() {
                        Some(v) => {
                            out[k] = v;
                            k += 1;
                        }
                        None => break,
                    }
                }
                k
            })
        },
    )
}

pub fn batch_stamped<T: Item + Default>(n: u64, slots: usize) -> Duration {
    batch_whole(
        n,
        stamped::ring::<T>(slots),
        |p, src: &[T]| p.push_all(src),
        |c, out: &mut [T]| c.pop_slice(out),
    )
}

/// The design candidate ([`stamped`]) on the four workloads, in the order
/// of [`WORKLOADS`]; not a peer (`rounds -- --candidate`).
pub const CANDIDATE: (&str, [Run; 4]) = (
    "stamped",
    [
        single_stamped::<u64>,
        single_stamped::<Descriptor>,
        batch_stamped::<u64>,
        batch_stamped::<Descriptor>,
    ],
);

/// The four workloads, each with its four rings (pvchannel first).
pub const WORKLOADS: [(&str, [(&str, Run); 4]); 4] = [
    (
        "u64_single",
        [
            ("pvchannel", single_pvchannel::<u64>),
            ("rtrb", single_rtrb::<u64>),
            ("ringbuf", single_ringbuf::<u64>),
            ("arrayqueue", single_arrayqueue::<u64>),
        ],
    ),
    (
        "desc64_single",
        [
            ("pvchannel", single_pvchannel::<Descriptor>),
            ("rtrb", single_rtrb::<Descriptor>),
            ("ringbuf", single_ringbuf::<Descriptor>),
            ("arrayqueue", single_arrayqueue::<Descriptor>),
        ],
    ),
    (
        "u64_batch64",
        [
            ("pvchannel", batch_pvchannel::<u64>),
            ("rtrb", batch_rtrb::<u64>),
            ("ringbuf", batch_ringbuf::<u64>),
            ("arrayqueue", batch_arrayqueue::<u64>),
        ],
    ),
    (
        // The shape of the system's own stream (`cargo xtask stress`):
        // 64-byte descriptors, taken up to a batch at a time.
        "desc64_batch64",
        [
            ("pvchannel", batch_pvchannel::<Descriptor>),
            ("rtrb", batch_rtrb::<Descriptor>),
            ("ringbuf", batch_ringbuf::<Descriptor>),
            ("arrayqueue", batch_arrayqueue::<Descriptor>),
        ],
    ),
];
