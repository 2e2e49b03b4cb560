//! mmio-intruder: reaches for an MMIO region the manifest did not grant
//! it; the kernel must refuse the mapping and, when the server reads the
//! region's physical address as if it were mapped anyway, stop it with a
//! page fault, while the other servers go on.
//!
//! Its manifest entry grants one page at 0xfed00000 only. It maps that
//! page (which must work), hands the kernel a pointer into it as a `log`
//! line (which must fail with `BadAddress`: the kernel never copies device
//! registers on a server's behalf), asks `mmio_map` for the I/O APIC page at
//! 0xfec00000 (which must fail with `Denied`), prints `mmio-intruder:
//! about to fault (reading ungranted 0xfec00000)` and reads it. If the
//! read returns, or a check fails, it prints `mmio-intruder: FAIL ...` and
//! exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use testing::hazard;
use userland::abi::Error;
use userland::fail::must_refuse;
use userland::{Failure, OrFail, println, sys};

userland::entry!(run);

/// Granted by tests/manifests/intruders.toml (never accessed).
const GRANTED: u64 = 0xfed0_0000;
/// Not granted: the I/O APIC.
const FORBIDDEN: u64 = 0xfec0_0000;
const PAGE: u64 = userland::abi::layout::PAGE_SIZE;

fn run() -> Result<(), Failure> {
    let at =
        sys::mmio_map(GRANTED, PAGE).or_fail(format_args!("mmio_map of granted {GRANTED:#x}"))?;
    println!("mmio-intruder: granted {GRANTED:#x} mapped at {at:#x}");
    // SAFETY: `at` is the start of a mapped page of this server's; the
    // slice is only handed to the kernel, never read here.
    let device = unsafe { core::slice::from_raw_parts(at as *const u8, 16) };
    must_refuse(
        sys::log(device),
        Error::BadAddress,
        "log from device memory",
    )?;
    println!("mmio-intruder: log from device memory refused");
    must_refuse(
        sys::mmio_map(FORBIDDEN, PAGE),
        Error::Denied,
        format_args!("mmio_map({FORBIDDEN:#x})"),
    )?;
    println!("mmio-intruder: mmio_map({FORBIDDEN:#x}) denied");
    println!("mmio-intruder: about to fault (reading ungranted {FORBIDDEN:#x})");
    Err(hazard::read_must_fault(FORBIDDEN))
}
