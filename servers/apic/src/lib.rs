//! The apic server's logic that needs no device: finding the I/O APIC and
//! the ISA interrupt overrides in the firmware's ACPI tables ([`madt`]),
//! and what each client may route, mask and send ([`grants`]). A library
//! so that `cargo test -p apic` runs it on the host (the MADT parsing on
//! tables captured from QEMU, `tests/data/`); the server itself is
//! `main.rs`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod grants;
pub mod madt;
