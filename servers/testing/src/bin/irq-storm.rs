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

fn run() -> i32 {
    let console = (0..).map_while(|i| sys::server_info(i).ok().map(|s| (i, s)));
    let Some((index, _)) = console
        .into_iter()
        .find(|(_, s)| name_str(&s.name) == "console")
    else {
        println!("irq-storm: FAIL no console server");
        return 1;
    };
    // Let the console come up and route its line first.
    let _ = sys::wait(1 << 62, 200_000_000);
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
