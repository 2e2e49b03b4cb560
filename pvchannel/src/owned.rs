//! Heap-backed regions for host tests, benchmarks and tools (feature
//! `alloc`). The system uses [`init`](crate::init) over mapped pages
//! instead.

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use alloc::sync::Arc;
use core::ptr::NonNull;

use crate::layout::{
    self, ClientEnds, LayoutError, PAGE_SIZE, ServerEnds, Slot, duplex_bytes, ring_bytes,
};
use crate::ring::{Consumer, Producer};

/// Zeroed, page-aligned heap memory standing in for shared pages.
pub struct HeapRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain memory whose only users are ring ends, which
// synchronise through the atomics inside it.
unsafe impl Send for HeapRegion {}
// SAFETY: as above; `HeapRegion` itself exposes only the raw pointer.
unsafe impl Sync for HeapRegion {}

impl HeapRegion {
    /// `len` bytes (rounded up to whole pages, at least one), zeroed.
    /// Panics if the allocation fails (host only).
    pub fn new(len: usize) -> Self {
        let len = len.max(1).next_multiple_of(PAGE_SIZE);
        let layout = Layout::from_size_align(len, PAGE_SIZE).expect("region layout");
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            alloc::alloc::handle_alloc_error(layout)
        };
        Self { ptr, len }
    }

    /// Start of the region.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes (a multiple of 4096).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for HeapRegion {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this exact layout.
        unsafe {
            dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.len, PAGE_SIZE),
            )
        };
    }
}

/// A fresh heap-backed ring of `capacity` slots; both ends keep the memory
/// alive.
pub fn ring<T: Slot>(capacity: u32) -> Result<(Producer<T>, Consumer<T>), LayoutError> {
    let len = ring_bytes::<T>(capacity).ok_or(LayoutError::BadCapacity(capacity))?;
    let region = Arc::new(HeapRegion::new(len));
    // SAFETY: the region is valid, page aligned, `len` bytes, and kept
    // alive by the `Arc` each end holds; nothing else touches it.
    let mem = unsafe { layout::init::<T>(region.as_ptr(), region.len(), capacity)? };
    mem.with_keep(region).split().map_err(LayoutError::Indices)
}

/// A fresh heap-backed duplex channel: the client's and the server's ends.
#[allow(clippy::type_complexity)]
pub fn duplex<A: Slot, B: Slot>(
    cap_a: u32,
    cap_b: u32,
) -> Result<(ClientEnds<A, B>, ServerEnds<A, B>), LayoutError> {
    let len = duplex_bytes::<A, B>(cap_a, cap_b).ok_or(LayoutError::BadCapacity(cap_a))?;
    let region = Arc::new(HeapRegion::new(len));
    // SAFETY: as in `ring`; both rings lie within the region.
    let d = unsafe { layout::init_duplex::<A, B>(region.as_ptr(), region.len(), cap_a, cap_b)? };
    let (req_p, req_c) = d
        .requests
        .with_keep(region.clone())
        .split()
        .map_err(LayoutError::Indices)?;
    let (comp_p, comp_c) = d
        .completions
        .with_keep(region)
        .split()
        .map_err(LayoutError::Indices)?;
    Ok(((req_p, comp_c), (req_c, comp_p)))
}

/// A [`WakerPair`](crate::WakerPair) shared by two threads: the doorbells
/// of side 0 and side 1.
pub fn doorbell_pair() -> (
    crate::PairDoorbell<Arc<crate::WakerPair>>,
    crate::PairDoorbell<Arc<crate::WakerPair>>,
) {
    let pair = Arc::new(crate::WakerPair::new());
    (
        crate::PairDoorbell::new(pair.clone(), 0),
        crate::PairDoorbell::new(pair, 1),
    )
}
