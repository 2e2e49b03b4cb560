//! Family 2, paging: flushing translations and switching address spaces.
//! Page-table entries themselves are ordinary memory that `memory::paging`
//! edits; what needs privilege (and, on a hypervisor, may exit) is here.
//!
//! On one vCPU a flush is a local INVLPG on either backend. KVM's PV TLB
//! flush only helps remote, preempted vCPUs; it joins when the kernel runs
//! more than one CPU.

use core::arch::asm;

/// Drop the translation of one page from this CPU's TLB.
#[inline]
pub fn flush_page(virt: u64) {
    // SAFETY: INVLPG only drops a cached translation.
    unsafe { asm!("invlpg [{}]", in(reg) virt, options(nostack, preserves_flags)) };
}

/// The physical address of the current top-level page table (CR3).
#[inline]
pub fn current_address_space() -> u64 {
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags)) };
    cr3 & !0xfff
}

/// Switch to the address space whose top-level table is at `root_phys`.
///
/// # Safety
/// The new tables must map the kernel half exactly as the current ones do
/// (the code, stack and data in use).
#[inline]
pub unsafe fn switch_address_space(root_phys: u64) {
    // SAFETY: the caller guarantees the kernel stays mapped.
    unsafe { asm!("mov cr3, {}", in(reg) root_phys, options(nostack, preserves_flags)) };
}

/// The faulting address of the last page fault (CR2).
#[inline]
pub fn fault_address() -> u64 {
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    cr2
}
