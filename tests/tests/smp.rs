//! Several vCPUs: every CPU QEMU gives comes up and runs servers; a stream
//! between servers on different CPUs arrives whole; a server that never
//! enters the kernel holds no more than its own CPU's time slices.
//! (Every other in-QEMU test also runs with `cargo xtask test --smp 2`.)
//!
//! On KVM each test runs once per backend (`tests::on_kvm`): on these
//! machines `hv=auto` is the pvm backend, every vCPU in PVM's native mode,
//! and `hv=native` is the kernel PVM interprets.

use tests::{Accel, Boot, Machine, Run, host_offers_pvm, on_kvm};
use xtask::stress::parse_result_line;

/// On KVM where PVM is there, a round of `on_kvm` with `hv=auto` ran the pvm
/// backend on every CPU, not the interpreted kernel the boot falls back to
/// when native mode takes no interrupt: the test then tested what it says.
fn assert_pvm_where_asked(run: &Run) {
    if run.accel == Accel::Kvm && host_offers_pvm() && !run.cmdline.contains("hv=native") {
        let backend = run.line("hypervisor:");
        assert!(backend.contains("pvm backend (auto"), "{backend}");
    }
}

fn cross_cpu_stream(accel: Accel, batching: &str, messages: u64) {
    let run = Boot::test(accel, "stress-smp")
        .smp(2)
        .cmdline(&format!(
            "batching={batching} stress-producer.messages={messages} stress-producer.batch=64 stress-producer.payload=48"
        ))
        .run();
    run.assert_success()
        .assert_lacks("FAIL")
        .assert_contains("cpus: 2;")
        .assert_contains(&format!(
            "stress-consumer: {messages} messages in order, checksum ok"
        ));
    assert_pvm_where_asked(&run);
    let r = parse_result_line(run.line("stress-result")).expect("a result line");
    assert_eq!(r.u64("received"), Some(messages), "{r:?}");
    assert_eq!(r.u64("lost"), Some(0), "{r:?}");
    assert_eq!(r.u64("duplicates"), Some(0), "{r:?}");
    assert_eq!(r.u64("reordered"), Some(0), "{r:?}");
}

#[test]
fn a_stream_across_cpus_loses_nothing_on_tcg() {
    cross_cpu_stream(Accel::Tcg, "on", 200_000);
}

#[test]
fn a_stream_across_cpus_loses_nothing_with_batching_off_on_tcg() {
    cross_cpu_stream(Accel::Tcg, "off", 20_000);
}

/// A million messages: the stream's start and end wake the other CPU (a
/// doorbell's IPI, an idle loop's wake-up), and once it flows neither end
/// enters the kernel.
#[test]
fn a_stream_across_cpus_loses_nothing_on_kvm() {
    on_kvm("a_stream_across_cpus_loses_nothing_on_kvm", || {
        cross_cpu_stream(Accel::Kvm, "on", 1_000_000)
    });
}

#[test]
fn a_stream_across_cpus_loses_nothing_with_batching_off_on_kvm() {
    on_kvm(
        "a_stream_across_cpus_loses_nothing_with_batching_off_on_kvm",
        || cross_cpu_stream(Accel::Kvm, "off", 20_000),
    );
}

fn spinner(accel: Accel) -> Run {
    let run = Boot::test(accel, "smp-spin").smp(2).run();
    run.assert_success()
        .assert_lacks("FAIL")
        .assert_contains("spinner: spinning for 3000 ms on CPU 1")
        .assert_contains("kernel: server survivor-0 exited with code 0")
        .assert_contains("kernel: server survivor-1 exited with code 0");
    assert_pvm_where_asked(&run);
    let at = |needle: &str| run.output().find(needle).unwrap();
    let spun = at("spinner: done after");
    // Both survivors finished while the spinner still held CPU 1: the one on
    // CPU 0 untouched, the one beside it by preemption.
    assert!(
        at("kernel: server survivor-0 exited") < spun,
        "{}",
        run.output()
    );
    assert!(
        at("kernel: server survivor-1 exited") < spun,
        "{}",
        run.output()
    );
    run
}

#[test]
fn a_spinning_server_stops_no_other_cpu_on_tcg() {
    spinner(Accel::Tcg);
}

/// On the pvm backend this is the test of each vCPU's own interrupt-flag
/// page: with one page for both (as the backend once had), the timer of
/// the CPU running the spinner was held back whenever the other CPU was in
/// its kernel, and `survivor-1` got no slice for the spinner's 3 s.
#[test]
fn a_spinning_server_stops_no_other_cpu_on_kvm() {
    on_kvm("a_spinning_server_stops_no_other_cpu_on_kvm", || {
        spinner(Accel::Kvm);
    });
}

/// As many CPUs as QEMU gives, up to the kernel's limit: each comes up and
/// the system runs on all of them.
#[test]
fn four_cpus_come_up_on_tcg() {
    let run = Boot::test(Accel::Tcg, "stress-smp")
        .smp(4)
        .cmdline("stress-producer.messages=10000")
        .run();
    run.assert_success()
        .assert_contains("cpus: 4;")
        .assert_contains("stress-consumer: 10000 messages in order, checksum ok");
}

/// Every vCPU runs the kernel on KVM whatever the backend, on microvm and
/// on a machine booted through firmware (q35, whose SeaBIOS leaves its own
/// data in low memory): where PVM is there, `hv=auto` keeps the pvm
/// backend on both, and four timer clients sleeping 1,000 times in all
/// wake in deadline order, never early and none lost, which needs the
/// timer and the IPIs on every CPU.
#[test]
fn every_cpu_runs_the_kernel_on_kvm_on_microvm_and_q35() {
    on_kvm(
        "every_cpu_runs_the_kernel_on_kvm_on_microvm_and_q35",
        || {
            for machine in [Machine::Microvm, Machine::Q35] {
                let run = Boot::test(Accel::Kvm, "sleepers")
                    .smp(2)
                    .machine(machine)
                    .run();
                run.assert_success()
                    .assert_lacks("FAIL")
                    .assert_contains("cpus: 2;");
                for sleeper in ["a", "b", "c", "d"] {
                    run.assert_contains(&format!("server sleeper-{sleeper} exited with code 0"));
                }
                assert_pvm_where_asked(&run);
            }
        },
    );
}
