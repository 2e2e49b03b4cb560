//! Boot, fault reports, memory sizing and the command line, in QEMU.

use tests::{Accel, Boot, everywhere, host_offers_pvm, on_kvm};

fn boots_to_idle(accel: Accel) {
    let run = Boot::test(accel, "boot").run();
    run.assert_success()
        .assert_contains("microkernel 0.1.0")
        .assert_contains("kernel: idle loop")
        .assert_contains("ktest: boot reached the idle loop");
    let backend = run.line("hypervisor:");
    let forced_native = run.cmdline.contains("hv=native");
    match accel {
        Accel::Kvm if forced_native => {
            assert!(backend.contains("native backend (forced"), "{backend}");
            run.assert_contains("PVM interprets this kernel");
        }
        // `auto` takes pvm exactly where the machine offers it.
        Accel::Kvm if host_offers_pvm() => assert!(
            backend.contains("pvm backend (auto: MSR 0x4b564d11 reads \"PVM\")"),
            "{backend}"
        ),
        Accel::Kvm => assert!(backend.contains("native backend (auto"), "{backend}"),
        // The probe is harmless where there is no PVM: TCG answers the MSR
        // with 0 (a #GP would be recovered just the same).
        Accel::Tcg => assert!(
            backend.contains("native backend (auto: no PVM interface"),
            "{backend}"
        ),
    }
    assert!(run.line("batching:").contains("batching: on"));
}

#[test]
fn hv_pvm_is_refused_where_the_machine_lacks_it_and_boot_goes_on() {
    let run = Boot::test(Accel::Tcg, "boot").cmdline("hv=pvm").run();
    run.assert_success()
        .assert_contains("hv=pvm refused: no PVM interface")
        .assert_contains("ktest: boot reached the idle loop");
    assert!(
        run.line("hypervisor:")
            .contains("native backend (hv=pvm refused"),
        "{}",
        run.line("hypervisor:")
    );
}

#[test]
fn a_malformed_hv_option_is_named_and_auto_is_used() {
    let run = Boot::test(Accel::Tcg, "boot").cmdline("hv=xen").run();
    run.assert_success()
        .assert_contains("'hv' has malformed value 'xen' (expected auto, native or pvm)");
    assert!(run.line("hypervisor:").contains("(auto:"));
}

#[test]
fn boot_reaches_idle_loop_on_tcg() {
    boots_to_idle(Accel::Tcg);
}

#[test]
fn boot_reaches_idle_loop_on_kvm() {
    on_kvm("boot_reaches_idle_loop_on_kvm", || {
        boots_to_idle(Accel::Kvm)
    });
}

#[test]
fn kernel_page_fault_is_reported_with_vector_and_address() {
    everywhere(
        "kernel_page_fault_is_reported_with_vector_and_address",
        |accel| {
            let run = Boot::test(accel, "page_fault").run();
            run.assert_failure()
                .assert_contains("exception 14 (page fault)");
            let announced = run.hex_after("reading unmapped address");
            assert_eq!(
                run.hex_after("CR2"),
                announced,
                "CR2 names the address read"
            );
            assert!(
                run.hex_after("at RIP") >= 0xffff_ffff_8000_0000,
                "the fault is in the kernel image"
            );
            run.assert_contains("read of a non-present page")
                .assert_lacks("did not happen");
        },
    );
}

#[test]
fn kernel_invalid_opcode_is_reported_with_vector_and_address() {
    everywhere(
        "kernel_invalid_opcode_is_reported_with_vector_and_address",
        |accel| {
            let run = Boot::test(accel, "invalid_opcode").run();
            run.assert_failure()
                .assert_contains("exception 6 (invalid opcode)");
            assert_eq!(
                run.hex_after("at RIP"),
                run.hex_after("executing ud2 at"),
                "RIP is the ud2"
            );
            run.assert_contains("RAX ").assert_contains("RFLAGS ");
        },
    );
}

#[test]
fn kernel_stack_overflow_hits_the_guard_page() {
    everywhere("kernel_stack_overflow_hits_the_guard_page", |accel| {
        let run = Boot::test(accel, "stack_overflow").run();
        run.assert_failure()
            .assert_contains("exception 8 (double fault)");
    });
}

fn usable_mib(accel: Accel, memory_mb: u32) -> u64 {
    let run = Boot::test(accel, "boot").memory(memory_mb).run();
    run.assert_success();
    let line = run.line("memory:");
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn memory_total_follows_qemu_m() {
    everywhere("memory_total_follows_qemu_m", |accel| {
        let small = usable_mib(accel, 128);
        let large = usable_mib(accel, 512);
        assert!(
            (120..=128).contains(&small),
            "128 MiB guest reports {small} MiB"
        );
        assert!(
            (500..=512).contains(&large),
            "512 MiB guest reports {large} MiB"
        );
    });
}

#[test]
fn unknown_and_malformed_options_are_named_and_boot_continues() {
    everywhere(
        "unknown_and_malformed_options_are_named_and_boot_continues",
        |accel| {
            let run = Boot::test(accel, "boot")
                .cmdline("frobnicate=1 batching=sometimes")
                .run();
            run.assert_success()
                .assert_contains("unknown command-line option 'frobnicate=1' ignored")
                .assert_contains("'batching' has malformed value 'sometimes'");
            assert!(
                run.line("batching:").contains("batching: on"),
                "the default stays"
            );
        },
    );
}

#[test]
fn batching_off_reaches_the_banner() {
    everywhere("batching_off_reaches_the_banner", |accel| {
        let run = Boot::test(accel, "boot").cmdline("batching=off").run();
        run.assert_success();
        assert!(run.line("batching:").contains("batching: off"));
    });
}

#[test]
fn a_fault_inside_a_user_copy_is_an_error_not_a_kernel_fault() {
    everywhere(
        "a_fault_inside_a_user_copy_is_an_error_not_a_kernel_fault",
        |accel| {
            Boot::test(accel, "user_copy_fault")
                .run()
                .assert_success()
                .assert_contains("ktest: the user copy faulted and returned an error")
                .assert_lacks("KERNEL FAULT")
                .assert_lacks("FAIL");
        },
    );
}
