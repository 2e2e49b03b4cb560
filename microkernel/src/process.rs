//! Servers: one ring-3 program in its own address space, with its kernel
//! stack, saved registers, notification state and the grants the manifest
//! gave it. This module creates them from checked ELF images and tears
//! them down; the scheduler (`microkernel::scheduler`) decides who runs.
//!
//! Pages that hold nothing but zeros (a segment's pages past its last file
//! byte: `.bss`, most of it the runtime's heap; and the stack) are not
//! allocated at load: each server keeps them as lazy ranges, and a page of
//! one is allocated, zeroed and mapped when it is first touched, by the
//! server (a not-present page fault, `sched`) or by the kernel copying into
//! it for a system call (`usermem`): [`Server::map_on_demand`].
//!
//! Context: boot (loading) and trap context (teardown, pages on demand);
//! allocates.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::mem::size_of;

use abi::layout;
use x86_64::structures::paging::{PageTable, PageTableFlags as Flags};

use crate::hv::context::FpuState;
use crate::hv::cpu::{IO_BITMAP_BYTES, USER_CODE, USER_DATA};
use crate::hv::trap::TrapFrame;
use crate::memory::paging::{AddressSpace, MapError, kernel_space};
use crate::memory::stacks::KernelStack;
use crate::memory::{PAGE_SIZE, frames, phys_to_virt};
use manifest::Restart;
use microkernel::elf::{self, ElfError};
use microkernel::intensity::Intensity;

/// One end of a channel, as its server sees it.
#[derive(Clone, Copy, Debug)]
pub struct ChannelEnd {
    pub channel: usize,
    /// The server at the other end; `None` for the kernel itself (its log
    /// channel to the console server).
    pub peer: Option<usize>,
    /// The bit the peer's `notify` sets in this server.
    pub own_bit: u32,
    /// The bit this server's `notify` sets in the peer.
    pub peer_bit: u32,
    pub provider: bool,
    pub service: [u8; abi::NAME_LEN],
}

/// What a lazy range holds, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LazyKind {
    /// A segment's pages past its file bytes.
    Bss,
    /// The user stack.
    Stack,
}

impl core::fmt::Display for LazyKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            LazyKind::Bss => ".bss",
            LazyKind::Stack => "stack",
        })
    }
}

/// Pages `[start, end)` (page-aligned) of a server's memory that are
/// mapped on first touch, each with `flags`.
#[derive(Clone, Debug)]
pub struct LazyRange {
    pub start: u64,
    pub end: u64,
    pub flags: Flags,
    pub kind: LazyKind,
}

/// What [`Server::map_on_demand`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Demand {
    /// The page was in a lazy range and is now mapped, zeroed.
    Mapped,
    /// Nothing: the address is in no lazy range, or its page is mapped
    /// already. A fault there is the fault it is.
    NotLazy,
    /// No frame (or page table, or bookkeeping) for the page: nothing was
    /// mapped.
    OutOfMemory(LazyKind),
}

/// A granted MMIO region and where it was mapped, once it is.
#[derive(Clone, Copy, Debug)]
pub struct MmioGrant {
    pub phys: u64,
    pub len: u64,
    pub mapped_at: Option<u64>,
}

pub struct Server {
    pub name: String,
    pub space: AddressSpace,
    /// User frames this server owns (image, stack, pages mapped on
    /// demand), freed with it.
    pub owned_frames: Vec<u64>,
    /// Memory mapped on first touch ([`Server::map_on_demand`]).
    pub lazy: Vec<LazyRange>,
    /// Pages of `lazy` mapped so far.
    pub demand_pages: u64,
    /// Its kernel stack, which serves the one CPU it runs on (the
    /// scheduler keeps which, `System::cpu_of`).
    pub kernel_stack: KernelStack,
    /// An injected fault waits for the server's CPU to resume it
    /// (`supervisor::inject_fault` from another CPU).
    fault_pending: bool,
    pub fpu: Box<FpuState>,
    /// Notification bits handed out so far (channels, then IRQs).
    pub bits_used: u32,
    pub channels: Vec<ChannelEnd>,
    pub port_grants: Vec<(u16, u16)>,
    /// Set bits deny ports; `None` while no port was enabled.
    pub io_bitmap: Option<Box<[u8; IO_BITMAP_BYTES]>>,
    pub irq_grants: u32,
    /// Bound IRQ lines and the bit each raises.
    pub irq_bits: [Option<u32>; microkernel::irq::LINES],
    pub mmio: Vec<MmioGrant>,
    pub mmio_next: u64,
    pub restarts: u32,
    /// The frame of the server's status page (an [`abi::StatusPage`],
    /// mapped read-only at `layout::STATUS_PAGE`), which the kernel
    /// writes through the direct map.
    status_frame: u64,
    /// `inject_fault` aimed this server at address 0: its next fault is
    /// reported as injected.
    pub injected: bool,
    /// Kernel entries made by this server (system calls and faults).
    pub syscalls: u64,
    pub log_limit: microkernel::ratelimit::TokenBucket,
    released: bool,
}

/// What the kernel needs to start a server again: its image and grants as
/// the manifest gave them, and its restart policy.
pub struct Spec {
    pub image: &'static [u8],
    pub restart: Restart,
    pub intensity: Intensity,
    pub inject_faults: bool,
    pub ports: Vec<(u16, u16)>,
    pub irq_grants: u32,
    pub mmio: Vec<MmioGrant>,
}

impl Spec {
    /// Give `server` (a fresh instance) what the manifest grants it: at
    /// boot and at every restart alike.
    pub fn grant(&self, server: &mut Server) {
        server.port_grants = self.ports.clone();
        server.irq_grants = self.irq_grants;
        server.mmio = self.mmio.clone();
    }
}

/// Why a server could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    Elf(ElfError),
    Map(MapError),
    OutOfMemory,
}

impl core::fmt::Display for LoadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LoadError::Elf(e) => write!(f, "bad image: {e}"),
            LoadError::Map(e) => write!(f, "cannot map the image: {e:?}"),
            LoadError::OutOfMemory => f.write_str("out of memory"),
        }
    }
}

impl From<MapError> for LoadError {
    fn from(e: MapError) -> Self {
        LoadError::Map(e)
    }
}

/// The saved user registers sit at the top of the kernel stack: every entry
/// from ring 3 starts at the stack top, so the frame is always here.
pub fn frame_at(stack: &KernelStack) -> *mut TrapFrame {
    (stack.top() - size_of::<TrapFrame>() as u64) as *mut TrapFrame
}

impl Server {
    pub fn frame(&self) -> *mut TrapFrame {
        frame_at(&self.kernel_stack)
    }

    /// A notification bit not yet in use, if any is left.
    pub fn allocate_bit(&mut self) -> Option<u32> {
        (self.bits_used < abi::MAX_NOTIFY_BITS).then(|| {
            self.bits_used += 1;
            self.bits_used - 1
        })
    }

    /// The frame to resume this server from, with a fault injected from
    /// another CPU applied first (`aim_at_fault`). Only its own CPU calls
    /// this.
    pub fn resume(&mut self) -> *mut TrapFrame {
        let frame = self.frame();
        if core::mem::take(&mut self.fault_pending) {
            // SAFETY: its saved frame, which this CPU is about to resume.
            unsafe { (*frame).rip = 0 };
        }
        frame
    }

    /// Its channel end `handle` (a system call's argument, checked).
    pub fn channel_end(&self, handle: u64) -> Result<ChannelEnd, abi::Error> {
        let index = microkernel::syscall_args::handle(handle, self.channels.len())?;
        Ok(self.channels[index])
    }

    /// A system call of this server's.
    pub fn count_syscall(&mut self) {
        self.syscalls += 1;
    }

    /// Aim this server at address 0 (`inject_fault`), so that its next
    /// instruction takes a real page fault, reported as injected. `now`
    /// when it is the caller, whose saved frame this trap returns through;
    /// otherwise its own CPU applies it when it next resumes it
    /// (`fault_pending`): one running on another CPU has its registers
    /// there, not saved.
    pub fn aim_at_fault(&mut self, now: bool) {
        self.injected = true;
        if now {
            // SAFETY: the caller's saved frame, at the top of its own
            // kernel stack, which this trap returns through.
            unsafe { (*self.frame()).rip = 0 };
        } else {
            self.fault_pending = true;
        }
    }

    /// The notification bit IRQ `line` raises in this server: the one it
    /// had (a line bound again keeps its bit), or a new one; `None` when
    /// its bits are all taken.
    pub fn irq_bit(&mut self, line: usize) -> Option<u32> {
        let bit = match self.irq_bits[line] {
            Some(bit) => bit,
            None => self.allocate_bit()?,
        };
        self.irq_bits[line] = Some(bit);
        Some(bit)
    }

    /// Allow ports `first..=last` in this server's I/O bitmap (made on
    /// first use, denying every port). The caller checked its grants.
    pub fn allow_ports(&mut self, first: u16, last: u16) {
        let bitmap = self
            .io_bitmap
            .get_or_insert_with(|| Box::new([0xFF; IO_BITMAP_BYTES]));
        microkernel::syscall_args::allow_ports(&mut bitmap[..], first, last);
    }

    /// Map MMIO grant `grant` (uncached) in this server's MMIO window, once
    /// and whole; later calls get the same place. Returns its base.
    pub fn map_mmio(&mut self, grant: usize) -> Result<u64, MapError> {
        let g = self.mmio[grant];
        if let Some(base) = g.mapped_at {
            return Ok(base);
        }
        let base = self.mmio_next;
        let flags = Flags::USER_ACCESSIBLE
            | Flags::WRITABLE
            | Flags::NO_EXECUTE
            | Flags::NO_CACHE
            | Flags::WRITE_THROUGH;
        let mut offset = 0;
        while offset < g.len {
            self.space.map(base + offset, g.phys + offset, flags)?;
            offset += PAGE_SIZE;
        }
        // A guard page between regions.
        self.mmio_next = base + g.len + PAGE_SIZE;
        self.mmio[grant].mapped_at = Some(base);
        Ok(base)
    }

    /// Load `image` as server `index`, ready to run from its entry point.
    /// Pages holding file bytes are copied and mapped now; the rest of each
    /// segment (its pure `.bss` pages) and the stack become lazy ranges,
    /// mapped on first touch. An image whose lazy pages alone outnumber the
    /// free frames could never run and is refused as out of memory.
    /// It runs on CPU `cpu`, always (its kernel stack serves that CPU).
    pub fn load(index: usize, name: &str, image: &[u8], cpu: usize) -> Result<Server, LoadError> {
        let checked =
            elf::check(image, layout::IMAGE_BASE, layout::IMAGE_END).map_err(LoadError::Elf)?;
        let stack_bottom = layout::STACK_TOP - layout::STACK_PAGES * PAGE_SIZE;
        let lazy_pages = checked
            .segments
            .iter()
            .map(|s| {
                let zero = s.split_pages().zero;
                (zero.end - zero.start) / PAGE_SIZE
            })
            .sum::<u64>()
            + layout::STACK_PAGES;
        let (total, in_use) = frames::usage();
        if lazy_pages > total.saturating_sub(in_use) {
            return Err(LoadError::OutOfMemory);
        }
        let mut server = Server::empty(name, cpu)?;
        // The image's physical address, when it starts on a page (xtask
        // aligns every server in the initrd so).
        let image_phys =
            Some(crate::memory::virt_to_phys(image.as_ptr())).filter(|p| p % PAGE_SIZE == 0);
        let image_len = image.len() as u64;
        server
            .lazy
            .try_reserve(checked.segments.len() + 1)
            .map_err(|_| LoadError::OutOfMemory)?;
        for segment in &checked.segments {
            let mut flags = Flags::USER_ACCESSIBLE;
            if segment.writable {
                flags |= Flags::WRITABLE;
            }
            if !segment.executable {
                flags |= Flags::NO_EXECUTE;
            }
            let split = segment.split_pages();
            if !split.zero.is_empty() {
                server.lazy.push(LazyRange {
                    start: split.zero.start,
                    end: split.zero.end,
                    flags,
                    kind: LazyKind::Bss,
                });
            }
            let mut page = split.loaded.start;
            while page < split.loaded.end {
                // A read-only page of the image that lines up with a page of
                // the initrd is mapped from there, shared and unwritable:
                // nothing to allocate or copy (each page the kernel touches
                // costs about 1.5 ms where PVM interprets it), and servers
                // of one image share it.
                if let Some(phys) = image_phys
                    .and_then(|base| Some(base + segment.shared_page_offset(page, image_len)?))
                {
                    server.space.map(page, phys, flags)?;
                    page += PAGE_SIZE;
                    continue;
                }
                let frame = server.new_frame()?;
                // Copy the part of the file that lands on this page.
                let file_start = segment.vaddr;
                let file_end = segment.vaddr + segment.file_size;
                let from = page.max(file_start);
                let to = (page + PAGE_SIZE).min(file_end);
                if from < to {
                    let src = (segment.file_offset + (from - file_start)) as usize;
                    let len = (to - from) as usize;
                    // SAFETY: `frame` is a fresh frame reached through the
                    // direct map; `elf::check` bounded the source range.
                    unsafe {
                        crate::memory::copy_bytes(
                            phys_to_virt(frame).add((from - page) as usize),
                            image[src..src + len].as_ptr(),
                            len,
                        )
                    };
                }
                server.space.map(page, frame, flags)?;
                page += PAGE_SIZE;
            }
        }
        // The status page: the kernel's to write, the server's to read.
        let status = server.new_frame()?;
        server.space.map(
            layout::STATUS_PAGE,
            status,
            Flags::USER_ACCESSIBLE | Flags::NO_EXECUTE,
        )?;
        server.status_frame = status;
        // The stack, on first touch too; nothing below it is ever mapped:
        // that page is the guard.
        server.lazy.push(LazyRange {
            start: stack_bottom,
            end: layout::STACK_TOP,
            flags: Flags::USER_ACCESSIBLE | Flags::WRITABLE | Flags::NO_EXECUTE,
            kind: LazyKind::Stack,
        });
        let frame = TrapFrame {
            rip: checked.entry,
            cs: u64::from(USER_CODE),
            rflags: 0x202,
            rsp: layout::STACK_TOP,
            ss: u64::from(USER_DATA),
            rdi: index as u64,
            rsi: crate::hv::backend().syscall_entry() as u64,
            ..TrapFrame::default()
        };
        // SAFETY: the frame slot is at the top of the server's own, mapped,
        // unused kernel stack.
        unsafe { server.frame().write(frame) };
        Ok(server)
    }

    fn empty(name: &str, cpu: usize) -> Result<Server, LoadError> {
        let root = frames::alloc_zeroed().ok_or(LoadError::OutOfMemory)?;
        let kernel_root = kernel_space().root();
        // SAFETY: both roots are live tables reached through the direct map;
        // the new one is ours. The kernel half (slots 256..512) is shared.
        unsafe {
            let new = &mut *phys_to_virt(root).cast::<PageTable>();
            let kernel = &*phys_to_virt(kernel_root).cast::<PageTable>();
            for slot in 256..512 {
                new[slot] = kernel[slot].clone();
            }
        }
        let kernel_stack = match KernelStack::allocate(cpu) {
            Ok(stack) => stack,
            Err(e) => {
                frames::free(root);
                return Err(e.into());
            }
        };
        Ok(Server {
            name: String::from(name),
            // SAFETY: the root was just made for this server alone.
            space: unsafe { AddressSpace::from_root(root) },
            owned_frames: Vec::new(),
            lazy: Vec::new(),
            demand_pages: 0,
            kernel_stack,
            fault_pending: false,
            fpu: Box::new(FpuState::initial()),
            bits_used: 0,
            channels: Vec::new(),
            port_grants: Vec::new(),
            io_bitmap: None,
            irq_grants: 0,
            irq_bits: [None; microkernel::irq::LINES],
            mmio: Vec::new(),
            mmio_next: layout::MMIO_BASE,
            restarts: 0,
            status_frame: 0,
            injected: false,
            syscalls: 0,
            log_limit: microkernel::ratelimit::TokenBucket::new(),
            released: false,
        })
    }

    /// The status page, through the direct map.
    fn status_page(&mut self) -> &mut abi::StatusPage {
        // SAFETY: the frame is this server's own, zeroed at load, mapped
        // read-only for the server and written only here; `StatusPage` is
        // plain data smaller than a page with an alignment of 4. Callers
        // write only live servers' pages (`supervisor::tell_peer` checks),
        // so the frame has not been freed (`release_memory`).
        unsafe { &mut *phys_to_virt(self.status_frame).cast::<abi::StatusPage>() }
    }

    /// Tell the server what became of channel `handle`: its generation and
    /// whether the peer is alive (`abi::PEER_*`).
    pub fn set_channel_status(&mut self, handle: usize, generation: u32, peer: u32) {
        if let Some(entry) = self.status_page().channels.get_mut(handle) {
            *entry = abi::ChannelStatus { generation, peer };
        }
    }

    /// Record the restart count, on the status page too.
    pub fn set_restarts(&mut self, restarts: u32) {
        self.restarts = restarts;
        self.status_page().restarts = restarts;
    }

    fn new_frame(&mut self) -> Result<u64, LoadError> {
        let frame = frames::alloc_zeroed().ok_or(LoadError::OutOfMemory)?;
        self.owned_frames.push(frame);
        Ok(frame)
    }

    /// If `addr` lies in one of this server's lazy ranges and its page is
    /// not mapped yet, map a zeroed frame there with the range's flags; the
    /// frame is the server's, freed with it. Works on the server's own
    /// tables whether or not they are live: a page that was not present is
    /// in no TLB, so nothing needs flushing.
    pub fn map_on_demand(&mut self, addr: u64) -> Demand {
        let page = addr & !(PAGE_SIZE - 1);
        let Some(range) = self.lazy.iter().find(|r| r.start <= page && page < r.end) else {
            return Demand::NotLazy;
        };
        let (flags, kind) = (range.flags, range.kind);
        // Room to record the frame first, so that nothing fails after it is
        // mapped.
        if self.owned_frames.try_reserve(1).is_err() {
            return Demand::OutOfMemory(kind);
        }
        let Some(frame) = frames::alloc_zeroed() else {
            return Demand::OutOfMemory(kind);
        };
        match self.space.map(page, frame, flags) {
            Ok(()) => {
                self.owned_frames.push(frame);
                self.demand_pages += 1;
                Demand::Mapped
            }
            Err(e) => {
                frames::free(frame);
                match e {
                    MapError::OutOfMemory => Demand::OutOfMemory(kind),
                    MapError::AlreadyMapped | MapError::HugePageInTheWay => Demand::NotLazy,
                }
            }
        }
    }

    /// Free everything the server owns: its frames, its user page tables,
    /// its root. The caller has switched away from this address space and
    /// this kernel stack.
    pub fn release_memory(&mut self) {
        if core::mem::replace(&mut self.released, true) {
            return;
        }
        for frame in self.owned_frames.drain(..) {
            frames::free(frame);
        }
        let root = self.space.root();
        // SAFETY: the tables are this server's and no CPU uses them any more;
        // only the user half (slots 0..256) is ours to free.
        unsafe { free_tables(root, 4, 256) };
        frames::free(root);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.release_memory();
    }
}

/// Free the page tables below `table` (not the leaf frames: those are owned
/// by the server, a channel, or are device memory).
unsafe fn free_tables(table: u64, level: u8, slots: usize) {
    // SAFETY: the caller passes a table of this level that nobody uses.
    let entries = unsafe { &*phys_to_virt(table).cast::<PageTable>() };
    for entry in entries.iter().take(slots) {
        let flags = entry.flags();
        if !flags.contains(Flags::PRESENT) || flags.contains(Flags::HUGE_PAGE) || level == 1 {
            continue;
        }
        let next = entry.addr().as_u64();
        // SAFETY: a present, non-huge entry above level 1 points at a table.
        unsafe { free_tables(next, level - 1, 512) };
        frames::free(next);
    }
}
