//! Family 1, interrupt masking: disable, enable, save/restore, halt until an
//! interrupt, and the end of interrupt that unmasks one delivered vector.
//!
//! Context: any. These are the only places the kernel changes IF.

use core::arch::asm;

/// Interrupt-enable state saved by [`save_and_disable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "restore the saved state with `restore`"]
pub struct Saved {
    were_enabled: bool,
}

#[inline]
pub fn are_enabled() -> bool {
    let flags: u64;
    // SAFETY: reading RFLAGS has no side effects.
    unsafe { asm!("pushfq; pop {}", out(reg) flags, options(nomem, preserves_flags)) };
    flags & (1 << 9) != 0
}

#[inline]
pub fn disable() {
    // SAFETY: masking interrupts cannot break memory safety.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Unmask interrupts.
///
/// # Safety
/// Every interrupt handler must be installed and the current stack able to
/// take a trap frame.
#[inline]
pub unsafe fn enable() {
    // SAFETY: the caller guarantees handlers and stack are ready.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

#[inline]
pub fn save_and_disable() -> Saved {
    let saved = Saved {
        were_enabled: are_enabled(),
    };
    disable();
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

/// Run `f` with interrupts masked, then restore the previous state.
#[inline]
pub fn without<R>(f: impl FnOnce() -> R) -> R {
    let saved = save_and_disable();
    let result = f();
    restore(saved);
    result
}

/// Enable interrupts and halt until one arrives, atomically (an interrupt
/// between the two cannot be missed: STI's shadow covers HLT). Returns with
/// interrupts enabled, after the handler ran.
///
/// # Safety
/// As for [`enable`].
#[inline]
pub unsafe fn halt_until_interrupt() {
    // SAFETY: the caller guarantees interrupts may be taken here.
    unsafe { asm!("sti; hlt", options(nomem, nostack)) };
}

/// Mask interrupts and halt for good (the end of a fatal path).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: halting with interrupts masked only stops this CPU.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}
