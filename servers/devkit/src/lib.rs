//! devkit: what the device servers (`apic`, `timer`, `console`) and their
//! clients (`shell`, the test clients) share.
//!
//! * [`irq`]: an IRQ line as something a task can await ([`IrqLine`]).
//! * [`mux`]: a server's clients and its IRQ in one loop ([`Mux`]): take a
//!   whole batch of requests from every ring, answer, and sleep until a
//!   ring or the IRQ has something.
//! * [`clock`]: the TSC and the timer's clock in nanoseconds.
//! * [`client`]: handles for the `console`, `timer` and `apic` services,
//!   speaking the protocols of `proto` (servers/proto).
//!
//! Context: user space, a server's only thread, inside the executor.
//! `clock` (the `rdtsc` instruction) and `sysinfo` (two raw system calls
//! the runtime does not wrap yet) hold the only `unsafe`.
//!
//! * [`sysinfo`]: `server_info` and `channel_stats`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod client;
pub mod clock;
pub mod irq;
pub mod mux;
pub mod sysinfo;

pub use client::{Apic, Console, Timer};
pub use irq::IrqLine;
pub use mux::{Event, Mux};
