//! port-intruder: reads an I/O port the manifest did not grant it; the
//! kernel must stop it with a general-protection fault (the TSS I/O bitmap
//! denies the port), while the other servers go on.
//!
//! Its manifest entry grants ports 0x70-0x71 (CMOS) only. It checks that
//! `ioport_enable` opens the granted range and refuses port 0x60 with
//! `Denied`, reads granted port 0x71, then prints `port-intruder: about
//! to fault (in from ungranted port 0x60)` and executes `in` on port 0x60.
//! If that returns, or a check fails, it prints `port-intruder: FAIL ...`
//! and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use testing::hazard;
use userland::abi::Error;
use userland::fail::must_refuse;
use userland::{Failure, OrFail, println, sys};

userland::entry!(run);

/// Granted by tests/manifests/intruders.toml.
const GRANTED: u16 = 0x70;
const GRANTED_COUNT: u32 = 2;
/// Not granted: the PS/2 controller's data port.
const FORBIDDEN: u16 = 0x60;

fn run() -> Result<(), Failure> {
    sys::ioport_enable(GRANTED, GRANTED_COUNT)
        .or_fail(format_args!("ioport_enable of granted ports {GRANTED:#x}"))?;
    let cmos = hazard::read_port(GRANTED + 1);
    println!(
        "port-intruder: granted port {:#x} read {cmos:#x}",
        GRANTED + 1
    );
    must_refuse(
        sys::ioport_enable(FORBIDDEN, 1),
        Error::Denied,
        format_args!("ioport_enable({FORBIDDEN:#x})"),
    )?;
    println!("port-intruder: ioport_enable({FORBIDDEN:#x}) denied");
    println!("port-intruder: about to fault (in from ungranted port {FORBIDDEN:#x})");
    Err(hazard::in_must_fault(FORBIDDEN))
}
