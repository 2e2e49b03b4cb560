//! PVH boot: the first code that runs.
//!
//! QEMU (or any PVH loader) enters `pvh_start32` in 32-bit protected mode with
//! paging off and `ebx` holding the physical address of `hvm_start_info`. The
//! entry code in [`entry`] builds early page tables that map the first 4 GiB
//! twice, identity and at the top 2 GiB (where the kernel is linked), turns on
//! long mode, and calls [`boot_rust_entry`], which copies everything the kernel
//! needs out of `hvm_start_info` into a [`BootInfo`] and calls the kernel's
//! `kernel_main`. Nothing here allocates: the boot structures are fixed-size
//! copies, so the kernel may drop the identity map and reuse low memory.
//!
//! Context: single CPU, interrupts off, on the boot stack.
#![no_std]

#[cfg(target_os = "none")]
mod entry;
pub mod info;

pub use info::{BootInfo, MemoryKind, MemoryRegion, Module};

/// Where the kernel image is linked: the top 2 GiB of the address space, so the
/// lower half stays free for user space. Physical address `p` of the image is
/// virtual `KERNEL_BASE + p`.
pub const KERNEL_BASE: u64 = 0xFFFF_FFFF_8000_0000;

#[cfg(target_os = "none")]
unsafe extern "Rust" {
    /// Provided by the kernel: never returns.
    fn kernel_main(info: &'static BootInfo) -> !;
}

#[cfg(target_os = "none")]
/// Called by the 64-bit entry code on the boot stack, identity map still live.
///
/// # Safety
/// `start_info_phys` is what the loader passed in `ebx`; the identity map of
/// the first 4 GiB is live.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn boot_rust_entry(start_info_phys: u64) -> ! {
    // SAFETY: the loader's structure is identity-mapped; `parse` checks the
    // magic before trusting anything else, and this runs once, before any
    // other reader of BOOT_INFO exists.
    let info = unsafe { info::parse_into_static(start_info_phys) };
    // SAFETY: the kernel provides `kernel_main`; it receives a fully built
    // BootInfo that lives for the rest of the run.
    unsafe { kernel_main(info) }
}
