//! Model-specific registers: the numbers the kernel uses, and access,
//! including a guarded read that survives an MSR the machine lacks (for
//! probing a hypervisor's interface).

use core::arch::asm;

use abi::HvOp;

use super::exits::count;
use super::fixup::read_edx_eax_guarded;

pub const APIC_BASE: u32 = 0x1B;
pub const TSC_DEADLINE: u32 = 0x6E0;
pub const EFER: u32 = 0xC000_0080;
pub const STAR: u32 = 0xC000_0081;
pub const LSTAR: u32 = 0xC000_0082;
pub const SFMASK: u32 = 0xC000_0084;
pub const GS_BASE: u32 = 0xC000_0101;
pub const KERNEL_GS_BASE: u32 = 0xC000_0102;
/// KVM's PV EOI: guest-physical address of a 4-byte flag, bit 0 enables.
pub const KVM_PV_EOI_EN: u32 = 0x4b56_4d04;

/// # Safety
/// `msr` must exist on this CPU.
#[inline]
pub unsafe fn read(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    count(HvOp::Rdmsr);
    // SAFETY: the caller guarantees the MSR exists.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Read `msr`, or `None` if the CPU raised #GP because it has no such MSR.
/// The fault is recovered through the kernel's fixup table
/// ([`super::fixup`]): only before servers run, and only here.
pub fn read_guarded(msr: u32) -> Option<u64> {
    count(HvOp::Rdmsr);
    // SAFETY: RDMSR either reads the MSR or raises #GP, which the fixup
    // entry the macro emits beside it turns into `None`.
    unsafe { read_edx_eax_guarded!("rdmsr", msr) }
}

/// # Safety
/// `msr` must exist and `value` must be valid for it and keep the kernel's
/// invariants (segments, paging, entry points).
#[inline]
pub unsafe fn write(msr: u32, value: u64) {
    count(HvOp::Wrmsr);
    // SAFETY: the caller guarantees the write is valid.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    };
}
