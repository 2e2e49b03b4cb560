//! In-kernel test scenarios, selected with `test=NAME` on the command line.
//! The host-side `tests/` crate boots the image once per scenario and checks
//! what it prints and the status QEMU exits with. Each scenario announces
//! what it will do, so the check can compare the report against it.

use core::arch::naked_asm;

use crate::kprintln;

/// An address in the lower half that nothing maps.
pub const UNMAPPED_ADDRESS: u64 = 0x0000_0dea_dbee_f000;

/// Scenarios that run before the idle loop; `boot` is checked in the idle
/// loop itself. Returns false for a name no scenario has.
pub fn run_early(name: &str) -> bool {
    match name {
        "page_fault" => {
            kprintln!("ktest: reading unmapped address {UNMAPPED_ADDRESS:#018x}");
            // SAFETY: deliberately faults; the fault handler ends the machine.
            let value = unsafe { core::ptr::read_volatile(UNMAPPED_ADDRESS as *const u64) };
            kprintln!("ktest: read {value:#x}: the page fault did not happen");
            true
        }
        "invalid_opcode" => {
            kprintln!(
                "ktest: executing ud2 at {:#018x}",
                invalid_opcode as *const () as u64
            );
            invalid_opcode();
            true
        }
        "user_copy_fault" => {
            kprintln!("ktest: copying from unmapped user address {UNMAPPED_ADDRESS:#018x}");
            let mut buf = [0u8; 64];
            // SAFETY: deliberately breaks the function's contract (the range
            // is not mapped): the fault must come back as an error.
            match unsafe { crate::hv::context::copy_from_user(&mut buf, UNMAPPED_ADDRESS) } {
                Err(_) => kprintln!("ktest: the user copy faulted and returned an error"),
                Ok(()) => kprintln!("ktest: FAIL the copy from an unmapped address succeeded"),
            }
            crate::exit::success()
        }
        "stack_overflow" => {
            kprintln!("ktest: recursing into the boot stack's guard page");
            kprintln!("ktest: depth {}", recurse(0));
            true
        }
        _ => false,
    }
}

/// Names every scenario answers to, for the unknown-name warning.
pub const SCENARIOS: &[&str] = &[
    "boot",
    "page_fault",
    "invalid_opcode",
    "stack_overflow",
    "user_copy_fault",
];

#[unsafe(naked)]
extern "C" fn invalid_opcode() {
    naked_asm!("ud2")
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    // Far deeper than the 64 KiB stack: the guard page is hit long before.
    if depth > 1 << 20 {
        return depth;
    }
    let mut buffer = [depth; 64];
    // SAFETY: a volatile write keeps the buffer (and the frame) alive.
    unsafe { core::ptr::write_volatile(&mut buffer[depth as usize % 64], depth) };
    recurse(depth + 1) + buffer[(depth as usize + 1) % 64]
}
