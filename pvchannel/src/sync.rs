//! The atomics the ring uses: `core`'s in every build, loom's under
//! `cfg(loom)` so that the model checker can explore the orderings.
//!
//! Only the index lines of the shared region go through this shim. Slot
//! contents are plain memory ordered by the indices' release/acquire pairs.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, Ordering, fence};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU32, Ordering, fence};
