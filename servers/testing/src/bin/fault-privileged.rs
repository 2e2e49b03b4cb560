//! fault-privileged: executes `hlt` in ring 3; the kernel must stop it with
//! a general-protection fault. Prints `fault-privileged: about to fault`;
//! if `hlt` returns, `fault-privileged: FAIL ...` and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use testing::hazard;
use userland::println;

userland::entry!(run);

fn run() -> i32 {
    println!("fault-privileged: about to fault (hlt in ring 3)");
    hazard::halt_in_ring3();
    println!("fault-privileged: FAIL hlt ran in ring 3");
    1
}
