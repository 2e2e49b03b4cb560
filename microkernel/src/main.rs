//! The microkernel: boots from `boot`, sets up the CPU, memory and the
//! hypervisor-facing module, then runs servers (or a test scenario).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod bootmarks;
#[cfg(target_os = "none")]
mod channels;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod cpus;
#[cfg(target_os = "none")]
mod exit;
#[cfg(target_os = "none")]
mod hv;
#[cfg(target_os = "none")]
mod klog;
#[cfg(target_os = "none")]
mod ktest;
#[cfg(target_os = "none")]
mod memory;
#[cfg(target_os = "none")]
mod ports;
#[cfg(target_os = "none")]
mod process;
#[cfg(target_os = "none")]
mod serial;
#[cfg(target_os = "none")]
mod startup;
#[cfg(target_os = "none")]
mod supervisor;
#[cfg(target_os = "none")]
mod syscall;
#[cfg(target_os = "none")]
mod system;
#[cfg(target_os = "none")]
mod traps;
#[cfg(target_os = "none")]
mod usermem;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the kernel runs in QEMU: use `cargo xtask run`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod kernel {
    use boot::BootInfo;
    use microkernel::cmdline;
    use microkernel::physmem::{PhysRange, free_ranges};

    use x86_64::structures::paging::PageTableFlags as Flags;

    use crate::hv::{self, context, cpu, lapic};
    use crate::memory::{self, frames, heap, paging};
    use crate::system::{self, System};
    use crate::{bootmarks, console, exit, kprintln, ktest, serial, startup};

    pub const VERSION: &str = env!("CARGO_PKG_VERSION");

    unsafe extern "C" {
        static __boot_start: u8;
        static __kernel_end: u8;
        static __boot_stack_top: u8;
        static __ist_df_top: u8;
        static __ist_nmi_top: u8;
        static __ist_mc_top: u8;
    }

    fn addr(symbol: &u8) -> u64 {
        symbol as *const u8 as u64
    }

    #[unsafe(no_mangle)]
    pub fn kernel_main(info: &'static BootInfo) -> ! {
        let boot_tsc = hv::rdtsc();
        serial::init();
        let line = info.cmdline();
        // Parsed once (this runs interpreted where PVM interprets the
        // kernel): warnings wait for the log, whose level the line sets.
        let mut warnings = [None; 8];
        let mut warned = 0usize;
        let config = cmdline::parse(line, |warning| {
            if let Some(slot) = warnings.get_mut(warned) {
                *slot = Some(warning);
            }
            warned += 1;
        });
        console::init_log(config.log_level);
        for warning in warnings.iter().flatten() {
            log::warn!("{warning}");
        }
        if warned > warnings.len() {
            log::warn!("{} more command-line warnings", warned - warnings.len());
        }
        if info.start_info_phys == 0 && info.memory_map().is_empty() {
            log::error!("no valid hvm_start_info from the loader: booted without PVH?");
        }
        if info.cmdline_truncated {
            log::warn!("the command line is longer than the kernel keeps; the rest is ignored");
        }

        // SAFETY: linker-script symbols; only their addresses are used.
        let stacks = unsafe {
            cpu::TrapStacks {
                double_fault_top: addr(&__ist_df_top),
                nmi_top: addr(&__ist_nmi_top),
                machine_check_top: addr(&__ist_mc_top),
                kernel_top: addr(&__boot_stack_top),
            }
        };
        // The tables first, so that the backend's probe can survive a #GP;
        // then the backend, before the page tables that take its flags.
        bootmarks::mark("command line, console");
        cpu::init(
            hv::smp::BOOT_CPU,
            &stacks,
            hv::trap::stubs(hv::trap::EntryFlavour::Swapgs),
        );
        bootmarks::mark("GDT, IDT");
        let selection = hv::init(config.hv);
        bootmarks::mark("hypervisor backend chosen");
        let backend = selection.backend;
        let features = hv::features();

        // SAFETY: as above.
        let image = unsafe {
            PhysRange::new(
                addr(&__boot_start),
                memory::image_virt_to_phys(addr(&__kernel_end)),
            )
        };
        let mut reserved = [PhysRange::new(0, 0x10_0000); 2 + 8];
        reserved[1] = image;
        for (slot, module) in reserved[2..].iter_mut().zip(info.modules()) {
            *slot = PhysRange::new(module.start, module.start.saturating_add(module.len));
        }
        let usable = info
            .memory_map()
            .iter()
            .filter(|r| r.kind == boot::MemoryKind::Usable)
            .map(|r| PhysRange::new(r.start, r.end()));
        let free = free_ranges(usable, &reserved);
        if free.dropped_bytes > 0 {
            log::warn!(
                "memory map too fragmented: {} KiB left unused",
                free.dropped_bytes / 1024
            );
        }
        frames::init(free);
        bootmarks::mark("frame allocator");
        let direct_map = match paging::init_kernel_space(info) {
            Ok(bytes) => bytes,
            Err(e) => {
                log::error!("cannot build the kernel page tables: {e:?}");
                exit::failure();
            }
        };
        bootmarks::mark("kernel page tables");
        let heap_bytes = (info.usable_bytes() / 16).clamp(1 << 20, 16 << 20);
        if heap::init(heap_bytes).is_none() {
            log::error!(
                "no contiguous {} KiB for the kernel heap",
                heap_bytes / 1024
            );
            exit::failure();
        }
        log::debug!("direct map covers {} MiB", direct_map >> 20);
        // Only now: the boot tables were user-accessible throughout, which
        // SMEP would have refused.
        let protection = cpu::set_control_registers(backend.protection(&features));
        context::set_smap_active(protection.smap);

        // The local APIC stays in xAPIC mode (see `hv::lapic`).
        {
            let flags = Flags::WRITABLE
                | Flags::NO_EXECUTE
                | Flags::NO_CACHE
                | Flags::WRITE_THROUGH
                | Flags::GLOBAL;
            if let Err(e) =
                paging::kernel_space().map(memory::KERNEL_MMIO_BASE, lapic::XAPIC_PHYS, flags)
            {
                log::error!("cannot map the local APIC: {e:?}");
                exit::failure();
            }
        }
        lapic::init(
            memory::KERNEL_MMIO_BASE,
            hv::kvm().is_some_and(|k| k.has(hv::KvmFeatures::PV_EOI)),
            memory::image_virt_to_phys,
        );
        if hv::kvm().is_some_and(|k| {
            k.has(hv::KvmFeatures::PV_TLB_FLUSH) && k.has(hv::KvmFeatures::STEAL_TIME)
        }) {
            hv::kvm::init_pv_tlb_flush(memory::image_virt_to_phys);
        }
        lapic::calibrate(features.tsc_hz, features.tsc_deadline);
        bootmarks::mark("heap, control registers, local APIC");
        let apic_ids = crate::cpus::apic_ids(info.rsdp_phys, lapic::local_apic_id());
        let cpu_count = crate::cpus::start(&apic_ids, protection);
        bootmarks::mark("other CPUs started");

        // Three lines: every byte written to the UART is an exit to QEMU's
        // user space (about 35 us on these machines), and the banner is
        // written before any server starts. The details are at `log=debug`.
        let (total_frames, used_frames) = frames::usage();
        kprintln!();
        kprintln!(
            "microkernel {VERSION}, hypervisor: {} backend ({}), chosen in {} us",
            backend.name(),
            selection.reason,
            selection.took_cycles * 1_000_000 / lapic::tsc_hz().max(1)
        );
        kprintln!(
            "  memory: {} MiB usable, {} MiB free, {} MiB kernel heap; tsc {} MHz; {}",
            info.usable_bytes() >> 20,
            ((total_frames - used_frames) * memory::PAGE_SIZE) >> 20,
            heap::usage().0 >> 20,
            lapic::tsc_hz() / 1_000_000,
            match selection.extended_state {
                Some((mask, _)) => alloc::format!("xsave {mask:#x}"),
                None => alloc::string::String::from("fxsave"),
            }
        );
        kprintln!(
            "  cpus: {cpu_count}; batching: {}; cpu: smep {}, smap {}, umip {}",
            on_off(config.batching),
            on_off(protection.smep),
            on_off(protection.smap),
            on_off(protection.umip),
        );
        log::debug!("cmdline: \"{line}\"");
        log::debug!("backend: {}", Describe(backend));
        if let Some((mask, size)) = selection.extended_state {
            log::debug!("fpu state: xsave {mask:#x}, {size} bytes a thread");
        }
        log::debug!(
            "cpu: x2apic {}, tsc-deadline {}, invariant tsc {}",
            on_off(features.x2apic),
            on_off(features.tsc_deadline),
            on_off(features.invariant_tsc),
        );
        log::debug!(
            "clocks: tsc {} MHz ({}), deadline timer: {}, end of interrupt: {}",
            lapic::tsc_hz() / 1_000_000,
            if features.tsc_hz.is_some() {
                "as reported"
            } else {
                "measured against the PIT"
            },
            if lapic::uses_tsc_deadline() {
                alloc::string::String::from("tsc-deadline")
            } else {
                alloc::format!("apic one-shot at {} MHz", lapic::timer_hz() / 1_000_000)
            },
            if lapic::pv_eoi_enabled() {
                "pv-eoi"
            } else {
                "apic register"
            },
        );
        for (i, m) in info.modules().iter().enumerate() {
            log::debug!("module {i}: {} KiB at {:#x}", m.len / 1024, m.start);
        }

        if let Some(test) = config.test()
            && !ktest::run_early(test)
            && !ktest::SCENARIOS.contains(&test)
        {
            log::debug!("test={test}: not a kernel scenario; the manifest decides what runs");
        }
        if config.test() == Some("boot") {
            kprintln!("kernel: idle loop");
            kprintln!("ktest: boot reached the idle loop");
            exit::success();
        }

        bootmarks::mark("banner");
        let test = config.test().map(|_| config.test_bytes());
        let mut system = System::new(config.batching, test, line, info.rsdp_phys.unwrap_or(0));
        system.set_boot_tsc(boot_tsc);
        startup::start(
            &mut system,
            startup::initrd(info),
            config.test(),
            &startup::ram_ranges(info, image),
        );
        system::install(system);
        idle()
    }

    /// A backend's account of what it took, for the banner.
    struct Describe(&'static dyn hv::backend::Backend);

    impl core::fmt::Display for Describe {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            self.0.describe(f)
        }
    }

    fn on_off(value: bool) -> &'static str {
        if value { "on" } else { "off" }
    }

    /// The idle loop: halt whenever nothing is ready. Every interrupt may
    /// switch to a server and back. The first schedule comes from a timer
    /// deadline of "now", not a software interrupt: under nested KVM an
    /// `INT n` that exits during delivery is emulated, and KVM's emulator
    /// handles `INT n` only in real mode.
    fn idle() -> ! {
        kprintln!("kernel: idle loop");
        lapic::set_deadline(Some(hv::rdtsc()));
        loop {
            // SAFETY: the IDT is installed and the boot stack takes traps.
            unsafe { hv::interrupts::halt_until_interrupt() };
        }
    }

    #[panic_handler]
    fn panic(panic: &core::panic::PanicInfo<'_>) -> ! {
        hv::interrupts::disable();
        // SAFETY: a panic never returns to whoever held the console.
        unsafe { console::force_unlock() };
        kprintln!("KERNEL PANIC: {panic}");
        exit::failure()
    }
}
