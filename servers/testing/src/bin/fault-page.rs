//! fault-page: reads an unmapped user address; the kernel must stop it
//! with a page fault. Prints `fault-page: about to fault`; if the read
//! returns, `fault-page: FAIL read ... returned ...` and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use testing::hazard;
use userland::{Failure, println};

userland::entry!(run);

const ADDRESS: u64 = 0x1234_5000;

fn run() -> Result<(), Failure> {
    println!("fault-page: about to fault (reading unmapped {ADDRESS:#x})");
    Err(hazard::read_must_fault(ADDRESS))
}
