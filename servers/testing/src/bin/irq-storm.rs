//! irq-storm: "Why" case 3 of issue 11. It makes the console fault (the
//! manifest leaves the console down), then stays alive for 3 s, printing a
//! line every 100 ms, while the test types into COM1. Once the keystrokes
//! raised IRQ 4 with no server bound, and every kernel warning written to
//! COM1 raised it again: the machine livelocked and these lines stopped.
//! Now the apic server masks the dead console's line and the kernel
//! rate-limits its warning, so all 30 lines come out.
#![cfg_attr(target_os = "none", no_std, no_main)]

use userland::abi::name_str;
use userland::{println, sys};

userland::entry!(run);

/// Wait (at most 30 s) until the apic server has answered a request of the
/// console's.
fn console_routed() -> bool {
    for _ in 0..3000 {
        let answered = (0..).map_while(|i| sys::channel_stats(i).ok()).any(|c| {
            name_str(&c.service) == "apic" && name_str(&c.client) == "console" && c.completions > 0
        });
        if answered {
            return true;
        }
        let _ = sys::wait(1 << 62, 10_000_000);
    }
    false
}

fn run() -> i32 {
    let Some((index, _)) = sys::servers().find(|(_, s)| name_str(&s.name) == "console") else {
        println!("irq-storm: FAIL no console server");
        return 1;
    };
    // Let the console come up and route its line first: the apic server
    // has answered its request. A fixed wait is not enough where the
    // kernel is interpreted and the apic server starts on a busy CPU.
    if !console_routed() {
        println!("irq-storm: FAIL the console never had its line routed");
        return 1;
    }
    if let Err(e) = sys::inject_fault(index) {
        println!("irq-storm: FAIL inject_fault(console): {e}");
        return 1;
    }
    for i in 1..=30 {
        let _ = sys::wait(1 << 62, 100_000_000);
        println!("irq-storm: alive {i}");
    }
    0
}
