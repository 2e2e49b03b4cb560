//! The time-stamp counter, read in ring 3 (the kernel leaves CR4.TSD clear).
//! The one `unsafe` instruction of the stress servers.

/// The TSC now. `lfence` before it keeps earlier work from being counted
/// late (RDTSC is not ordered against the instructions around it).
#[inline]
pub fn now() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: LFENCE and RDTSC only read the CPU's state; CR4.TSD is
        // clear, so RDTSC is allowed in ring 3 (and on the host).
        unsafe {
            core::arch::x86_64::_mm_lfence();
            core::arch::x86_64::_rdtsc()
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}
