//! Ending QEMU with a status through the `isa-debug-exit` device (port 0xf4),
//! which is how tests report pass or fail. Without the device the write is
//! ignored and the kernel halts instead.

use x86_64::instructions::port::Port;

use crate::hv;

/// Status written for success: QEMU exits with (0x10 << 1) | 1 = 33.
pub const SUCCESS: u8 = 0x10;
/// Status written for failure: QEMU exits with (0x11 << 1) | 1 = 35.
pub const FAILURE: u8 = 0x11;

const DEBUG_EXIT_PORT: u16 = 0xf4;

/// End the machine with `status`; halt forever if QEMU has no exit device.
pub fn exit_qemu(status: u8) -> ! {
    // SAFETY: 0xf4 is the isa-debug-exit port that xtask configures; on a
    // machine without the device the write goes nowhere.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(u32::from(status)) };
    hv::interrupts::halt_forever()
}

pub fn success() -> ! {
    exit_qemu(SUCCESS)
}

pub fn failure() -> ! {
    exit_qemu(FAILURE)
}
