//! Counts of the kernel's exit-causing operations, by kind
//! ([`abi::HvOp`]). Every privileged instruction below `hv/` is
//! counted where it is executed, so `stats`, `cargo xtask run --stats` and
//! the benchmarks can say what each backend spent on a hot path.
//!
//! Context: any. One relaxed atomic add; no lock.

use core::sync::atomic::{AtomicU64, Ordering};

use abi::HvOp;

static COUNTS: [AtomicU64; HvOp::COUNT] = [const { AtomicU64::new(0) }; HvOp::COUNT];

#[inline(always)]
pub fn count(op: HvOp) {
    // Atomic: every CPU counts into the same counters.
    COUNTS[op as usize].fetch_add(1, Ordering::Relaxed);
}

/// Every counter, by `HvOp as usize`.
pub fn snapshot() -> [u64; HvOp::COUNT] {
    core::array::from_fn(|i| COUNTS[i].load(Ordering::Relaxed))
}
