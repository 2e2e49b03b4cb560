//! The hypervisor-facing module: every privileged instruction the kernel
//! executes after boot lives below this directory, so the kernel's whole
//! surface towards the hypervisor can be read in one sitting.
//!
//! Three families, each with a native backend (plain instructions) and a KVM
//! backend that uses KVM's paravirtual features where they remove exits:
//! - [`interrupts`]: disable, enable, save/restore, halt until interrupt, and
//!   end of interrupt;
//! - [`paging`]: flush translations and switch address spaces (the page-table
//!   edits themselves are ordinary memory writes, in `memory::paging`);
//! - context switching ([`context`], [`cpu`], [`trap`], and the deadline in
//!   [`lapic`]): FPU state, the kernel stack in the TSS, the user GS base,
//!   the I/O bitmap, the SYSCALL, trap entry and exit paths, and the
//!   kernel's own preemption deadline.
//!
//! [`interrupts`] also ends interrupts through [`lapic::end_of_interrupt`]
//! (with KVM's PV EOI when offered).
//!
//! The backend is chosen once at boot from CPUID ([`init`]).

pub mod context;
pub mod cpu;
pub mod interrupts;
pub mod lapic;
pub mod msr;
pub mod paging;
pub mod trap;

use conquer_once::spin::OnceCell;
use core::arch::x86_64::{__cpuid, __cpuid_count};

/// KVM paravirtual features, from CPUID 0x4000_0001 eax.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmFeatures(pub u32);

impl KvmFeatures {
    pub const CLOCKSOURCE2: u32 = 1 << 3;
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

/// Which backend the three families use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Plain instructions: bare metal, TCG, or a hypervisor we do not know.
    Native,
    /// KVM, with the paravirtual features it offers.
    Kvm(KvmFeatures),
}

impl core::fmt::Display for Backend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Backend::Native => f.write_str("native"),
            Backend::Kvm(features) => write!(f, "kvm ({features})"),
        }
    }
}

/// CPU features the kernel turns on when present.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuFeatures {
    pub smep: bool,
    pub smap: bool,
    pub x2apic: bool,
    pub tsc_deadline: bool,
    pub invariant_tsc: bool,
    /// TSC frequency from CPUID 0x15 or KVM's 0x4000_0010, if either says.
    pub tsc_hz: Option<u64>,
}

static BACKEND: OnceCell<Backend> = OnceCell::uninit();
static FEATURES: OnceCell<CpuFeatures> = OnceCell::uninit();

fn detect_backend() -> Backend {
    // CPUID is unprivileged; it lives here because it decides the backend.
    let leaf1 = __cpuid(1);
    let hypervisor_present = leaf1.ecx & (1 << 31) != 0;
    if !hypervisor_present {
        return Backend::Native;
    }
    let base = __cpuid(0x4000_0000);
    let mut signature = [0u8; 12];
    signature[0..4].copy_from_slice(&base.ebx.to_le_bytes());
    signature[4..8].copy_from_slice(&base.ecx.to_le_bytes());
    signature[8..12].copy_from_slice(&base.edx.to_le_bytes());
    if &signature != b"KVMKVMKVM\0\0\0" || base.eax < 0x4000_0001 {
        return Backend::Native;
    }
    Backend::Kvm(KvmFeatures(__cpuid(0x4000_0001).eax))
}

fn detect_features(backend: Backend) -> CpuFeatures {
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
    if tsc_hz.is_none()
        && matches!(backend, Backend::Kvm(_))
        && __cpuid(0x4000_0000).eax >= 0x4000_0010
    {
        let khz = __cpuid(0x4000_0010).eax;
        if khz != 0 {
            tsc_hz = Some(u64::from(khz) * 1000);
        }
    }
    CpuFeatures {
        smep: max_leaf >= 7 && leaf7.ebx & (1 << 7) != 0,
        // KVM's PVM backend (these project machines) advertises SMAP but
        // cannot run STAC/CLAC, and a guest cannot tell PVM from KVM; the
        // KVM backend therefore leaves SMAP off. User pointers are still
        // checked against the page tables before every copy (`usermem`).
        smap: max_leaf >= 7 && leaf7.ebx & (1 << 20) != 0 && backend == Backend::Native,
        x2apic: leaf1.ecx & (1 << 21) != 0,
        tsc_deadline: leaf1.ecx & (1 << 24) != 0,
        invariant_tsc,
        tsc_hz,
    }
}

/// Choose the backend from CPUID. Called once, early in boot.
pub fn init() -> Backend {
    let backend = *BACKEND.get_or_init(detect_backend);
    FEATURES.init_once(|| detect_features(backend));
    backend
}

pub fn features() -> CpuFeatures {
    FEATURES.get().copied().unwrap_or_default()
}

/// Read the time-stamp counter (unprivileged; here so that timing sits
/// beside the rest of the CPU's clock knowledge).
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; CR4.TSD is clear in this kernel.
    unsafe { core::arch::x86_64::_rdtsc() }
}
