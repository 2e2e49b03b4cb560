//! The hypervisor-facing module: every privileged instruction the kernel
//! executes after boot lives below this directory, so the kernel's whole
//! surface towards the hypervisor can be read in one sitting.
//!
//! [`backend::Backend`] is that surface: the operations of the three
//! families (interrupt masking, paging, context switching), in one file.
//! Two implementations, one chosen at boot by [`init`]:
//! - [`native::Native`]: plain instructions (bare metal, TCG, KVM on
//!   hardware virtualization with PV EOI; also correct, if slow, under the
//!   PVM-type KVM of these machines when it interprets the kernel);
//! - [`pvm::Pvm`]: that hypervisor's native mode, where the kernel runs on
//!   the hardware at CPL 3 and every privileged instruction is an exit.
//!
//! The family modules hold the instructions themselves, each counted by
//! kind ([`exits`]): [`interrupts`], [`paging`], and for context switching
//! [`context`], [`cpu`], [`trap`] and the deadline in [`lapic`]. The kernel
//! calls the family modules; they ask the backend where backends differ.

pub mod backend;
pub mod context;
pub mod cpu;
pub mod exits;
pub mod fixup;
pub mod interrupts;
pub mod kvm;
pub mod lapic;
pub mod msr;
pub mod native;
pub mod paging;
pub mod port;
pub mod pvm;
pub mod smp;
pub mod trap;

use conquer_once::spin::OnceCell;

use backend::Backend;
use core::arch::x86_64::{__cpuid, __cpuid_count};
use microkernel::cmdline::HvRequest;
use native::Native;
use pvm::Pvm;

/// KVM paravirtual features, from CPUID 0x4000_0001 eax.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmFeatures(pub u32);

impl KvmFeatures {
    pub const CLOCKSOURCE2: u32 = 1 << 3;
    pub const STEAL_TIME: u32 = 1 << 5;
    pub const PV_EOI: u32 = 1 << 6;
    pub const PV_UNHALT: u32 = 1 << 7;
    pub const PV_TLB_FLUSH: u32 = 1 << 9;
    pub const PV_SEND_IPI: u32 = 1 << 11;
    pub const PV_SCHED_YIELD: u32 = 1 << 13;

    const NAMES: [(u32, &'static str); 6] = [
        (Self::CLOCKSOURCE2, "kvmclock"),
        (Self::PV_EOI, "pv-eoi"),
        (Self::PV_UNHALT, "pv-unhalt"),
        (Self::PV_TLB_FLUSH, "pv-tlb-flush"),
        (Self::PV_SEND_IPI, "pv-send-ipi"),
        (Self::PV_SCHED_YIELD, "pv-sched-yield"),
    ];

    pub fn has(self, bit: u32) -> bool {
        self.0 & bit != 0
    }
}

impl core::fmt::Display for KvmFeatures {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut first = true;
        for (bit, name) in Self::NAMES {
            if self.has(bit) {
                if !first {
                    f.write_str(", ")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// CPU features the kernel turns on when present.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuFeatures {
    pub smep: bool,
    pub smap: bool,
    pub umip: bool,
    pub x2apic: bool,
    pub tsc_deadline: bool,
    pub invariant_tsc: bool,
    /// TSC frequency from CPUID 0x15 or KVM's 0x4000_0010, if either says.
    pub tsc_hz: Option<u64>,
}

static FEATURES: OnceCell<CpuFeatures> = OnceCell::uninit();
static KVM: OnceCell<Option<KvmFeatures>> = OnceCell::uninit();
static ACTIVE: OnceCell<&'static dyn Backend> = OnceCell::uninit();
static NATIVE: OnceCell<Native> = OnceCell::uninit();
static PVM: OnceCell<Pvm> = OnceCell::uninit();
/// Before [`init`] chooses, the plain instructions serve (early boot).
static EARLY: Native = Native {
    kvm: None,
    interpreted_by_pvm: false,
};

/// The active backend.
#[inline]
pub fn backend() -> &'static dyn Backend {
    match ACTIVE.get() {
        Some(active) => *active,
        None => &EARLY,
    }
}

/// KVM's paravirtual features, when CPUID says the hypervisor is KVM.
fn detect_kvm() -> Option<KvmFeatures> {
    // CPUID is unprivileged where the hardware runs it, an exit where a
    // hypervisor interprets it; it lives here because it decides the backend.
    let leaf1 = __cpuid(1);
    let hypervisor_present = leaf1.ecx & (1 << 31) != 0;
    if !hypervisor_present {
        return None;
    }
    let base = __cpuid(0x4000_0000);
    let mut signature = [0u8; 12];
    signature[0..4].copy_from_slice(&base.ebx.to_le_bytes());
    signature[4..8].copy_from_slice(&base.ecx.to_le_bytes());
    signature[8..12].copy_from_slice(&base.edx.to_le_bytes());
    if &signature != b"KVMKVMKVM\0\0\0" || base.eax < 0x4000_0001 {
        return None;
    }
    Some(KvmFeatures(__cpuid(0x4000_0001).eax))
}

/// The CPU's features; `pvm_tsc_hz` is the TSC rate the PVM interface
/// reports, used when CPUID gives none.
fn detect_features(kvm: Option<KvmFeatures>, pvm_tsc_hz: Option<u64>) -> CpuFeatures {
    let leaf1 = __cpuid(1);
    let max_leaf = __cpuid(0).eax;
    let leaf7 = if max_leaf >= 7 {
        __cpuid_count(7, 0)
    } else {
        __cpuid(0)
    };
    let max_ext = __cpuid(0x8000_0000).eax;
    let invariant_tsc = max_ext >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0;
    let mut tsc_hz = None;
    if max_leaf >= 0x15 {
        let l = __cpuid(0x15);
        if l.eax != 0 && l.ebx != 0 && l.ecx != 0 {
            tsc_hz = Some(u64::from(l.ecx) * u64::from(l.ebx) / u64::from(l.eax));
        }
    }
    if tsc_hz.is_none() && kvm.is_some() && __cpuid(0x4000_0000).eax >= 0x4000_0010 {
        let khz = __cpuid(0x4000_0010).eax;
        if khz != 0 {
            tsc_hz = Some(u64::from(khz) * 1000);
        }
    }
    let tsc_hz = tsc_hz.or(pvm_tsc_hz);
    CpuFeatures {
        smep: max_leaf >= 7 && leaf7.ebx & (1 << 7) != 0,
        // A PVM-type KVM (these project machines) advertises SMAP but
        // cannot run STAC/CLAC, and CPUID cannot tell it from KVM: under
        // KVM SMAP stays off. User pointers are still checked against the
        // page tables before every copy (`usermem`).
        smap: max_leaf >= 7 && leaf7.ebx & (1 << 20) != 0 && kvm.is_none(),
        umip: max_leaf >= 7 && leaf7.ecx & (1 << 2) != 0,
        x2apic: leaf1.ecx & (1 << 21) != 0,
        tsc_deadline: leaf1.ecx & (1 << 24) != 0,
        invariant_tsc,
        tsc_hz,
    }
}

/// Why the active backend was chosen.
#[derive(Clone, Copy, Debug)]
pub enum Reason {
    /// `hv=native` or `hv=pvm` on the command line, and the machine has it.
    Forced,
    /// `hv=auto` (or nothing): the probe's finding decided.
    Auto(pvm::Probe),
    /// `hv=pvm` was refused for what the probe found; `auto` decided.
    PvmRefused(pvm::Probe),
    /// PVM's native mode was offered but delivered no interrupt in the
    /// boot-time self-test.
    PvmNoInterrupts,
    /// PVM's native mode delivered an interrupt while the CPU's
    /// interrupt-flag page said masked, in the boot-time self-test.
    PvmUnmaskable,
}

impl core::fmt::Display for Reason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Reason::Forced => f.write_str("forced by the command line"),
            Reason::Auto(probe) => write!(f, "auto: {probe}"),
            Reason::PvmRefused(probe) => write!(f, "hv=pvm refused, {probe}; auto"),
            Reason::PvmNoInterrupts => {
                f.write_str("PVM offered, but its native mode delivered no interrupt")
            }
            Reason::PvmUnmaskable => {
                f.write_str("PVM offered, but its native mode did not hold an interrupt back")
            }
        }
    }
}

/// The choice [`init`] made, for the banner.
#[derive(Clone, Copy)]
pub struct Selection {
    pub backend: &'static dyn Backend,
    pub reason: Reason,
    /// TSC cycles the choice took.
    pub took_cycles: u64,
    /// The extended state the context switch keeps (XSAVE mask and area
    /// size), `None` for FXSAVE only.
    pub extended_state: Option<(u64, usize)>,
}

/// How long the pvm self-test waits for its interrupt.
const SELF_TEST_MS: u64 = 20;
/// How long the pvm self-test holds its interrupt back, in microseconds:
/// some 30 exits, each a chance to deliver it.
const SELF_TEST_MASKED_US: u64 = 200;

/// What the pvm self-test found wrong.
enum SelfTestFailure {
    /// No interrupt arrived once unmasked.
    NoInterrupt,
    /// The interrupt arrived while masked.
    NotHeldBack,
}

/// Enter PVM's native mode and check that its interrupt flag works there:
/// the timer, armed while the CPU is masked, must stay pending for
/// [`SELF_TEST_MASKED_US`] (the flag is an undocumented page, `pvm.rs`,
/// and another host may treat it otherwise), then arrive within
/// [`SELF_TEST_MS`] once unmasked. Stay in native mode if so, else leave it
/// again. Boot only. The early gates of either flavour take the test's
/// interrupt (in kernel mode neither swaps GS; the trap path ends it, since
/// no backend is active yet). `tsc_hz` from the probe, if it said.
fn enter_native_mode_if_its_interrupts_work(tsc_hz: Option<u64>) -> Result<(), SelfTestFailure> {
    lapic::prepare_early();
    // SAFETY: the probe found the interface; the IDT takes the test's
    // interrupt; the boot tables map everything user-accessible (see
    // `boot::entry`) and SMEP is not on yet.
    unsafe { pvm::enter_native_mode() };
    let hz = tsc_hz.unwrap_or(3_000_000_000);
    let held_back = lapic::interrupt_held_back(hz / 1_000_000 * SELF_TEST_MASKED_US);
    // SAFETY: native mode was just entered; the early gates take the test's
    // interrupt (see above).
    unsafe { pvm::unmask_for_self_test() };
    let arrived = lapic::interrupt_arrives(hz / 1000 * SELF_TEST_MS);
    pvm::mask_after_self_test();
    let result = match (held_back, arrived) {
        (true, true) => return Ok(()),
        (false, _) => SelfTestFailure::NotHeldBack,
        (true, false) => SelfTestFailure::NoInterrupt,
    };
    // SAFETY: native mode was entered above and nothing depends on it yet.
    unsafe { pvm::leave_native_mode() };
    Err(result)
}

/// Choose the backend: probe the machine (CPUID, and the PVM interface with
/// guarded MSR reads), honour `request`, and make the choice live: the trap
/// stubs and SYSCALL entry of its flavour, and for pvm native mode itself.
/// Once, at boot, after [`cpu::init`] (a probe's #GP needs the IDT) and
/// before the kernel builds its page tables (they take the backend's
/// flags). A refused request is logged as a warning.
pub fn init(request: HvRequest) -> Selection {
    let started = rdtsc();
    paging::init();
    // The probe first: where pvm is chosen, native mode is entered before
    // the many CPUID leaves below, each of which costs the interpreter
    // about a millisecond and native mode one exit.
    let probe = pvm::probe();
    let offered = matches!(probe, pvm::Probe::Offered { .. });
    let (use_pvm, reason) = match request {
        HvRequest::Native => (false, Reason::Forced),
        HvRequest::Pvm if offered => (true, Reason::Forced),
        HvRequest::Pvm => {
            log::warn!("hv=pvm refused: {probe}; booting with hv=auto");
            (false, Reason::PvmRefused(probe))
        }
        HvRequest::Auto => (offered, Reason::Auto(probe)),
    };
    let pvm_tsc_hz = match probe {
        pvm::Probe::Offered { tsc_hz } if tsc_hz > 0 => Some(tsc_hz),
        _ => None,
    };
    let (use_pvm, reason) =
        match use_pvm.then(|| enter_native_mode_if_its_interrupts_work(pvm_tsc_hz)) {
            Some(Err(SelfTestFailure::NoInterrupt)) => {
                log::warn!(
                    "hv=pvm refused: PVM's native mode delivered no interrupt within {} ms; \
                 the kernel stays interpreted",
                    SELF_TEST_MS
                );
                (false, Reason::PvmNoInterrupts)
            }
            Some(Err(SelfTestFailure::NotHeldBack)) => {
                log::warn!(
                    "hv=pvm refused: PVM's native mode delivered an interrupt while the CPU's \
                 interrupt-flag page said masked; the kernel stays interpreted"
                );
                (false, Reason::PvmUnmaskable)
            }
            _ => (use_pvm, reason),
        };
    let kvm = detect_kvm();
    FEATURES.init_once(|| detect_features(kvm, pvm_tsc_hz));
    KVM.init_once(|| kvm);
    let chosen: &'static dyn Backend = if use_pvm {
        PVM.get_or_init(|| Pvm { kvm })
    } else {
        NATIVE.get_or_init(|| Native {
            kvm,
            interpreted_by_pvm: offered,
        })
    };
    let flavour = chosen.entry_flavour();
    cpu::install_stubs(trap::stubs(flavour));
    context::init(smp::BOOT_CPU, flavour);
    ACTIVE.init_once(|| chosen);
    // On pvm this runs on the hardware now (XGETBV; the interpreter has none).
    let extended_state = chosen.extended_state();
    Selection {
        backend: chosen,
        reason,
        took_cycles: rdtsc().wrapping_sub(started),
        extended_state,
    }
}

/// Bring CPU `cpu` (started by `smp::start_cpus`, running on its idle
/// stack on the trampoline's tables) up as the boot CPU was: the kernel's
/// tables, its GDT and TSS with `stacks`, the shared IDT, the active
/// backend's per-CPU state (for pvm, native mode), system-call entry,
/// `protection` in CR4 and its local APIC. Interrupts stay masked.
pub fn start_this_cpu(
    cpu: usize,
    stacks: &cpu::TrapStacks,
    kernel_root: u64,
    protection: cpu::Protection,
) {
    paging::init();
    // SAFETY: the kernel's tables map the kernel half as the trampoline's do.
    unsafe { paging::switch_address_space(kernel_root) };
    let backend = backend();
    let flavour = backend.entry_flavour();
    cpu::init(cpu, stacks, trap::stubs(flavour));
    context::init(cpu, flavour);
    // SAFETY: the IDT is loaded; the kernel's tables are the backend's.
    unsafe { backend.start_cpu() };
    cpu::set_control_registers(protection);
    lapic::init_this_cpu(cpu);
    kvm::init_this_cpu(cpu);
}

/// The banner's account of KVM's paravirtual features: what it offers and
/// what the kernel took (either backend takes PV EOI where offered).
fn describe_kvm(out: &mut dyn core::fmt::Write, kvm: Option<KvmFeatures>) -> core::fmt::Result {
    match kvm {
        Some(kvm) => {
            let taken = [
                (lapic::pv_eoi_enabled(), "pv-eoi"),
                (kvm::pv_tlb_flush_enabled(), "pv-tlb-flush"),
            ];
            let mut names = taken.iter().filter(|(on, _)| *on).map(|(_, name)| *name);
            out.write_str("; takes ")?;
            match names.next() {
                None => out.write_str("nothing")?,
                Some(first) => {
                    out.write_str(first)?;
                    names.try_for_each(|name| write!(out, " {name}"))?;
                }
            }
            write!(out, " of kvm's {kvm}")
        }
        None => Ok(()),
    }
}

/// What the CPU offers (CPUID, and the PVM interface's TSC rate).
pub fn features() -> CpuFeatures {
    FEATURES.get().copied().unwrap_or_default()
}

/// KVM's paravirtual features, where the hypervisor is KVM.
pub fn kvm() -> Option<KvmFeatures> {
    KVM.get().copied().flatten()
}

/// Count what crossing between ring 3 and the kernel cost on this trap:
/// the return to ring 3, and the SWAPGS of the native flavour each way.
pub fn note_crossings(entered_from_user: bool, returns_to_user: bool) {
    let flavour = backend().entry_flavour();
    if entered_from_user {
        context::count_swapgs(flavour);
    }
    if returns_to_user {
        context::count_swapgs(flavour);
        exits::count(abi::HvOp::ReturnToUser);
    }
}

/// Read the time-stamp counter (unprivileged; here so that timing sits
/// beside the rest of the CPU's clock knowledge).
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; CR4.TSD is clear in this kernel.
    unsafe { core::arch::x86_64::_rdtsc() }
}
