//! A fixed single-thread workload per ring, for counting instructions per
//! item with callgrind (repeatable where wall-clock time is not). Each
//! ring is driven through the same `#[inline(never)]` functions, so their
//! inclusive instruction counts divided by the items moved are the cost of
//! one `push` and of one `pop`, loop overhead included alike:
//!
//! - `produce_bulk`/`consume_bulk`: fill the ring with single pushes, then
//!   drain it with single pops (the cached peer index is refreshed once
//!   per ring-full: the fast path);
//! - `alternate`: push one item, pop it, repeat (the consumer's cached
//!   producer index is always stale, so every pop reads it, as when a
//!   consumer on another core keeps up with its producer);
//! - `produce_batches`/`consume_batches`: fill the ring in batches of 64,
//!   then drain it in batches of 64, with the operations the two-thread
//!   bench uses.
//!
//! ```text
//! cargo build -p pvchannel --release --example ring_instructions
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     $CARGO_TARGET_DIR/release/examples/ring_instructions pvchannel u64
//! callgrind_annotate --inclusive=yes cg.out | grep -E 'produce|consume|alternate'
//! ```
//!
//! Arguments: the ring (`pvchannel`, `rtrb`, `ringbuf`, `arrayqueue`) and
//! the item (`u64`, `desc64`). Prints the items moved by each function.

use std::hint::black_box;

use crossbeam_queue::ArrayQueue;
use pvchannel::Descriptor;
use ringbuf::traits::{Consumer as _, Producer as _, Split as _};
use ringbuf::{HeapCons, HeapProd, HeapRb};

/// Slots in every ring.
const SLOTS: usize = 1024;
/// Ring-fulls moved by `produce_bulk`/`consume_bulk`.
const ROUNDS: u64 = 1000;
/// Items moved by `alternate`.
const ALTERNATE: u64 = 1_000_000;
// The benches' items and batch size, so that the counts describe the
// workloads the benches time.
#[path = "../benches/common/mod.rs"]
mod common;
use common::{BATCH, Item};

trait Push<T> {
    fn put(&mut self, v: T) -> bool;
    /// All of `items` or nothing, as the two-thread batch bench does.
    fn put_batch(&mut self, items: &[T; BATCH]) -> bool;
}
trait Pop<T> {
    fn get(&mut self) -> Option<T>;
    /// Up to `BATCH` items into `out`; how many.
    fn get_batch(&mut self, out: &mut [T; BATCH]) -> usize;
}

impl<T: pvchannel::Slot> Push<T> for pvchannel::Producer<T> {
    #[inline]
    fn put(&mut self, v: T) -> bool {
        self.push(v).is_ok()
    }
    #[inline]
    fn put_batch(&mut self, items: &[T; BATCH]) -> bool {
        self.push_all(items).is_ok()
    }
}
impl<T: pvchannel::Slot> Pop<T> for pvchannel::Consumer<T> {
    #[inline]
    fn get(&mut self) -> Option<T> {
        self.pop().ok()
    }
    #[inline]
    fn get_batch(&mut self, out: &mut [T; BATCH]) -> usize {
        self.pop_slice(out).unwrap_or(0)
    }
}
impl<T: Copy> Push<T> for rtrb::Producer<T> {
    #[inline]
    fn put(&mut self, v: T) -> bool {
        self.push(v).is_ok()
    }
    #[inline]
    fn put_batch(&mut self, items: &[T; BATCH]) -> bool {
        common::rtrb_push_all(self, items)
    }
}
impl<T: Copy> Pop<T> for rtrb::Consumer<T> {
    #[inline]
    fn get(&mut self) -> Option<T> {
        self.pop().ok()
    }
    #[inline]
    fn get_batch(&mut self, out: &mut [T; BATCH]) -> usize {
        common::rtrb_pop_slice(self, out)
    }
}
impl<T: Copy> Push<T> for HeapProd<T> {
    #[inline]
    fn put(&mut self, v: T) -> bool {
        self.try_push(v).is_ok()
    }
    #[inline]
    fn put_batch(&mut self, items: &[T; BATCH]) -> bool {
        // ringbuf has no all-or-nothing push; the bench loops on
        // `push_slice`, which with room for 64 takes all 64 at once.
        self.push_slice(items) == BATCH
    }
}
impl<T: Copy> Pop<T> for HeapCons<T> {
    #[inline]
    fn get(&mut self) -> Option<T> {
        self.try_pop()
    }
    #[inline]
    fn get_batch(&mut self, out: &mut [T; BATCH]) -> usize {
        self.pop_slice(out)
    }
}
/// `ArrayQueue` is one shared object: both ends are a reference to it.
struct Aq<'a, T>(&'a ArrayQueue<T>);
impl<T: Copy> Push<T> for Aq<'_, T> {
    #[inline]
    fn put(&mut self, v: T) -> bool {
        self.0.push(v).is_ok()
    }
    #[inline]
    fn put_batch(&mut self, items: &[T; BATCH]) -> bool {
        // No batch operation: 64 single pushes, as in the bench.
        items.iter().all(|&v| self.0.push(v).is_ok())
    }
}
impl<T: Copy> Pop<T> for Aq<'_, T> {
    #[inline]
    fn get(&mut self) -> Option<T> {
        self.0.pop()
    }
    #[inline]
    fn get_batch(&mut self, out: &mut [T; BATCH]) -> usize {
        let mut k = 0;
        while k < BATCH {
            match self.0.pop() {
                Some(v) => {
                    out[k] = v;
                    k += 1;
                }
                None => break,
            }
        }
        k
    }
}

#[inline(never)]
fn produce_bulk<T: Item>(p: &mut impl Push<T>, start: u64, n: u64) {
    for i in start..start + n {
        let ok = p.put(T::make(i));
        assert!(ok);
    }
}

#[inline(never)]
fn consume_bulk<T: Item>(c: &mut impl Pop<T>, n: u64) {
    for _ in 0..n {
        black_box(c.get().unwrap());
    }
}

#[inline(never)]
fn alternate<T: Item>(p: &mut impl Push<T>, c: &mut impl Pop<T>, n: u64) {
    for i in 0..n {
        let ok = p.put(T::make(i));
        assert!(ok);
        black_box(c.get().unwrap());
    }
}

#[inline(never)]
fn produce_batches<T: Item>(p: &mut impl Push<T>, batches: usize) {
    let src: [T; BATCH] = core::array::from_fn(|i| T::make(i as u64));
    for _ in 0..batches {
        let ok = p.put_batch(black_box(&src));
        assert!(ok);
    }
}

#[inline(never)]
fn consume_batches<T: Item>(c: &mut impl Pop<T>, batches: usize) {
    let mut out = [T::make(0); BATCH];
    for _ in 0..batches {
        let n = c.get_batch(&mut out);
        assert_eq!(n, BATCH);
        black_box(&out);
    }
}

fn drive<T: Item>(p: &mut impl Push<T>, c: &mut impl Pop<T>) {
    for r in 0..ROUNDS {
        produce_bulk(p, r * SLOTS as u64, SLOTS as u64);
        consume_bulk(c, SLOTS as u64);
    }
    alternate(p, c, ALTERNATE);
    for _ in 0..ROUNDS {
        produce_batches(p, SLOTS / BATCH);
        consume_batches(c, SLOTS / BATCH);
    }
    println!(
        "produce_bulk and consume_bulk: {} items each; alternate: {ALTERNATE} items; \
         produce_batches and consume_batches: {} items each",
        ROUNDS * SLOTS as u64,
        ROUNDS * SLOTS as u64,
    );
}

fn run<T: Item + pvchannel::Slot>(ring: &str) {
    match ring {
        "pvchannel" => {
            let (mut p, mut c) = pvchannel::owned::ring::<T>(SLOTS as u32).unwrap();
            drive(&mut p, &mut c);
        }
        "rtrb" => {
            let (mut p, mut c) = rtrb::RingBuffer::<T>::new(SLOTS);
            drive(&mut p, &mut c);
        }
        "ringbuf" => {
            let (mut p, mut c) = HeapRb::<T>::new(SLOTS).split();
            drive(&mut p, &mut c);
        }
        "arrayqueue" => {
            let q = ArrayQueue::<T>::new(SLOTS);
            drive(&mut Aq(&q), &mut Aq(&q));
        }
        _ => panic!("ring: pvchannel, rtrb, ringbuf or arrayqueue"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ring = args.get(1).map_or("pvchannel", String::as_str);
    match args.get(2).map_or("u64", String::as_str) {
        "u64" => run::<u64>(ring),
        "desc64" => run::<Descriptor>(ring),
        _ => panic!("item: u64 or desc64"),
    }
}
