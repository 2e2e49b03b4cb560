//! lazy-bss: shows that `.bss` is mapped on first touch and that nobody can
//! tell (tests/manifests/lazybss.toml). It has a 4 MiB `.bss` buffer, which
//! the kernel does not map at load, and checks:
//! - (a) a system call that writes into an untouched page of it (`counters`,
//!   with a pointer into the buffer) succeeds and writes the counters there,
//!   and one that reads an untouched page (`log`, one zero byte) succeeds;
//! - (b) 16 other untouched pages read as zero at first, then keep what is
//!   written to them;
//! - (c) the kernel counted those pages (`demand_pages`), and a system call
//!   pointing at the stack's guard page is still refused (`BadAddress`).
//!
//! Prints `lazy-bss: all checks passed` and exits 0, or `lazy-bss: FAIL ...`
//! and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::mem::size_of;

use userland::abi::layout::{STACK_PAGES, STACK_TOP};
use userland::abi::{Error, KernelCounters, Syscall};
use userland::{println, sys};

userland::entry!(run);

const PAGE: usize = userland::abi::layout::PAGE_SIZE as usize;
const SIZE: usize = 4 << 20;
/// The page (a) hands to the kernel to write, and the one it reads.
const WRITTEN_PAGE: usize = 100;
const READ_PAGE: usize = 101;
/// (b) touches pages `TOUCH_FIRST + i * TOUCH_STRIDE`, i = 0..16.
const TOUCHED: usize = 16;
const TOUCH_FIRST: usize = 3;
const TOUCH_STRIDE: usize = 63;

/// The page-aligned end of the image: `__image_end` of userland's
/// `user.ld` (the host build, which never runs, has no such symbol).
#[cfg(target_os = "none")]
fn image_end() -> u64 {
    unsafe extern "C" {
        static __image_end: u8;
    }
    &raw const __image_end as u64
}

#[cfg(not(target_os = "none"))]
fn image_end() -> u64 {
    userland::abi::layout::IMAGE_END
}

/// Zero-initialised, so it lands in `.bss`; `#[used]` keeps it whole.
#[used]
static mut BUFFER: [u8; SIZE] = [0; SIZE];

fn buffer() -> *mut u8 {
    (&raw mut BUFFER).cast::<u8>()
}

fn read(offset: usize) -> u8 {
    assert!(offset < SIZE);
    // SAFETY: inside `BUFFER` (checked above); this is the server's only
    // thread and nothing holds a reference to `BUFFER`; volatile, so that
    // the compiler neither removes the load nor assumes the zeros.
    unsafe { buffer().add(offset).read_volatile() }
}

fn write(offset: usize, value: u8) {
    assert!(offset < SIZE);
    // SAFETY: as for `read`.
    unsafe { buffer().add(offset).write_volatile(value) }
}

/// `counters(out, len)` through the raw call, with `out` anywhere.
fn counters_into(out: u64, len: u64) -> Result<u64, Error> {
    // SAFETY: `counters` writes at most `len` bytes at `out` and changes no
    // mapping; callers pass either a range inside `BUFFER`, which nothing
    // else refers to, or an address that is not this program's memory.
    Error::decode(unsafe { sys::syscall6(Syscall::Counters as u64, out, len, 0, 0, 0, 0) })
}

fn run() -> i32 {
    match checks() {
        Ok(()) => {
            println!("lazy-bss: all checks passed");
            0
        }
        Err(why) => {
            println!("lazy-bss: FAIL {why}");
            1
        }
    }
}

fn checks() -> Result<(), &'static str> {
    let before = sys::counters().map_err(|_| "counters into the stack failed")?;
    let len = size_of::<KernelCounters>();

    // (a) The kernel writes into a page nobody touched yet.
    let at = WRITTEN_PAGE * PAGE + 8;
    let written = counters_into(buffer() as u64 + at as u64, len as u64)
        .map_err(|_| "counters into an untouched .bss page was refused")?;
    if written != len as u64 {
        return Err("counters into an untouched .bss page wrote short");
    }
    if !(at..at + len).any(|i| read(i) != 0) {
        return Err("counters into an untouched .bss page wrote only zeros");
    }
    // SAFETY: `at..at + len` is inside `BUFFER` (a page of 4096 bytes from
    // `at - 8`, and the counters are far smaller); every bit pattern is a
    // valid `KernelCounters` (plain u64s); unaligned read, volatile-free:
    // the system call above is an asm block the compiler cannot see past.
    let copied = unsafe { buffer().add(at).cast::<KernelCounters>().read_unaligned() };
    if copied.tsc == 0 || copied.syscalls[Syscall::Counters as usize] == 0 {
        return Err("the counters written into .bss are not the kernel's");
    }
    println!(
        "lazy-bss: counters written into an untouched page: tsc {:#x}, {} demand pages so far",
        copied.tsc, copied.demand_pages
    );
    // ... and reads from one (a single zero byte on the console).
    let read_from = buffer() as u64 + (READ_PAGE * PAGE) as u64;
    // SAFETY: `log` only reads the byte at `read_from`, inside `BUFFER`.
    let logged =
        Error::decode(unsafe { sys::syscall6(Syscall::Log as u64, read_from, 1, 0, 0, 0, 0) });
    if logged != Ok(1) {
        return Err("log from an untouched .bss page was refused");
    }

    // (b) Untouched pages read as zero, then keep what is written.
    for i in 0..TOUCHED {
        let offset = (TOUCH_FIRST + i * TOUCH_STRIDE) * PAGE + i * 17;
        if read(offset) != 0 {
            return Err("an untouched .bss page does not read as zero");
        }
        write(offset, i as u8 + 1);
    }
    for i in 0..TOUCHED {
        let offset = (TOUCH_FIRST + i * TOUCH_STRIDE) * PAGE + i * 17;
        if read(offset) != i as u8 + 1 {
            return Err("a .bss page lost what was written to it");
        }
    }
    if read(at + len) != 0 || read(at - 1) != 0 {
        return Err("counters wrote outside the range it was given");
    }

    // (c) The kernel counted the pages; the stack's guard page stays out.
    let after = sys::counters().map_err(|_| "counters into the stack failed")?;
    let mapped = after.demand_pages.saturating_sub(before.demand_pages);
    if mapped < TOUCHED as u64 + 2 {
        return Err("demand_pages grew by less than the pages touched");
    }
    println!("lazy-bss: demand_pages grew by {mapped}");
    let guard = STACK_TOP - (STACK_PAGES + 1) * PAGE as u64;
    if counters_into(guard, len as u64) != Err(Error::BadAddress) {
        return Err("counters into the stack's guard page was not refused");
    }
    // The first page past the image (its last segment is data and .bss).
    if counters_into(image_end(), len as u64) != Err(Error::BadAddress) {
        return Err("counters past the end of .bss was not refused");
    }
    Ok(())
}
