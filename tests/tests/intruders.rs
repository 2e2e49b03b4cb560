//! Grants are enforced: a server that touches an I/O port or an MMIO
//! region its manifest entry does not grant is stopped and reported, and
//! the other servers keep running (`tests/manifests/intruders.toml`).

use tests::{Accel, Boot, Run, on_kvm};

fn intruders(accel: Accel) -> Run {
    let run = Boot::test(accel, "intruders").run();
    run.assert_success()
        .assert_lacks("FAIL")
        // The grants that were given work ...
        .assert_contains("port-intruder: granted port 0x71 read")
        .assert_contains("mmio-intruder: granted 0xfed00000 mapped at")
        .assert_contains("mmio-intruder: log from device memory refused")
        // ... and the ones that were not are refused.
        .assert_contains("port-intruder: ioport_enable(0x60) denied")
        .assert_contains("mmio-intruder: mmio_map(0xfec00000) denied")
        .assert_contains("survivor: still running")
        .assert_contains("kernel: server survivor exited with code 0");

    let port = run.line("kernel: server port-intruder stopped:");
    assert!(
        port.contains("exception 13 (general protection fault)"),
        "the ungranted `in` is a #GP: {port}"
    );
    let mmio = run.line("kernel: server mmio-intruder stopped:");
    assert!(
        mmio.contains("exception 14 (page fault)"),
        "the ungranted read is a page fault: {mmio}"
    );
    assert!(
        mmio.contains("address 0xfec00000"),
        "the report names the address read: {mmio}"
    );
    // survivor went on after both faults. (Which server's first line comes
    // first is not asserted: where PVM interprets the kernel a server's
    // start can outlast its first time slice, and with several CPUs they
    // start side by side.)
    let at = |needle: &str| run.output().find(needle).unwrap();
    let still = at("survivor: still running");
    assert!(
        still > at("kernel: server port-intruder stopped"),
        "{}",
        run.output()
    );
    assert!(
        still > at("kernel: server mmio-intruder stopped"),
        "{}",
        run.output()
    );
    run
}

#[test]
fn ungranted_port_and_mmio_are_stopped_and_others_run_on_tcg() {
    intruders(Accel::Tcg);
}

#[test]
fn ungranted_port_and_mmio_are_stopped_and_others_run_on_kvm() {
    on_kvm(
        "ungranted_port_and_mmio_are_stopped_and_others_run_on_kvm",
        || {
            intruders(Accel::Kvm);
        },
    );
}
