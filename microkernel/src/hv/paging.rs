//! Family 2, paging: flushing translations and switching address spaces.
//! Page-table entries themselves are ordinary memory that `memory::paging`
//! edits; what needs privilege (and, on a hypervisor, may exit) is here,
//! with the one backend-specific rule about entries: the bits every kernel
//! mapping carries ([`kernel_flags`]).
//!
//! The address space last loaded is kept in memory, so that asking which one
//! is live, or switching to the one that already is, costs no instruction:
//! reading CR3 is as privileged as writing it.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use abi::HvOp;
use x86_64::structures::paging::PageTableFlags;

use super::exits::count;
use super::smp::{MAX_CPUS, this_cpu};

/// Per CPU: the address space it has loaded.
static LOADED_ROOT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Flags every kernel mapping and every table above one carries, beyond
/// what the mapping asks for: `USER_ACCESSIBLE` on pvm, nothing elsewhere.
#[inline]
pub fn kernel_flags() -> PageTableFlags {
    super::backend().kernel_page_flags()
}

/// Drop the translation of one page from this CPU's TLB.
#[inline]
pub fn flush_page(virt: u64) {
    super::backend().flush_page(virt);
}

/// The physical address of the current top-level page table.
#[inline]
pub fn current_address_space() -> u64 {
    LOADED_ROOT[this_cpu()].load(Ordering::Relaxed)
}

/// The CPUs (a bit each) that have the address space at `root_phys`
/// loaded, and so may hold its translations.
pub fn cpus_with_space(root_phys: u64) -> u64 {
    (0..super::smp::online())
        .filter(|&cpu| LOADED_ROOT[cpu].load(Ordering::Relaxed) == root_phys)
        .fold(0, |mask, cpu| mask | (1 << cpu))
}

/// Drop the translations of `pages` wherever one may be cached: on this
/// CPU if `cpus` has it, and on the other CPUs of `cpus` by one shootdown.
pub fn flush_pages_on(cpus: u64, pages: &[u64]) {
    if cpus & (1 << this_cpu()) != 0 {
        pages.iter().copied().for_each(flush_page);
    }
    super::smp::shootdown(cpus, pages);
}

/// Drop every translation of this CPU's TLB, global ones too (toggling
/// CR4.PGE), for a shootdown too large to list.
pub(super) fn flush_all() {
    const CR4_PGE: u64 = 1 << 7;
    count(HvOp::Other);
    count(HvOp::Other);
    // SAFETY: clearing and setting PGE again only empties the TLB.
    unsafe {
        let cr4: u64;
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
        asm!("mov cr4, {}", in(reg) cr4 & !CR4_PGE, options(nostack, preserves_flags));
        asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags));
    }
}

/// Switch to the address space whose top-level table is at `root_phys`;
/// nothing happens when it is already live.
///
/// # Safety
/// The new tables must map the kernel half exactly as the current ones do
/// (the code, stack and data in use).
#[inline]
pub unsafe fn switch_address_space(root_phys: u64) {
    let loaded = &LOADED_ROOT[this_cpu()];
    if loaded.load(Ordering::Relaxed) == root_phys {
        return;
    }
    // SAFETY: the caller's guarantee, passed on.
    unsafe { super::backend().switch_address_space(root_phys) };
    loaded.store(root_phys, Ordering::Relaxed);
}

/// Learn the CR3 this CPU started with, before its first switch.
pub(super) fn init() {
    let cr3: u64;
    count(HvOp::Other);
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags)) };
    LOADED_ROOT[this_cpu()].store(cr3 & !0xfff, Ordering::Relaxed);
}

/// The faulting address of the last page fault (CR2).
#[inline]
pub fn fault_address() -> u64 {
    let cr2: u64;
    count(HvOp::Other);
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    cr2
}

#[inline]
pub(super) fn raw_invlpg(virt: u64) {
    count(HvOp::Invlpg);
    // SAFETY: INVLPG only drops a cached translation.
    unsafe { asm!("invlpg [{}]", in(reg) virt, options(nostack, preserves_flags)) };
}

/// # Safety
/// As for [`switch_address_space`].
#[inline]
pub(super) unsafe fn raw_write_cr3(root_phys: u64) {
    count(HvOp::Cr3Write);
    // SAFETY: the caller guarantees the kernel stays mapped.
    unsafe { asm!("mov cr3, {}", in(reg) root_phys, options(nostack, preserves_flags)) };
}
