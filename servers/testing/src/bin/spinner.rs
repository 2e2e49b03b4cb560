//! spinner: runs on the CPU without ever entering the kernel for
//! `spinner.ms` milliseconds (default 3000, by the TSC), to show that a
//! server that never blocks holds no CPU but its own slice of one: the
//! servers on the other CPUs run on undisturbed, and those sharing its CPU
//! are preempted in. Prints `spinner: spinning for N ms`, then
//! `spinner: done after N ms` and exits 0.
#![cfg_attr(target_os = "none", no_std, no_main)]

use userland::{println, sys};

userland::entry!(run);

fn run() -> i32 {
    let Some(info) = sys::boot_info_cached() else {
        println!("spinner: FAIL no boot information");
        return 1;
    };
    let ms = info
        .arg("ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000u64);
    let hz = info.tsc_hz.max(1);
    println!("spinner: spinning for {ms} ms on CPU {}", info.cpu);
    let start = sys::rdtsc();
    let end = start + ms * (hz / 1000);
    while sys::rdtsc() < end {
        core::hint::spin_loop();
    }
    println!(
        "spinner: done after {} ms",
        (sys::rdtsc() - start) / (hz / 1000)
    );
    0
}
