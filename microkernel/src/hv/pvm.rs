//! The pvm backend: the native mode of the PVM-type KVM these machines run
//! (`../shared/PLATFORM.md`). A guest that writes the physical address of
//! a page to MSR 0x4b564d10 stops being interpreted: its kernel runs on the
//! hardware at CPL 3, and every privileged instruction becomes one exit.
//! Nothing public documents this interface; what follows is what a guest
//! observes here (and, for the interrupt flag, what the host kernel's own
//! type information and log say: `docs/ARCHITECTURE.md`, "KVM here is
//! PVM"), and what the backend does about each point:
//!
//! - The page is the vCPU's virtual interrupt flag ([`VifPage`]): byte 0
//!   says whether the vCPU takes interrupts. The hypervisor clears it when
//!   it delivers anything to kernel mode and sets it on a return to ring 3;
//!   the kernel sets it in its idle loop and clears it when the loop is
//!   left. The CPU's own IF no longer counts: PUSHF always shows IF = 1,
//!   POPF cannot change it, and CLI and STI only cost an exit. Each CPU
//!   registers a page of its own: two vCPUs on one page (the constant 0x1000
//!   this backend used to write, "bit 12") mask each other, so that a vCPU
//!   running a server missed its interrupts whenever the other was in its
//!   kernel.
//! - The kernel keeps its own flag too ([`Backend::interrupts_enabled`]),
//!   since an IRETQ back into kernel code restores the hypervisor's from
//!   the frame: an interrupt that still arrives in kernel mode while the
//!   kernel's flag is clear is recorded and returned from at once
//!   ([`Backend::defer_interrupt`]), and the trap that is running handles
//!   it before it ends.
//! - An access to a supervisor-only page from the kernel livelocks the
//!   vCPU, so every kernel mapping is user-accessible at every level
//!   ([`Backend::kernel_page_flags`]) and SMEP is off. User mode still
//!   cannot read the kernel half: the hypervisor keeps it out of ring 3's
//!   view (a server's read faults with error code 0x4; tested).
//! - PML4 slot 256 takes reserved-bit faults: the kernel layout leaves it
//!   empty on every backend.
//! - SYSCALL does not switch stacks, so it is off here (EFER.SCE clear: a
//!   server's `syscall` is #UD) and servers enter through `int 0x80`. The
//!   hypervisor's own IDT does not let ring 3 call that vector, so it
//!   arrives as a #GP whose error code names IDT vector 0x80
//!   ([`Backend::trap_vector`] turns it back into the system call): an
//!   exception from ring 3, which switches to the kernel stack before the
//!   first kernel instruction. Every return is IRETQ.
//! - Exceptions and interrupts from ring 3 do not swap GS, while the
//!   emulated IRETQ does: the kernel never runs SWAPGS here and keeps both
//!   GS bases 0.
//! - The TSS I/O permission bitmap is ignored: a server's granted IN/OUT
//!   raises #GP, which the kernel emulates against the grant, and bursts go
//!   through `ioport_write_paced`, one kernel entry each.
//! - The backend proves at boot, before it is chosen (`hv::init`), that in
//!   native mode the page holds an interrupt back while it says masked and
//!   lets it in once it says unmasked, and leaves native mode again if not.
//!
//! Context: [`probe`] and [`enter_native_mode`] at boot (each CPU's), before
//! servers; the rest in trap context.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering, compiler_fence};

use abi::{SYSCALL_INT_VECTOR, SyscallEntry};

use x86_64::structures::paging::PageTableFlags;

use super::backend::Backend;
use super::cpu::{IO_BITMAP_BYTES, Protection};
use super::smp::{MAX_CPUS, this_cpu};
use super::trap::{EntryFlavour, TrapFrame};
use super::{CpuFeatures, KvmFeatures, interrupts, lapic, msr};

/// The control word: its page-aligned part is the physical address of the
/// vCPU's interrupt-flag page ([`VifPage`]); a non-zero address selects
/// native mode. Bits 0 to 11 are options the backend leaves clear.
const MSR_CONTROL: u32 = 0x4b56_4d10;
/// Reads "PVM" (0x4d5650) where the interface exists.
const MSR_SIGNATURE: u32 = 0x4b56_4d11;
/// The TSC rate in kHz.
const MSR_TSC_KHZ: u32 = 0x4b56_4d13;
const SIGNATURE: u64 = 0x004d_5650;

/// A vCPU's virtual interrupt flag, shared with the hypervisor: byte 0 is
/// 1 while the vCPU takes interrupts, 0 while it does not. The hypervisor
/// reads it whenever it has an interrupt to deliver, clears it when it
/// delivers any event to kernel mode (as an interrupt gate clears IF), sets
/// it on a return to ring 3, and restores it from the frame on an IRETQ
/// into kernel code; the kernel sets and clears it with plain stores, no
/// exit. It is read at the vCPU's exits, which come at any
/// instruction (the host's own interrupts make them too), so an interrupt
/// can arrive anywhere the flag is set, and one that came while it was
/// clear waits for the next exit after it is set. One page per CPU: a vCPU
/// that registered another's page would be masked and unmasked by the
/// other's kernel entries and returns.
#[repr(C, align(4096))]
struct VifPage([AtomicU8; 4096]);

static VIF_PAGES: [VifPage; MAX_CPUS] =
    [const { VifPage([const { AtomicU8::new(0) }; 4096]) }; MAX_CPUS];

/// Let the hypervisor deliver interrupts to CPU `cpu` (at its next exit), or not.
fn set_virtual_interrupt_flag(cpu: usize, enabled: bool) {
    // Relaxed: only this vCPU's own exits read it, and an exit comes
    // between two of this CPU's instructions, after the store or before.
    // The fences keep the compiler from moving the kernel's memory accesses
    // out of the masked window it opens or closes.
    if !enabled {
        compiler_fence(Ordering::SeqCst);
    }
    VIF_PAGES[cpu].0[0].store(u8::from(enabled), Ordering::Relaxed);
    if enabled {
        compiler_fence(Ordering::SeqCst);
    }
}

/// What the probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// The interface is there; the TSC rate it reports, in Hz (0 if none).
    Offered { tsc_hz: u64 },
    /// Reading the signature MSR raised #GP (recovered): no such interface.
    NoMsr,
    /// The MSR exists but does not read "PVM".
    WrongSignature(u64),
}

impl core::fmt::Display for Probe {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Probe::Offered { .. } => write!(f, "MSR {MSR_SIGNATURE:#x} reads \"PVM\""),
            Probe::NoMsr => write!(
                f,
                "no PVM interface (reading MSR {MSR_SIGNATURE:#x} raised #GP, recovered)"
            ),
            Probe::WrongSignature(v) => write!(
                f,
                "no PVM interface (MSR {MSR_SIGNATURE:#x} reads {v:#x}, not \"PVM\")"
            ),
        }
    }
}

/// Look for the interface with guarded reads: harmless where it is absent.
/// Needs the IDT (the #GP is recovered through the fixup table).
pub fn probe() -> Probe {
    match msr::read_guarded(MSR_SIGNATURE) {
        None => Probe::NoMsr,
        Some(SIGNATURE) => Probe::Offered {
            tsc_hz: msr::read_guarded(MSR_TSC_KHZ).unwrap_or(0) * 1000,
        },
        Some(other) => Probe::WrongSignature(other),
    }
}

/// Leave interpretation: from the next instruction the kernel runs on the
/// hardware at CPL 3.
///
/// # Safety
/// [`probe`] found the interface; the pvm trap stubs are installed; every
/// kernel page the CPU will touch is user-accessible at every level (the
/// boot tables are, and the kernel's own tables are built with
/// [`Backend::kernel_page_flags`]); SMEP is off. Returns with the CPU
/// masked (its page's flag clear) until the kernel unmasks it.
pub unsafe fn enter_native_mode() {
    let cpu = this_cpu();
    set_virtual_interrupt_flag(cpu, false);
    let page = crate::memory::image_virt_to_phys(&VIF_PAGES[cpu] as *const VifPage as u64);
    // SAFETY: the interface exists (the probe read its signature) and the
    // caller guarantees what native mode requires; the page is this CPU's
    // for good.
    unsafe { msr::write(MSR_CONTROL, page) };
}

/// Unmask this CPU for the boot's self-test of native mode (`hv::init`),
/// before any backend is active.
///
/// # Safety
/// Native mode was entered and the IDT takes the test's interrupt (as for
/// [`Backend::enable_interrupts`]).
pub unsafe fn unmask_for_self_test() {
    set_virtual_interrupt_flag(this_cpu(), true);
}

/// Mask this CPU again after the self-test.
pub fn mask_after_self_test() {
    set_virtual_interrupt_flag(this_cpu(), false);
}

/// Go back to interpretation (after [`enter_native_mode`] found that
/// interrupts do not arrive).
///
/// # Safety
/// Native mode was entered; the kernel is ready to run interpreted again
/// (the native backend's trap stubs and SYSCALL entry installed next).
pub unsafe fn leave_native_mode() {
    // SAFETY: the interface exists; no page is the way back.
    unsafe { msr::write(MSR_CONTROL, 0) };
    // Interpreted, the CPU's flag counts again: masked, as boot runs.
    interrupts::raw_disable();
}

/// The kernel's own interrupt flag, beside the hypervisor's ([`VifPage`]),
/// which an IRETQ back into kernel code sets again from the frame it
/// resumes (seen: the idle loop, interrupted with the flag set, resumes
/// with it set after `trap_leaving` cleared it, and an interrupt then
/// arrives with this one clear, to be deferred).
static INTERRUPTS_ENABLED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Vectors that arrived while the flag was clear, one bit each, per CPU.
static DEFERRED: [[AtomicU64; 4]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; 4] }; MAX_CPUS];

/// Whether CPU `cpu` has interrupts deferred and not yet handled.
fn any_deferred(cpu: usize) -> bool {
    DEFERRED[cpu].iter().any(|w| w.load(Ordering::Relaxed) != 0)
}

/// Vectors a deferral ends at once (see `defer_interrupt`).
fn ends_at_once(vector: u8) -> bool {
    vector == lapic::TIMER_VECTOR || vector == super::smp::IPI_VECTOR
}

pub struct Pvm {
    pub kvm: Option<KvmFeatures>,
}

impl Backend for Pvm {
    fn name(&self) -> &'static str {
        "pvm"
    }

    fn interrupts_enabled(&self) -> bool {
        INTERRUPTS_ENABLED[this_cpu()].load(Ordering::Relaxed)
    }

    // The hypervisor's flag is cleared first and set last: inside these
    // functions there is no window where it is set and the kernel's clear
    // (an IRETQ into kernel code can still make one: `defer_interrupt`).
    fn disable_interrupts(&self) {
        let cpu = this_cpu();
        set_virtual_interrupt_flag(cpu, false);
        INTERRUPTS_ENABLED[cpu].store(false, Ordering::Relaxed);
    }

    unsafe fn enable_interrupts(&self) {
        let cpu = this_cpu();
        INTERRUPTS_ENABLED[cpu].store(true, Ordering::Relaxed);
        set_virtual_interrupt_flag(cpu, true);
    }

    unsafe fn halt_until_interrupt(&self) {
        // SAFETY: the caller's contract is `enable_interrupts`'s.
        unsafe { self.enable_interrupts() };
        if any_deferred(this_cpu()) {
            // Interrupts deferred outside any trap (boot, or this loop
            // between two halts) are handled by a trap: make one come now.
            lapic::set_deadline(Some(super::rdtsc()));
        }
        interrupts::raw_halt();
    }

    fn defer_interrupt(&self, frame: &TrapFrame) -> bool {
        if frame.vector < 32
            || frame.vector > 255
            || frame.came_from_user()
            || INTERRUPTS_ENABLED[this_cpu()].load(Ordering::Relaxed)
        {
            return false;
        }
        let cpu = this_cpu();
        let vector = frame.vector as usize;
        DEFERRED[cpu][vector / 64].fetch_or(1 << (vector % 64), Ordering::Relaxed);
        if ends_at_once(vector as u8) {
            // The kernel's own edge-triggered vectors (the timer, the other
            // CPUs' IPI): end them now, so that the idle loop's "deadline
            // now" can bring a trap while it waits (an IPI in service would
            // hold back the timer below it). Device vectors stay in service
            // until handled (their level would only be delivered again).
            lapic::end_of_interrupt();
        }
        true
    }

    fn take_deferred(&self) -> Option<(u8, bool)> {
        for (word, bits) in DEFERRED[this_cpu()].iter().enumerate() {
            let pending = bits.load(Ordering::Relaxed);
            if pending != 0 {
                // Highest vector first: the order the local APIC would
                // have delivered them in.
                let bit = 63 - pending.leading_zeros() as usize;
                bits.fetch_and(!(1 << bit), Ordering::Relaxed);
                let vector = (word * 64 + bit) as u8;
                return Some((vector, ends_at_once(vector)));
            }
        }
        None
    }

    fn trap_entered(&self, _frame: &mut TrapFrame) {
        // The hypervisor cleared the page's flag as it delivered the trap.
        INTERRUPTS_ENABLED[this_cpu()].store(false, Ordering::Relaxed);
    }

    fn trap_leaving(&self, frame: &TrapFrame) {
        let cpu = this_cpu();
        // Set again only by the idle loop, just before it halts (a return
        // to ring 3 sets the hypervisor's copy itself).
        self.disable_interrupts();
        // An interrupt deferred after this trap's last look at them (one
        // that arrives once the system's lock is given up, through a flag
        // an IRETQ into kernel code set again) would wait for the next
        // trap, which a server in ring 3 may not take for a while: the
        // timer brings one shortly after the return. One deferred after
        // this point still waits for the next trap.
        if frame.came_from_user() && any_deferred(cpu) {
            let after_return = lapic::tsc_hz() / 50_000;
            lapic::set_deadline(Some(super::rdtsc() + after_return));
        }
    }

    unsafe fn start_cpu(&self) {
        // SAFETY: the interface exists (the boot CPU's probe found it, and
        // it is the machine's); the caller guarantees the IDT with the pvm
        // stubs and the kernel's tables with the pvm flags; SMEP is off
        // (`protection`, the same on every CPU).
        unsafe { enter_native_mode() };
        self.extended_state();
    }

    fn kernel_page_flags(&self) -> PageTableFlags {
        PageTableFlags::USER_ACCESSIBLE
    }

    fn entry_flavour(&self) -> EntryFlavour {
        EntryFlavour::Plain
    }

    fn syscall_entry(&self) -> SyscallEntry {
        SyscallEntry::Int80
    }

    fn trap_vector(&self, frame: &mut TrapFrame) -> u64 {
        // #GP, error code "IDT entry 0x80": a server's `int 0x80`
        // (two bytes, CD 80), which the gate would have delivered as
        // vector 0x80 after the instruction.
        const INT80_GP: u64 = ((SYSCALL_INT_VECTOR as u64) << 3) | 0b10;
        if frame.vector == 13 && frame.error_code == INT80_GP && frame.came_from_user() {
            frame.rip += 2;
            return u64::from(SYSCALL_INT_VECTOR);
        }
        frame.vector
    }

    fn protection(&self, features: &CpuFeatures) -> Protection {
        // SMEP would fault on every kernel page (all user-accessible here);
        // SMAP's STAC/CLAC are not implemented by the hypervisor.
        Protection {
            smep: false,
            smap: false,
            umip: features.umip,
        }
    }

    fn ports_direct(&self) -> bool {
        false
    }

    fn set_io_bitmap(&self, _bitmap: &[u8; IO_BITMAP_BYTES]) {
        // The hypervisor does not read it: granted ports are emulated
        // against `Server::io_bitmap` instead, and the copy is skipped.
    }

    fn describe(&self, out: &mut dyn core::fmt::Write) -> core::fmt::Result {
        out.write_str(
            "native mode; kernel pages user-accessible, own interrupt flag, int 0x80, \
             ports emulated",
        )?;
        super::describe_kvm(out, self.kvm)
    }
}
