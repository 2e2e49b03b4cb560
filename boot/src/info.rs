//! `hvm_start_info` (the PVH boot ABI, version 0 and 1) and the [`BootInfo`] the
//! kernel receives: a copy with fixed capacities, so that it outlives the
//! loader's memory and needs no allocator.

use core::mem::size_of;
use core::ptr::read_unaligned;

const HVM_START_MAGIC: u32 = 0x336e_c578;
const MAX_REGIONS: usize = 64;
const MAX_MODULES: usize = 8;
const MAX_CMDLINE: usize = 512;

/// Layout of `struct hvm_start_info` (xen/include/public/arch-x86/hvm/start_info.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    // Version 1 and later:
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct HvmModlistEntry {
    paddr: u64,
    size: u64,
    cmdline_paddr: u64,
    reserved: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct HvmMemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

/// What a physical memory region is, from the PVH memory map (E820 types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    Usable,
    Reserved,
    AcpiReclaimable,
    AcpiNvs,
    Unusable,
    Other(u32),
}

impl MemoryKind {
    fn from_e820(kind: u32) -> Self {
        match kind {
            1 => Self::Usable,
            2 => Self::Reserved,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            5 => Self::Unusable,
            other => Self::Other(other),
        }
    }
}

/// One physical memory region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub start: u64,
    pub len: u64,
    pub kind: MemoryKind,
}

impl MemoryRegion {
    pub const fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// A boot module (the first one is the initrd), in physical memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module {
    pub start: u64,
    pub len: u64,
}

/// Everything the kernel learns from the loader, copied out of its memory.
pub struct BootInfo {
    /// Physical address of the loader's `hvm_start_info`.
    pub start_info_phys: u64,
    /// `hvm_start_info` version (0 has no memory map).
    pub version: u32,
    regions: [MemoryRegion; MAX_REGIONS],
    region_count: usize,
    /// Regions the map had beyond our capacity (reported, not silently lost).
    pub regions_dropped: usize,
    modules: [Module; MAX_MODULES],
    module_count: usize,
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
    /// The command line was longer than we keep.
    pub cmdline_truncated: bool,
    /// Physical address of the ACPI RSDP, if the loader gave one.
    pub rsdp_phys: Option<u64>,
}

/// Why `hvm_start_info` could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    BadMagic(u32),
}

impl BootInfo {
    const EMPTY_REGION: MemoryRegion = MemoryRegion {
        start: 0,
        len: 0,
        kind: MemoryKind::Reserved,
    };

    pub const fn empty() -> Self {
        Self {
            start_info_phys: 0,
            version: 0,
            regions: [Self::EMPTY_REGION; MAX_REGIONS],
            region_count: 0,
            regions_dropped: 0,
            modules: [Module { start: 0, len: 0 }; MAX_MODULES],
            module_count: 0,
            cmdline: [0; MAX_CMDLINE],
            cmdline_len: 0,
            cmdline_truncated: false,
            rsdp_phys: None,
        }
    }

    pub fn memory_map(&self) -> &[MemoryRegion] {
        &self.regions[..self.region_count]
    }

    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.module_count]
    }

    /// The command line, as UTF-8 (invalid bytes cut it short).
    pub fn cmdline(&self) -> &str {
        let bytes = &self.cmdline[..self.cmdline_len];
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// Total usable RAM in bytes, as the memory map reports it.
    pub fn usable_bytes(&self) -> u64 {
        self.memory_map()
            .iter()
            .filter(|r| r.kind == MemoryKind::Usable)
            .map(|r| r.len)
            .sum()
    }

    fn push_region(&mut self, region: MemoryRegion) {
        if self.region_count < MAX_REGIONS {
            self.regions[self.region_count] = region;
            self.region_count += 1;
        } else {
            self.regions_dropped += 1;
        }
    }

    fn push_module(&mut self, module: Module) {
        if self.module_count < MAX_MODULES {
            self.modules[self.module_count] = module;
            self.module_count += 1;
        }
    }

    fn set_cmdline(&mut self, bytes: impl Iterator<Item = u8>) {
        self.cmdline_len = 0;
        for b in bytes {
            if self.cmdline_len == MAX_CMDLINE {
                self.cmdline_truncated = true;
                break;
            }
            self.cmdline[self.cmdline_len] = b;
            self.cmdline_len += 1;
        }
    }

    /// Fill from an `hvm_start_info`, reading physical memory through `read`:
    /// `read(phys, buf)` copies `buf.len()` bytes from physical address `phys`.
    /// Taking a reader keeps the parser testable on the host.
    pub fn parse(start_info_phys: u64, read: &dyn Fn(u64, &mut [u8])) -> Result<Self, BootError> {
        let start: HvmStartInfo = read_struct(read, start_info_phys);
        if start.magic != HVM_START_MAGIC {
            return Err(BootError::BadMagic(start.magic));
        }
        let mut info = Self::empty();
        info.start_info_phys = start_info_phys;
        info.version = start.version;
        if start.rsdp_paddr != 0 {
            info.rsdp_phys = Some(start.rsdp_paddr);
        }
        if start.cmdline_paddr != 0 {
            let base = start.cmdline_paddr;
            info.set_cmdline(
                (0..=MAX_CMDLINE as u64)
                    .map(|i| {
                        let mut b = [0u8];
                        read(base + i, &mut b);
                        b[0]
                    })
                    .take_while(|&b| b != 0),
            );
        }
        for i in 0..u64::from(start.nr_modules) {
            let entry: HvmModlistEntry = read_struct(
                read,
                start.modlist_paddr + i * size_of::<HvmModlistEntry>() as u64,
            );
            info.push_module(Module {
                start: entry.paddr,
                len: entry.size,
            });
        }
        if start.version >= 1 {
            for i in 0..u64::from(start.memmap_entries) {
                let entry: HvmMemmapEntry = read_struct(
                    read,
                    start.memmap_paddr + i * size_of::<HvmMemmapEntry>() as u64,
                );
                info.push_region(MemoryRegion {
                    start: entry.addr,
                    len: entry.size,
                    kind: MemoryKind::from_e820(entry.kind),
                });
            }
        }
        Ok(info)
    }
}

fn read_struct<T: Copy>(read: &dyn Fn(u64, &mut [u8]), phys: u64) -> T {
    let mut buf = [0u8; 64];
    let size = size_of::<T>();
    debug_assert!(size <= buf.len());
    read(phys, &mut buf[..size]);
    // SAFETY: `buf` holds `size_of::<T>()` initialised bytes and T is a
    // plain-old-data repr(C) struct for which every bit pattern is valid.
    unsafe { read_unaligned(buf.as_ptr().cast::<T>()) }
}

#[cfg(target_os = "none")]
static mut BOOT_INFO: BootInfo = BootInfo::empty();

#[cfg(target_os = "none")]
/// Parse the loader's structure through the identity map into the static
/// `BOOT_INFO`. On a bad magic the kernel still gets an (empty) BootInfo and
/// reports it: halting silently here would leave nothing to read.
///
/// # Safety
/// Called once, before anything else reads `BOOT_INFO`, with the identity map
/// of the first 4 GiB live.
pub(crate) unsafe fn parse_into_static(start_info_phys: u64) -> &'static BootInfo {
    let read = |phys: u64, buf: &mut [u8]| {
        // SAFETY: the loader's structures lie in the identity-mapped 4 GiB.
        unsafe { core::ptr::copy_nonoverlapping(phys as *const u8, buf.as_mut_ptr(), buf.len()) }
    };
    let parsed = BootInfo::parse(start_info_phys, &read).unwrap_or_else(|_| BootInfo::empty());
    // SAFETY: single-threaded first write; the reference handed out is the
    // only one ever made, and the static is never written again.
    unsafe {
        let slot = &mut *core::ptr::addr_of_mut!(BOOT_INFO);
        *slot = parsed;
        slot
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A fake physical memory: a byte vector at physical address 0.
    struct Memory(Vec<u8>);

    impl Memory {
        fn put<T: Copy>(&mut self, at: usize, value: T) {
            let size = size_of::<T>();
            // SAFETY: reading the bytes of a POD value.
            let bytes =
                unsafe { core::slice::from_raw_parts((&value as *const T).cast::<u8>(), size) };
            self.0[at..at + size].copy_from_slice(bytes);
        }
        fn reader(&self) -> impl Fn(u64, &mut [u8]) + '_ {
            |phys, buf| buf.copy_from_slice(&self.0[phys as usize..phys as usize + buf.len()])
        }
    }

    fn sample() -> Memory {
        let mut m = Memory(std::vec![0u8; 0x4000]);
        m.put(
            0x100,
            HvmStartInfo {
                magic: HVM_START_MAGIC,
                version: 1,
                flags: 0,
                nr_modules: 1,
                modlist_paddr: 0x200,
                cmdline_paddr: 0x300,
                rsdp_paddr: 0xe0000,
                memmap_paddr: 0x400,
                memmap_entries: 2,
                reserved: 0,
            },
        );
        m.put(
            0x200,
            HvmModlistEntry {
                paddr: 0x80_0000,
                size: 12345,
                cmdline_paddr: 0,
                reserved: 0,
            },
        );
        m.0[0x300..0x300 + 12].copy_from_slice(b"batching=off");
        m.put(
            0x400,
            HvmMemmapEntry {
                addr: 0,
                size: 0x9fc00,
                kind: 1,
                reserved: 0,
            },
        );
        m.put(
            0x418,
            HvmMemmapEntry {
                addr: 0x10_0000,
                size: 0x7ef_0000,
                kind: 1,
                reserved: 0,
            },
        );
        m
    }

    #[test]
    fn parses_every_field() {
        let m = sample();
        let info = BootInfo::parse(0x100, &m.reader()).unwrap();
        assert_eq!(info.cmdline(), "batching=off");
        assert_eq!(
            info.modules(),
            &[Module {
                start: 0x80_0000,
                len: 12345
            }]
        );
        assert_eq!(info.memory_map().len(), 2);
        assert_eq!(info.memory_map()[1].start, 0x10_0000);
        assert_eq!(info.usable_bytes(), 0x9fc00 + 0x7ef_0000);
        assert_eq!(info.rsdp_phys, Some(0xe0000));
    }

    #[test]
    fn rejects_bad_magic() {
        let mut m = sample();
        m.put(0x100, 0xdead_beef_u32);
        assert!(matches!(
            BootInfo::parse(0x100, &m.reader()),
            Err(BootError::BadMagic(0xdead_beef))
        ));
    }

    #[test]
    fn version_zero_has_no_memory_map() {
        let mut m = sample();
        m.put(0x104, 0u32);
        let info = BootInfo::parse(0x100, &m.reader()).unwrap();
        assert!(info.memory_map().is_empty());
        assert_eq!(info.cmdline(), "batching=off");
    }

    #[test]
    fn overlong_cmdline_is_truncated_not_overrun() {
        let mut m = sample();
        for i in 0..1000 {
            m.0[0x1000 + i] = b'x';
        }
        m.put(0x100 + 24, 0x1000u64);
        let info = BootInfo::parse(0x100, &m.reader()).unwrap();
        assert!(info.cmdline_truncated);
        assert_eq!(info.cmdline().len(), MAX_CMDLINE);
    }
}
