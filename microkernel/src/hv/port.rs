//! Port I/O by the kernel: the accesses it makes on a server's behalf where
//! the backend cannot let ring 3 reach its granted ports (pvm ignores the I/O
//! permission bitmap), and the paced burst of `ioport_write_paced`. Whether
//! a server may touch a port is decided by the caller (`ports.rs`) against
//! the manifest's grant; this module only executes, and counts.
//!
//! Context: trap context.

use core::arch::asm;

use abi::HvOp;

use super::exits::count;

pub use microkernel::portinsn::Width;

/// Read `port`.
///
/// # Safety
/// The caller checked that the port is granted to the server it acts for
/// (a device's port can have any effect on that device).
pub unsafe fn read(port: u16, width: Width) -> u32 {
    count(HvOp::PortIo);
    let value: u32;
    // SAFETY: the caller's guarantee; IN touches no memory.
    unsafe {
        match width {
            Width::Byte => {
                let v: u8;
                asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags));
                value = u32::from(v);
            }
            Width::Word => {
                let v: u16;
                asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack, preserves_flags));
                value = u32::from(v);
            }
            Width::Dword => {
                asm!("in eax, dx", in("dx") port, out("eax") value, options(nomem, nostack, preserves_flags));
            }
        }
    }
    value
}

/// Write `value` (its low `width` bytes) to `port`.
///
/// # Safety
/// As for [`read`].
pub unsafe fn write(port: u16, width: Width, value: u32) {
    count(HvOp::PortIo);
    // SAFETY: the caller's guarantee; OUT touches no memory.
    unsafe {
        match width {
            Width::Byte => {
                asm!("out dx, al", in("dx") port, in("al") value as u8, options(nomem, nostack, preserves_flags))
            }
            Width::Word => {
                asm!("out dx, ax", in("dx") port, in("ax") value as u16, options(nomem, nostack, preserves_flags))
            }
            Width::Dword => {
                asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
            }
        }
    }
}
