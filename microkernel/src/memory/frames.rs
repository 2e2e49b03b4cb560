//! The physical frame allocator: 4 KiB frames from the free ranges computed
//! by `physmem` (which never include the kernel image, the boot structures
//! or the initrd). Fresh frames come from a bump pointer over the ranges in
//! ascending order; freed frames go on a list threaded through the frames
//! themselves.
//!
//! Context: any; callers hold the lock with interrupts masked.

use spin::Mutex;

use super::{PAGE_SIZE, phys_to_virt};
use crate::hv;
use microkernel::physmem::FreeRanges;

pub struct FrameAllocator {
    ranges: FreeRanges,
    range_index: usize,
    next: u64,
    free_list: Option<u64>,
    total: u64,
    in_use: u64,
}

static FRAMES: Mutex<Option<FrameAllocator>> = Mutex::new(None);

/// Hand the allocator its free ranges. Once, at boot.
pub fn init(ranges: FreeRanges) {
    let total = ranges.total_bytes() / PAGE_SIZE;
    let next = ranges.as_slice().first().map_or(0, |r| r.start);
    *FRAMES.lock() = Some(FrameAllocator {
        ranges,
        range_index: 0,
        next,
        free_list: None,
        total,
        in_use: 0,
    });
}

impl FrameAllocator {
    fn bump(&mut self, frames: u64) -> Option<u64> {
        let bytes = frames * PAGE_SIZE;
        while let Some(range) = self.ranges.as_slice().get(self.range_index) {
            if self.next < range.start {
                self.next = range.start;
            }
            if self.next + bytes <= range.end {
                let frame = self.next;
                self.next += bytes;
                self.in_use += frames;
                return Some(frame);
            }
            self.range_index += 1;
        }
        None
    }

    fn alloc(&mut self) -> Option<u64> {
        if let Some(frame) = self.free_list {
            // SAFETY: every frame on the free list was handed back by `free`
            // and holds the address of the next free frame in its first word.
            self.free_list = match unsafe { phys_to_virt(frame).cast::<u64>().read() } {
                0 => None,
                next => Some(next),
            };
            self.in_use += 1;
            return Some(frame);
        }
        self.bump(1)
    }

    fn free(&mut self, frame: u64) {
        // SAFETY: the caller gave the frame back; nothing else uses it, so
        // its first word may hold the list link.
        unsafe {
            phys_to_virt(frame)
                .cast::<u64>()
                .write(self.free_list.unwrap_or(0))
        };
        self.free_list = Some(frame);
        self.in_use -= 1;
    }
}

fn with<R>(f: impl FnOnce(&mut FrameAllocator) -> R) -> Option<R> {
    hv::interrupts::without(|| FRAMES.lock().as_mut().map(f))
}

/// One zeroed frame.
pub fn alloc_zeroed() -> Option<u64> {
    let frame = with(FrameAllocator::alloc).flatten()?;
    // SAFETY: the frame is ours and reachable through the current physical
    // access window.
    unsafe { super::zero_page(phys_to_virt(frame)) };
    Some(frame)
}

/// `count` physically contiguous frames, not zeroed (for the heap).
pub fn alloc_contiguous(count: u64) -> Option<u64> {
    with(|a| a.bump(count)).flatten()
}

/// Give a frame back.
pub fn free(frame: u64) {
    with(|a| a.free(frame));
}

/// (total, in use) frames.
pub fn usage() -> (u64, u64) {
    with(|a| (a.total, a.in_use)).unwrap_or((0, 0))
}
