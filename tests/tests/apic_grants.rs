//! Issue 11, "Why" case 4: any client of the apic server could mask, route
//! or IPI any line, so masking line 0 stopped every timer sleep and line 4
//! console input. Now a client touches only the lines its own manifest
//! entry grants and sends IPIs only to itself on those lines' vectors
//! (`tests/manifests/apicgrants.toml`, `servers/testing/src/bin/apic-intruder.rs`);
//! the lines of a client that is gone are masked.

use std::time::Duration;

use tests::{Accel, Boot, on_kvm};

/// What apic-intruder tries and must be refused, as it prints them.
const REFUSED: [&str; 12] = [
    "mask line 0",
    "unmask line 0",
    "route line 0",
    "mask line 4",
    "route line 4",
    "mask line 23",
    "IPI vector 0x20 to self",
    "IPI vector 0x24 to self",
    "IPI vector 0xf0 to self",
    "IPI vector 0x25 to all",
    "IPI vector 0x25 to others",
    "IPI vector 0x25 to APIC id 0",
];

const TYPED: &str = "typed after the attempts";

fn apic_grants(accel: Accel, batching: &str) {
    let run = Boot::test(accel, "apicgrants")
        .cmdline(&format!("batching={batching}"))
        .timeout(Duration::from_secs(90))
        .run_typing(&[(
            "apic-intruder: type a line",
            format!("{TYPED}\n").as_bytes(),
        )]);
    run.assert_success()
        .assert_lacks("FAIL")
        .assert_lacks("panicked")
        .assert_contains("apic-intruder: the timer and the console serve")
        // Its own grant works ...
        .assert_contains("apic-intruder: route line 5 (granted): GSI 5")
        .assert_contains("apic-intruder: unmask line 5 (granted): ok")
        .assert_contains("apic-intruder: mask line 5 (granted): ok");
    // (The IPI only where the apic reaches the local APIC's page: the
    // kernel keeps xAPIC mode, but were the APIC in x2APIC mode the apic
    // could send IPIs for no one.)
    if run.output().contains("IPIs available") {
        run.assert_contains("apic-intruder: granted IPI on vector 0x25 delivered");
    } else {
        run.assert_contains("apic-intruder: granted IPI on vector 0x25 answered Denied");
    }
    // ... everything else is refused, counted, and logged once.
    for what in REFUSED {
        run.assert_contains(&format!("apic-intruder: {what}: denied"));
    }
    run.assert_contains(&format!(
        "apic-intruder: the apic counted {} refusals",
        REFUSED.len()
    ));
    assert_eq!(
        run.output()
            .matches("apic: refused apic-intruder: ")
            .count(),
        1,
        "the first refusal is logged, the others only counted\n{}",
        run.output()
    );
    run.assert_contains("apic: refused apic-intruder: mask line 0:");
    // The timer and the console still interrupt after the attempts.
    run.assert_contains("apic-intruder: the timer still wakes me after 20 ms")
        .assert_contains(&format!(
            "apic-intruder: the console still reads input: {TYPED}"
        ))
        .assert_contains("apic-intruder: done")
        .assert_contains("kernel: server apic-intruder exited with code 0");
    // Each client's lines are masked once it is gone.
    for (client, line) in [("apic-intruder", 5), ("timer", 0), ("console", 4)] {
        run.assert_contains(&format!("apic: {client} is gone: masked line(s) {line}"));
    }
    let at = |needle: &str| run.output().find(needle).unwrap();
    assert!(
        at("apic-intruder: mask line 0: denied") < at("apic-intruder: the timer still wakes me"),
        "the sleep came after the attempts\n{}",
        run.output()
    );
}

#[test]
fn an_apic_client_touches_only_its_granted_lines_on_tcg() {
    apic_grants(Accel::Tcg, "on");
}

#[test]
fn an_apic_client_touches_only_its_granted_lines_batching_off_on_tcg() {
    apic_grants(Accel::Tcg, "off");
}

#[test]
fn an_apic_client_touches_only_its_granted_lines_on_kvm() {
    on_kvm(
        "an_apic_client_touches_only_its_granted_lines_on_kvm",
        || apic_grants(Accel::Kvm, "on"),
    );
}
