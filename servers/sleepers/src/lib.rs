//! Test and benchmark clients of the device servers (the bins in
//! `src/bin/`), and what they share.
//!
//! Context: user space, one thread per server. No `unsafe`.
#![cfg_attr(not(test), no_std)]

pub use userland::rand::XorShift;

/// How long the benchmark clients pause after `stress-ready` and
/// `stress-done`, so that the harness can read KVM's counters over QMP when
/// it sees each marker (as `servers/stress` does).
pub const MARKER_PAUSE_NS: u64 = 300_000_000;

/// Sleep `ns` in the kernel (a `wait` on a bit nothing raises).
pub fn pause(ns: u64) {
    let _ = userland::sys::wait(1 << 62, ns);
}

/// Kernel counter deltas as `key=value` words for a result line.
pub fn kernel_delta(
    before: &userland::abi::KernelCounters,
    after: &userland::abi::KernelCounters,
) -> alloc::string::String {
    let syscalls: u64 = after.syscalls.iter().sum::<u64>() - before.syscalls.iter().sum::<u64>();
    alloc::format!(
        "entries={} syscalls={} doorbells={} device_irqs={} switches={}",
        after.entries() - before.entries(),
        syscalls,
        after.doorbells - before.doorbells,
        after.device_interrupts - before.device_interrupts,
        after.context_switches - before.context_switches
    )
}

extern crate alloc;
