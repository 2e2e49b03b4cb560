//! The kernel heap: one physically contiguous block reached through the
//! direct map, managed by linked_list_allocator.
//!
//! Context: any, but not from an interrupt handler that may interrupt an
//! allocation (the allocator's spin lock is not reentrant); the trap path
//! does not allocate.

use linked_list_allocator::LockedHeap;

use super::{PAGE_SIZE, frames, phys_to_virt};

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Carve `bytes` out of physical memory for the heap. Once, after the direct
/// map is live. Returns the heap size actually obtained.
pub fn init(bytes: u64) -> Option<u64> {
    let frames = bytes.div_ceil(PAGE_SIZE);
    let phys = frames::alloc_contiguous(frames)?;
    // SAFETY: the frames are ours for good and mapped through the direct map.
    unsafe {
        HEAP.lock()
            .init(phys_to_virt(phys), (frames * PAGE_SIZE) as usize)
    };
    Some(frames * PAGE_SIZE)
}

/// (size, used) in bytes.
pub fn usage() -> (usize, usize) {
    let heap = HEAP.lock();
    (heap.size(), heap.used())
}
