//! Several vCPUs: every CPU QEMU gives comes up and runs servers; a stream
//! between servers on different CPUs arrives whole; a server that never
//! enters the kernel holds no more than its own CPU's time slices.
//! (Every other in-QEMU test also runs with `cargo xtask test --smp 2`.)

use tests::{Accel, Boot, Run, on_kvm};
use xtask::stress::parse_result_line;

/// On KVM, the kernel interpreted (`hv=native`): the pvm backend runs on
/// one CPU (`pvm_runs_on_one_cpu_and_says_why`).
fn smp_boot(accel: Accel, test: &str, cpus: u32) -> Boot {
    let boot = Boot::test(accel, test).smp(cpus);
    match accel {
        Accel::Kvm => boot.cmdline("hv=native"),
        Accel::Tcg => boot,
    }
}

fn cross_cpu_stream(accel: Accel, batching: &str, messages: u64) {
    let run = smp_boot(accel, "stress-smp", 2)
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

#[test]
fn a_stream_across_cpus_loses_nothing_on_kvm() {
    on_kvm("a_stream_across_cpus_loses_nothing_on_kvm", || {
        cross_cpu_stream(Accel::Kvm, "on", 200_000)
    });
}

fn spinner(accel: Accel) -> Run {
    let run = smp_boot(accel, "smp-spin", 2).run();
    run.assert_success()
        .assert_lacks("FAIL")
        .assert_contains("spinner: spinning for 3000 ms on CPU 1")
        .assert_contains("kernel: server survivor-0 exited with code 0")
        .assert_contains("kernel: server survivor-1 exited with code 0");
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

/// The pvm backend keeps to one CPU, says so, and the system runs.
#[test]
fn pvm_runs_on_one_cpu_and_says_why() {
    on_kvm("pvm_runs_on_one_cpu_and_says_why", || {
        let run = Boot::test(Accel::Kvm, "stress-smp")
            .smp(2)
            .cmdline("hv=auto stress-producer.messages=10000")
            .run();
        run.assert_success();
        if run.output().contains("pvm backend (") {
            run.assert_contains("2 CPUs, the pvm backend runs on one CPU")
                .assert_contains("cpus: 1;");
        } else {
            run.assert_contains("cpus: 2;");
        }
        run.assert_contains("stress-consumer: 10000 messages in order, checksum ok");
    });
}
