//! Ring-3 servers in their own address spaces (issue 4): channels between
//! servers, fault isolation, hostile system calls, memory isolation, and a
//! corrupt server image. Each scenario boots its manifest from
//! tests/manifests/ and ends when every server has ended.

use std::io::Read;

use pvchannel::manifest::{self, Name, Server};
use std::time::Duration;

use tests::{Accel, Boot, Image, everywhere, image, on_kvm};

fn ring_exchange(accel: Accel) {
    let run = Boot::test(accel, "ring").run();
    run.assert_success()
        .assert_contains("ring-consumer: received 1000000 messages in order")
        .assert_contains("ring-producer: consumer confirmed 1000000")
        .assert_lacks("FAIL");
    // Doorbells only when the peer sleeps: far fewer than one per message.
    let line = run.line("ring-producer: sent 1000000 messages, rang");
    let rang: u64 = line
        .split("rang ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect(line);
    assert!(
        rang < 100_000,
        "the producer rang {rang} doorbells for 10^6 messages: {line}"
    );
}

#[test]
fn two_servers_exchange_a_million_messages_on_tcg() {
    ring_exchange(Accel::Tcg);
}

#[test]
fn two_servers_exchange_a_million_messages_on_kvm() {
    on_kvm("two_servers_exchange_a_million_messages_on_kvm", || {
        ring_exchange(Accel::Kvm)
    });
}

fn faults_stop_only_the_faulting_server(accel: Accel) {
    let run = Boot::test(accel, "faults").run();
    run.assert_success();
    for (server, report) in [
        ("fault-page", "exception 14 (page fault) at RIP 0x"),
        (
            "fault-privileged",
            "exception 13 (general protection fault)",
        ),
        ("fault-divide", "exception 0 (divide error)"),
    ] {
        let line = run.line(&format!("kernel: server {server} stopped"));
        assert!(line.contains(report), "{server}: {line}");
    }
    assert!(
        run.line("server fault-page stopped")
            .contains("address 0x12345000")
    );
    run.assert_contains("survivor: still running")
        .assert_contains("kernel: server survivor exited with code 0");
}

#[test]
fn faulting_servers_are_stopped_and_the_rest_run_on_tcg() {
    faults_stop_only_the_faulting_server(Accel::Tcg);
}

#[test]
fn faulting_servers_are_stopped_and_the_rest_run_on_kvm() {
    on_kvm(
        "faulting_servers_are_stopped_and_the_rest_run_on_kvm",
        || faults_stop_only_the_faulting_server(Accel::Kvm),
    );
}

#[test]
fn random_system_calls_get_only_errors_and_the_system_runs_on() {
    everywhere(
        "random_system_calls_get_only_errors_and_the_system_runs_on",
        |accel| {
            // 10^5 kernel entries: about 30 s where PVM interprets the kernel.
            let run = Boot::test(accel, "fuzz")
                .timeout(Duration::from_secs(180))
                .run();
            run.assert_success()
                .assert_contains("syscall-fuzz: 100000 calls")
                .assert_contains("all as expected")
                .assert_lacks("FAIL")
                .assert_contains("survivor: still running")
                .assert_lacks("KERNEL FAULT");
        },
    );
}

fn isolation(accel: Accel) {
    let run = Boot::test(accel, "isolation").run();
    run.assert_success();
    let kernel = run.hex_after("peek-kernel: reading kernel memory at");
    let line = run.line("kernel: server peek-kernel stopped");
    assert!(
        line.contains("exception 14") && line.contains(&format!("address {kernel:#x}")),
        "{line}"
    );
    let other = run.hex_after("peek-other: reading another server's memory at");
    let line = run.line("kernel: server peek-other stopped");
    assert!(
        line.contains("exception 14") && line.contains(&format!("address {other:#x}")),
        "{line}"
    );
    run.assert_contains("hello: all 4 answers correct")
        .assert_contains("survivor: still running");
}

#[test]
fn reading_kernel_or_another_servers_memory_faults_on_tcg() {
    isolation(Accel::Tcg);
}

#[test]
fn reading_kernel_or_another_servers_memory_faults_on_kvm() {
    on_kvm(
        "reading_kernel_or_another_servers_memory_faults_on_kvm",
        || isolation(Accel::Kvm),
    );
}

/// The files of the initrd under test.
fn initrd_files() -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(&image().initrd).expect("the initrd");
    let mut archive = tar::Archive::new(file);
    let mut files = Vec::new();
    for entry in archive.entries().expect("a tar archive") {
        let mut entry = entry.expect("an entry");
        let name = entry.path().expect("a name").to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("its bytes");
        files.push((name, bytes));
    }
    files
}

#[test]
fn a_corrupt_server_image_is_named_and_the_others_boot() {
    let mut files = initrd_files();
    let survivor = files
        .iter()
        .find(|(n, _)| n == "servers/survivor")
        .expect("survivor in the initrd")
        .1
        .clone();
    // A truncated image: the header promises program headers past the end.
    files.push(("servers/broken".into(), survivor[..200].to_vec()));
    // An image that is not an ELF at all.
    let mut script = b"#!/bin/sh\necho not an ELF\n".to_vec();
    script.resize(4096, b'#');
    files.push(("servers/garbage".into(), script));
    let servers = [
        Server::new(Name::new("broken").unwrap(), Name::bin("broken").unwrap()),
        Server::new(Name::new("garbage").unwrap(), Name::bin("garbage").unwrap()),
        Server::new(
            Name::new("survivor").unwrap(),
            Name::bin("survivor").unwrap(),
        ),
    ];
    let mut bytes = vec![0u8; manifest::MAX_ENCODED_LEN];
    let len = manifest::encode(&servers, &[], &mut bytes).expect("a valid manifest");
    files.retain(|(n, _)| !n.starts_with("manifests/corrupt"));
    files.push(("manifests/corrupt".into(), bytes[..len].to_vec()));

    let dir = std::env::temp_dir().join(format!("microkernel-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let initrd = dir.join("initrd.tar");
    xtask::build::write_initrd(&initrd, &files).expect("writing the initrd");

    let custom = Image {
        kernel: image().kernel.clone(),
        initrd,
    };
    everywhere(
        "a_corrupt_server_image_is_named_and_the_others_boot",
        |accel| {
            let run = Boot::test(accel, "corrupt").run_image(&custom);
            run.assert_success();
            let broken = run.line("kernel: server broken not started");
            assert!(broken.contains("bad image"), "{broken}");
            let garbage = run.line("kernel: server garbage not started");
            assert!(garbage.contains("not an ELF"), "{garbage}");
            run.assert_contains("survivor: still running");
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}
