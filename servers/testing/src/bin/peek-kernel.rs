//! peek-kernel: reads kernel memory from ring 3; the kernel must stop it
//! with a page fault. Prints `peek-kernel: reading kernel memory at
//! 0xffffffff80100000`; if the read returns, `peek-kernel: FAIL ...` and
//! exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use testing::hazard;
use userland::{Failure, println};

userland::entry!(run);

const KERNEL_ADDRESS: u64 = 0xffff_ffff_8010_0000;

fn run() -> Result<(), Failure> {
    println!("peek-kernel: reading kernel memory at {KERNEL_ADDRESS:#x}");
    Err(hazard::read_must_fault(KERNEL_ADDRESS))
}
