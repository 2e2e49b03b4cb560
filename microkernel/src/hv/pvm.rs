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
//! - PUSHF always shows IF = 1 and POPF cannot change it: the backend keeps
//!   the kernel's own interrupt flag, and skips a CLI or STI that would not
//!   change it (each one is an exit).
//! - Exceptions and SYSCALL from ring 3 do not swap GS, while the emulated
//!   IRETQ and SYSRETQ do: the kernel never runs SWAPGS here and keeps both
//!   GS bases 0, finding its per-CPU block by address.
//! - SYSCALL arrives in supervisor mode with RCX intact: no fault to recover.
//! - The TSS I/O permission bitmap is ignored: a server's granted IN/OUT
//!   raises #GP, which the kernel emulates against the grant, and bursts go
//!   through `ioport_write_paced`, one kernel entry each.
//!
//! Context: [`probe`] and [`enter_native_mode`] at boot, before servers; the
//! rest in trap context.

use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::structures::paging::PageTableFlags;

use super::backend::Backend;
use super::cpu::{IO_BITMAP_BYTES, Protection};
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
    }
}

/// The kernel's own interrupt flag: the CPU's cannot be read here.
static INTERRUPTS_ENABLED: AtomicBool = AtomicBool::new(false);

pub struct Pvm {
    pub kvm: Option<KvmFeatures>,
}

impl Backend for Pvm {
    fn name(&self) -> &'static str {
        "pvm"
    }

    fn interrupts_enabled(&self) -> bool {
        INTERRUPTS_ENABLED.load(Ordering::Relaxed)
    }

    fn disable_interrupts(&self) {
        if INTERRUPTS_ENABLED.swap(false, Ordering::Relaxed) {
            interrupts::raw_disable();
        }
    }

    unsafe fn enable_interrupts(&self) {
        if !INTERRUPTS_ENABLED.swap(true, Ordering::Relaxed) {
            // SAFETY: the caller's guarantee.
            unsafe { interrupts::raw_enable() };
        }
    }

    unsafe fn halt_until_interrupt(&self) {
        INTERRUPTS_ENABLED.store(true, Ordering::Relaxed);
        // SAFETY: the caller's guarantee.
        unsafe { interrupts::raw_enable_and_halt() };
    }

    fn trap_entered(&self) {
        INTERRUPTS_ENABLED.store(false, Ordering::Relaxed);
    }

    fn trap_leaving(&self, frame: &TrapFrame) {
        // IRETQ restores the flag the frame holds; ring 3 always runs with
        // interrupts on and the kernel does not see its flag there.
        let resumes_kernel = !frame.came_from_user();
        INTERRUPTS_ENABLED.store(
            resumes_kernel && frame.rflags & (1 << 9) != 0,
            Ordering::Relaxed,
        );
    }

    fn kernel_page_flags(&self) -> PageTableFlags {
        PageTableFlags::USER_ACCESSIBLE
    }

    fn entry_flavour(&self) -> EntryFlavour {
        EntryFlavour::Plain
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
            "native mode (MSR 0x4b564d10 bit 12): kernel pages user-accessible, SMEP off, \
             own interrupt flag, no SWAPGS, ports emulated against grants",
        )?;
        if let Some(kvm) = self.kvm {
            write!(
                out,
                "; kvm offers {kvm}, takes {}",
                if lapic::pv_eoi_enabled() {
                    "pv-eoi"
                } else {
                    "nothing"
                }
            )?;
        }
        Ok(())
    }
}
