//! The TSC and the timer service's clock (nanoseconds since the TSC was 0,
//! at the rate the kernel measured: `BootInfo::tsc_hz`).
//!
//! Context: anywhere. The one `unsafe` of the crate is `rdtsc`.

use proto::timer::{ns_to_tsc, tsc_to_ns};
use userland::sys;

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    sys::rdtsc()
}

/// The TSC rate the kernel measured (0 if unknown).
pub fn tsc_hz() -> u64 {
    sys::boot_info_cached().map(|b| b.tsc_hz).unwrap_or(0)
}

/// Now, in nanoseconds on the timer's clock.
pub fn now_ns() -> u64 {
    tsc_to_ns(rdtsc(), tsc_hz())
}

/// The TSC value at which the timer's clock reaches `ns`.
pub fn tsc_at(ns: u64) -> u64 {
    ns_to_tsc(ns, tsc_hz())
}
