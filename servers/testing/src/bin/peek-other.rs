//! peek-other: reads the shared region of a channel it is not part of
//! (the lowest channel index none of its own channels has: channel `i` is
//! mapped at `CHANNELS_BASE + i * CHANNEL_STRIDE` only in its two servers).
//! The kernel must stop it with a page fault. Prints `peek-other: reading
//! another server's memory at 0x...`; if the read returns, `peek-other:
//! FAIL ...` and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use testing::hazard;
use userland::abi::layout::{CHANNEL_STRIDE, CHANNELS_BASE};
use userland::{Channel, Failure, OrFail, println};

userland::entry!(run);

fn run() -> Result<(), Failure> {
    let mine = |base: u64| Channel::all().any(|c| c.info().base == base);
    let target = (0..64)
        .map(|i| CHANNELS_BASE + i * CHANNEL_STRIDE)
        .find(|&base| !mine(base))
        .or_fail("every channel slot is mine")?;
    println!("peek-other: reading another server's memory at {target:#x}");
    Err(hazard::read_must_fault(target))
}
