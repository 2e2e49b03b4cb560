//! Memory: the physical frame allocator, the kernel's page tables and
//! address-space layout, kernel stacks with guard pages, and the heap.
//!
//! Virtual layout (the kernel half is shared by every address space):
//!
//! ```text
//! 0x0000_0000_0000_0000 .. 0x0000_7FFF_FFFF_FFFF  user space (per server)
//! 0xFFFF_8000_0000_0000 .. 0xFFFF_807F_FFFF_FFFF  PML4 slot 256: never mapped (see below)
//! 0xFFFF_8080_0000_0000 ..                        direct map of physical memory (RW, NX)
//! 0xFFFF_C000_0000_0000 ..                        kernel stacks, each under a guard page
//! 0xFFFF_D000_0000_0000 ..                        device memory the kernel maps (local APIC)
//! 0xFFFF_FFFF_8000_0000 ..                        kernel image: text RX, rodata R, data RW+NX
//! ```

pub mod frames;
pub mod heap;
pub mod paging;
pub mod stacks;

use core::sync::atomic::{AtomicU64, Ordering};

pub const PAGE_SIZE: u64 = abi::layout::PAGE_SIZE;
/// Where all of physical memory is mapped once the kernel's tables are live:
/// PML4 slot 257. Slot 256 stays empty on every backend, because the pvm
/// backend's hypervisor takes a reserved-bit fault on any access there, and
/// one layout for all backends keeps the kernel the same code everywhere.
pub const PHYS_OFFSET: u64 = 0xFFFF_8080_0000_0000;
pub const KERNEL_STACKS_BASE: u64 = 0xFFFF_C000_0000_0000;
pub const KERNEL_MMIO_BASE: u64 = 0xFFFF_D000_0000_0000;
pub const KERNEL_BASE: u64 = boot::KERNEL_BASE;

/// How physical memory is reached right now: through the boot identity map
/// (offset 0) until the kernel's own tables are live, then the direct map.
static PHYS_ACCESS_OFFSET: AtomicU64 = AtomicU64::new(0);

/// A kernel pointer to physical address `phys`.
pub fn phys_to_virt(phys: u64) -> *mut u8 {
    (phys + PHYS_ACCESS_OFFSET.load(Ordering::Relaxed)) as *mut u8
}

fn set_phys_access_offset(offset: u64) {
    PHYS_ACCESS_OFFSET.store(offset, Ordering::Relaxed);
}

/// The physical address behind `virt`, a pointer [`phys_to_virt`] made.
pub fn virt_to_phys(virt: *const u8) -> u64 {
    (virt as u64).wrapping_sub(PHYS_ACCESS_OFFSET.load(Ordering::Relaxed))
}

/// The physical address of a kernel image address.
pub fn image_virt_to_phys(virt: u64) -> u64 {
    virt - KERNEL_BASE
}

/// Zero one 4 KiB page at `page`.
///
/// One `rep stosq` rather than the compiler's 16-byte store loop: where a
/// hypervisor interprets the kernel (PVM with `hv=native`), every
/// instruction costs about a microsecond, and a loop of 256 stores per page
/// made loading the default servers take seconds.
///
/// # Safety
/// `page` is a writable, 8-byte aligned 4 KiB region no one else uses.
pub unsafe fn zero_page(page: *mut u8) {
    // SAFETY: the caller's guarantee; DF is clear in the kernel (the trap
    // path runs CLD, and nothing sets it).
    unsafe {
        core::arch::asm!(
            "rep stosq",
            inout("rdi") page => _,
            inout("rcx") PAGE_SIZE / 8 => _,
            in("rax") 0u64,
            options(nostack, preserves_flags)
        )
    };
}

/// Copy `len` bytes from `src` to `dst`: eight at a time in one `rep movsq`,
/// the rest in one `rep movsb`. Where a hypervisor interprets the kernel
/// (PVM with `hv=native`) every iteration of a string instruction costs
/// about a microsecond (see [`zero_page`]): a page copied by `rep movsb`
/// (4096 iterations) took 5 ms; by quadwords it is 512.
///
/// # Safety
/// As for `core::ptr::copy_nonoverlapping`.
pub unsafe fn copy_bytes(dst: *mut u8, src: *const u8, len: usize) {
    // SAFETY: the caller's guarantee for both ranges; DF is clear (see
    // `zero_page`); unaligned quadwords are fine on x86. RDI and RSI are
    // left past the quadwords for the bytes that remain.
    unsafe {
        core::arch::asm!(
            "rep movsq",
            "mov rcx, {rest}",
            "rep movsb",
            rest = in(reg) len % 8,
            inout("rdi") dst => _,
            inout("rsi") src => _,
            inout("rcx") len / 8 => _,
            options(nostack, preserves_flags)
        )
    };
}

pub const fn align_up(value: u64, align: u64) -> u64 {
    (value + align - 1) & !(align - 1)
}

pub const fn align_down(value: u64, align: u64) -> u64 {
    value & !(align - 1)
}
