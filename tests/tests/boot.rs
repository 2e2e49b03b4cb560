//! Boot, fault reports, memory sizing and the command line, in QEMU.

use tests::{Accel, Boot, on_kvm};

fn boots_to_idle(accel: Accel) {
    let run = Boot::test(accel, "boot").run();
    run.assert_success()
        .assert_contains("microkernel 0.1.0")
        .assert_contains("kernel: idle loop")
        .assert_contains("ktest: boot reached the idle loop");
    let backend = run.line("hypervisor:");
    match accel {
        Accel::Kvm => assert!(backend.contains("kvm ("), "{backend}"),
        Accel::Tcg => assert!(backend.contains("native"), "{backend}"),
    }
    assert!(run.line("batching:").contains("on"));
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
    let run = Boot::test(Accel::Tcg, "page_fault").run();
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
}

#[test]
fn kernel_invalid_opcode_is_reported_with_vector_and_address() {
    let run = Boot::test(Accel::Tcg, "invalid_opcode").run();
    run.assert_failure()
        .assert_contains("exception 6 (invalid opcode)");
    assert_eq!(
        run.hex_after("at RIP"),
        run.hex_after("executing ud2 at"),
        "RIP is the ud2"
    );
    run.assert_contains("RAX ").assert_contains("RFLAGS ");
}

#[test]
fn kernel_stack_overflow_hits_the_guard_page() {
    let run = Boot::test(Accel::Tcg, "stack_overflow").run();
    run.assert_failure()
        .assert_contains("exception 8 (double fault)");
}

fn usable_mib(memory_mb: u32) -> u64 {
    let run = Boot::test(Accel::Tcg, "boot").memory(memory_mb).run();
    run.assert_success();
    let line = run.line("memory:");
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[test]
fn memory_total_follows_qemu_m() {
    let small = usable_mib(128);
    let large = usable_mib(512);
    assert!(
        (120..=128).contains(&small),
        "128 MiB guest reports {small} MiB"
    );
    assert!(
        (500..=512).contains(&large),
        "512 MiB guest reports {large} MiB"
    );
}

#[test]
fn unknown_and_malformed_options_are_named_and_boot_continues() {
    let run = Boot::test(Accel::Tcg, "boot")
        .cmdline("frobnicate=1 batching=sometimes")
        .run();
    run.assert_success()
        .assert_contains("unknown command-line option 'frobnicate=1' ignored")
        .assert_contains("'batching' has malformed value 'sometimes'");
    assert!(run.line("batching:").contains("on"), "the default stays");
}

#[test]
fn batching_off_reaches_the_banner() {
    let run = Boot::test(Accel::Tcg, "boot").cmdline("batching=off").run();
    run.assert_success();
    assert!(run.line("batching:").contains("off"));
}
