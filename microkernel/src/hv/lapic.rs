//! The part of the local APIC the kernel keeps: its own preemption deadline
//! (context switching) and the end of interrupt (interrupt masking). Routing,
//! IPIs and the I/O APIC belong to the `apic` server.
//!
//! Always xAPIC mode, through the page the kernel maps at
//! `KERNEL_MMIO_BASE`, even where x2APIC is offered: the apic server maps
//! the same page for IPIs and LVT setup, and x2APIC's MSRs are out of reach
//! of ring 3. The deadline uses TSC-deadline mode
//! when offered, else the one-shot count calibrated against the PIT. On KVM
//! with PV EOI, most ends of interrupt clear a flag in memory instead of
//! exiting to the hypervisor.
//!
//! Context: `init` and `calibrate` at boot; the rest in trap context.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use abi::HvOp;
use apic_regs::xapic::{
    BASE_ENABLE, DELIVERY_INIT, DELIVERY_STARTUP, DIVIDE_BY_16, EOI, ICR_ASSERT, ICR_DEST_SHIFT,
    ICR_HIGH, ICR_LOW, ID, LVT_ERROR, LVT_LINT0, LVT_LINT1, LVT_MASKED, LVT_TIMER,
    LVT_TSC_DEADLINE, SVR, SVR_ENABLE, TIMER_CURRENT, TIMER_DIVIDE, TIMER_INITIAL, TPR,
};
use pc_ports::pit;
use x86_64::instructions::port::Port;

use super::exits::count;
use super::smp::{BOOT_CPU, MAX_CPUS, this_cpu};
use super::{msr, rdtsc};
use core::mem::size_of;

/// The kernel's preemption/deadline timer.
pub const TIMER_VECTOR: u8 = abi::KERNEL_TIMER_VECTOR;
pub const SPURIOUS_VECTOR: u8 = 0xFF;
/// The xAPIC's physical base (QEMU's default; the kernel does not move it).
pub const XAPIC_PHYS: u64 = apic_regs::xapic::PHYS;

static XAPIC_VIRT: AtomicU64 = AtomicU64::new(0);
static USE_TSC_DEADLINE: AtomicBool = AtomicBool::new(false);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static LAPIC_TIMER_HZ: AtomicU64 = AtomicU64::new(0);

/// KVM sets bit 0 when an EOI may be skipped; 4-byte aligned as KVM wants.
#[repr(align(4))]
struct PvEoiFlag(AtomicU32);
/// One flag word per CPU: KVM's PV EOI is set up per vCPU.
static PV_EOI_FLAG: [PvEoiFlag; MAX_CPUS] = [const { PvEoiFlag(AtomicU32::new(0)) }; MAX_CPUS];
static PV_EOI: AtomicBool = AtomicBool::new(false);

fn read(reg: u32) -> u32 {
    count(HvOp::ApicAccess);
    let base = XAPIC_VIRT.load(Ordering::Relaxed);
    // SAFETY: `init` got the xAPIC page mapped uncached at `base`.
    unsafe { core::ptr::read_volatile((base + u64::from(reg)) as *const u32) }
}

fn write(reg: u32, value: u32) {
    count(HvOp::ApicAccess);
    let base = XAPIC_VIRT.load(Ordering::Relaxed);
    // SAFETY: as for `read`; every register written here is writable.
    unsafe { core::ptr::write_volatile((base + u64::from(reg)) as *mut u32, value) }
}

/// Enable the local APIC with every local interrupt source masked (the
/// legacy PIC can never reach the CPU through LINT0), the timer idle, and
/// PV EOI on when `pv_eoi` (KVM offers it). `xapic_virt` is where the xAPIC
/// page is mapped. `image_phys` turns a kernel image address into a
/// physical one (for the PV EOI flags). The boot CPU's; each other CPU
/// calls [`init_this_cpu`] once it runs.
pub fn init(xapic_virt: u64, pv_eoi: bool, image_phys: impl Fn(u64) -> u64) {
    XAPIC_VIRT.store(xapic_virt, Ordering::Relaxed);
    if pv_eoi {
        let flags = image_phys(&PV_EOI_FLAG as *const [PvEoiFlag; MAX_CPUS] as u64);
        PV_EOI_PHYS.store(flags, Ordering::Relaxed);
        PV_EOI.store(true, Ordering::Relaxed);
    }
    init_this_cpu(BOOT_CPU);
}

/// Where the PV EOI flags are, physically (0: PV EOI is off).
static PV_EOI_PHYS: AtomicU64 = AtomicU64::new(0);

/// This CPU's part of [`init`]: the local APIC is per CPU, and so are the
/// PV EOI flag and, once calibrated, the timer's mode.
pub fn init_this_cpu(cpu: usize) {
    enable_masked();
    // Only now may the timer be unmasked: while the APIC is disabled every
    // LVT write keeps its mask bit set. The boot CPU's is set by `calibrate`.
    if cpu != BOOT_CPU && uses_tsc_deadline() {
        write(LVT_TIMER, LVT_TSC_DEADLINE | u32::from(TIMER_VECTOR));
    }
    if PV_EOI.load(Ordering::Relaxed) {
        let phys = PV_EOI_PHYS.load(Ordering::Relaxed) + (cpu * size_of::<PvEoiFlag>()) as u64;
        // SAFETY: KVM advertises the MSR; the flag is a static that lives
        // forever, 4-byte aligned, at this physical address, and this
        // CPU's alone.
        unsafe { msr::write(msr::KVM_PV_EOI_EN, phys | 1) };
    }
}

/// This CPU's local APIC ID.
pub fn local_apic_id() -> u32 {
    read(ID) >> 24
}

/// Write the interrupt command register: destination first, since the
/// low word's write sends.
fn command(apic_id: u32, low: u32) {
    write(ICR_HIGH, apic_id << ICR_DEST_SHIFT);
    write(ICR_LOW, low);
}

/// A fixed interrupt `vector` to the CPU with `apic_id`.
pub fn send_ipi(apic_id: u32, vector: u8) {
    command(apic_id, u32::from(vector));
}

/// INIT to the CPU with `apic_id` (level assert), which resets it to wait
/// for a STARTUP.
pub fn send_init(apic_id: u32) {
    command(apic_id, DELIVERY_INIT | ICR_ASSERT);
}

/// STARTUP to the CPU with `apic_id`: it starts in real mode at
/// `page * 4096`.
pub fn send_startup(apic_id: u32, page: u8) {
    command(apic_id, DELIVERY_STARTUP | u32::from(page));
}

/// Keep the legacy 8259 PICs from reaching the CPU: mask LINT0 and LINT1
/// at the local APIC and every line at both PICs. Firmware (SeaBIOS, on
/// `-M q35`) leaves LINT0 in virtual-wire mode with the PIT's IRQ 0
/// unmasked at the PIC, which arrives as vector 8, the double-fault vector.
/// Where there is no PIC, the port writes reach nothing.
fn mask_legacy_interrupts() {
    write(LVT_LINT0, LVT_MASKED);
    write(LVT_LINT1, LVT_MASKED);
    count(HvOp::PortIo);
    count(HvOp::PortIo);
    // SAFETY: the PICs' interrupt mask registers; masking lines the kernel
    // never uses (devices go through the I/O APIC) has no other effect.
    unsafe {
        Port::<u8>::new(0x21).write(0xFF);
        Port::<u8>::new(0xA1).write(0xFF);
    }
}

/// Enable the local APIC through its page at the physical address (the
/// boot tables map it; boot only, before `init`) with the legacy PICs kept
/// out, for [`interrupt_arrives`].
pub fn prepare_early() {
    XAPIC_VIRT.store(XAPIC_PHYS, Ordering::Relaxed);
    enable_masked();
}

/// Enable this CPU's local APIC with every local source masked, and the
/// legacy PICs too, before it is software-enabled: firmware (SeaBIOS on
/// q35) leaves LINT0 in virtual-wire mode, and enabling first let a PIC
/// interrupt in (seen: a #GP delivering vector 0xFE at the first halt).
fn enable_masked() {
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; setting the
    // enable bit keeps the base address and the (xAPIC) mode.
    unsafe {
        let base = msr::read(msr::APIC_BASE);
        msr::write(msr::APIC_BASE, base | BASE_ENABLE);
    }
    mask_legacy_interrupts();
    write(LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    write(LVT_ERROR, LVT_MASKED | u32::from(SPURIOUS_VECTOR));
    write(SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    write(TPR, 0);
}

/// Whether the timer's interrupt stays pending while this CPU is masked:
/// the timer, in TSC-deadline mode, is armed for "now", and after `wait`
/// TSC cycles, spent in exits (each a chance for the hypervisor to deliver
/// it), its vector must still be in the IRR. After [`prepare_early`];
/// leaves the timer armed and pending for [`interrupt_arrives`].
pub fn interrupt_held_back(wait: u64) -> bool {
    let start = fire_timer_now();
    while rdtsc().wrapping_sub(start) < wait {
        // SAFETY: reading the deadline MSR has no side effect.
        unsafe { msr::read(msr::TSC_DEADLINE) };
    }
    timer_pending()
}

/// The boot self-test's timer: TSC-deadline mode, armed for "now" (a past
/// deadline fires at once). Returns when it was armed.
fn fire_timer_now() -> u64 {
    write(LVT_TIMER, LVT_TSC_DEADLINE | u32::from(TIMER_VECTOR));
    let start = rdtsc();
    // SAFETY: TSC-deadline mode is on.
    unsafe { msr::write(msr::TSC_DEADLINE, start.max(1)) };
    start
}

/// Whether the timer's vector is in the IRR: requested, not yet delivered.
fn timer_pending() -> bool {
    let (irr_timer, timer_bit) = apic_regs::xapic::irr(TIMER_VECTOR);
    read(irr_timer) & timer_bit != 0
}

/// Whether an interrupt reaches this CPU: the timer, in TSC-deadline mode,
/// is armed for "now", and the kernel waits up to `patience` TSC cycles for
/// the interrupt to leave the IRR, which the trap path's end of interrupt
/// does. After [`prepare_early`]; leaves the timer masked.
pub fn interrupt_arrives(patience: u64) -> bool {
    let start = fire_timer_now();
    let mut arrived = false;
    while rdtsc().wrapping_sub(start) < patience {
        // SAFETY: reading the deadline MSR has no side effect; 0 = fired.
        let fired = unsafe { msr::read(msr::TSC_DEADLINE) } == 0;
        if fired && !timer_pending() {
            arrived = true;
            break;
        }
        let wait = rdtsc();
        while rdtsc().wrapping_sub(wait) < patience / 64 {
            core::hint::spin_loop();
        }
    }
    write(LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    XAPIC_VIRT.store(0, Ordering::Relaxed);
    arrived
}

pub fn pv_eoi_enabled() -> bool {
    PV_EOI.load(Ordering::Relaxed)
}

/// End the interrupt being serviced, unmasking its vector and all below it.
pub fn end_of_interrupt() {
    if PV_EOI.load(Ordering::Relaxed)
        && PV_EOI_FLAG[this_cpu()].0.fetch_and(!1, Ordering::AcqRel) & 1 != 0
    {
        return;
    }
    write(EOI, 0);
}

/// Measure the TSC and the APIC timer against about 10 ms of PIT channel 0,
/// read through counter latches (which needs only the PIT: `-M microvm` has
/// no port 0x61 for the channel-2 gate trick). The TSC rate from CPUID wins
/// when there is one. Boot only, before any server owns the PIT; the PIT's
/// interrupt reaches nothing (the I/O APIC and LINT0 are masked).
pub fn calibrate(tsc_hz_from_cpuid: Option<u64>, tsc_deadline: bool) {
    USE_TSC_DEADLINE.store(tsc_deadline, Ordering::Relaxed);
    if let (Some(hz), true) = (tsc_hz_from_cpuid, tsc_deadline) {
        // Nothing to measure: the deadline is in TSC cycles and the rate is
        // known. The LVT stays in TSC-deadline mode from here on, so that
        // arming the timer is one MSR write.
        TSC_HZ.store(hz.max(1), Ordering::Relaxed);
        write(LVT_TIMER, LVT_TSC_DEADLINE | u32::from(TIMER_VECTOR));
        return;
    }
    const TICKS: u16 = 11_932; // 10 ms
    let read_counter = || {
        count(HvOp::PortIo);
        count(HvOp::PortIo);
        count(HvOp::PortIo);
        let mut command = Port::<u8>::new(pit::COMMAND);
        let mut channel0 = Port::<u8>::new(pit::CHANNEL0);
        // SAFETY: PIT command and channel-0 data ports; latching changes
        // nothing but what the next two reads return.
        unsafe {
            command.write(0b0000_0000); // latch channel 0
            u16::from_le_bytes([channel0.read(), channel0.read()])
        }
    };
    write(TIMER_DIVIDE, DIVIDE_BY_16);
    write(LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    let mut command = Port::<u8>::new(pit::COMMAND);
    let mut channel0 = Port::<u8>::new(pit::CHANNEL0);
    // SAFETY: as above; mode 0 from 0xFFFF counts down once, undisturbed.
    unsafe {
        command.write(0b0011_0000); // channel 0, lo/hi byte, mode 0, binary
        channel0.write(0xFF);
        channel0.write(0xFF);
    }
    // The count loads on the next PIT clock: wait until it moves.
    let mut start = read_counter();
    let mut guard = 0u32;
    while read_counter() == start && guard < 1_000_000 {
        guard += 1;
    }
    start = read_counter();
    write(TIMER_INITIAL, u32::MAX);
    let tsc0 = rdtsc();
    let mut elapsed = 0u16;
    let mut spins = 0u64;
    while elapsed < TICKS && spins < 100_000_000 {
        elapsed = start.wrapping_sub(read_counter());
        spins += 1;
    }
    let tsc1 = rdtsc();
    let apic_left = read(TIMER_CURRENT);
    write(TIMER_INITIAL, 0);
    let elapsed_ns = (u64::from(elapsed).max(1) * 1_000_000_000 / pc_ports::pit::HZ).max(1);
    let measured_tsc = (tsc1 - tsc0) * 1_000_000_000 / elapsed_ns;
    let apic_ticks = u64::from(u32::MAX - apic_left);
    TSC_HZ.store(
        tsc_hz_from_cpuid.unwrap_or(measured_tsc).max(1),
        Ordering::Relaxed,
    );
    LAPIC_TIMER_HZ.store(
        (apic_ticks * 1_000_000_000 / elapsed_ns).max(1),
        Ordering::Relaxed,
    );
    if tsc_deadline {
        write(LVT_TIMER, LVT_TSC_DEADLINE | u32::from(TIMER_VECTOR));
    }
}

pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

pub fn timer_hz() -> u64 {
    LAPIC_TIMER_HZ.load(Ordering::Relaxed)
}

pub fn uses_tsc_deadline() -> bool {
    USE_TSC_DEADLINE.load(Ordering::Relaxed)
}

/// Fire `TIMER_VECTOR` once, when the TSC reaches `deadline`; `None` stops
/// the timer.
pub fn set_deadline(deadline: Option<u64>) {
    let Some(deadline) = deadline else {
        if uses_tsc_deadline() {
            // SAFETY: TSC-deadline mode is on; 0 disarms it.
            unsafe { msr::write(msr::TSC_DEADLINE, 0) };
        } else {
            write(TIMER_INITIAL, 0);
        }
        return;
    };
    if uses_tsc_deadline() {
        // SAFETY: TSC-deadline mode is on (the LVT was set once, in
        // `calibrate`); a past deadline fires at once.
        unsafe { msr::write(msr::TSC_DEADLINE, deadline.max(1)) };
    } else {
        let now = rdtsc();
        let delta = deadline.saturating_sub(now);
        let tsc_hz = tsc_hz().max(1);
        let count = (u128::from(delta) * u128::from(timer_hz()) / u128::from(tsc_hz))
            .clamp(1, u128::from(u32::MAX));
        write(LVT_TIMER, u32::from(TIMER_VECTOR));
        write(TIMER_DIVIDE, DIVIDE_BY_16);
        write(TIMER_INITIAL, count as u32);
    }
}
