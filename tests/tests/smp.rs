//! Several vCPUs: every CPU QEMU gives comes up and runs servers; a stream
//! between servers on different CPUs arrives whole; a server that never
//! enters the kernel holds no more than its own CPU's time slices.
//! (Every other in-QEMU test also runs with `cargo xtask test --smp 2`.)

use tests::{Accel, Boot, Run, on_kvm};
use xtask::stress::parse_result_line;

/// How the kernel runs under KVM (ignored on TCG): `hv=native`, which
/// PVM interprets on these machines, or the pvm backend on every CPU
/// (`pvm_smp=on`, experimental: streams only, see `pvm_smp_is_opt_in`).
#[derive(Clone, Copy)]
enum Hv {
    Native,
    PvmSmp,
}

fn smp_boot(accel: Accel, hv: Hv, test: &str, cpus: u32) -> Boot {
    let boot = Boot::test(accel, test).smp(cpus);
    match (accel, hv) {
        (Accel::Kvm, Hv::Native) => boot.cmdline("hv=native"),
        (Accel::Kvm, Hv::PvmSmp) => boot.cmdline("hv=auto pvm_smp=on"),
        (Accel::Tcg, _) => boot,
    }
}

fn cross_cpu_stream(accel: Accel, hv: Hv, batching: &str, messages: u64) {
    let run = smp_boot(accel, hv, "stress-smp", 2)
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
    cross_cpu_stream(Accel::Tcg, Hv::Native, "on", 200_000);
}

#[test]
fn a_stream_across_cpus_loses_nothing_with_batching_off_on_tcg() {
    cross_cpu_stream(Accel::Tcg, Hv::Native, "off", 20_000);
}

#[test]
fn a_stream_across_cpus_loses_nothing_on_kvm_interpreted() {
    on_kvm(
        "a_stream_across_cpus_loses_nothing_on_kvm_interpreted",
        || cross_cpu_stream(Accel::Kvm, Hv::Native, "on", 200_000),
    );
}

/// The pvm backend on both CPUs where PVM is there: long enough that a
/// stall in its idle loop would show.
#[test]
fn a_stream_across_cpus_loses_nothing_on_kvm_pvm_smp() {
    on_kvm("a_stream_across_cpus_loses_nothing_on_kvm_pvm_smp", || {
        cross_cpu_stream(Accel::Kvm, Hv::PvmSmp, "on", 2_000_000)
    });
}

#[test]
fn a_stream_across_cpus_loses_nothing_with_batching_off_on_kvm_pvm_smp() {
    on_kvm(
        "a_stream_across_cpus_loses_nothing_with_batching_off_on_kvm_pvm_smp",
        || cross_cpu_stream(Accel::Kvm, Hv::PvmSmp, "off", 20_000),
    );
}

fn spinner(accel: Accel, hv: Hv) -> Run {
    let run = smp_boot(accel, hv, "smp-spin", 2).run();
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
    spinner(Accel::Tcg, Hv::Native);
}

#[test]
fn a_spinning_server_stops_no_other_cpu_on_kvm_interpreted() {
    on_kvm(
        "a_spinning_server_stops_no_other_cpu_on_kvm_interpreted",
        || {
            spinner(Accel::Kvm, Hv::Native);
        },
    );
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

/// The pvm backend keeps to one CPU unless asked, says so, and the system
/// runs; asked (`pvm_smp=on`), it runs on every CPU and says what that
/// risks.
#[test]
fn pvm_smp_is_opt_in() {
    on_kvm("pvm_smp_is_opt_in", || {
        let boot = |extra: &str| {
            Boot::test(Accel::Kvm, "stress-smp")
                .smp(2)
                .cmdline(&format!("hv=auto stress-producer.messages=10000 {extra}"))
                .run()
        };
        let plain = boot("");
        plain.assert_success();
        if !plain.output().contains("pvm backend (") {
            // No PVM here: hv=auto is the native backend, on every CPU.
            plain.assert_contains("cpus: 2;");
            return;
        }
        plain
            .assert_contains("2 CPUs, the pvm backend runs on one CPU")
            .assert_contains("cpus: 1;")
            .assert_contains("stress-consumer: 10000 messages in order, checksum ok");
        let asked = boot("pvm_smp=on");
        asked
            .assert_success()
            .assert_contains("pvm_smp=on: the pvm backend on every CPU")
            .assert_contains("cpus: 2;")
            .assert_contains("stress-consumer: 10000 messages in order, checksum ok");
    });
}
