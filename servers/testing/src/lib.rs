//! The servers the in-QEMU tests boot (`src/bin/*.rs`), and what they
//! share: the ring-test protocol, a PRNG, the system-call fuzzer's
//! generator, and [`hazard`], the one module with `unsafe` code (the
//! deliberate faults and raw system calls).
//!
//! Context: user space, one thread per server. Everything but `hazard` is
//! plain logic and runs under `cargo test -p testing` on the host.
#![cfg_attr(not(test), no_std)]

pub mod fuzz;
pub mod hazard;

/// The ring stress test: `ring-producer` (client) sends
/// [`MESSAGES`](ring::MESSAGES) descriptors to `ring-consumer` (provider).
pub mod ring {
    /// The service `ring-consumer` provides.
    pub const SERVICE: &str = "ring-test";
    /// Messages sent.
    pub const MESSAGES: u64 = 1_000_000;
    /// A message: `args[0]` is its sequence number (0, 1, ...); no
    /// completion is wanted.
    pub const OP_SEQ: u32 = 1;
    /// The end: answered with a completion whose value is the number of
    /// messages the consumer received in order.
    pub const OP_END: u32 = 2;
}

pub use userland::rand::XorShift;
