//! The CPUs the firmware lists (the MADT's enabled local APICs), and
//! bringing up every one but the boot CPU: a kernel stack and interrupt
//! stacks each, then `hv::smp::start_cpus` and, on the started CPU,
//! [`cpu_main`] into its idle loop.
//!
//! The firmware's tables are trusted here as the rest of boot trusts the
//! loader: they are read through the direct map by the `acpi` crate.
//!
//! Context: boot, on the boot CPU (`start`), and each started CPU's own
//! first steps (`cpu_main`).

use alloc::vec::Vec;
use core::ptr::NonNull;

use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use spin::Mutex;

use crate::hv::cpu::{Protection, TrapStacks};
use crate::hv::smp::{self, ApStart, BOOT_CPU, MAX_CPUS};
use crate::memory::paging::kernel_space;
use crate::memory::stacks::KernelStack;
use crate::memory::{frames, phys_to_virt};
use crate::{hv, system};

/// Reads ACPI tables through the kernel's direct map of physical memory.
#[derive(Clone, Copy)]
struct DirectMap;

impl AcpiHandler for DirectMap {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let virt = phys_to_virt(physical_address as u64).cast::<T>();
        let start = NonNull::new(virt).expect("the direct map is never at 0");
        // SAFETY: the direct map covers all of physical memory (ACPI tables
        // included, below 4 GiB) for as long as the kernel runs.
        unsafe { PhysicalMapping::new(physical_address, start, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// The local APIC IDs of the CPUs the MADT lists as enabled, boot CPU
/// (`boot_apic_id`) first; just it where there is no MADT.
pub fn apic_ids(rsdp: Option<u64>, boot_apic_id: u32) -> Vec<u32> {
    let mut ids = alloc::vec![boot_apic_id];
    let Some(rsdp) = rsdp.filter(|&r| r != 0) else {
        return ids;
    };
    // SAFETY: the loader's RSDP address; the handler maps through the
    // direct map.
    let tables = match unsafe { AcpiTables::from_rsdp(DirectMap, rsdp as usize) } {
        Ok(tables) => tables,
        Err(e) => {
            log::warn!("ACPI tables unreadable ({e:?}); running on one CPU");
            return ids;
        }
    };
    let Ok(madt) = tables.find_table::<Madt>() else {
        log::debug!("no MADT; running on one CPU");
        return ids;
    };
    const ENABLED: u32 = 1;
    for entry in madt.get().entries() {
        let id = match entry {
            MadtEntry::LocalApic(e) if e.flags & ENABLED != 0 => u32::from(e.apic_id),
            MadtEntry::LocalX2Apic(e) if e.flags & ENABLED != 0 => e.x2apic_id,
            _ => continue,
        };
        // xAPIC mode addresses 8-bit IDs only.
        if id != boot_apic_id && id < 0xFF && !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// What a started CPU needs from the boot CPU beyond its number.
#[derive(Clone, Copy)]
struct Handover {
    stacks: TrapStacks,
    protection: Protection,
}

static HANDOVER: Mutex<[Option<Handover>; MAX_CPUS]> = Mutex::new([None; MAX_CPUS]);

/// Start every CPU of `apic_ids` past the first (the boot CPU), at most
/// `MAX_CPUS` in all. Returns how many CPUs then run.
pub fn start(apic_ids: &[u32], protection: Protection) -> usize {
    if apic_ids.len() > MAX_CPUS {
        log::warn!(
            "{} CPUs listed; the kernel runs on the first {MAX_CPUS}",
            apic_ids.len()
        );
    }
    let mut starts = Vec::new();
    for (cpu, &apic_id) in apic_ids.iter().enumerate().take(MAX_CPUS).skip(1) {
        // Stacks live forever: a CPU never stops.
        let allocate = || KernelStack::allocate(cpu).map(|s| core::mem::ManuallyDrop::new(s).top());
        let (Ok(idle), Ok(df), Ok(nmi), Ok(mc)) = (allocate(), allocate(), allocate(), allocate())
        else {
            log::warn!("no memory for CPU {cpu}'s stacks; it stays halted");
            break;
        };
        HANDOVER.lock()[cpu] = Some(Handover {
            stacks: TrapStacks {
                double_fault_top: df,
                nmi_top: nmi,
                machine_check_top: mc,
                kernel_top: idle,
            },
            protection,
        });
        starts.push(ApStart {
            cpu,
            apic_id,
            stack_top: idle,
        });
    }
    // The trampoline's tables must lie below 4 GiB (it loads CR3 in
    // 32-bit mode); frames above are handed back.
    let mut kept_high = Vec::new();
    let mut low_frame = || {
        for _ in 0..64 {
            let frame = frames::alloc_zeroed()?;
            if frame < 1 << 32 {
                return Some(frame);
            }
            kept_high.push(frame);
        }
        None
    };
    let started = smp::start_cpus(
        &starts,
        cpu_main,
        kernel_space().root(),
        &phys_to_virt,
        &mut low_frame,
    );
    for frame in kept_high {
        frames::free(frame);
    }
    1 + started
}

/// A started CPU's kernel entry, on its idle stack: bring it up as the
/// boot CPU was, say it is online, then idle until the system is
/// installed and from then on schedule its own servers.
extern "C" fn cpu_main(cpu: u64) -> ! {
    let cpu = cpu as usize;
    let handover = HANDOVER.lock()[cpu].expect("the boot CPU hands over before starting");
    hv::start_this_cpu(
        cpu,
        &handover.stacks,
        kernel_space().root(),
        handover.protection,
    );
    smp::cpu_online(cpu);
    while !system::started() {
        core::hint::spin_loop();
    }
    debug_assert_ne!(cpu, BOOT_CPU);
    hv::lapic::set_deadline(Some(hv::rdtsc()));
    loop {
        // SAFETY: this CPU's IDT, TSS and idle stack take traps.
        unsafe { hv::interrupts::halt_until_interrupt() };
    }
}
