//! Page tables: the kernel's address space (built once at boot, W^X), and
//! the operations every address space shares: map, unmap, protect and
//! translate. The tables are ordinary memory reached through the direct map;
//! the flushes and the CR3 switch go through the paging family in `hv`.

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::structures::paging::mapper::{MapToError, TranslateResult, UnmapError};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageSize, PageTable, PageTableFlags as Flags,
    PhysFrame, Size2MiB, Size4KiB, Translate,
};
use x86_64::{PhysAddr, VirtAddr};

use super::{
    KERNEL_MMIO_BASE, KERNEL_STACKS_BASE, PAGE_SIZE, PHYS_OFFSET, align_down, align_up, frames,
    image_virt_to_phys, phys_to_virt, set_phys_access_offset,
};
use crate::hv;
use boot::{BootInfo, MemoryKind};

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
    static __boot_stack_guard: u8;
    static __ist_df_guard: u8;
    static __ist_nmi_guard: u8;
    static __ist_mc_guard: u8;
}

fn symbol(s: &u8) -> u64 {
    s as *const u8 as u64
}

/// The physical address of the kernel's top-level table.
static KERNEL_ROOT: AtomicU64 = AtomicU64::new(0);

struct Frames;

// SAFETY: `alloc_zeroed` returns frames nobody else owns.
unsafe impl FrameAllocator<Size4KiB> for Frames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        frames::alloc_zeroed().map(|p| PhysFrame::containing_address(PhysAddr::new(p)))
    }
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    OutOfMemory,
    AlreadyMapped,
    HugePageInTheWay,
}

impl<S: PageSize> From<MapToError<S>> for MapError {
    fn from(e: MapToError<S>) -> Self {
        match e {
            MapToError::FrameAllocationFailed => MapError::OutOfMemory,
            MapToError::PageAlreadyMapped(_) => MapError::AlreadyMapped,
            MapToError::ParentEntryHugePage => MapError::HugePageInTheWay,
        }
    }
}

/// An address space: one top-level table.
#[derive(Debug)]
pub struct AddressSpace {
    root: u64,
}

impl AddressSpace {
    /// The address space whose root table is at `root` (physical).
    ///
    /// # Safety
    /// `root` is a page-table root owned by the caller.
    pub unsafe fn from_root(root: u64) -> Self {
        Self { root }
    }

    pub fn root(&self) -> u64 {
        self.root
    }

    fn mapper(&mut self) -> OffsetPageTable<'_> {
        let offset = phys_to_virt(0) as u64;
        // SAFETY: `root` is a live table reached through the physical access
        // window, and `&mut self` makes this the only mapper over it.
        unsafe {
            OffsetPageTable::new(
                &mut *phys_to_virt(self.root).cast::<PageTable>(),
                VirtAddr::new(offset),
            )
        }
    }

    fn table_flags(flags: Flags) -> Flags {
        Flags::PRESENT | Flags::WRITABLE | (flags & Flags::USER_ACCESSIBLE)
    }

    /// `flags` plus what the backend wants on every kernel-half mapping
    /// (user-accessible on pvm), so that no kernel mapping can miss it.
    fn leaf_flags(virt: u64, flags: Flags) -> Flags {
        if virt >= KERNEL_HALF {
            flags | hv::paging::kernel_flags()
        } else {
            flags
        }
    }

    /// Drop `virt`'s old translation wherever a TLB may hold it: the kernel
    /// half is in every space (every CPU), the user half only on the CPUs
    /// that have this space loaded.
    fn flush_if_live(&self, virt: u64) {
        self.flush_pages_if_live(&[virt]);
    }

    /// [`flush_if_live`](Self::flush_if_live) for several pages, with one
    /// shootdown for all of them.
    fn flush_pages_if_live(&self, pages: &[u64]) {
        let Some(&first) = pages.first() else { return };
        let cpus = if first >= KERNEL_HALF {
            u64::MAX
        } else {
            hv::paging::cpus_with_space(self.root)
        };
        hv::paging::flush_pages_on(cpus, pages);
    }

    /// Map the 4 KiB page at `virt` to the frame at `phys`.
    pub fn map(&mut self, virt: u64, phys: u64, flags: Flags) -> Result<(), MapError> {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt));
        let frame = PhysFrame::containing_address(PhysAddr::new(phys));
        let flags = Self::leaf_flags(virt, flags);
        // SAFETY: the caller of the address-space API decides what is mapped;
        // a new mapping of a fresh page cannot alias anything the kernel uses
        // unless the caller maps such a frame, which kernel code does not.
        let flush = unsafe {
            self.mapper().map_to_with_table_flags(
                page,
                frame,
                flags | Flags::PRESENT,
                Self::table_flags(flags),
                &mut Frames,
            )
        }?;
        // A new mapping replaces a non-present entry, which no TLB holds:
        // nothing to flush (and on pvm a flush is an exit).
        flush.ignore();
        Ok(())
    }

    /// Map the 2 MiB page at `virt` to `phys`.
    pub fn map_huge(&mut self, virt: u64, phys: u64, flags: Flags) -> Result<(), MapError> {
        let page = Page::<Size2MiB>::containing_address(VirtAddr::new(virt));
        let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(phys));
        let flags = Self::leaf_flags(virt, flags);
        // SAFETY: as for `map`.
        let flush = unsafe {
            self.mapper().map_to_with_table_flags(
                page,
                frame,
                flags | Flags::PRESENT | Flags::HUGE_PAGE,
                Self::table_flags(flags),
                &mut Frames,
            )
        }?;
        // A new mapping replaces a non-present entry, which no TLB holds:
        // nothing to flush (and on pvm a flush is an exit).
        flush.ignore();
        Ok(())
    }

    /// Remove the 4 KiB mapping at `virt`; the frame it pointed at.
    pub fn unmap(&mut self, virt: u64) -> Option<u64> {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt));
        match self.mapper().unmap(page) {
            Ok((frame, flush)) => {
                flush.ignore();
                self.flush_if_live(virt);
                Some(frame.start_address().as_u64())
            }
            Err(
                UnmapError::PageNotMapped
                | UnmapError::ParentEntryHugePage
                | UnmapError::InvalidFrameAddress(_),
            ) => None,
        }
    }

    /// Unmap the `N` pages from `start` (all in one half), with one TLB
    /// shootdown for all of them rather than one each, and only then hand
    /// each frame that was mapped to `freed`: no other CPU can still reach
    /// a frame through a stale translation once it is freed.
    pub fn unmap_pages<const N: usize>(&mut self, start: u64, mut freed: impl FnMut(u64)) {
        let mut pages = [0u64; N];
        let mut frames = [0u64; N];
        let mut count = 0;
        for i in 0..N {
            let virt = start + i as u64 * PAGE_SIZE;
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt));
            if let Ok((frame, flush)) = self.mapper().unmap(page) {
                flush.ignore();
                pages[count] = virt;
                frames[count] = frame.start_address().as_u64();
                count += 1;
            }
        }
        self.flush_pages_if_live(&pages[..count]);
        frames[..count].iter().copied().for_each(&mut freed);
    }

    /// Change the permissions of the 4 KiB mapping at `virt`. Part of the
    /// paging family's interface; no caller yet, since servers cannot yet
    /// ask to change their own mappings.
    #[allow(dead_code)]
    pub fn protect(&mut self, virt: u64, flags: Flags) -> bool {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(virt));
        let flags = Self::leaf_flags(virt, flags);
        // SAFETY: changing flags of an existing mapping; callers only tighten
        // or set permissions they are entitled to.
        match unsafe { self.mapper().update_flags(page, flags | Flags::PRESENT) } {
            Ok(flush) => {
                flush.ignore();
                self.flush_if_live(virt);
                true
            }
            Err(_) => false,
        }
    }

    /// The physical address and flags behind `virt`, if mapped.
    pub fn translate(&mut self, virt: u64) -> Option<(u64, Flags)> {
        match self.mapper().translate(VirtAddr::new(virt)) {
            TranslateResult::Mapped {
                frame,
                offset,
                flags,
            } => Some((frame.start_address().as_u64() + offset, flags)),
            _ => None,
        }
    }
}

/// The kernel's own address space.
pub fn kernel_space() -> AddressSpace {
    AddressSpace {
        root: KERNEL_ROOT.load(Ordering::Relaxed),
    }
}

/// Where the kernel half begins (PML4 slot 256; the slot itself stays
/// empty: see `memory::PHYS_OFFSET`).
const KERNEL_HALF: u64 = 0xFFFF_8000_0000_0000;

/// Top-level slots the kernel half uses; their next-level tables are made at
/// boot so that every address space, copying these slots, sees later kernel
/// mappings too.
const KERNEL_PML4_SLOTS: [usize; 4] = [
    ((PHYS_OFFSET >> 39) & 511) as usize,
    ((KERNEL_STACKS_BASE >> 39) & 511) as usize,
    ((KERNEL_MMIO_BASE >> 39) & 511) as usize,
    511,
];

/// Build the kernel's tables (direct map of physical memory, kernel image
/// with W^X, guard pages left unmapped under each stack) and switch to them.
/// Returns the size of the direct map.
pub fn init_kernel_space(info: &BootInfo) -> Result<u64, MapError> {
    let root = frames::alloc_zeroed().ok_or(MapError::OutOfMemory)?;
    let mut space = AddressSpace { root };

    // Direct map: every RAM-like region, in 2 MiB pages.
    let mut mapped_end = 0u64;
    let global_nx = Flags::WRITABLE | Flags::NO_EXECUTE | Flags::GLOBAL;
    for region in info.memory_map() {
        if matches!(
            region.kind,
            MemoryKind::Reserved | MemoryKind::Unusable | MemoryKind::Other(_)
        ) {
            continue;
        }
        let huge = Size2MiB::SIZE;
        let mut phys = align_down(region.start, huge).max(mapped_end);
        let end = align_up(region.end(), huge);
        while phys < end {
            match space.map_huge(PHYS_OFFSET + phys, phys, global_nx) {
                Ok(()) | Err(MapError::AlreadyMapped) => {}
                Err(e) => return Err(e),
            }
            phys += huge;
        }
        mapped_end = mapped_end.max(end);
    }

    // The kernel image, one permission per section.
    // SAFETY: linker-script symbols; only their addresses are used.
    let (text, rodata, data, guards) = unsafe {
        (
            (symbol(&__text_start), symbol(&__text_end)),
            (symbol(&__rodata_start), symbol(&__rodata_end)),
            (symbol(&__data_start), symbol(&__data_end)),
            [
                symbol(&__boot_stack_guard),
                symbol(&__ist_df_guard),
                symbol(&__ist_nmi_guard),
                symbol(&__ist_mc_guard),
            ],
        )
    };
    let sections = [
        (text, Flags::GLOBAL),
        (rodata, Flags::GLOBAL | Flags::NO_EXECUTE),
        (data, Flags::GLOBAL | Flags::NO_EXECUTE | Flags::WRITABLE),
    ];
    for ((start, end), flags) in sections {
        let mut virt = start;
        while virt < end {
            if !guards.contains(&virt) {
                space.map(virt, image_virt_to_phys(virt), flags)?;
            }
            virt += PAGE_SIZE;
        }
    }

    // Next-level tables for the other kernel slots, shared by every space.
    for slot in KERNEL_PML4_SLOTS {
        // SAFETY: the root is ours and reachable; only empty slots are filled.
        let table = unsafe { &mut *phys_to_virt(root).cast::<PageTable>() };
        if table[slot].is_unused() {
            let frame = frames::alloc_zeroed().ok_or(MapError::OutOfMemory)?;
            table[slot].set_addr(
                PhysAddr::new(frame),
                Flags::PRESENT | Flags::WRITABLE | hv::paging::kernel_flags(),
            );
        }
    }

    // SAFETY: the new tables map the kernel image (code, data, the boot
    // stack we are on) at the same addresses as the boot tables, and the
    // direct map is what physical accesses use from here on.
    unsafe { hv::paging::switch_address_space(root) };
    set_phys_access_offset(PHYS_OFFSET);
    KERNEL_ROOT.store(root, Ordering::Relaxed);
    Ok(mapped_end)
}
