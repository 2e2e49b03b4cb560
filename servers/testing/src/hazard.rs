//! Every `unsafe` operation of the test servers: reads that must fault,
//! privileged and faulting instructions, and the fuzzer's raw system calls.
//!
//! Context: a test server's only thread. The faulting functions are meant
//! to end the server: the kernel stops it and reports the fault. If one
//! returns, the kernel failed to stop it, and the caller reports that.

use userland::abi::Syscall;
use userland::{Failure, sys};

/// Read 8 bytes at `addr`, an address this server must not be able to
/// read (kernel memory, an unmapped page, another server's memory).
pub fn read_forbidden(addr: u64) -> u64 {
    // SAFETY: not sound to *use* in general, and not meant to be: the
    // address is outside this program's memory, so the CPU raises a page
    // fault and the kernel stops the server before the load completes. If
    // the kernel wrongly lets it through, the bytes are read as a plain
    // u64 (every bit pattern is valid) and the caller reports the breach.
    // `read_volatile` keeps the compiler from removing or moving the load.
    unsafe { core::ptr::read_volatile(addr as *const u64) }
}

/// [`read_forbidden`] as a server's last step: what to report if the read
/// returns.
pub fn read_must_fault(addr: u64) -> Failure {
    let value = read_forbidden(addr);
    Failure::new(format_args!("read of {addr:#x} returned {value:#x}"))
}

/// [`read_port`] of a port the server was not granted, as its last step:
/// what to report if the `in` returns.
pub fn in_must_fault(port: u16) -> Failure {
    let value = read_port(port);
    Failure::new(format_args!("in from port {port:#x} returned {value:#x}"))
}

/// Execute `hlt` in ring 3: a general-protection fault (#GP).
pub fn halt_in_ring3() {
    // SAFETY: `hlt` has no effect on memory; in ring 3 the CPU refuses it
    // with #GP and the kernel stops the server.
    unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
}

/// `numerator / divisor` with the `div` instruction, so that a zero
/// divisor reaches the CPU (#DE) instead of Rust's check.
pub fn divide(numerator: u64, divisor: u64) -> u64 {
    let quotient: u64;
    // SAFETY: `div r64` divides rdx:rax by the operand, writing rax and rdx;
    // both are declared as outputs. A zero divisor raises #DE, which the
    // kernel handles by stopping the server.
    unsafe {
        core::arch::asm!(
            "div {d}",
            d = in(reg) divisor,
            inlateout("rax") numerator => quotient,
            inlateout("rdx") 0u64 => _,
            options(nomem, nostack),
        );
    }
    quotient
}

/// The only memory of this program the fuzzer lets the kernel write:
/// two pages that nothing else reads or writes.
#[repr(C, align(4096))]
struct Scratch([u8; SCRATCH_LEN]);

/// Bytes of the fuzzer's scratch area.
pub const SCRATCH_LEN: usize = 8192;

static mut SCRATCH: Scratch = Scratch([0; SCRATCH_LEN]);

/// Where the scratch area is (as an integer: it is only ever passed to the
/// kernel, never dereferenced here).
pub fn scratch_addr() -> u64 {
    (&raw mut SCRATCH) as u64
}

/// Make one raw system call from the fuzzer. Exit is refused (returns
/// `None`): the fuzzer must survive its own calls.
///
/// The fuzzer's generator ([`crate::fuzz`]) passes as pointers only
/// addresses that are not this program's writable memory (kernel, non-
/// canonical, unmapped, or its read-only text and rodata) and the scratch
/// area above; that is what makes these calls sound.
pub fn fuzz_syscall(nr: u64, args: [u64; 6]) -> Option<i64> {
    if nr == Syscall::Exit as u64 {
        return None;
    }
    // SAFETY: see above: the kernel may write only into memory nothing
    // else in this program uses (the scratch area), may refuse the rest,
    // and cannot end us (no exit). mmio_map can only add mappings at the
    // kernel's MMIO window, which this program does not use.
    Some(unsafe { sys::syscall6(nr, args[0], args[1], args[2], args[3], args[4], args[5]) })
}

/// Read one byte from I/O port `port` with `in al, dx`. If the manifest did
/// not grant the port (and `ioport_enable` did not open it), the TSS I/O
/// permission bitmap denies it: a general-protection fault (#GP) that ends
/// the server. On a granted, enabled port it is an ordinary device read.
pub fn read_port(port: u16) -> u8 {
    let value: u8;
    // SAFETY: `in` touches no memory of this program; its only effect is
    // the device read itself. The ports the test servers read are either
    // denied (the CPU raises #GP before the access) or registers whose
    // read has no side effect (the CMOS data port).
    unsafe {
        core::arch::asm!(
            "in al, dx",
            in("dx") port,
            out("al") value,
            options(nomem, nostack, preserves_flags),
        );
    }
    value
}
