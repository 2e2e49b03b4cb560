//! Servers' port I/O where the backend cannot give ring 3 its granted ports
//! (`Backend::ports_direct` is false: pvm ignores the TSS I/O permission
//! bitmap). Two ways in, both checked against the same grant, the server's
//! I/O bitmap, which `ioport_enable` opens from the manifest's port ranges:
//! - [`emulate`]: a server's IN or OUT raised #GP; decode it, check it, do
//!   it, step over it. Three exits where the hardware would take one.
//! - [`write_paced`]: `ioport_write_paced`, a whole burst of output in one
//!   kernel entry, paced by a status port (a UART's transmit FIFO), so that
//!   the console costs about one exit per byte.
//!
//! Context: trap context, in the caller's address space.

use abi::Error;

use crate::hv;
use crate::hv::port::Width;
use crate::hv::trap::TrapFrame;
use crate::process::Server;
use crate::system::System;
use crate::usermem::UserRange;
use microkernel::portinsn::{self, MAX_INSN};

/// Whether `server` may touch the `width` bytes of ports from `port`.
fn granted(server: &Server, port: u16, width: Width) -> bool {
    let Some(bitmap) = &server.io_bitmap else {
        return false;
    };
    (0..width.bytes()).all(|k| {
        let Some(p) = port.checked_add(k) else {
            return false;
        };
        bitmap[usize::from(p / 8)] & (1 << (p % 8)) == 0
    })
}

/// Emulate the IN or OUT at the current server's RIP, if that is what
/// raised #GP and the server holds the port. `false` leaves the #GP to be
/// handled as the fault it is.
pub fn emulate(system: &mut System, frame: &mut TrapFrame) -> bool {
    let Some(index) = system.current() else {
        return false;
    };
    if frame.error_code != 0 {
        return false; // a #GP about a selector is not a port access
    }
    let server = &mut system.servers[index];
    // Read what can be read of the instruction: up to the longest one, or to
    // the end of its page if the next page is not mapped.
    let mut bytes = [0u8; MAX_INSN];
    let to_page_end = (4096 - (frame.rip & 0xfff)) as usize;
    let n = MAX_INSN.min(to_page_end);
    let got = if UserRange::new(frame.rip, MAX_INSN as u64)
        .read(server, &mut bytes)
        .is_ok()
    {
        MAX_INSN
    } else if n < MAX_INSN
        && UserRange::new(frame.rip, n as u64)
            .read(server, &mut bytes[..n])
            .is_ok()
    {
        n
    } else {
        return false;
    };
    let Some(insn) = portinsn::decode(&bytes[..got]) else {
        return false;
    };
    let port = insn.port(frame.rdx);
    if !granted(server, port, insn.width) {
        return false;
    }
    if insn.write {
        // SAFETY: the manifest grants the server these ports (checked above).
        unsafe { hv::port::write(port, insn.width, frame.rax as u32) };
    } else {
        // SAFETY: as above.
        let value = unsafe { hv::port::read(port, insn.width) };
        frame.rax = insn.merge_read(frame.rax, value);
    }
    frame.rip += insn.len as u64;
    system.count_emulated_port_io();
    true
}

/// How long the kernel waits for a busy device, for each chunk, before a
/// burst gives up (the rest is returned to the caller as not written): a
/// 16550 at 115,200 baud empties its FIFO in 1.4 ms. A time, not a count of
/// reads: each read is an exit of up to 35 us here, and a server whose
/// device never gets ready must not hold the kernel for seconds.
const READY_WAIT_NS: u64 = 2_000_000;
/// The longest burst one call writes.
pub const MAX_BURST: u64 = 4096;

/// `ioport_write_paced(port, ptr, len, status_port, ready_mask, chunk)`.
pub fn write_paced(system: &mut System, index: usize, a: [u64; 6]) -> Result<u64, Error> {
    let [port, ptr, len, status, mask, chunk] = a;
    let (Ok(port), Ok(status), Ok(mask)) = (
        u16::try_from(port),
        u16::try_from(status),
        u8::try_from(mask),
    ) else {
        return Err(Error::InvalidArgument);
    };
    if len > MAX_BURST || chunk == 0 || mask == 0 {
        return Err(Error::BadSize);
    }
    let server = &mut system.servers[index];
    if !granted(server, port, Width::Byte) || !granted(server, status, Width::Byte) {
        return Err(Error::Denied);
    }
    let mut buf = [0u8; MAX_BURST as usize];
    let data = &mut buf[..len as usize];
    UserRange::new(ptr, len).read(server, data)?;
    let mut written = 0u64;
    for piece in data.chunks(chunk.min(MAX_BURST) as usize) {
        let give_up =
            microkernel::time::deadline_after(hv::rdtsc(), READY_WAIT_NS, system.config.tsc_hz);
        // SAFETY: both ports are granted to the caller (checked above).
        while unsafe { hv::port::read(status, Width::Byte) } as u8 & mask == 0 {
            if hv::rdtsc() >= give_up {
                return Ok(written);
            }
            core::hint::spin_loop();
        }
        for &byte in piece {
            // SAFETY: as above.
            unsafe { hv::port::write(port, Width::Byte, u32::from(byte)) };
        }
        written += piece.len() as u64;
    }
    Ok(written)
}
