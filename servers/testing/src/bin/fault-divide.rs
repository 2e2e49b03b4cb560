//! fault-divide: divides by zero with the `div` instruction; the kernel
//! must stop it with a divide error (#DE). Prints `fault-divide: about to
//! fault`; if the division returns, `fault-divide: FAIL ...` and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use testing::hazard;
use userland::println;

userland::entry!(run);

fn run() -> i32 {
    // `black_box` hides the zero from the compiler; `div` hides it from
    // Rust's own division check.
    let divisor: u64 = 0;
    println!("fault-divide: about to fault (dividing 1 by {divisor})");
    let q = hazard::divide(1, core::hint::black_box(divisor));
    println!("fault-divide: FAIL 1 / {divisor} returned {q}");
    1
}
