//! Ring-3 servers in their own address spaces (issue 4): channels between
//! servers, fault isolation, hostile system calls, memory isolation, and a
//! corrupt server image. Each scenario boots its manifest from
//! tests/manifests/ and ends when every server has ended.

use std::io::Read;

use manifest::{self, Name, Server};
use std::time::Duration;

use tests::{Accel, Boot, Image, everywhere, image, on_kvm};

fn ring_exchange(accel: Accel) {
    let run = Boot::test(accel, "ring").run();
    run.assert_success()
        .assert_contains("ring-consumer: received 1000000 messages in order")
        .assert_contains("ring-producer: consumer confirmed 1000000")
        .assert_lacks("FAIL");
    // Doorbells only when the peer sleeps: far fewer than one per message.
    let sent = "ring-producer: sent 1000000 messages, rang";
    let rang = run.number_after(sent);
    assert!(
        rang < 100_000,
        "the producer rang {rang} doorbells for 10^6 messages: {}",
        run.line(sent)
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

/// The image under test with `extra` files added to its initrd (a manifest
/// xtask would refuse, a corrupt server) and `drop` removed, in a fresh
/// directory under `tag`; remove the directory when done.
fn image_with(tag: &str, drop: &str, extra: Vec<(String, Vec<u8>)>) -> (Image, std::path::PathBuf) {
    let mut files = initrd_files();
    files.retain(|(n, _)| !n.starts_with(drop));
    files.extend(extra);
    let dir = std::env::temp_dir().join(format!("microkernel-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let initrd = dir.join("initrd.tar");
    xtask::build::write_initrd(&initrd, &files).expect("writing the initrd");
    let image = Image {
        kernel: image().kernel.clone(),
        initrd,
    };
    (image, dir)
}

#[test]
fn a_corrupt_server_image_is_named_and_the_others_boot() {
    let survivor = initrd_files()
        .into_iter()
        .find(|(n, _)| n == "servers/survivor")
        .expect("survivor in the initrd")
        .1;
    let mut files = Vec::new();
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
    files.push(("manifests/corrupt".into(), bytes[..len].to_vec()));
    let (custom, dir) = image_with("corrupt", "manifests/corrupt", files);
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

/// No user-visible CPU state passes from one server to another
/// (`tests/manifests/cpustate.toml`): a writer puts a marker in the upper
/// half of ymm0, another in its FS base, and readers that run after them
/// must not see either. Where ring 3 may not use a feature, the
/// instruction stops the server instead. One gap is known and announced:
/// where PVM interprets the kernel (`hv=native` on these machines), ring 3
/// can use AVX and the kernel cannot switch it.
fn cpu_state_stays_with_its_server(accel: Accel) {
    let run = Boot::test(accel, "cpustate").run();
    run.assert_success()
        .assert_contains("survivor: still running")
        .assert_lacks("FAIL");
    let interpreted = run.output().contains("PVM interprets this kernel");
    for reader in ["avx-reader", "fs-reader"] {
        if run
            .output()
            .contains(&format!("kernel: server {reader} stopped: exception"))
        {
            continue; // ring 3 cannot use the feature at all
        }
        let line = run.line(&format!("{reader}: read "));
        if reader == "avx-reader" && interpreted {
            assert!(
                run.cmdline.contains("hv=native"),
                "only the interpreted path has the gap: {line}"
            );
            continue;
        }
        assert!(
            line.ends_with("read 0x0"),
            "{reader} saw another server's state: {line}\n{}",
            run.output()
        );
    }
    // UMIP: SGDT in ring 3 is a #GP wherever the banner says it is on.
    if run.line("cpu:").contains("umip on") {
        let stopped = run.line("kernel: server sgdt-probe stopped:");
        assert!(stopped.contains("exception 13"), "{stopped}");
        run.assert_lacks("sgdt-probe: read ");
    }
}

#[test]
fn cpu_state_stays_with_its_server_everywhere() {
    everywhere("cpu_state_stays_with_its_server_everywhere", |accel| {
        cpu_state_stays_with_its_server(accel)
    });
}

/// Issue 12: the kernel checks every server's grants at boot against the
/// real memory map, even in a manifest that never went through xtask.
/// `survivor` is granted MMIO over the kernel image (linked at 1 MiB) and
/// `pci-grab` the PCI configuration ports: both are named and left out,
/// while `witness` (the survivor binary, granted nothing) runs and ends
/// the test.
#[test]
fn servers_granted_ram_or_reserved_ports_are_named_and_not_started() {
    let kernel = manifest::MmioRegion {
        base: 0x10_0000,
        size: 0x10_0000,
    };
    let pci = manifest::PortRange::inclusive(0xcf8, 0xcff).unwrap();
    let survivor_bin = Name::bin("survivor").unwrap();
    let mut survivor = Server::new(Name::new("survivor").unwrap(), survivor_bin);
    survivor.push_mmio(kernel).unwrap();
    let mut pci_grab = Server::new(Name::new("pci-grab").unwrap(), survivor_bin);
    pci_grab.push_ports(pci).unwrap();
    let witness = Server::new(Name::new("witness").unwrap(), survivor_bin);
    // Written with the encoder directly: xtask would refuse this manifest.
    assert!(survivor.check_grants(&manifest::STATIC_RAM).is_err());
    assert!(pci_grab.check_grants(&[]).is_err());
    let mut bytes = vec![0u8; manifest::MAX_ENCODED_LEN];
    let len = manifest::encode(&[survivor, pci_grab, witness], &[], &mut bytes)
        .expect("a well-formed manifest");
    let files = vec![("manifests/ramgrant".into(), bytes[..len].to_vec())];
    let (custom, dir) = image_with("ramgrant", "manifests/ramgrant", files);
    everywhere(
        "servers_granted_ram_or_reserved_ports_are_named_and_not_started",
        |accel| {
            let run = Boot::test(accel, "ramgrant").run_image(&custom);
            run.assert_success();
            let refused = run.line("kernel: server survivor not started:");
            assert!(
                refused.contains("MMIO 0x100000..0x200000: overlaps RAM holding the kernel image"),
                "{refused}"
            );
            let refused = run.line("kernel: server pci-grab not started:");
            assert!(
                refused.contains("ports 0xcf8..0xd00: holds the PCI configuration ports"),
                "{refused}"
            );
            run.assert_contains("kernel: server witness exited with code 0")
                .assert_lacks("[survivor]")
                .assert_lacks("[pci-grab]");
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 12: a server whose `.bss` (512 MiB) is more than the machine's
/// memory is refused ("out of memory") and gives back every frame the
/// attempt took; the channel between the servers after it, a contiguous
/// ring, is still made, and `hello` gets all its answers from `echo`
/// (tests/manifests/bigbss.toml). 64 MiB keeps the failed load short where
/// PVM interprets the kernel (hv=native: about 19 s, against 75 s at the
/// default 256 MiB).
#[test]
fn a_server_larger_than_memory_is_refused_and_the_others_get_their_channels() {
    everywhere(
        "a_server_larger_than_memory_is_refused_and_the_others_get_their_channels",
        |accel| {
            let run = Boot::test(accel, "bigbss")
                .memory(64)
                .timeout(Duration::from_secs(120))
                .run();
            run.assert_success()
                .assert_contains("kernel: server bigbss not started: out of memory")
                .assert_contains("hello: all 4 answers correct")
                .assert_contains("kernel: server hello exited with code 0")
                .assert_contains("kernel: server echo exited with code 0")
                .assert_lacks("not created")
                .assert_lacks("FAIL");
        },
    );
}

/// Issue 10: a server's `.bss` is mapped a page at a time on first touch,
/// and nothing a server does can tell. `lazy-bss` hands untouched pages of
/// its 4 MiB `.bss` to system calls (`counters` writes into one, `log`
/// reads one), touches 16 more that must read as zero first, and checks
/// that the kernel counted them (`demand_pages`) and that the stack's guard
/// page and the page past its image are still refused
/// (tests/manifests/lazybss.toml).
#[test]
fn bss_is_mapped_on_first_touch_and_system_calls_see_it() {
    everywhere(
        "bss_is_mapped_on_first_touch_and_system_calls_see_it",
        |accel| {
            Boot::test(accel, "lazybss")
                .run()
                .assert_success()
                .assert_contains("lazy-bss: all checks passed")
                .assert_contains("kernel: server lazy-bss exited with code 0")
                .assert_contains("survivor: still running")
                .assert_contains("demand_pages=")
                .assert_lacks("FAIL")
                .assert_lacks("KERNEL FAULT");
        },
    );
}

/// Issue 10: `.bss` mapped on first touch can run out of memory: on 32 MiB
/// two `bss-hog`s with 16 MiB of `.bss` each both load (each fits alone)
/// and touch every page. The one that finds no frame left is stopped with a
/// report and its memory freed; the other touches all of its pages and
/// exits 0; the kernel goes on (tests/manifests/lazyoom.toml). About 15 s
/// where PVM interprets the kernel (hv=native: ~7,500 page faults).
#[test]
fn a_server_out_of_memory_for_its_bss_is_stopped_alone() {
    everywhere(
        "a_server_out_of_memory_for_its_bss_is_stopped_alone",
        |accel| {
            let run = Boot::test(accel, "lazyoom")
                .memory(32)
                .timeout(Duration::from_secs(120))
                .run();
            run.assert_success()
                .assert_contains("stopped: out of memory for a page of its .bss at 0x")
                .assert_contains(": touched 4096 pages")
                .assert_lacks("FAIL")
                .assert_lacks("KERNEL FAULT");
            let stopped = run.output().matches("stopped: out of memory").count();
            let exited = run.output().matches("exited with code 0").count();
            assert_eq!((stopped, exited), (1, 1), "{}", run.output());
        },
    );
}
