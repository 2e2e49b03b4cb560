//! The backend interface: every operation the kernel needs from the CPU or
//! the hypervisor beneath it, in the three families, in this one file. A
//! backend is one implementation of [`Backend`]; one is chosen at boot
//! (`super::init`) and called through `&'static dyn Backend` from then on.
//!
//! Why a trait object and not an enum: a new hypervisor is a new type that
//! implements this trait, with the compiler listing every operation it still
//! lacks, and nothing outside its file changes; the host implementation the
//! kernel's policy is tested against is one more. The price, one indirect
//! call per operation, is nothing beside the exit most operations are.
//!
//! Default methods are the plain instructions; a backend overrides only what
//! its hypervisor needs done differently, so each backend's file is exactly
//! the list of its differences.
//!
//! Context: every method may run in trap context (interrupts masked) unless
//! it says otherwise; none allocates or blocks.

use abi::SyscallEntry;
use x86_64::structures::paging::PageTableFlags;

use super::cpu::{IO_BITMAP_BYTES, Protection};
use super::trap::{EntryFlavour, TrapFrame};
use super::{CpuFeatures, context, cpu, interrupts, lapic, paging};

pub trait Backend: Sync {
    /// The name the banner, `boot_info` and the tests use.
    fn name(&self) -> &'static str;

    // ----- Family 1: interrupt masking -----

    /// Whether interrupts are unmasked.
    fn interrupts_enabled(&self) -> bool {
        interrupts::raw_flag()
    }

    /// Mask interrupts.
    fn disable_interrupts(&self) {
        interrupts::raw_disable();
    }

    /// Unmask interrupts.
    ///
    /// # Safety
    /// Handlers installed; the current stack takes a trap frame.
    unsafe fn enable_interrupts(&self) {
        // SAFETY: the caller's guarantee.
        unsafe { interrupts::raw_enable() };
    }

    /// Unmask interrupts and halt until one arrives, with no window between.
    ///
    /// # Safety
    /// As for [`Backend::enable_interrupts`].
    unsafe fn halt_until_interrupt(&self) {
        // SAFETY: the caller's guarantee.
        unsafe { interrupts::raw_enable_and_halt() };
    }

    /// An interrupt in `frame` arrived where the kernel had interrupts
    /// masked, which a backend whose hypervisor ignores the CPU's interrupt
    /// flag must allow for: if so, remember it for [`Backend::take_deferred`]
    /// and say `true`; the trap then returns at once. The native backend
    /// never sees such an interrupt.
    fn defer_interrupt(&self, _frame: &TrapFrame) -> bool {
        false
    }

    /// A vector deferred by [`Backend::defer_interrupt`], to be handled now
    /// (by the trap that is ending), and whether its end of interrupt was
    /// already done.
    fn take_deferred(&self) -> Option<(u8, bool)> {
        None
    }

    /// The trap path has masked interrupts (an interrupt gate, or SYSCALL's
    /// flag mask) and entered `trap_dispatch` with `frame`.
    fn trap_entered(&self, _frame: &mut TrapFrame) {}

    /// `trap_dispatch` is about to resume `frame`.
    fn trap_leaving(&self, _frame: &TrapFrame) {}

    /// End the interrupt being serviced (PV EOI where KVM offers it).
    fn end_of_interrupt(&self) {
        lapic::end_of_interrupt();
    }

    // ----- Family 2: paging -----

    /// Bits every kernel mapping, and every table above one, carries.
    fn kernel_page_flags(&self) -> PageTableFlags {
        PageTableFlags::empty()
    }

    /// Drop one page's translation from this CPU's TLB.
    fn flush_page(&self, virt: u64) {
        paging::raw_invlpg(virt);
    }

    /// Load the address space rooted at `root_phys`.
    ///
    /// # Safety
    /// The new tables map the kernel half as the current ones do.
    unsafe fn switch_address_space(&self, root_phys: u64) {
        // SAFETY: the caller's guarantee.
        unsafe { paging::raw_write_cr3(root_phys) };
    }

    // ----- Family 3: context switching -----

    /// Which trap stubs and SYSCALL entry the backend runs.
    fn entry_flavour(&self) -> EntryFlavour {
        EntryFlavour::Swapgs
    }

    /// How servers enter the kernel (told to each at start, in `rsi`).
    fn syscall_entry(&self) -> SyscallEntry {
        SyscallEntry::Syscall
    }

    /// The CR4 protection bits the backend can live with, given what the
    /// CPU offers.
    fn protection(&self, features: &CpuFeatures) -> Protection {
        Protection {
            smep: features.smep,
            smap: features.smap,
            umip: features.umip,
        }
    }

    /// What a trap is, after the backend's corrections: usually
    /// `frame.vector`; a backend whose hypervisor delivers one event as
    /// another turns it back here (and may repair the frame).
    fn trap_vector(&self, frame: &mut TrapFrame) -> u64 {
        frame.vector
    }

    /// Find the extended state (XSAVE components) ring 3 can use, which the
    /// context switch must then keep per thread; `None` for FXSAVE only.
    fn extended_state(&self) -> Option<(u64, usize)> {
        context::init_extended_state()
    }

    /// Make `top` the stack that traps and system calls from ring 3 land on.
    fn set_kernel_stack(&self, top: u64) {
        context::set_kernel_stack(top);
    }

    /// Whether ring 3 reaches its granted ports through the I/O permission
    /// bitmap. When not, every IN/OUT a server executes raises #GP and the
    /// kernel emulates it against the grant.
    fn ports_direct(&self) -> bool {
        true
    }

    /// Install a thread's I/O permission bitmap (a set bit denies a port).
    fn set_io_bitmap(&self, bitmap: &[u8; IO_BITMAP_BYTES]) {
        cpu::set_io_bitmap(bitmap);
    }

    /// Fire the kernel's timer vector once when the TSC reaches `deadline`;
    /// `None` stops it.
    fn set_deadline(&self, deadline: Option<u64>) {
        lapic::set_deadline(deadline);
    }

    /// Send interrupt `vector` to the CPU whose local APIC ID is `apic_id`.
    fn send_ipi(&self, apic_id: u32, vector: u8) {
        lapic::send_ipi(apic_id, vector);
    }

    /// A CPU other than the boot one has loaded its tables: put it in the
    /// mode the backend runs the kernel in (the boot CPU was, in
    /// `super::init`), with the extended state its context switch keeps.
    ///
    /// # Safety
    /// The IDT is loaded and the kernel's page tables carry the backend's
    /// kernel flags.
    unsafe fn start_cpu(&self) {
        self.extended_state();
    }

    /// One line for the banner: what the backend took from the machine.
    fn describe(&self, out: &mut dyn core::fmt::Write) -> core::fmt::Result;
}
