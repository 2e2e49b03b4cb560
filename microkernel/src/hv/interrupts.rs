//! Family 1, interrupt masking: disable, enable, save/restore, halt until an
//! interrupt. The kernel calls the functions here; they ask the active
//! backend ([`super::backend`]), which decides how: plain CLI/STI on the
//! native backend; on pvm a flag byte in memory that the hypervisor reads
//! (each CPU's own page) and the kernel's own flag beside it, where PUSHF
//! cannot see IF and every CLI or STI would be an exit.
//!
//! Context: any. The raw instructions at the bottom are the only places the
//! kernel changes IF. They are not `nomem`: the compiler must not move a
//! memory access out of (or into) the window they open or close.

use core::arch::asm;

use abi::HvOp;

use super::exits::count;

/// Interrupt-enable state saved by [`save_and_disable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "restore the saved state with `restore`"]
pub struct Saved {
    were_enabled: bool,
}

#[inline]
pub fn are_enabled() -> bool {
    super::backend().interrupts_enabled()
}

#[inline]
pub fn disable() {
    super::backend().disable_interrupts();
}

/// Unmask interrupts.
///
/// # Safety
/// Every interrupt handler must be installed and the current stack able to
/// take a trap frame.
#[inline]
pub unsafe fn enable() {
    // SAFETY: the caller's guarantee, passed on.
    unsafe { super::backend().enable_interrupts() };
}

#[inline]
pub fn save_and_disable() -> Saved {
    let saved = Saved {
        were_enabled: are_enabled(),
    };
    if saved.were_enabled {
        disable();
    }
    saved
}

#[inline]
pub fn restore(saved: Saved) {
    if saved.were_enabled {
        // SAFETY: interrupts were enabled when saved, so the kernel was
        // already in a state that takes them.
        unsafe { enable() };
    }
}

/// Run `f` with interrupts masked, then restore the previous state. In
/// trap context (already masked) this executes no instruction at all.
#[inline]
pub fn without<R>(f: impl FnOnce() -> R) -> R {
    let saved = save_and_disable();
    let result = f();
    restore(saved);
    result
}

/// Enable interrupts and halt until one arrives, with no interrupt missed
/// between the two: on the native backend STI's shadow covers HLT; on pvm
/// one that comes between them is taken there, before the HLT, and the
/// HLT waits for the next (the idle loop's caller loops). Returns after a
/// handler ran.
///
/// # Safety
/// As for [`enable`].
#[inline]
pub unsafe fn halt_until_interrupt() {
    // SAFETY: the caller's guarantee, passed on.
    unsafe { super::backend().halt_until_interrupt() };
}

/// Mask interrupts and halt for good (the end of a fatal path).
pub fn halt_forever() -> ! {
    loop {
        raw_disable();
        count(HvOp::Hlt);
        // SAFETY: halting with interrupts masked only stops this CPU.
        unsafe { asm!("hlt", options(nostack)) };
    }
}

/// RFLAGS.IF as the CPU shows it (meaningful on the native backend only).
#[inline]
pub(super) fn raw_flag() -> bool {
    let flags: u64;
    // SAFETY: reading RFLAGS has no side effects.
    unsafe { asm!("pushfq; pop {}", out(reg) flags, options(preserves_flags)) };
    flags & (1 << 9) != 0
}

#[inline]
pub(super) fn raw_disable() {
    count(HvOp::Cli);
    // SAFETY: masking interrupts cannot break memory safety.
    unsafe { asm!("cli", options(nostack)) };
}

/// # Safety
/// As for [`enable`].
#[inline]
pub(super) unsafe fn raw_enable() {
    count(HvOp::Sti);
    // SAFETY: the caller guarantees handlers and stack are ready.
    unsafe { asm!("sti", options(nostack)) };
}

/// Halt until an interrupt, with no STI (the pvm backend's halt).
#[inline]
pub(super) fn raw_halt() {
    count(HvOp::Hlt);
    // SAFETY: halting only waits; the caller's interrupt state decides
    // what wakes it.
    unsafe { asm!("hlt", options(nostack)) };
}

/// # Safety
/// As for [`enable`].
#[inline]
pub(super) unsafe fn raw_enable_and_halt() {
    count(HvOp::Sti);
    count(HvOp::Hlt);
    // SAFETY: the caller guarantees interrupts may be taken here.
    unsafe { asm!("sti; hlt", options(nostack)) };
}
