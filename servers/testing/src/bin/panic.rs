//! panic: exercises the runtime's heap and panic handler. Allocates (a
//! `Vec` and a `String`), prints `panic: heap ok (N bytes)`, then panics;
//! the runtime must print `panicked at ...: deliberate panic ...` and exit
//! with code 101. If the heap misbehaves it prints `panic: FAIL ...` and
//! exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use userland::println;

userland::entry!(run);

fn run() -> i32 {
    let squares: Vec<u64> = (0..10_000).map(|i| i * i).collect();
    let mut text = String::new();
    for i in 0..1000 {
        let _ = write!(text, "{i},");
    }
    let ok = squares
        .iter()
        .enumerate()
        .all(|(i, &s)| s == (i * i) as u64)
        && text.starts_with("0,1,2,")
        && text.ends_with("998,999,");
    if !ok {
        println!("panic: FAIL the heap returned corrupt data");
        return 1;
    }
    let bytes = squares.len() * 8 + text.len();
    println!("panic: heap ok ({bytes} bytes)");
    panic!("deliberate panic after {} allocations", 2);
}
