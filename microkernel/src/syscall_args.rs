//! The checks a system call makes of its raw arguments before it acts:
//! each takes the registers a server passed (and the plain facts the
//! kernel holds about that server: its handle count, its grants) and
//! returns a value the kernel can use as it is, or the `abi::Error` the
//! caller gets. The kernel's `syscall` module runs them first and only
//! then touches memory or devices, so that a hostile argument is refused
//! here, where the host tests can try every edge of it.
//!
//! Context: any; pure functions.

use abi::{Error, ServerState};

use crate::scheduler::State;

/// The longest line `log` accepts, in bytes.
pub const MAX_LOG: usize = 1024;

/// `wait`'s mask: at least one bit to wait for.
#[inline]
pub fn wait_mask(mask: u64) -> Result<u64, Error> {
    if mask == 0 {
        return Err(Error::InvalidArgument);
    }
    Ok(mask)
}

/// `wait`'s doorbells: a bit per channel handle, every one of them held
/// (`held` handles, numbered from 0). Returns the handles to ring, lowest
/// first.
#[inline]
pub fn doorbell_handles(handles: u64, held: usize) -> Result<impl Iterator<Item = usize>, Error> {
    if held < 64 && handles >> held != 0 {
        return Err(Error::BadHandle);
    }
    let mut rest = handles;
    Ok(core::iter::from_fn(move || {
        if rest == 0 {
            return None;
        }
        let handle = rest.trailing_zeros() as usize;
        rest &= rest - 1;
        Some(handle)
    }))
}

/// A handle into a list of `held` (channel ends, servers, channels).
#[inline]
pub fn handle(raw: u64, held: usize) -> Result<usize, Error> {
    usize::try_from(raw)
        .ok()
        .filter(|&h| h < held)
        .ok_or(Error::BadHandle)
}

/// An IRQ line (`irq_bind`, `irq_ack`).
#[inline]
pub fn irq_line(line: u64) -> Result<usize, Error> {
    if line > u64::from(abi::MAX_IRQ) {
        return Err(Error::InvalidArgument);
    }
    Ok(line as usize)
}

/// `ioport_enable`'s ports `first..first + count`, as the first and last
/// port, when the server holds all of them in one of its `grants` (first
/// port, count).
pub fn granted_ports(first: u64, count: u64, grants: &[(u16, u16)]) -> Result<(u16, u16), Error> {
    let (first, last) = crate::portinsn::port_range(first, count).ok_or(Error::BadSize)?;
    let held = grants.iter().any(|&(start, n)| {
        u32::from(first) >= u32::from(start) && u32::from(last) < u32::from(start) + u32::from(n)
    });
    if !held {
        return Err(Error::Denied);
    }
    Ok((first, last))
}

/// Clear the bits of ports `first..=last` in an I/O permission bitmap (a
/// clear bit allows the port).
pub fn allow_ports(bitmap: &mut [u8], first: u16, last: u16) {
    for port in first..=last {
        bitmap[usize::from(port / 8)] &= !(1 << (port % 8));
    }
}

/// `mmio_map`'s request: whole pages, at least one, not wrapping.
/// Returns the end of the range.
pub fn mmio_request(phys: u64, len: u64) -> Result<u64, Error> {
    use abi::layout::PAGE_SIZE;
    if len == 0 || !phys.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
        return Err(Error::BadSize);
    }
    phys.checked_add(len).ok_or(Error::BadSize)
}

/// Which of a server's MMIO `grants` (base, length) holds all of
/// `phys..end`.
pub fn mmio_grant(
    grants: impl IntoIterator<Item = (u64, u64)>,
    phys: u64,
    end: u64,
) -> Result<usize, Error> {
    grants
        .into_iter()
        .position(|(base, len)| phys >= base && base.checked_add(len).is_some_and(|e| end <= e))
        .ok_or(Error::Denied)
}

/// How much of a `size`-byte record a call that copies one out writes for
/// a buffer of `len` bytes: a shorter buffer gets the record's start (so
/// that an older server still works against a record that grew), an empty
/// one is refused.
#[inline]
pub fn copy_out_len(len: u64, size: usize) -> Result<usize, Error> {
    if len == 0 {
        return Err(Error::BadSize);
    }
    Ok(len.min(size as u64) as usize)
}

/// `log`'s length.
#[inline]
pub fn log_len(len: u64) -> Result<usize, Error> {
    usize::try_from(len)
        .ok()
        .filter(|&n| n <= MAX_LOG)
        .ok_or(Error::BadSize)
}

/// Join `args` with spaces into `out` (`boot_info`'s arguments), as many
/// whole ones as fit.
pub fn pack_args<'a>(args: impl IntoIterator<Item = &'a str>, out: &mut [u8]) {
    let mut at = 0;
    for arg in args {
        let end = at + arg.len() + usize::from(at > 0);
        if end > out.len() {
            break;
        }
        if at > 0 {
            out[at] = b' ';
            at += 1;
        }
        out[at..end].copy_from_slice(arg.as_bytes());
        at = end;
    }
}

/// A server's state as `server_info` reports it, with its exit code.
#[inline]
pub fn server_state(state: State) -> (ServerState, i32) {
    match state {
        State::Ready => (ServerState::Ready, 0),
        State::Running => (ServerState::Running, 0),
        State::Blocked => (ServerState::Blocked, 0),
        State::Exited(code) => (ServerState::Exited, code as i32),
        State::Faulted => (ServerState::Faulted, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn wait_needs_a_bit() {
        assert_eq!(wait_mask(0), Err(Error::InvalidArgument));
        assert_eq!(wait_mask(1 << 63), Ok(1 << 63));
    }

    #[test]
    fn doorbells_only_on_held_handles() {
        let rung: Vec<usize> = doorbell_handles(0b1011, 4).unwrap().collect();
        assert_eq!(rung, [0, 1, 3]);
        assert!(doorbell_handles(0b1_0000, 4).is_err());
        assert!(doorbell_handles(1, 0).is_err());
        assert_eq!(doorbell_handles(0, 0).unwrap().count(), 0);
        // 64 handles held: every bit is a handle, and the shift must not
        // overflow.
        assert_eq!(doorbell_handles(u64::MAX, 64).unwrap().count(), 64);
        assert_eq!(doorbell_handles(1 << 63, 100).unwrap().last(), Some(63));
    }

    #[test]
    fn handles_in_range_only() {
        assert_eq!(handle(0, 1), Ok(0));
        assert_eq!(handle(1, 1), Err(Error::BadHandle));
        assert_eq!(handle(u64::MAX, usize::MAX), Err(Error::BadHandle));
    }

    #[test]
    fn irq_lines() {
        assert_eq!(irq_line(0), Ok(0));
        assert_eq!(irq_line(u64::from(abi::MAX_IRQ)), Ok(abi::MAX_IRQ as usize));
        assert_eq!(
            irq_line(u64::from(abi::MAX_IRQ) + 1),
            Err(Error::InvalidArgument)
        );
        assert_eq!(irq_line(u64::MAX), Err(Error::InvalidArgument));
    }

    #[test]
    fn ports_must_lie_in_one_grant() {
        let grants = [(0x3f8, 8), (0x60, 1), (0x64, 1)];
        assert_eq!(granted_ports(0x3f8, 8, &grants), Ok((0x3f8, 0x3ff)));
        assert_eq!(granted_ports(0x3fc, 4, &grants), Ok((0x3fc, 0x3ff)));
        assert_eq!(granted_ports(0x3f8, 9, &grants), Err(Error::Denied));
        // Two grants side by side are not one range.
        assert_eq!(granted_ports(0x60, 5, &grants), Err(Error::Denied));
        assert_eq!(granted_ports(0x3f8, 0, &grants), Err(Error::BadSize));
        assert_eq!(granted_ports(0xffff, 2, &grants), Err(Error::BadSize));
        assert_eq!(
            granted_ports(u64::MAX, u64::MAX, &grants),
            Err(Error::BadSize)
        );
        assert_eq!(granted_ports(0x3f8, 1, &[]), Err(Error::Denied));
        // A grant at the top of the port space.
        assert_eq!(
            granted_ports(0xfff8, 8, &[(0xfff8, 8)]),
            Ok((0xfff8, 0xffff))
        );
    }

    #[test]
    fn allowing_ports_clears_exactly_their_bits() {
        let mut bitmap = [0xFFu8; 8192];
        allow_ports(&mut bitmap, 0x3f9, 0x3fa);
        assert_eq!(bitmap[0x3f8 / 8], 0b1111_1001);
        assert!(
            bitmap
                .iter()
                .enumerate()
                .all(|(i, &b)| i == 0x3f8 / 8 || b == 0xFF)
        );
        allow_ports(&mut bitmap, 0xffff, 0xffff);
        assert_eq!(bitmap[8191], 0x7F);
    }

    #[test]
    fn mmio_requests_are_whole_pages() {
        assert_eq!(mmio_request(0xfee0_0000, 0x1000), Ok(0xfee0_1000));
        assert_eq!(mmio_request(0xfee0_0000, 0), Err(Error::BadSize));
        assert_eq!(mmio_request(0xfee0_0010, 0x1000), Err(Error::BadSize));
        assert_eq!(mmio_request(0xfee0_0000, 0x10), Err(Error::BadSize));
        assert_eq!(mmio_request(u64::MAX - 0xfff, 0x2000), Err(Error::BadSize));
    }

    #[test]
    fn mmio_must_lie_in_one_grant() {
        let grants = [(0xfec0_0000, 0x1000), (0xfee0_0000, 0x2000)];
        assert_eq!(mmio_grant(grants, 0xfee0_1000, 0xfee0_2000), Ok(1));
        assert_eq!(
            mmio_grant(grants, 0xfee0_1000, 0xfee0_3000),
            Err(Error::Denied)
        );
        assert_eq!(
            mmio_grant(grants, 0xfebf_f000, 0xfec0_1000),
            Err(Error::Denied)
        );
        // A grant whose end would wrap holds nothing past the top.
        assert_eq!(
            mmio_grant([(u64::MAX - 0xfff, 0x2000)], 0, 0x1000),
            Err(Error::Denied)
        );
    }

    #[test]
    fn copies_out_are_cut_to_the_record() {
        assert_eq!(copy_out_len(0, 64), Err(Error::BadSize));
        assert_eq!(copy_out_len(8, 64), Ok(8));
        assert_eq!(copy_out_len(u64::MAX, 64), Ok(64));
    }

    #[test]
    fn log_lines_have_a_limit() {
        assert_eq!(log_len(0), Ok(0));
        assert_eq!(log_len(MAX_LOG as u64), Ok(MAX_LOG));
        assert_eq!(log_len(MAX_LOG as u64 + 1), Err(Error::BadSize));
        assert_eq!(log_len(u64::MAX), Err(Error::BadSize));
    }

    #[test]
    fn args_are_packed_whole_or_not_at_all() {
        let mut out = [0u8; 12];
        pack_args(["seed=7", "fast", "toolong"], &mut out);
        assert_eq!(&out, b"seed=7 fast\0");
        let mut out = [0u8; 4];
        pack_args(["abcde", "x"], &mut out);
        assert_eq!(&out, b"\0\0\0\0", "the first does not fit: nothing");
    }

    #[test]
    fn states_as_reported() {
        assert_eq!(server_state(State::Blocked), (ServerState::Blocked, 0));
        assert_eq!(server_state(State::Exited(-3)), (ServerState::Exited, -3));
        assert_eq!(server_state(State::Faulted), (ServerState::Faulted, 0));
    }
}
