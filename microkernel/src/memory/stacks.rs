//! Kernel stacks: each one in its own slot of the stack region, with the
//! lowest page of the slot left unmapped so that an overflow faults instead
//! of corrupting the neighbour.
//!
//! Context: thread context (allocates from the heap).

use alloc::vec::Vec;
use spin::Mutex;

use super::paging::{MapError, kernel_space};
use super::{KERNEL_STACKS_BASE, PAGE_SIZE, frames};
use crate::hv;
use crate::hv::smp::MAX_STACK_SLOTS;
use x86_64::structures::paging::PageTableFlags as Flags;

/// Usable stack size (the guard page comes on top).
pub const STACK_PAGES: u64 = 16;
const SLOT_SIZE: u64 = (STACK_PAGES + 1) * PAGE_SIZE;

struct Slots {
    next: u64,
    free: Vec<u64>,
}

static SLOTS: Mutex<Slots> = Mutex::new(Slots {
    next: 0,
    free: Vec::new(),
});

/// A kernel stack; dropping it unmaps it and frees its frames.
#[derive(Debug)]
pub struct KernelStack {
    slot: u64,
}

impl KernelStack {
    /// A stack for CPU `cpu`: traps taken on it are that CPU's
    /// (`hv::smp::this_cpu`), so it must never run on another.
    pub fn allocate(cpu: usize) -> Result<Self, MapError> {
        let slot = {
            let mut slots = SLOTS.lock();
            match slots.free.pop() {
                Some(slot) => slot,
                None if (slots.next as usize) < MAX_STACK_SLOTS => {
                    slots.next += 1;
                    slots.next - 1
                }
                None => return Err(MapError::OutOfMemory),
            }
        };
        hv::smp::set_stack_region(KERNEL_STACKS_BASE, SLOT_SIZE);
        hv::smp::register_stack(slot as usize, cpu);
        let stack = KernelStack { slot };
        let mut space = kernel_space();
        for page in 0..STACK_PAGES {
            let frame = frames::alloc_zeroed().ok_or(MapError::OutOfMemory)?;
            space.map(
                stack.bottom() + page * PAGE_SIZE,
                frame,
                Flags::WRITABLE | Flags::NO_EXECUTE | Flags::GLOBAL,
            )?;
        }
        Ok(stack)
    }

    /// The lowest usable address (the guard page is just below).
    pub fn bottom(&self) -> u64 {
        KERNEL_STACKS_BASE + self.slot * SLOT_SIZE + PAGE_SIZE
    }

    /// One past the highest usable address: the initial stack pointer.
    pub fn top(&self) -> u64 {
        self.bottom() + STACK_PAGES * PAGE_SIZE
    }
}

impl Drop for KernelStack {
    fn drop(&mut self) {
        // One shootdown for the whole stack: it was in every CPU's kernel
        // half.
        kernel_space().unmap_pages::<{ STACK_PAGES as usize }>(self.bottom(), frames::free);
        SLOTS.lock().free.push(self.slot);
    }
}
