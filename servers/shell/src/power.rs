//! Power off through QEMU's isa-debug-exit device: the shell's only device
//! access and its only `unsafe`.
//!
//! Context: the shell's only thread.

use userland::abi::Error;
use userland::sys;
use x86_64::instructions::port::Port;

/// The isa-debug-exit port (`-device isa-debug-exit,iobase=0xf4`).
pub const EXIT_PORT: u16 = 0xF4;
/// The value that ends QEMU with status (0x10 << 1) | 1 = 33, which the
/// harness reads as success.
pub const EXIT_SUCCESS: u32 = 0x10;

/// End the machine. Returns only if the port is not granted or QEMU has no
/// such device.
pub fn poweroff() -> Error {
    if let Err(e) = sys::ioport_enable(EXIT_PORT, 4) {
        return e;
    }
    // SAFETY: port 0xf4 is QEMU's isa-debug-exit, granted to this server by
    // the manifest; the write ends the machine and touches no memory.
    unsafe { Port::<u32>::new(EXIT_PORT).write(EXIT_SUCCESS) };
    Error::InvalidArgument
}
