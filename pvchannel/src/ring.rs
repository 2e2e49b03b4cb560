//! The two ends of a single-producer single-consumer ring.
//!
//! Context: any (kernel, interrupt handler, server, host thread). No
//! allocation, no blocking, no panics: every operation either succeeds,
//! reports `Full`/`Empty`, or reports a corrupt peer index.
//!
//! Each end keeps its own index privately and only *writes* it to shared
//! memory; the peer's index is read once (acquire), checked against what is
//! possible, and cached. A slot position is always `index & mask` on the
//! private copy, so no value in shared memory can steer an access outside
//! the slot array.

use core::ptr::{self, NonNull};
use core::sync::atomic::compiler_fence;

use crate::layout::{Control, Keep, RingMem, Slot};
use crate::sync::{Intent, Ordering, fence, prefetch_lines, prefetch_read, prefetch_write};

/// Which of the peer's indices was found impossible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerIndex {
    /// The producer index, as read by the consumer.
    Producer,
    /// The consumer index, as read by the producer.
    Consumer,
}

/// Why a ring operation did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RingError {
    /// No free slot (producer side). Not a fault: try again later.
    Full,
    /// Nothing to read (consumer side). Not a fault: try again later.
    Empty,
    /// The peer wrote an impossible index: `seen` lies outside `low..=high`
    /// (it went backwards, or moved further than the ring allows). The end
    /// that saw it is poisoned: every later operation that would read the
    /// peer's index returns this error again.
    Corrupt {
        index: PeerIndex,
        seen: u32,
        low: u32,
        high: u32,
    },
}

impl RingError {
    /// Whether this is a fault of the peer (as opposed to full/empty).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, Self::Corrupt { .. })
    }
}

impl core::fmt::Display for RingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Full => f.write_str("ring full"),
            Self::Empty => f.write_str("ring empty"),
            Self::Corrupt {
                index,
                seen,
                low,
                high,
            } => write!(
                f,
                "corrupt {index:?} index {seen} (possible: {low}..={high})"
            ),
        }
    }
}

/// The virtio event-index rule: having moved an index from `old` to `new`,
/// does the peer who asked to be woken when the index passes `event` need a
/// doorbell? True when `old <= event < new` in wrapping arithmetic.
#[inline]
pub const fn need_event(event: u32, new: u32, old: u32) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Slots of `T` per 64-byte cache line (1 for slots of 64 bytes or more).
const fn items_per_line<T>() -> u32 {
    let size = core::mem::size_of::<T>();
    if size >= 64 { 1 } else { (64 / size) as u32 }
}

/// Prefetch, for `intent`, the lines of slots `from .. from + n` (at most
/// the capacity, `mask + 1`) of the slot array at `slots`, in two pieces
/// where they wrap. Performance only: no correctness depends on it.
#[inline(always)]
fn prefetch_slots<T>(slots: NonNull<T>, mask: u32, from: u32, n: u32, intent: Intent) {
    let size = core::mem::size_of::<T>();
    let start = (from & mask) as usize;
    let first = (n as usize).min(mask as usize + 1 - start);
    let base = slots.as_ptr().cast::<u8>();
    prefetch_lines(base.wrapping_add(start * size), first * size, intent);
    if first < n as usize {
        prefetch_lines(base, (n as usize - first) * size, intent);
    }
}

#[inline]
fn ctrl<'a>(p: NonNull<Control>) -> &'a Control {
    // SAFETY: the region was validated by `init`/`attach`, whose callers
    // promised it stays valid while any end exists; `Control` holds only
    // atomics and a header that we never write through this reference.
    unsafe { p.as_ref() }
}

#[cold]
#[inline(never)]
fn corrupt(index: PeerIndex, seen: u32, low: u32, high: u32) -> RingError {
    RingError::Corrupt {
        index,
        seen,
        low,
        high,
    }
}

// -------------------------------------------------------------------------
// Producer
// -------------------------------------------------------------------------

/// The writing end of a ring.
///
/// Writes are *staged* into slots and become visible to the consumer when
/// *published* (one release store of the producer index, however many
/// slots). [`push`](Self::push) does both for one item;
/// [`push_slice`](Self::push_slice) and [`reserve`](Self::reserve) batch.
/// After publishing, [`needs_doorbell`](Self::needs_doorbell) (or
/// [`flush`](Self::flush)) says whether the consumer asked to be woken.
///
/// The end is aligned to 128 bytes (and so padded to 128): its private
/// state (our index, the cached peer index) is written on every operation,
/// and were it to share a cache line, or the pair of lines an
/// adjacent-line prefetcher fetches together, with the other end's state
/// or anything else another core writes, every item would move that line
/// between the cores. Both ends in one address space (host threads, tests,
/// loopback) are placed wherever the caller puts them: next to each other
/// on one stack or in one allocation is common, and measured on the 2-core
/// development VM that cost about 4 times in throughput (docs/BENCHMARKS.md,
/// "pvchannel rings").
#[repr(align(128))]
pub struct Producer<T: Slot> {
    // Hot fields first: the single-item path touches only these.
    tail: u32,
    head: u32,
    mask: u32,
    capacity: u32,
    slots: NonNull<T>,
    ctrl: NonNull<Control>,
    published: u32,
    kicked: u32,
    poisoned: Option<RingError>,
    _keep: Keep,
}

// SAFETY: the producer end is the only writer of the producer index, the
// producer event index and unpublished slots; moving it to another thread
// moves that exclusive role with it. It is not `Sync` (methods take
// `&mut self`).
unsafe impl<T: Slot> Send for Producer<T> {}

impl<T: Slot> core::fmt::Debug for Producer<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Producer")
            .field("capacity", &self.capacity)
            .field("tail", &self.tail)
            .field("published", &self.published)
            .field("cached_head", &self.head)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl<T: Slot> Producer<T> {
    pub(crate) fn new(mem: RingMem<T>) -> Result<Self, RingError> {
        let c = ctrl(mem.ctrl);
        // Our own index: read once, at claim time only.
        let tail = c.producer.value.load(Ordering::Relaxed);
        let head = c.consumer.value.load(Ordering::Acquire);
        if tail.wrapping_sub(head) > mem.capacity {
            return Err(corrupt(
                PeerIndex::Consumer,
                head,
                tail.wrapping_sub(mem.capacity),
                tail,
            ));
        }
        Ok(Self {
            tail,
            head,
            mask: mem.capacity - 1,
            capacity: mem.capacity,
            slots: mem.slots,
            ctrl: mem.ctrl,
            published: tail,
            kicked: tail,
            poisoned: None,
            _keep: mem.keep,
        })
    }

    /// Number of slots.
    #[inline]
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Items staged but not yet published.
    #[inline]
    pub fn staged(&self) -> u32 {
        self.tail.wrapping_sub(self.published)
    }

    /// The producer index as last published.
    #[inline]
    pub fn published_index(&self) -> u32 {
        self.published
    }

    /// Free slots as last known, without reading shared memory.
    #[inline]
    pub fn free_cached(&self) -> u32 {
        self.capacity - self.tail.wrapping_sub(self.head)
    }

    /// Free slots, reading the consumer index.
    #[inline]
    pub fn free(&mut self) -> Result<u32, RingError> {
        self.refresh()
    }

    /// Read the consumer index once, check it, cache it; return free slots.
    #[inline]
    fn refresh(&mut self) -> Result<u32, RingError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        let seen = ctrl(self.ctrl).consumer.value.load(Ordering::Acquire);
        // The consumer can only have consumed what we published: its index
        // lies in [cached head, published].
        if seen.wrapping_sub(self.head) > self.published.wrapping_sub(self.head) {
            return Err(self.poison(corrupt(
                PeerIndex::Consumer,
                seen,
                self.head,
                self.published,
            )));
        }
        self.head = seen;
        Ok(self.free_cached())
    }

    /// Copy into `out` the published items the consumer has not released
    /// (from the consumer index, read once and checked, up to the
    /// published index), oldest first; returns how many. For a producer
    /// whose consumer is gone, to send them again elsewhere. A consumer
    /// releases in batches, so some of them it may have taken and acted on
    /// already: sending them again suits requests that may be repeated (a
    /// line of output), not ones that must not (a call).
    pub fn unconsumed(&mut self, out: &mut [T]) -> Result<usize, RingError> {
        self.refresh()?;
        let pending = self.published.wrapping_sub(self.head) as usize;
        let n = pending.min(out.len());
        for (i, item) in out.iter_mut().take(n).enumerate() {
            // SAFETY: the slot is in bounds (`slot` masks the index); the
            // dead consumer may have written anything there, and any bit
            // pattern is a valid `T` (`Slot`).
            *item = unsafe { self.slot(self.head.wrapping_add(i as u32)).read_volatile() };
        }
        Ok(n)
    }

    #[cold]
    fn poison(&mut self, e: RingError) -> RingError {
        self.poisoned = Some(e);
        // Look full from now on, so that every write goes through `refresh`
        // and reports the error.
        self.head = self.tail.wrapping_sub(self.capacity);
        e
    }

    #[inline]
    fn slot(&self, index: u32) -> *mut T {
        // SAFETY: `index & mask < capacity` and the region holds `capacity`
        // slots from `slots` (validated at init/attach).
        unsafe { self.slots.as_ptr().add((index & self.mask) as usize) }
    }

    const LINE_ITEMS: u32 = items_per_line::<T>();

    /// How far ahead of the next slot [`stage`](Self::stage) prefetches: 8
    /// lines' worth of items (64 `u64`s, 8 descriptors; 8 items of 64 bytes
    /// or more). Measured per machine state
    /// (docs/BENCHMARKS.md): for 64-byte items 8 lines beat 2 and 4 and
    /// matched 16; for `u64` items one line ahead, the next one, left the
    /// prefetch no time where a line takes 230 ns or more to cross between
    /// the CPUs. On the first development VM 4 lines were as good as 8 or
    /// a little better; on the AMD EPYC VM 8 lines moved 1.08 times as many
    /// as 4 where the CPUs are far apart (82.0 against 75.8 M/s) and as many
    /// where near.
    const AHEAD: u32 = 8 * Self::LINE_ITEMS;

    /// Whether slots `from .. from + n` are all free as far as we know
    /// (cached consumer index), so that prefetching them for writing never
    /// takes a line the consumer may still be reading away from it.
    #[inline(always)]
    fn all_free(&self, from: u32, n: u32) -> bool {
        from.wrapping_add(n).wrapping_sub(self.head) <= self.capacity
    }

    /// Prefetch for writing the lines of slots `from .. from + n` (at most
    /// `capacity`), if they are all free. Performance only: no correctness
    /// depends on it.
    #[inline(always)]
    fn prefetch_free(&self, from: u32, n: u32) {
        if n == 0 || !self.all_free(from, n) {
            return;
        }
        prefetch_slots(self.slots, self.mask, from, n, Intent::Write);
    }

    /// Write one item into the next slot without publishing it.
    // `always`, here and on `push`, `take` and `pop`: in a caller the
    // compiler chose not to inline `push` into (a small closure called
    // through a function pointer), the call and the `Result` passed through
    // memory made a two-thread run about 1.7 times slower (85 against 145
    // M/s for `u64` items).
    #[inline(always)]
    pub fn stage(&mut self, item: T) -> Result<(), RingError> {
        if self.tail.wrapping_sub(self.head) == self.capacity && self.refresh()? == 0 {
            return Err(RingError::Full);
        }
        // SAFETY: the slot is in bounds (`slot`) and free: the consumer has
        // released it (tail - head < capacity), so it no longer reads it.
        unsafe { ptr::write(self.slot(self.tail), item) };
        self.tail = self.tail.wrapping_add(1);
        // Each slot line was last read by the consumer a ring ago, so a store
        // to it must first take it back from the consumer's cache: a cross-
        // core round trip that holds up every later store, the publication
        // of the producer index included. Starting it a few items early
        // hides it (once per line). This was the largest single gain in
        // the two-thread runs: about 1.8 times for 64-byte items and 1.3
        // times for `u64`s (medians of 30 interleaved runs).
        if self.tail.is_multiple_of(Self::LINE_ITEMS) {
            let next = self.tail.wrapping_add(Self::AHEAD);
            if self.all_free(next, Self::LINE_ITEMS) {
                prefetch_write(self.slot(next));
            }
        }
        Ok(())
    }

    /// Make every staged item visible to the consumer: one release store.
    #[inline]
    pub fn publish(&mut self) {
        if self.tail != self.published {
            ctrl(self.ctrl)
                .producer
                .value
                .store(self.tail, Ordering::Release);
            self.published = self.tail;
        }
    }

    /// Stage and publish one item (no doorbell check: see
    /// [`needs_doorbell`](Self::needs_doorbell)).
    #[inline(always)]
    pub fn push(&mut self, item: T) -> Result<(), RingError> {
        self.stage(item)?;
        ctrl(self.ctrl)
            .producer
            .value
            .store(self.tail, Ordering::Release);
        self.published = self.tail;
        Ok(())
    }

    /// Stage as many of `items` as fit, in order, without publishing;
    /// returns how many.
    #[inline]
    pub fn stage_slice(&mut self, items: &[T]) -> Result<usize, RingError> {
        let n = self.copy_in(items)?;
        self.prefetch_next_batch(n);
        Ok(n)
    }

    /// The next batch's lines, as in `stage`: a batch writes whole lines,
    /// each of which would otherwise wait for its round trip in turn.
    /// Callers that publish do so first: the prefetches issued before the
    /// producer index's store held it up, and with it the consumer, by
    /// about as long as they took (publishing first moved batches of 64
    /// `u64`s 1.06 times as fast where the CPUs are near and 1.15 times
    /// where far; docs/BENCHMARKS.md).
    #[inline(always)]
    fn prefetch_next_batch(&self, n: usize) {
        self.prefetch_free(self.tail, n as u32);
    }

    /// Copy as many of `items` as fit into the next slots, in order,
    /// without publishing or prefetching; returns how many.
    #[inline(always)]
    fn copy_in(&mut self, items: &[T]) -> Result<usize, RingError> {
        let want = items.len().min(self.capacity as usize) as u32;
        let mut free = self.free_cached();
        if free < want {
            free = self.refresh()?;
        }
        let n = want.min(free);
        if n == 0 {
            return Ok(0);
        }
        let start = (self.tail & self.mask) as usize;
        let first = (n as usize).min(self.capacity as usize - start);
        // SAFETY: slots `start .. start + first` are in bounds (`first` is
        // at most `capacity - start`) and free (n <= free); `items` has at
        // least `n` elements and is private memory, so the ranges do not
        // overlap.
        unsafe { ptr::copy_nonoverlapping(items.as_ptr(), self.slot(self.tail), first) };
        // Only a batch that wraps needs a second copy (not even an empty
        // one: a call to `memcpy` costs about as much as the index updates).
        if first < n as usize {
            // SAFETY: slots `0 .. n - first` are in bounds (n <= capacity)
            // and free; `items` holds `n` elements, private as above.
            unsafe {
                ptr::copy_nonoverlapping(
                    items.as_ptr().add(first),
                    self.slots.as_ptr(),
                    n as usize - first,
                )
            };
        }
        self.tail = self.tail.wrapping_add(n);
        Ok(n as usize)
    }

    /// Stage as many of `items` as fit and publish them with one store;
    /// returns how many (0 when full).
    #[inline]
    pub fn push_slice(&mut self, items: &[T]) -> Result<usize, RingError> {
        let n = self.copy_in(items)?;
        self.publish();
        self.prefetch_next_batch(n);
        Ok(n)
    }

    /// Stage and publish all of `items` with one store, or nothing
    /// (`Full`) if they do not all fit: a chain of descriptors arrives
    /// whole, and batches stay whole instead of fragmenting on a nearly
    /// full ring.
    #[inline]
    pub fn push_all(&mut self, items: &[T]) -> Result<(), RingError> {
        let want = items.len();
        if want > self.free_cached() as usize && want > self.refresh()? as usize {
            return Err(RingError::Full);
        }
        let n = self.copy_in(items)?;
        self.publish();
        self.prefetch_next_batch(n);
        Ok(())
    }

    /// Reserve up to `max` free slots to fill in place; `Full` if none.
    #[inline]
    pub fn reserve(&mut self, max: usize) -> Result<WriteBatch<'_, T>, RingError> {
        let want = max.min(self.capacity as usize) as u32;
        let mut free = self.free_cached();
        if free < want {
            free = self.refresh()?;
        }
        let len = want.min(free);
        if len == 0 {
            return Err(RingError::Full);
        }
        Ok(WriteBatch { ring: self, len })
    }

    /// After publishing: did the consumer ask for a doorbell for any item
    /// published since the last check? Issues a full fence between the
    /// publication and the read of the consumer's event index (pairs with
    /// the fence in [`Consumer::prepare_wait`]), so a consumer going to
    /// sleep either sees the items or gets the doorbell.
    #[inline]
    #[must_use = "ring the consumer's doorbell when this returns true"]
    pub fn needs_doorbell(&mut self) -> bool {
        // Nothing published since the last check: no item the consumer can
        // be waiting for is new, so no doorbell, and no fence either (a full
        // fence waits for our stores to reach the other core, the costliest
        // part of the check). Every earlier publication was checked, with a
        // fence, by an earlier call.
        if self.published == self.kicked {
            return false;
        }
        fence(Ordering::SeqCst);
        let event = ctrl(self.ctrl).consumer_event.value.load(Ordering::Relaxed);
        let need = need_event(event, self.published, self.kicked);
        self.kicked = self.published;
        need
    }

    /// [`publish`](Self::publish), then
    /// [`needs_doorbell`](Self::needs_doorbell).
    #[inline]
    #[must_use = "ring the consumer's doorbell when this returns true"]
    pub fn flush(&mut self) -> bool {
        self.publish();
        self.needs_doorbell()
    }

    /// Forget the pending doorbell check (the caller rang unconditionally).
    #[inline]
    pub fn mark_notified(&mut self) {
        self.kicked = self.published;
    }

    /// A hint, without a fence: is the consumer waiting for the item right
    /// after the last published one (its event index equals our published
    /// index)? Used by batching to publish early for a sleeping consumer.
    #[inline]
    pub fn consumer_waiting(&self) -> bool {
        ctrl(self.ctrl).consumer_event.value.load(Ordering::Relaxed) == self.published
    }

    /// Before sleeping on a full ring: ask the consumer to ring our doorbell
    /// when it releases a slot, then look again. `Ok(true)`: still full,
    /// safe to sleep (a doorbell will come). `Ok(false)`: space appeared,
    /// do not sleep. Publish staged items (and ring if needed) first, or
    /// the consumer may have nothing to release.
    pub fn prepare_wait(&mut self) -> Result<bool, RingError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        ctrl(self.ctrl)
            .producer_event
            .value
            .store(self.head, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Ok(self.refresh()? == 0)
    }
}

/// Slots reserved by [`Producer::reserve`], filled in place and then
/// committed once. Dropping it without committing stages nothing.
pub struct WriteBatch<'a, T: Slot> {
    ring: &'a mut Producer<T>,
    len: u32,
}

impl<T: Slot> WriteBatch<'_, T> {
    /// Number of reserved slots.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Always false (a batch holds at least one slot).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Write reserved slot `i` (`i < len`; larger indices are ignored, and
    /// are a bug: debug builds assert).
    #[inline]
    pub fn write(&mut self, i: usize, item: T) {
        debug_assert!(i < self.len as usize, "slot {i} outside the reservation");
        if i < self.len as usize {
            // SAFETY: reserved slots are free (see `Producer::stage`), and
            // `slot` masks the index into bounds.
            unsafe { ptr::write(self.ring.slot(self.ring.tail.wrapping_add(i as u32)), item) };
        }
    }

    /// Stage the first `n` slots (all written by the caller), unpublished.
    #[inline]
    pub fn commit(self, n: usize) {
        let n = n.min(self.len as usize) as u32;
        self.ring.tail = self.ring.tail.wrapping_add(n);
    }

    /// Stage the first `n` slots and publish everything staged.
    #[inline]
    pub fn publish(self, n: usize) {
        let n = n.min(self.len as usize) as u32;
        self.ring.tail = self.ring.tail.wrapping_add(n);
        self.ring.publish();
    }
}

// -------------------------------------------------------------------------
// Consumer
// -------------------------------------------------------------------------

/// The reading end of a ring.
///
/// Items are *taken* (copied out of their slot) and the slots later
/// *released* back to the producer (one release store of the consumer
/// index). [`pop`](Self::pop) does both for one item;
/// [`pop_slice`](Self::pop_slice) and [`peek`](Self::peek) batch.
///
/// Aligned to 128 bytes for the reason given at [`Producer`].
#[repr(align(128))]
pub struct Consumer<T: Slot> {
    head: u32,
    tail: u32,
    mask: u32,
    capacity: u32,
    slots: NonNull<T>,
    ctrl: NonNull<Control>,
    released: u32,
    kicked: u32,
    poisoned: Option<RingError>,
    _keep: Keep,
}

// SAFETY: the consumer end is the only writer of the consumer index and the
// consumer event index; moving it moves that exclusive role.
unsafe impl<T: Slot> Send for Consumer<T> {}

impl<T: Slot> core::fmt::Debug for Consumer<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Consumer")
            .field("capacity", &self.capacity)
            .field("head", &self.head)
            .field("released", &self.released)
            .field("cached_tail", &self.tail)
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl<T: Slot> Consumer<T> {
    pub(crate) fn new(mem: RingMem<T>) -> Result<Self, RingError> {
        let c = ctrl(mem.ctrl);
        let head = c.consumer.value.load(Ordering::Relaxed);
        let tail = c.producer.value.load(Ordering::Acquire);
        if tail.wrapping_sub(head) > mem.capacity {
            return Err(corrupt(
                PeerIndex::Producer,
                tail,
                head,
                head.wrapping_add(mem.capacity),
            ));
        }
        Ok(Self {
            head,
            tail,
            mask: mem.capacity - 1,
            capacity: mem.capacity,
            slots: mem.slots,
            ctrl: mem.ctrl,
            released: head,
            kicked: head,
            poisoned: None,
            _keep: mem.keep,
        })
    }

    /// Number of slots.
    #[inline]
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Items available as last known, without reading shared memory.
    #[inline]
    pub fn available_cached(&self) -> u32 {
        self.tail.wrapping_sub(self.head)
    }

    /// Items available, reading the producer index.
    #[inline]
    pub fn available(&mut self) -> Result<u32, RingError> {
        self.refresh()
    }

    /// Items taken but whose slots are not yet released.
    #[inline]
    pub fn unreleased(&self) -> u32 {
        self.head.wrapping_sub(self.released)
    }

    /// The consumer index as last released.
    #[inline]
    pub fn released_index(&self) -> u32 {
        self.released
    }

    /// Read the producer index once, check it, cache it; return available.
    #[inline]
    fn refresh(&mut self) -> Result<u32, RingError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        let seen = ctrl(self.ctrl).producer.value.load(Ordering::Acquire);
        // The producer cannot go back, nor past the slots we released:
        // its index lies in [cached tail, released + capacity].
        let limit = self.released.wrapping_add(self.capacity);
        if seen.wrapping_sub(self.tail) > limit.wrapping_sub(self.tail) {
            return Err(self.poison(corrupt(PeerIndex::Producer, seen, self.tail, limit)));
        }
        self.tail = seen;
        Ok(self.available_cached())
    }

    #[cold]
    fn poison(&mut self, e: RingError) -> RingError {
        self.poisoned = Some(e);
        // Look empty from now on, so every read goes through `refresh`.
        self.tail = self.head;
        e
    }

    #[inline]
    fn slot(&self, index: u32) -> *const T {
        // SAFETY: masked index is below capacity; the region holds
        // `capacity` slots.
        unsafe { self.slots.as_ptr().add((index & self.mask) as usize) }
    }

    /// Copy the next item out of its slot without releasing the slot.
    #[inline(always)]
    pub fn take(&mut self) -> Result<T, RingError> {
        if self.head == self.tail && self.refresh()? == 0 {
            return Err(RingError::Empty);
        }
        // SAFETY: the slot is in bounds and published (head < tail, read
        // with acquire), so the producer finished writing it. A volatile
        // read makes exactly one copy: the caller decodes the copy, never
        // shared memory.
        let item = unsafe { ptr::read_volatile(self.slot(self.head)) };
        self.head = self.head.wrapping_add(1);
        // Small items are taken faster than their lines cross from the
        // producer's core where that takes long: ask for a line a few
        // ahead, once per line, if the producer has published all of it
        // (a line it is still writing would only be taken from it).
        if Self::READ_AHEAD != 0 && self.head.is_multiple_of(Self::LINE_ITEMS) {
            let next = self.head.wrapping_add(Self::READ_AHEAD);
            if Self::READ_AHEAD + Self::LINE_ITEMS <= self.available_cached() {
                prefetch_read(self.slot(next));
            }
        }
        Ok(item)
    }

    const LINE_ITEMS: u32 = items_per_line::<T>();

    /// How far ahead of the next slot [`take`](Self::take) prefetches: 4
    /// lines for items of 16 bytes or less, none for larger ones; and
    /// whether [`pop_slice`](Self::pop_slice) prefetches the next batch.
    /// Measured per machine state (docs/BENCHMARKS.md): for single `u64`
    /// items it was worth 1.34 to 1.45 times where a line takes about 230
    /// ns to cross between the CPUs and nothing where it takes 40, for
    /// batches of 64 `u64`s 1.1 times where far and 1.03 where near; for
    /// single 64-byte items it cost 3 to 5 per cent in both states (32-byte
    /// items, and batches of larger items, were not measured).
    const READ_AHEAD: u32 = if Self::LINE_ITEMS >= 4 {
        4 * Self::LINE_ITEMS
    } else {
        0
    };

    /// Give every taken slot back to the producer: one release store.
    #[inline]
    pub fn release(&mut self) {
        if self.head != self.released {
            ctrl(self.ctrl)
                .consumer
                .value
                .store(self.head, Ordering::Release);
            self.released = self.head;
        }
    }

    /// Take one item and release its slot (no doorbell check: see
    /// [`needs_doorbell`](Self::needs_doorbell)).
    #[inline(always)]
    pub fn pop(&mut self) -> Result<T, RingError> {
        let item = self.take()?;
        ctrl(self.ctrl)
            .consumer
            .value
            .store(self.head, Ordering::Release);
        self.released = self.head;
        Ok(item)
    }

    /// Copy up to `out.len()` items out and release their slots with one
    /// store; returns how many (0 when empty).
    #[inline]
    pub fn pop_slice(&mut self, out: &mut [T]) -> Result<usize, RingError> {
        let want = out.len().min(self.capacity as usize) as u32;
        let mut avail = self.available_cached();
        if avail < want {
            avail = self.refresh()?;
        }
        let n = want.min(avail);
        if n == 0 {
            // Still release what `take` took, as the full path does.
            self.release();
            return Ok(0);
        }
        let start = (self.head & self.mask) as usize;
        let first = (n as usize).min(self.capacity as usize - start);
        // SAFETY: slots `start .. start + first` are in bounds and
        // published; `out` is private memory with room for `n >= first`.
        unsafe { ptr::copy_nonoverlapping(self.slot(self.head), out.as_mut_ptr(), first) };
        // A second copy only for a batch that wraps (see `stage_slice`).
        if first < n as usize {
            // SAFETY: slots `0 .. n - first` are in bounds and published;
            // `out` has room for `n` items.
            unsafe {
                ptr::copy_nonoverlapping(
                    self.slots.as_ptr(),
                    out.as_mut_ptr().add(first),
                    n as usize - first,
                )
            };
        }
        // The copies are the only reads of those slots: later uses read
        // `out`, never shared memory again.
        compiler_fence(Ordering::AcqRel);
        self.head = self.head.wrapping_add(n);
        self.release();
        // The next batch's lines, where they are published already (as in
        // `take`, and for the same items).
        if Self::READ_AHEAD != 0 {
            let ahead = self.available_cached().min(n);
            prefetch_slots(self.slots, self.mask, self.head, ahead, Intent::Read);
        }
        Ok(n as usize)
    }

    /// Look at up to `max` available items in place; `Empty` if none.
    #[inline]
    pub fn peek(&mut self, max: usize) -> Result<ReadBatch<'_, T>, RingError> {
        let want = max.min(self.capacity as usize) as u32;
        let mut avail = self.available_cached();
        if avail < want {
            avail = self.refresh()?;
        }
        let len = want.min(avail);
        if len == 0 {
            return Err(RingError::Empty);
        }
        Ok(ReadBatch { ring: self, len })
    }

    /// After releasing: did the producer ask for a doorbell when space
    /// frees up? Full fence between the release and the read of the
    /// producer's event index (pairs with [`Producer::prepare_wait`]).
    #[inline]
    #[must_use = "ring the producer's doorbell when this returns true"]
    pub fn needs_doorbell(&mut self) -> bool {
        // Nothing released since the last check: as for the producer.
        if self.released == self.kicked {
            return false;
        }
        fence(Ordering::SeqCst);
        let event = ctrl(self.ctrl).producer_event.value.load(Ordering::Relaxed);
        let need = need_event(event, self.released, self.kicked);
        self.kicked = self.released;
        need
    }

    /// [`release`](Self::release), then
    /// [`needs_doorbell`](Self::needs_doorbell).
    #[inline]
    #[must_use = "ring the producer's doorbell when this returns true"]
    pub fn flush(&mut self) -> bool {
        self.release();
        self.needs_doorbell()
    }

    /// Before sleeping on an empty ring: ask the producer to ring our
    /// doorbell when it publishes the next item, then look again.
    /// `Ok(true)`: still empty, safe to sleep. `Ok(false)`: items arrived.
    /// [`flush`](Self::flush) first (and ring if it says so), or a producer
    /// waiting for space may wait forever.
    pub fn prepare_wait(&mut self) -> Result<bool, RingError> {
        if let Some(e) = self.poisoned {
            return Err(e);
        }
        ctrl(self.ctrl)
            .consumer_event
            .value
            .store(self.head, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Ok(self.refresh()? == 0)
    }
}

/// Items found by [`Consumer::peek`]. Each [`get`](Self::get) returns a
/// fresh private copy. Dropping the batch without consuming takes nothing.
pub struct ReadBatch<'a, T: Slot> {
    ring: &'a mut Consumer<T>,
    len: u32,
}

impl<T: Slot> ReadBatch<'_, T> {
    /// Number of items in the batch.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Always false (a batch holds at least one item).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A copy of item `i`, or `None` past the end.
    #[inline]
    pub fn get(&self, i: usize) -> Option<T> {
        if i < self.len as usize {
            // SAFETY: in bounds (masked) and published (i < available).
            Some(unsafe {
                ptr::read_volatile(self.ring.slot(self.ring.head.wrapping_add(i as u32)))
            })
        } else {
            None
        }
    }

    /// Copies of the items, in order.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        (0..self.len as usize).filter_map(|i| self.get(i))
    }

    /// Take the first `n` items without releasing their slots.
    #[inline]
    pub fn consume(self, n: usize) {
        let n = n.min(self.len as usize) as u32;
        self.ring.head = self.ring.head.wrapping_add(n);
    }

    /// Take the first `n` items and release every taken slot.
    #[inline]
    pub fn release(self, n: usize) {
        let n = n.min(self.len as usize) as u32;
        self.ring.head = self.ring.head.wrapping_add(n);
        self.ring.release();
    }
}
