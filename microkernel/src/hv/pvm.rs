//! The pvm backend: the native mode of the PVM-type KVM these machines run
//! (`../shared/PLATFORM.md`). A guest that sets bit 12 of MSR 0x4b564d10
//! stops being interpreted: its kernel runs on the hardware at CPL 3, and
//! every privileged instruction becomes one exit. Nothing public documents
//! this interface; what follows is what a guest observes here, and what the
//! backend does about each point:
//!
//! - An access to a supervisor-only page from the kernel livelocks the
//!   vCPU, so every kernel mapping is user-accessible at every level
//!   ([`Backend::kernel_page_flags`]) and SMEP is off. User mode still
//!   cannot read the kernel half: the hypervisor keeps it out of ring 3's
//!   view (a server's read faults with error code 0x4; tested).
//! - PML4 slot 256 takes reserved-bit faults: the kernel layout leaves it
//!   empty on every backend.
//! - PUSHF always shows IF = 1, POPF cannot change it, and CLI does not
//!   stop an interrupt from arriving (measured: after CLI, a timer deadline
//!   interrupts a loop with no exit in it). So the kernel's interrupt flag
//!   is its own, in memory, and never an instruction: an interrupt that
//!   arrives in kernel mode while that flag is clear is recorded and
//!   returned from at once ([`Backend::defer_interrupt`]), and the trap
//!   that is running handles it before it ends; the idle loop, the one
//!   place the flag is set, handles any left over before it halts.
//! - Since an interrupt can arrive at any kernel instruction, the kernel
//!   may never run on a stack it does not own. SYSCALL does not switch
//!   stacks, so it is off here (EFER.SCE clear: a server's `syscall` is
//!   #UD) and servers enter through `int 0x80`. The hypervisor's own IDT
//!   does not let ring 3 call that vector, so it arrives as a #GP whose
//!   error code names IDT vector 0x80 ([`Backend::trap_vector`] turns it
//!   back into the system call): an exception from ring 3, which switches
//!   to the kernel stack before the first kernel instruction. Every return
//!   is IRETQ.
//! - Exceptions and interrupts from ring 3 do not swap GS, while the
//!   emulated IRETQ does: the kernel never runs SWAPGS here and keeps both
//!   GS bases 0.
//! - The TSS I/O permission bitmap is ignored: a server's granted IN/OUT
//!   raises #GP, which the kernel emulates against the grant, and bursts go
//!   through `ioport_write_paced`, one kernel entry each.
//!
//! - Measured too: a VM booted through firmware (`-M q35`, SeaBIOS) gets
//!   no external interrupt at all in native mode (the timer's vector stays
//!   in the IRR; exceptions still arrive), while `-M microvm` does. So the
//!   backend proves at boot that an interrupt arrives before it is chosen
//!   (`hv::init`), and leaves native mode again if none does.
//!
//! - Measured with two vCPUs: a vCPU running code that makes no exit
//!   misses its interrupts (timer, IPIs) in about half the boots, halted
//!   or not, while exceptions always arrive. So the backend keeps to one
//!   CPU unless `pvm_smp=on` asks for every CPU ([`Backend::other_cpus`]),
//!   and then the idle loop polls memory and enters the kernel by an
//!   exception ([`poll_once`]).
//!
//! Context: [`probe`] and [`enter_native_mode`] at boot, before servers; the
//! rest in trap context.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use abi::{SYSCALL_INT_VECTOR, SyscallEntry};

use x86_64::structures::paging::PageTableFlags;

use super::backend::Backend;
use super::cpu::{IO_BITMAP_BYTES, Protection};
use super::smp::{MAX_CPUS, this_cpu};
use super::trap::{EntryFlavour, TrapFrame};
use super::{CpuFeatures, KvmFeatures, interrupts, lapic, msr};

/// The control word; bit 12 selects native mode.
const MSR_CONTROL: u32 = 0x4b56_4d10;
/// Reads "PVM" (0x4d5650) where the interface exists.
const MSR_SIGNATURE: u32 = 0x4b56_4d11;
/// The TSC rate in kHz.
const MSR_TSC_KHZ: u32 = 0x4b56_4d13;
const SIGNATURE: u64 = 0x004d_5650;
const NATIVE_MODE: u64 = 1 << 12;

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
/// [`Backend::kernel_page_flags`]); SMEP is off.
pub unsafe fn enter_native_mode() {
    // SAFETY: the interface exists (the probe read its signature) and the
    // caller guarantees what native mode requires.
    unsafe {
        let control = msr::read(MSR_CONTROL);
        msr::write(MSR_CONTROL, control | NATIVE_MODE);
        // The hypervisor's own copy of IF is left set, once, so that HLT
        // always wakes for an interrupt; masking is the kernel's flag.
        interrupts::raw_enable();
    }
}

/// Go back to interpretation (after [`enter_native_mode`] found that
/// interrupts do not arrive).
///
/// # Safety
/// Native mode was entered; the kernel is ready to run interpreted again
/// (the native backend's trap stubs and SYSCALL entry installed next).
pub unsafe fn leave_native_mode() {
    // SAFETY: the interface exists; clearing the bit is the way back.
    unsafe {
        let control = msr::read(MSR_CONTROL);
        msr::write(MSR_CONTROL, control & !NATIVE_MODE);
    }
    // Interpreted, the CPU's flag counts again: masked, as boot runs.
    interrupts::raw_disable();
}

/// The kernel's own interrupt flag: the CPU's neither shows nor masks.
static INTERRUPTS_ENABLED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Vectors that arrived while the flag was clear, one bit each, per CPU.
static DEFERRED: [[AtomicU64; 4]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; 4] }; MAX_CPUS];

/// Whether CPU `cpu` has interrupts deferred and not yet handled.
fn any_deferred(cpu: usize) -> bool {
    DEFERRED[cpu].iter().any(|w| w.load(Ordering::Relaxed) != 0)
}

// The idle loop's way into the kernel with several CPUs (see `poll_once`):
// UD2 at a known address, an exception, which the hypervisor delivers
// whatever became of the interrupts. `Pvm::trap_entered` recognises it and
// resumes at the RET after it.
global_asm!(
    ".pushsection .text.pvm_idle_trap, \"ax\"",
    ".global pvm_idle_trap",
    "pvm_idle_trap:",
    "ud2",
    "ret",
    ".popsection",
);

unsafe extern "C" {
    /// Trap into the kernel from the idle loop, and return.
    fn pvm_idle_trap();
}

/// The length of the UD2 that `pvm_idle_trap` starts with.
const IDLE_TRAP_LEN: u64 = 2;

/// Whether `frame` is the idle loop's UD2.
fn is_idle_trap(frame: &TrapFrame) -> bool {
    const INVALID_OPCODE: u64 = 6;
    frame.vector == INVALID_OPCODE
        && !frame.came_from_user()
        && frame.rip == pvm_idle_trap as *const () as u64
}

/// One round of the idle loop when several CPUs run (`pvm_smp=on`): look
/// in memory for what would have interrupted it, and trap into the kernel
/// when something did.
///
/// Measured here (`docs/ARCHITECTURE.md`, "The pvm backend on several
/// CPUs"): with two vCPUs in PVM's native mode, an idle loop that arms its
/// timer and halts, or spins until the timer fires, soon stops taking
/// interrupts in most runs, and a halted vCPU is not woken by an IPI; a
/// synchronous exception is always delivered. So an idle CPU here never
/// waits for an interrupt: it polls its armed deadline, its deferred
/// interrupts and its wake-up flag (`smp::kick`), and enters the kernel by
/// [`pvm_idle_trap`]. The price is a host core kept busy while it idles.
fn poll_once(cpu: usize) {
    let due = any_deferred(cpu)
        || super::smp::wake_pending(cpu)
        || lapic::deadline_passed(super::rdtsc());
    if due {
        super::exits::count(abi::HvOp::Other);
        // SAFETY: the UD2 is recognised by `trap_entered`, which resumes
        // after it; the trap schedules as any other and returns here.
        unsafe { pvm_idle_trap() };
    } else {
        core::hint::spin_loop();
    }
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

    fn disable_interrupts(&self) {
        INTERRUPTS_ENABLED[this_cpu()].store(false, Ordering::Relaxed);
    }

    unsafe fn enable_interrupts(&self) {
        INTERRUPTS_ENABLED[this_cpu()].store(true, Ordering::Relaxed);
    }

    unsafe fn halt_until_interrupt(&self) {
        let cpu = this_cpu();
        INTERRUPTS_ENABLED[cpu].store(true, Ordering::Relaxed);
        if super::smp::online() > 1 {
            return poll_once(cpu);
        }
        if any_deferred(cpu) {
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

    fn trap_entered(&self, frame: &mut TrapFrame) {
        let cpu = this_cpu();
        INTERRUPTS_ENABLED[cpu].store(false, Ordering::Relaxed);
        if is_idle_trap(frame) {
            frame.rip += IDLE_TRAP_LEN;
            // Handled as the interrupts it stands for: the timer if this
            // CPU's deadline has passed (already ended: nothing is in
            // service), else nothing but the schedule every trap ends with.
            frame.vector = u64::from(lapic::SPURIOUS_VECTOR);
            if lapic::take_passed_deadline(super::rdtsc()) {
                let timer = usize::from(lapic::TIMER_VECTOR);
                DEFERRED[cpu][timer / 64].fetch_or(1 << (timer % 64), Ordering::Relaxed);
            }
        }
        // This trap schedules: the wake-ups asked before it are served.
        super::smp::take_wake(cpu);
    }

    fn trap_leaving(&self, frame: &TrapFrame) {
        let cpu = this_cpu();
        // Set again only by the idle loop, just before it halts.
        INTERRUPTS_ENABLED[cpu].store(false, Ordering::Relaxed);
        // An interrupt deferred after this trap's last look at them (one
        // that arrives once the system's lock is given up) would wait for
        // the next trap, which a server in ring 3 may not take for a while:
        // the timer brings one just after the return (armed for "now" it
        // would fire on the way out, in the kernel, and be deferred too).
        // One deferred after this point still waits for the next trap.
        if frame.came_from_user() && any_deferred(cpu) {
            let after_return = lapic::tsc_hz() / 50_000;
            lapic::set_deadline(Some(super::rdtsc() + after_return));
        }
    }

    fn other_cpus(&self, pvm_smp: bool) -> Result<(), &'static str> {
        if pvm_smp {
            log::warn!(
                "pvm_smp=on: the pvm backend on every CPU, experimental here: a CPU running a \
                 server that makes no system call may miss its timer and IPIs (no preemption, \
                 late wake-ups); idle CPUs poll instead of halting"
            );
            return Ok(());
        }
        Err(
            "the pvm backend runs on one CPU: with two vCPUs in PVM's native mode, a vCPU \
             running code that makes no exit misses its interrupts in about half the boots \
             (measured), so neither preemption nor a halted CPU's wake-up can be relied on; \
             boot with hv=native for SMP, or pvm_smp=on for streams (experimental)",
        )
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
