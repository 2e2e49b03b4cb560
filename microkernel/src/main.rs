//! The microkernel: boots from `boot`, sets up the CPU, memory and the
//! hypervisor-facing module, then runs servers (or a test scenario).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod exit;
#[cfg(target_os = "none")]
mod hv;
#[cfg(target_os = "none")]
mod ktest;
#[cfg(target_os = "none")]
mod memory;
#[cfg(target_os = "none")]
mod traps;

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

    use crate::hv::{self, cpu};
    use crate::memory::{self, frames, heap, paging};
    use crate::{console, exit, kprintln, ktest};

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
        console::init();
        let line = info.cmdline();
        let config = cmdline::parse(line, |_| {});
        console::init_log(config.log_level);
        if info.start_info_phys == 0 && info.memory_map().is_empty() {
            log::error!("no valid hvm_start_info from the loader: booted without PVH?");
        }
        // Parse again now that the log is up, so warnings reach it.
        cmdline::parse(line, |warning| log::warn!("{warning}"));
        if info.cmdline_truncated {
            log::warn!("the command line is longer than the kernel keeps; the rest is ignored");
        }

        let backend = hv::init();
        let features = hv::features();
        // SAFETY: linker-script symbols; only their addresses are used.
        let stacks = unsafe {
            cpu::TrapStacks {
                double_fault_top: addr(&__ist_df_top),
                nmi_top: addr(&__ist_nmi_top),
                machine_check_top: addr(&__ist_mc_top),
                kernel_top: addr(&__boot_stack_top),
            }
        };
        cpu::init(&stacks, features.smep, features.smap);

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
        let direct_map = match paging::init_kernel_space(info) {
            Ok(bytes) => bytes,
            Err(e) => {
                log::error!("cannot build the kernel page tables: {e:?}");
                exit::failure();
            }
        };
        let heap_bytes = (info.usable_bytes() / 16).clamp(1 << 20, 16 << 20);
        if heap::init(heap_bytes).is_none() {
            log::error!(
                "no contiguous {} KiB for the kernel heap",
                heap_bytes / 1024
            );
            exit::failure();
        }
        log::debug!("direct map covers {} MiB", direct_map >> 20);

        let (total_frames, used_frames) = frames::usage();
        kprintln!();
        kprintln!("microkernel {VERSION}");
        kprintln!(
            "  memory:     {} MiB usable, {} MiB free for the kernel and servers",
            info.usable_bytes() >> 20,
            ((total_frames - used_frames) * memory::PAGE_SIZE) >> 20
        );
        kprintln!("  cmdline:    \"{line}\"");
        kprintln!("  hypervisor: {backend}");
        kprintln!(
            "  cpu:        smep {}, smap {}, x2apic {}, tsc-deadline {}, tsc {}",
            on_off(features.smep),
            on_off(features.smap),
            on_off(features.x2apic),
            on_off(features.tsc_deadline),
            features
                .tsc_hz
                .map_or("uncalibrated".into(), |hz| alloc::format!(
                    "{} MHz",
                    hz / 1_000_000
                )),
        );
        kprintln!("  batching:   {}", on_off(config.batching));
        for (i, m) in info.modules().iter().enumerate() {
            kprintln!("  module {i}:   {} KiB at {:#x}", m.len / 1024, m.start);
        }

        if let Some(test) = config.test() {
            if !ktest::run_early(test) && !ktest::SCENARIOS.contains(&test) {
                log::warn!(
                    "test={test}: no such test scenario (known: {:?})",
                    ktest::SCENARIOS
                );
            }
        }
        idle(config.test())
    }

    fn on_off(value: bool) -> &'static str {
        if value { "on" } else { "off" }
    }

    fn idle(test: Option<&str>) -> ! {
        kprintln!("kernel: idle loop");
        if test == Some("boot") {
            kprintln!("ktest: boot reached the idle loop");
            exit::success();
        }
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
