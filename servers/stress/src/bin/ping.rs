//! ping: a client of `pong`; times round trips, one message at a time,
//! each waiting for its answer, with the TSC read in ring 3. Prints one
//! `stress-result kind=pingpong ...` line with p50 and p99 in TSC cycles
//! and nanoseconds (`BootInfo::tsc_hz`).
//!
//! Argument: `ping.rounds=N` (default 100,000, at most 200,000; after
//! 1,000 rounds of warm-up). Exits 0, or 1 when an answer is wrong.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec::Vec;

use stress::{
    DEFAULT_ROUNDS, MARKER_PAUSE_NS, MAX_ROUNDS, OP_PING, PONG_SERVICE, ResultLine, WARMUP_ROUNDS,
    arg_u64, batching_word, counters, cycles_to_ns, pause, percentile, tsc,
};
use userland::{Channel, Client, Descriptor, println, sys};

userland::entry!(async run);

async fn round(client: &mut Client, i: u64) -> Result<(), &'static str> {
    match client
        .call(Descriptor::new(OP_PING, 0).with_args([i]))
        .await
    {
        Ok(c) if c.value() == i => Ok(()),
        Ok(_) => Err("wrong answer"),
        Err(_) => Err("ring error"),
    }
}

/// Null system calls timed before the round trips.
const NULL_CALLS: usize = 10_000;

async fn run() -> i32 {
    let rounds = match arg_u64("rounds", DEFAULT_ROUNDS) {
        Ok(r) => r.clamp(1, MAX_ROUNDS),
        Err(key) => {
            println!("ping: FAIL ping.{key}= is not a number");
            return 1;
        }
    };
    let mut client = match Channel::open(PONG_SERVICE) {
        Ok(c) => c,
        Err(e) => {
            println!("ping: FAIL cannot open {PONG_SERVICE}: {e}");
            return 1;
        }
    };
    let tsc_hz = sys::boot_info_cached().map(|b| b.tsc_hz).unwrap_or(0);
    println!(
        "ping: {rounds} round trips after {WARMUP_ROUNDS} of warm-up, batching {}",
        batching_word()
    );
    for i in 0..WARMUP_ROUNDS {
        if let Err(e) = round(&mut client, i).await {
            println!("ping: FAIL warm-up round {i}: {e}");
            return 1;
        }
    }
    // The cost of one kernel entry and return: a `yield` while pong waits
    // (nobody else is ready, so it returns at once), timed one by one.
    let mut nulls: Vec<u32> = Vec::with_capacity(NULL_CALLS);
    for _ in 0..NULL_CALLS {
        let start = tsc::now();
        let _ = sys::yield_now();
        nulls.push(u32::try_from(tsc::now().wrapping_sub(start)).unwrap_or(u32::MAX));
    }
    nulls.sort_unstable();
    let null_syscall = percentile(&nulls, 50);
    let mut samples: Vec<u32> = Vec::with_capacity(rounds as usize);

    println!("stress-ready");
    pause(MARKER_PAUSE_NS);
    let c0 = counters();
    let t0 = tsc::now();
    for i in 0..rounds {
        let start = tsc::now();
        if let Err(e) = round(&mut client, i).await {
            println!("ping: FAIL round {i}: {e}");
            return 1;
        }
        let cycles = tsc::now().wrapping_sub(start);
        samples.push(u32::try_from(cycles).unwrap_or(u32::MAX));
    }
    let t1 = tsc::now();
    let c1 = counters();
    println!("stress-done");
    pause(MARKER_PAUSE_NS);

    samples.sort_unstable();
    let p50 = percentile(&samples, 50);
    let p99 = percentile(&samples, 99);
    let cycles = t1.wrapping_sub(t0);
    let mut line = ResultLine::new();
    line.field("kind", "pingpong")
        .field("batching", batching_word())
        .field("rounds", rounds)
        .elapsed(cycles, tsc_hz)
        .field("p50_cycles", p50)
        .field("p99_cycles", p99)
        .field("p50_ns", cycles_to_ns(u64::from(p50), tsc_hz))
        .field("p99_ns", cycles_to_ns(u64::from(p99), tsc_hz))
        .field("min_cycles", samples.first().copied().unwrap_or(0))
        .field("max_cycles", samples.last().copied().unwrap_or(0))
        .field("null_syscall_cycles", null_syscall)
        .counters(&c0, &c1)
        .field("ok", 1);
    line.emit();
    if let Err(e) = client.close().await {
        println!("ping: FAIL hanging up: {e}");
        return 1;
    }
    0
}
