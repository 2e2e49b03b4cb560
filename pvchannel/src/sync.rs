//! The atomics the ring uses: `core`'s in every build, loom's under
//! `cfg(loom)` so that the model checker can explore the orderings; and the
//! two cache hints it gives, [`prefetch_write`] and [`prefetch_read`] (none
//! under loom).
//!
//! Only the index lines of the shared region go through this shim. Slot
//! contents are plain memory ordered by the indices' release/acquire pairs.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, Ordering, fence};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU32, Ordering, fence};

/// Ask for the cache line holding `p` in a writable state (PREFETCHW),
/// so that a later store to it need not wait for the line to be taken from
/// the other core. A hint only: it reads and writes nothing, orders
/// nothing and never faults, whatever the address.
///
/// PREFETCHW (`0F 0D /1`) is in every AMD64 processor from AMD, Intel
/// reports it (CPUID `PRFCHW`) from Broadwell on, and QEMU's TCG decodes it
/// as a prefetch. Older Intel 64 processors are reported to execute it as a
/// no-op; that was not checked here, and a processor or emulator that
/// raised #UD on it would do so in the ring's `stage`. The compiler's own
/// `_mm_prefetch::<_MM_HINT_ET0>` would turn it into a plain read prefetch
/// unless the build targets `prfchw`, and a read prefetch is no use here:
/// the line is usually in our cache already, shared with the consumer,
/// and what a store waits for is the other copy being invalidated.
#[inline(always)]
pub(crate) fn prefetch_write<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    // SAFETY: PREFETCHW has no architectural effect (no memory access that
    // can fault, no register or flag written, no stack use), as declared.
    unsafe {
        core::arch::asm!(
            "prefetchw [{p}]",
            p = in(reg) p,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    let _ = p;
}

/// Ask for the cache line holding `p` for reading (PREFETCHT0, SSE, in
/// every x86-64 processor), so that a later load from it finds it here
/// rather than waiting for it to come from the other core. A hint only, as
/// [`prefetch_write`].
#[inline(always)]
pub(crate) fn prefetch_read<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    // SAFETY: PREFETCHT0 has no architectural effect (no memory access that
    // can fault, no register or flag written, no stack use), as declared.
    unsafe {
        core::arch::asm!(
            "prefetcht0 [{p}]",
            p = in(reg) p,
            options(nostack, preserves_flags, readonly)
        );
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    let _ = p;
}

/// What a prefetch asks for a line for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Intent {
    /// [`prefetch_read`].
    Read,
    /// [`prefetch_write`].
    Write,
}

/// Prefetch every 64-byte line of `bytes` bytes from `p`, for `intent`.
#[inline(always)]
pub(crate) fn prefetch_lines(p: *const u8, bytes: usize, intent: Intent) {
    let mut off = 0;
    while off < bytes {
        // `wrapping_add`: the hint needs no valid pointer (nor does the
        // arithmetic), although every caller stays inside the slots.
        let line = p.wrapping_add(off);
        match intent {
            Intent::Read => prefetch_read(line),
            Intent::Write => prefetch_write(line),
        }
        off += 64;
    }
}
