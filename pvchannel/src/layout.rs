//! The shared-memory layout of a ring and of a duplex channel, and the
//! functions that format a fresh region ([`init`]) or validate an existing
//! one ([`attach`]).
//!
//! Context: any. No allocation. The region is raw memory (in the system,
//! physical pages mapped into two address spaces at different addresses),
//! so the layout holds no pointers, only indices and offsets.

use core::marker::PhantomData;
use core::ptr::{self, NonNull};

use crate::ring::{Consumer, Producer, RingError};
use crate::sync::AtomicU32;

/// Marks a type that may be a ring slot.
///
/// # Safety
/// The type must be plain old data: `Copy`, every bit pattern a valid value
/// (the peer may write anything), no padding bytes (writing a value must not
/// leak uninitialised memory to the peer), no pointers or references, and
/// an alignment of at most 64.
pub unsafe trait Slot: Copy + Send + 'static {}

macro_rules! plain_slots {
    ($($t:ty),*) => {$(
        // SAFETY: a primitive integer: every bit pattern is valid, no padding.
        unsafe impl Slot for $t {}
    )*};
}
plain_slots!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

// SAFETY: an array of slots has no padding between elements and every bit
// pattern of each element is valid, so the same holds for the array.
unsafe impl<T: Slot, const N: usize> Slot for [T; N] {}

/// `"PVRG"` read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"PVRG");
/// Layout version this crate writes and accepts. Version 1 put the four
/// indices on consecutive 64-byte lines (slots at 320); version 2 gives
/// each a 128-byte block of its own (`IndexLine`).
pub const VERSION: u32 = 2;
/// Feature bit: the event indices are maintained (always set by this crate).
pub const FEATURE_EVENT_IDX: u32 = 1 << 0;
/// Every feature bit this version understands; `attach` rejects others.
pub const KNOWN_FEATURES: u32 = FEATURE_EVENT_IDX;

/// Size of a cache line, the unit of the layout.
pub const CACHE_LINE: usize = 64;
/// Size of a page; regions are sized in whole pages.
pub const PAGE_SIZE: usize = abi::layout::PAGE_SIZE as usize;
/// Largest capacity (slots) of one ring.
pub const MAX_CAPACITY: u32 = 1 << 24;

/// Byte offset of the [`RingHeader`].
pub const HEADER_OFFSET: usize = 0;
/// Byte offset of the producer index (written by the producer only).
pub const PRODUCER_INDEX_OFFSET: usize = 128;
/// Byte offset of the consumer index (written by the consumer only).
pub const CONSUMER_INDEX_OFFSET: usize = 256;
/// Byte offset of the consumer's event index (written by the consumer:
/// "ring my doorbell when the producer index passes this").
pub const CONSUMER_EVENT_OFFSET: usize = 384;
/// Byte offset of the producer's event index (written by the producer:
/// "ring my doorbell when the consumer index passes this").
pub const PRODUCER_EVENT_OFFSET: usize = 512;
/// Byte offset of slot 0.
pub const SLOTS_OFFSET: usize = 640;

/// The first cache line of a ring: written once by [`init`], read once and
/// validated by [`attach`].
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingHeader {
    /// [`MAGIC`].
    pub magic: u32,
    /// [`VERSION`].
    pub version: u32,
    /// Feature bits (`FEATURE_*`).
    pub features: u32,
    /// Number of slots, a power of two.
    pub capacity: u32,
    /// `size_of` the slot type, in bytes.
    pub slot_size: u32,
    /// Byte offset of slot 0 from the start of the ring ([`SLOTS_OFFSET`]).
    pub slots_offset: u32,
    /// Zero.
    pub reserved: [u32; 10],
}

/// One index alone on its cache line, and that line followed by an empty
/// one, so that the two sides never write the same line and no line one
/// side writes on every item is next to a line the other side does.
///
/// The second line is for the processors' adjacent-line prefetchers: on a
/// miss, Intel's spatial prefetcher fetches the other line of the aligned
/// 128-byte pair, and AMD's optimization guides describe an L2 prefetcher
/// that fetches the next or the previous line. With the indices on
/// consecutive lines (layout version 1) single `u64` items moved at 0.57 to
/// 0.67 times rtrb's rate on the 2-core AMD EPYC development VM, and at 1.0
/// to 1.2 times with the empty lines (docs/BENCHMARKS.md, "pvchannel
/// rings"): each side's misses on the other's index presumably pulled along
/// a line the other side writes on every item (the VM cannot switch the
/// prefetchers off to tell which one).
#[repr(C, align(128))]
pub(crate) struct IndexLine {
    pub(crate) value: AtomicU32,
}

/// Everything before the slots.
#[repr(C)]
pub(crate) struct Control {
    pub(crate) header: RingHeader,
    pub(crate) producer: IndexLine,
    pub(crate) consumer: IndexLine,
    pub(crate) consumer_event: IndexLine,
    pub(crate) producer_event: IndexLine,
}

const _: () = {
    assert!(core::mem::size_of::<RingHeader>() == CACHE_LINE);
    assert!(core::mem::offset_of!(Control, header) == HEADER_OFFSET);
    assert!(core::mem::offset_of!(Control, producer) == PRODUCER_INDEX_OFFSET);
    assert!(core::mem::offset_of!(Control, consumer) == CONSUMER_INDEX_OFFSET);
    assert!(core::mem::offset_of!(Control, consumer_event) == CONSUMER_EVENT_OFFSET);
    assert!(core::mem::offset_of!(Control, producer_event) == PRODUCER_EVENT_OFFSET);
    assert!(core::mem::size_of::<Control>() == SLOTS_OFFSET);
    // Each index fills a 128-byte block whose second line nothing uses
    // (`IndexLine`): with the offsets above, every one of them starts on a
    // 128-byte boundary.
    assert!(core::mem::size_of::<IndexLine>() == 2 * CACHE_LINE);
    assert!(core::mem::align_of::<IndexLine>() == 2 * CACHE_LINE);
};

/// Why a region cannot hold (or does not hold) a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The region's start is not 64-byte aligned (or is null).
    Misaligned,
    /// The region is shorter than the ring needs.
    TooSmall { needed: usize, len: usize },
    /// The capacity is zero, not a power of two, or above [`MAX_CAPACITY`].
    BadCapacity(u32),
    /// The slot type is zero-sized, larger than a page, or aligned above 64.
    BadSlotType,
    /// The header's magic is not [`MAGIC`].
    BadMagic(u32),
    /// The header's version is not [`VERSION`].
    BadVersion(u32),
    /// The header has feature bits this version does not know.
    UnknownFeatures(u32),
    /// The header's slot size is not the size of the slot type used.
    SlotSizeMismatch { expected: u32, found: u32 },
    /// The header's slot offset is not [`SLOTS_OFFSET`].
    BadSlotsOffset(u32),
    /// The indices in the region contradict each other (attach to a ring in
    /// use whose producer index is more than `capacity` ahead).
    Indices(RingError),
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Misaligned => f.write_str("ring region is not 64-byte aligned"),
            Self::TooSmall { needed, len } => {
                write!(f, "ring region too small: {len} bytes, {needed} needed")
            }
            Self::BadCapacity(c) => write!(f, "bad ring capacity {c}"),
            Self::BadSlotType => f.write_str("slot type unusable in a ring"),
            Self::BadMagic(m) => write!(f, "bad ring magic {m:#x}"),
            Self::BadVersion(v) => write!(f, "unsupported ring version {v}"),
            Self::UnknownFeatures(b) => write!(f, "unknown ring feature bits {b:#x}"),
            Self::SlotSizeMismatch { expected, found } => {
                write!(f, "slot size {found}, expected {expected}")
            }
            Self::BadSlotsOffset(o) => write!(f, "bad slot offset {o}"),
            Self::Indices(e) => write!(f, "ring indices: {e}"),
        }
    }
}

const fn slot_type_ok<T>() -> bool {
    let size = core::mem::size_of::<T>();
    size != 0 && size <= PAGE_SIZE && core::mem::align_of::<T>() <= CACHE_LINE
}

const fn capacity_ok(capacity: u32) -> bool {
    capacity != 0 && capacity.is_power_of_two() && capacity <= MAX_CAPACITY
}

/// Bytes one ring of `capacity` slots of `slot_size` bytes occupies,
/// rounded up to whole 4096-byte pages; `None` if the capacity is invalid
/// or the size overflows.
pub const fn ring_bytes_for(capacity: u32, slot_size: usize) -> Option<usize> {
    if !capacity_ok(capacity) || slot_size == 0 {
        return None;
    }
    let Some(slots) = (capacity as usize).checked_mul(slot_size) else {
        return None;
    };
    let Some(raw) = slots.checked_add(SLOTS_OFFSET) else {
        return None;
    };
    match raw.checked_add(PAGE_SIZE - 1) {
        Some(r) => Some(r & !(PAGE_SIZE - 1)),
        None => None,
    }
}

/// Bytes (whole pages) a ring of `capacity` slots of type `T` needs.
pub const fn ring_bytes<T: Slot>(capacity: u32) -> Option<usize> {
    if !slot_type_ok::<T>() {
        return None;
    }
    ring_bytes_for(capacity, core::mem::size_of::<T>())
}

/// Bytes (whole pages) a duplex channel needs: a ring of `cap_a` slots of
/// `A` followed, on the next page, by a ring of `cap_b` slots of `B`.
pub const fn duplex_bytes<A: Slot, B: Slot>(cap_a: u32, cap_b: u32) -> Option<usize> {
    match (ring_bytes::<A>(cap_a), ring_bytes::<B>(cap_b)) {
        (Some(a), Some(b)) => a.checked_add(b),
        _ => None,
    }
}

/// A validated ring region: its layout is checked, but no side has claimed
/// it yet. Turn it into a [`Producer`], a [`Consumer`], or both.
pub struct RingMem<T: Slot> {
    pub(crate) ctrl: NonNull<Control>,
    pub(crate) slots: NonNull<T>,
    pub(crate) capacity: u32,
    pub(crate) keep: Keep,
    _slot: PhantomData<T>,
}

// SAFETY: `RingMem` is a capability to claim ends of a ring whose memory
// the creator promised (in `init`/`attach`) is valid and shared on purpose;
// the ends it yields are `Send` (see there).
unsafe impl<T: Slot> Send for RingMem<T> {}

/// What keeps a heap-backed region alive (nothing for caller-provided memory).
#[derive(Clone, Default)]
pub(crate) struct Keep {
    #[cfg(any(test, feature = "alloc"))]
    _region: Option<alloc::sync::Arc<crate::owned::HeapRegion>>,
}

fn check_region<T: Slot>(mem: *mut u8, len: usize, capacity: u32) -> Result<(), LayoutError> {
    if !slot_type_ok::<T>() {
        return Err(LayoutError::BadSlotType);
    }
    if mem.is_null() || !(mem as usize).is_multiple_of(CACHE_LINE) {
        return Err(LayoutError::Misaligned);
    }
    if !capacity_ok(capacity) {
        return Err(LayoutError::BadCapacity(capacity));
    }
    // The slots need not fill the last page: a region is only required to
    // hold the bytes actually used.
    let needed = SLOTS_OFFSET + capacity as usize * core::mem::size_of::<T>();
    if len < needed {
        return Err(LayoutError::TooSmall { needed, len });
    }
    Ok(())
}

/// Format a fresh ring of `capacity` slots of `T` at `mem`.
///
/// Writes the header, zeroes the indices and the consumer event (the
/// consumer waits for item 0), sets the producer event to `u32::MAX` (the
/// producer waits for nothing); slot contents are left as
/// they are (zero them first if the previous contents must not leak to the
/// peer).
///
/// # Safety
/// `mem` must be valid for reads and writes of `len` bytes for as long as
/// the returned value or any end made from it exists, and nothing else in
/// this program may access those bytes meanwhile (the peer in another
/// address space may, even with hostile intent: that cannot cause undefined
/// behaviour here beyond garbage data, which the ends detect or pass on).
pub unsafe fn init<T: Slot>(
    mem: *mut u8,
    len: usize,
    capacity: u32,
) -> Result<RingMem<T>, LayoutError> {
    check_region::<T>(mem, len, capacity)?;
    let ctrl = mem.cast::<Control>();
    let header = RingHeader {
        magic: MAGIC,
        version: VERSION,
        features: KNOWN_FEATURES,
        capacity,
        slot_size: core::mem::size_of::<T>() as u32,
        slots_offset: SLOTS_OFFSET as u32,
        reserved: [0; 10],
    };
    // SAFETY: the region is 64-byte aligned and at least SLOTS_OFFSET bytes
    // long (checked above), the caller gives us exclusive use of it, so
    // writing a `Control` (header plus freshly created atomics) is in bounds
    // and aligned.
    unsafe {
        ptr::write(
            ctrl,
            Control {
                header,
                producer: IndexLine {
                    value: AtomicU32::new(0),
                },
                consumer: IndexLine {
                    value: AtomicU32::new(0),
                },
                consumer_event: IndexLine {
                    value: AtomicU32::new(0),
                },
                // The consumer starts out waiting for item 0; the producer
                // starts out not waiting (-1: "passed" before anything).
                producer_event: IndexLine {
                    value: AtomicU32::new(u32::MAX),
                },
            },
        );
    }
    // SAFETY: `ctrl` is `mem` cast, non-null (checked).
    Ok(unsafe { RingMem::from_raw(mem, capacity) })
}

/// Validate the ring already formatted at `mem` (by [`init`], perhaps in
/// another address space) and return it.
///
/// Reads each header field exactly once; the capacity used from then on is
/// the validated private copy, whatever the peer writes later.
///
/// # Safety
/// As for [`init`]: `mem` valid for reads and writes of `len` bytes while
/// the result or its ends live, and no other access from this program.
pub unsafe fn attach<T: Slot>(mem: *mut u8, len: usize) -> Result<RingMem<T>, LayoutError> {
    check_region::<T>(mem, len, 1)?;
    let h = mem.cast::<RingHeader>();
    // SAFETY: the region is aligned and holds at least a header (checked
    // with capacity 1); volatile reads because the peer may change the
    // bytes at any time: each field is read once into a private copy.
    let (magic, version, features, capacity, slot_size, slots_offset) = unsafe {
        (
            ptr::read_volatile(&raw const (*h).magic),
            ptr::read_volatile(&raw const (*h).version),
            ptr::read_volatile(&raw const (*h).features),
            ptr::read_volatile(&raw const (*h).capacity),
            ptr::read_volatile(&raw const (*h).slot_size),
            ptr::read_volatile(&raw const (*h).slots_offset),
        )
    };
    if magic != MAGIC {
        return Err(LayoutError::BadMagic(magic));
    }
    if version != VERSION {
        return Err(LayoutError::BadVersion(version));
    }
    if features & !KNOWN_FEATURES != 0 {
        return Err(LayoutError::UnknownFeatures(features & !KNOWN_FEATURES));
    }
    let expected = core::mem::size_of::<T>() as u32;
    if slot_size != expected {
        return Err(LayoutError::SlotSizeMismatch {
            expected,
            found: slot_size,
        });
    }
    if slots_offset != SLOTS_OFFSET as u32 {
        return Err(LayoutError::BadSlotsOffset(slots_offset));
    }
    check_region::<T>(mem, len, capacity)?;
    // SAFETY: validated above: aligned, non-null, long enough for
    // `capacity` slots.
    Ok(unsafe { RingMem::from_raw(mem, capacity) })
}

impl<T: Slot> RingMem<T> {
    /// # Safety
    /// `mem` is non-null, 64-byte aligned and valid for a `Control` plus
    /// `capacity` slots of `T`, under the contract of [`init`].
    unsafe fn from_raw(mem: *mut u8, capacity: u32) -> Self {
        // SAFETY: non-null per the contract; SLOTS_OFFSET is within the
        // region, so the slot pointer is in bounds and non-null.
        unsafe {
            Self {
                ctrl: NonNull::new_unchecked(mem.cast()),
                slots: NonNull::new_unchecked(mem.add(SLOTS_OFFSET).cast()),
                capacity,
                keep: Keep::default(),
                _slot: PhantomData,
            }
        }
    }

    /// Number of slots (a power of two).
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Bytes this ring occupies in its region (whole pages).
    pub fn bytes(&self) -> usize {
        ring_bytes::<T>(self.capacity).unwrap_or(0)
    }

    #[cfg(any(test, feature = "alloc"))]
    pub(crate) fn with_keep(mut self, region: alloc::sync::Arc<crate::owned::HeapRegion>) -> Self {
        self.keep = Keep {
            _region: Some(region),
        };
        self
    }

    fn twin(&self) -> Self {
        Self {
            ctrl: self.ctrl,
            slots: self.slots,
            capacity: self.capacity,
            keep: self.keep.clone(),
            _slot: PhantomData,
        }
    }

    /// Claim the producer end. Reads both indices once and checks that they
    /// are consistent.
    pub fn into_producer(self) -> Result<Producer<T>, RingError> {
        Producer::new(self)
    }

    /// Claim the consumer end. Reads both indices once and checks that they
    /// are consistent.
    pub fn into_consumer(self) -> Result<Consumer<T>, RingError> {
        Consumer::new(self)
    }

    /// Claim both ends (both sides in one address space: tests, loopback).
    pub fn split(self) -> Result<(Producer<T>, Consumer<T>), RingError> {
        let twin = self.twin();
        Ok((Producer::new(self)?, Consumer::new(twin)?))
    }
}

/// One shared region holding two rings: requests `A` from client to server
/// at offset 0, and completions `B` from server to client on the following
/// page ([`ring_bytes`]`::<A>(cap_a)` bytes in).
///
/// ```text
/// 0                          ring_bytes::<A>(cap_a)             duplex_bytes
/// +--------------------------+----------------------------------+
/// | ring A: requests  ->     | ring B: completions  <-          |
/// +--------------------------+----------------------------------+
/// ```
pub struct Duplex<A: Slot, B: Slot> {
    /// Client -> server.
    pub requests: RingMem<A>,
    /// Server -> client.
    pub completions: RingMem<B>,
}

/// Client end of a duplex channel: sends requests, receives completions.
pub type ClientEnds<A, B> = (Producer<A>, Consumer<B>);
/// Server end of a duplex channel: receives requests, sends completions.
pub type ServerEnds<A, B> = (Consumer<A>, Producer<B>);

/// Format a fresh duplex channel at `mem`.
///
/// # Safety
/// As for [`init`], for the whole `len` bytes.
pub unsafe fn init_duplex<A: Slot, B: Slot>(
    mem: *mut u8,
    len: usize,
    cap_a: u32,
    cap_b: u32,
) -> Result<Duplex<A, B>, LayoutError> {
    let Some(a_len) = ring_bytes::<A>(cap_a) else {
        return Err(LayoutError::BadCapacity(cap_a));
    };
    if len < a_len {
        return Err(LayoutError::TooSmall {
            needed: a_len + SLOTS_OFFSET,
            len,
        });
    }
    // SAFETY: the caller's contract covers the whole region; ring A gets the
    // first `a_len` bytes and ring B the rest, which do not overlap.
    unsafe {
        let requests = init::<A>(mem, a_len, cap_a)?;
        let completions = init::<B>(mem.add(a_len), len - a_len, cap_b)?;
        Ok(Duplex {
            requests,
            completions,
        })
    }
}

/// Validate an existing duplex channel at `mem`. The second ring's offset
/// is derived from the first ring's validated header.
///
/// # Safety
/// As for [`init`], for the whole `len` bytes.
pub unsafe fn attach_duplex<A: Slot, B: Slot>(
    mem: *mut u8,
    len: usize,
) -> Result<Duplex<A, B>, LayoutError> {
    // SAFETY: caller's contract; ring A is validated within `len`.
    let requests = unsafe { attach::<A>(mem, len)? };
    let a_len = requests.bytes();
    if len < a_len {
        return Err(LayoutError::TooSmall {
            needed: a_len + SLOTS_OFFSET,
            len,
        });
    }
    // SAFETY: `a_len <= len`, so ring B's region is the rest of the caller's
    // region and does not overlap ring A.
    let completions = unsafe { attach::<B>(mem.add(a_len), len - a_len)? };
    Ok(Duplex {
        requests,
        completions,
    })
}

impl<A: Slot, B: Slot> Duplex<A, B> {
    /// The client's ends: request producer, completion consumer.
    pub fn client(self) -> Result<ClientEnds<A, B>, RingError> {
        Ok((
            self.requests.into_producer()?,
            self.completions.into_consumer()?,
        ))
    }

    /// The server's ends: request consumer, completion producer.
    pub fn server(self) -> Result<ServerEnds<A, B>, RingError> {
        Ok((
            self.requests.into_consumer()?,
            self.completions.into_producer()?,
        ))
    }
}
