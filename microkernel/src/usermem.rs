//! User memory is an allegation until checked. A system call's pointer and
//! length are checked here, in one place, against the caller's page tables
//! (inside user space, mapped, user-accessible, RAM rather than a granted
//! device, writable when written), and only then copied; a fault during
//! the copy all the same is an error for the caller, not a kernel fault.
//! One CPU and a kernel that is not preempted: nothing can unmap the range
//! between the check and the copy.
//!
//! A page of the caller's that is mapped on first touch (its `.bss` and
//! stack, `process`) and not touched yet is mapped by the check, so that a
//! pointer into it works exactly like one into a page the caller has used.

use abi::{Error, layout::USER_END};
use x86_64::structures::paging::PageTableFlags as Flags;

use crate::hv::context;
use crate::memory::PAGE_SIZE;
use crate::process::{Demand, Server};

/// A user range as a system call names it: not yet trusted.
#[derive(Clone, Copy, Debug)]
pub struct UserRange {
    addr: u64,
    len: u64,
}

/// The largest single copy the kernel makes for a system call.
pub const MAX_COPY: u64 = 64 * 1024;

impl UserRange {
    pub fn new(addr: u64, len: u64) -> Self {
        Self { addr, len }
    }

    /// Check the range against `server`'s page tables, mapping its pages
    /// that wait for their first touch; `write` if the kernel will write it.
    fn check(self, server: &mut Server, write: bool) -> Result<CheckedRange, Error> {
        if self.len > MAX_COPY {
            return Err(Error::BadSize);
        }
        let end = self.addr.checked_add(self.len).ok_or(Error::BadAddress)?;
        if end > USER_END {
            return Err(Error::BadAddress);
        }
        let mut page = self.addr & !(PAGE_SIZE - 1);
        while page < end {
            let (_, flags) = match server.space.translate(page) {
                Some(mapped) => mapped,
                None => match server.map_on_demand(page) {
                    Demand::Mapped => server.space.translate(page).ok_or(Error::BadAddress)?,
                    Demand::NotLazy => return Err(Error::BadAddress),
                    Demand::OutOfMemory(_) => return Err(Error::OutOfMemory),
                },
            };
            // Uncached pages are device memory a server was granted: the
            // kernel never copies device registers on a server's behalf.
            if !flags.contains(Flags::USER_ACCESSIBLE)
                || flags.contains(Flags::NO_CACHE)
                || (write && !flags.contains(Flags::WRITABLE))
            {
                return Err(Error::BadAddress);
            }
            page += PAGE_SIZE;
        }
        Ok(CheckedRange {
            addr: self.addr,
            len: self.len as usize,
        })
    }

    /// Copy the range of `server`'s memory into `buf` (which must be
    /// exactly as long).
    pub fn read(self, server: &mut Server, buf: &mut [u8]) -> Result<(), Error> {
        let checked = self.check(server, false)?;
        if checked.len != buf.len() {
            return Err(Error::BadSize);
        }
        // SAFETY: `check` proved the range mapped and user-accessible in the
        // current address space (`server` is the caller, whose space is live).
        unsafe { context::copy_from_user(buf, checked.addr) }.map_err(|_| Error::BadAddress)
    }

    /// Copy `data` into the start of the range of `server`'s memory (at
    /// most its length).
    pub fn write(self, server: &mut Server, data: &[u8]) -> Result<usize, Error> {
        let n = data.len().min(self.len as usize);
        let checked = UserRange::new(self.addr, n as u64).check(server, true)?;
        // SAFETY: as for `read`, and the pages are writable.
        unsafe { context::copy_to_user(checked.addr, &data[..n]) }
            .map_err(|_| Error::BadAddress)?;
        Ok(n)
    }
}

/// A range `check` accepted.
struct CheckedRange {
    addr: u64,
    len: usize,
}
