//! bigbss: a server whose `.bss` is 512 MiB, more than the test machine's
//! memory (`test=bigbss` boots with 256 MiB). The kernel must refuse to
//! load it ("out of memory"), give back every frame the attempt took, and
//! still set up the channels of the servers after it (issue 12).
//!
//! Loading it must fail, so `run` is never reached; if it is (a machine
//! with more memory), it touches the array and prints
//! `bigbss: FAIL loaded with a 512 MiB .bss` and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::mem::MaybeUninit;

use userland::println;

userland::entry!(run);

const SIZE: usize = 512 << 20;

/// Uninitialised, so it lands in `.bss`: memory the loader must supply
/// (and the compiler does not build a 512 MiB constant first).
#[used]
static mut BIG: MaybeUninit<[u8; SIZE]> = MaybeUninit::uninit();

fn run() -> i32 {
    let big = &raw mut BIG;
    // SAFETY: one volatile write inside the array; this is the only thread
    // of the server and nothing else refers to `BIG`.
    unsafe { big.cast::<u8>().add(SIZE - 1).write_volatile(1) };
    println!("bigbss: FAIL loaded with a 512 MiB .bss");
    1
}
