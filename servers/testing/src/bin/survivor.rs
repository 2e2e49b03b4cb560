//! survivor: runs beside servers that fault, to show that a fault stops
//! only the faulting server. Prints `survivor: started`, a heartbeat every
//! 5 of 20 sleeps of 10 ms (`wait` on an unused bit, which must time
//! out), then `survivor: still running` and exits 0. An unexpected wait
//! result prints `survivor: FAIL ...` and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use userland::abi::Error;
use userland::{println, sys};

userland::entry!(run);

const ROUNDS: u32 = 20;
const SLEEP_NS: u64 = 10_000_000;
/// A bit no channel or IRQ of this server uses.
const IDLE_BIT: u64 = 1 << 62;

fn run() -> i32 {
    println!("survivor: started");
    for round in 1..=ROUNDS {
        match sys::wait(IDLE_BIT, SLEEP_NS) {
            Err(Error::TimedOut) => {}
            other => {
                println!("survivor: FAIL wait on an idle bit returned {other:?}");
                return 1;
            }
        }
        if let Err(e) = sys::yield_now() {
            println!("survivor: FAIL yield returned {e}");
            return 1;
        }
        if round % 5 == 0 {
            println!("survivor: heartbeat {round}/{ROUNDS}");
        }
    }
    println!("survivor: still running");
    0
}
