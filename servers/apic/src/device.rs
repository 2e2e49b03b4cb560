//! Device access for the apic server: the only `unsafe` of the server
//! besides the ACPI table handler in `madt.rs`.
//!
//! * [`Mmio`]: a region the manifest grants, mapped with `mmio_map`, read
//!   and written with volatile 32-bit accesses;
//! * [`read_phys`]: copy bytes of physical memory inside a granted region
//!   (the firmware's ACPI tables, when the manifest grants where they are).
//!
//! Context: the apic server's only thread.

use userland::abi::Error;
use userland::sys;

const PAGE: u64 = userland::abi::layout::PAGE_SIZE;

/// A mapped MMIO region.
pub struct Mmio {
    base: u64,
    len: u64,
}

impl Mmio {
    /// Map `[phys, phys + len)` (page aligned, inside a manifest grant).
    pub fn map(phys: u64, len: u64) -> Result<Self, Error> {
        let base = sys::mmio_map(phys, len)?;
        Ok(Self { base, len })
    }

    /// The 32-bit register at byte `offset`.
    pub fn read32(&self, offset: u64) -> u32 {
        assert!(
            offset.is_multiple_of(4) && offset + 4 <= self.len,
            "MMIO offset {offset:#x}"
        );
        // SAFETY: the kernel mapped `len` bytes of device memory at `base`
        // (uncached) for this server; the offset is inside and aligned.
        unsafe { core::ptr::read_volatile((self.base + offset) as *const u32) }
    }

    /// Write the 32-bit register at byte `offset`.
    pub fn write32(&self, offset: u64, value: u32) {
        assert!(
            offset.is_multiple_of(4) && offset + 4 <= self.len,
            "MMIO offset {offset:#x}"
        );
        // SAFETY: as for `read32`; the region is device memory, not part of
        // this program's own data.
        unsafe { core::ptr::write_volatile((self.base + offset) as *mut u32, value) }
    }
}

/// Copy `out.len()` bytes of physical memory from `phys`. `Denied` when
/// the manifest does not grant the range to this server.
pub fn read_phys(phys: u64, out: &mut [u8]) -> Result<(), Error> {
    if out.is_empty() {
        return Ok(());
    }
    let first = phys & !(PAGE - 1);
    let end = phys
        .checked_add(out.len() as u64)
        .ok_or(Error::BadSize)?
        .next_multiple_of(PAGE);
    let base = sys::mmio_map(first, end - first)?;
    let at = base + (phys - first);
    for (i, b) in out.iter_mut().enumerate() {
        // SAFETY: `mmio_map` mapped `[first, end)` readable at `base`, and
        // `at + i` lies inside it; firmware tables are plain memory, read
        // bytewise so no alignment is assumed.
        *b = unsafe { core::ptr::read_volatile((at + i as u64) as *const u8) };
    }
    Ok(())
}
