//! A design candidate measured beside pvchannel, not part of it: a
//! single-producer single-consumer ring whose slots each carry a sequence
//! *stamp*, as crossbeam's `ArrayQueue` and Vyukov's bounded queue do,
//! with no shared index at all (`rounds -- --candidate`).
//!
//! Slot `i & mask` is a cell `{ stamp, item }`. The producer at position
//! `p` may write the cell when its stamp is `p` (the consumer released it a
//! lap ago, or `init` made it so), writes the item, then stores `p + 1`
//! (release). The consumer at position `c` may read it when the stamp is
//! `c + 1` (acquire), copies the item, then stores `c + capacity`. So the
//! readiness of an item travels in the same cache line as the item, and so
//! does the release of its slot, where pvchannel moves two index lines as
//! well. The price: a stamp per item in memory (16-byte cells for `u64`,
//! 128 for a 64-byte descriptor) and a store per item in both directions,
//! batches included.
//!
//! Measured against pvchannel in docs/BENCHMARKS.md ("A ring with a stamp
//! in every slot"); it is kept here so that the figures can be reproduced.

use std::cell::UnsafeCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

#[repr(C)]
struct Cell<T> {
    stamp: AtomicU32,
    item: UnsafeCell<T>,
}

struct Cells<T> {
    cells: Box<[Cell<T>]>,
}

// SAFETY: a cell's item is written only by the producer while the stamp
// says the slot is free and read only by the consumer while it says the
// slot is full; the stamp's release/acquire pairs order the two.
unsafe impl<T: Send> Sync for Cells<T> {}

/// The writing end (128-byte aligned for the reason given at pvchannel's
/// `Producer`).
#[repr(align(128))]
pub struct StampedProducer<T> {
    cells: Arc<Cells<T>>,
    tail: u32,
    mask: u32,
}

/// The reading end.
#[repr(align(128))]
pub struct StampedConsumer<T> {
    cells: Arc<Cells<T>>,
    head: u32,
    /// Items known to be ready from `head` on (a batch's last stamp seen).
    ready: u32,
    mask: u32,
}

/// A ring of `capacity` (a power of two) cells.
pub fn ring<T: Copy + Default>(capacity: usize) -> (StampedProducer<T>, StampedConsumer<T>) {
    assert!(capacity.is_power_of_two() && capacity <= 1 << 24);
    let cells: Box<[Cell<T>]> = (0..capacity)
        .map(|i| Cell {
            stamp: AtomicU32::new(i as u32),
            item: UnsafeCell::new(T::default()),
        })
        .collect();
    let cells = Arc::new(Cells { cells });
    let mask = capacity as u32 - 1;
    (
        StampedProducer {
            cells: cells.clone(),
            tail: 0,
            mask,
        },
        StampedConsumer {
            cells,
            head: 0,
            ready: 0,
            mask,
        },
    )
}

impl<T> Cells<T> {
    #[inline(always)]
    fn cell(&self, position: u32, mask: u32) -> &Cell<T> {
        // SAFETY: `position & mask` is below the capacity, the slice's length.
        unsafe { self.cells.get_unchecked((position & mask) as usize) }
    }
}

impl<T: Copy> StampedProducer<T> {
    #[inline(always)]
    fn free(&self, position: u32) -> bool {
        let cell = self.cells.cell(position, self.mask);
        cell.stamp.load(Ordering::Acquire) == position
    }

    #[inline(always)]
    fn write(&self, position: u32, item: T) {
        let cell = self.cells.cell(position, self.mask);
        // SAFETY: the stamp said the slot is free (checked by the caller),
        // so the consumer does not touch the item until the next stamp.
        unsafe { *cell.item.get() = item };
    }

    /// Write one item; false when the ring is full.
    #[inline(always)]
    pub fn push(&mut self, item: T) -> bool {
        if !self.free(self.tail) {
            return false;
        }
        self.write(self.tail, item);
        let cell = self.cells.cell(self.tail, self.mask);
        self.tail = self.tail.wrapping_add(1);
        cell.stamp.store(self.tail, Ordering::Release);
        true
    }

    /// Write all of `items` or nothing; false when they do not fit.
    #[inline(always)]
    pub fn push_all(&mut self, items: &[T]) -> bool {
        let n = items.len() as u32;
        // The consumer releases in order: the last slot free means all are.
        if n == 0 || !self.free(self.tail.wrapping_add(n - 1)) {
            return n == 0;
        }
        for (k, &item) in items.iter().enumerate() {
            self.write(self.tail.wrapping_add(k as u32), item);
        }
        for k in 0..n {
            let position = self.tail.wrapping_add(k);
            let cell = self.cells.cell(position, self.mask);
            cell.stamp
                .store(position.wrapping_add(1), Ordering::Release);
        }
        self.tail = self.tail.wrapping_add(n);
        true
    }
}

impl<T: Copy> StampedConsumer<T> {
    #[inline(always)]
    fn full(&self, position: u32) -> bool {
        let cell = self.cells.cell(position, self.mask);
        cell.stamp.load(Ordering::Acquire) == position.wrapping_add(1)
    }

    #[inline(always)]
    fn read(&self, position: u32) -> T {
        let cell = self.cells.cell(position, self.mask);
        // SAFETY: the stamp said the slot is full (checked by the caller),
        // and the producer does not write it again until released.
        unsafe { std::ptr::read_volatile(cell.item.get()) }
    }

    #[inline(always)]
    fn release(&self, position: u32) {
        let capacity = self.mask.wrapping_add(1);
        let cell = self.cells.cell(position, self.mask);
        cell.stamp
            .store(position.wrapping_add(capacity), Ordering::Release);
    }

    /// Take one item, or `None` when the ring is empty.
    #[inline(always)]
    pub fn pop(&mut self) -> Option<T> {
        if self.ready == 0 && !self.full(self.head) {
            return None;
        }
        self.ready = self.ready.saturating_sub(1);
        let item = self.read(self.head);
        self.release(self.head);
        self.head = self.head.wrapping_add(1);
        Some(item)
    }

    /// Take up to `out.len()` items; returns how many.
    #[inline(always)]
    pub fn pop_slice(&mut self, out: &mut [T]) -> usize {
        let want = out.len() as u32;
        if self.ready < want && want > 0 {
            // The producer stamps in order: the last stamp of a whole batch
            // ready means all of it is; otherwise count the ready ones.
            let last = self.head.wrapping_add(want - 1);
            if self.full(last) {
                self.ready = want;
            } else {
                let mut n = self.ready;
                while n < want && self.full(self.head.wrapping_add(n)) {
                    n += 1;
                }
                self.ready = n;
            }
        }
        let n = self.ready.min(want);
        for (k, slot) in out.iter_mut().take(n as usize).enumerate() {
            *slot = self.read(self.head.wrapping_add(k as u32));
        }
        for k in 0..n {
            self.release(self.head.wrapping_add(k));
        }
        self.head = self.head.wrapping_add(n);
        self.ready -= n;
        n as usize
    }
}
