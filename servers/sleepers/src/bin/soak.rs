//! soak: the supervision soak (issue 11). Four client loops keep the apic,
//! timer, console and echo servers busy while an injector makes them fault
//! in turn (`inject_fault`, granted by the manifest), `soak.faults=N` times
//! in all (default 10,000). After each fault it waits until the server was
//! restarted and every loop has finished a request since; a loop that
//! makes no progress for 2 s is counted hung.
//!
//! Every request has exactly one outcome: an answer, which must be right
//! (echo answers the value sent), or `PeerRestarted` (the instance that
//! took it died). Anything else (`PeerDead`, a wrong answer, a corrupt
//! ring) is counted bad. The console loop also measures restart to serving
//! again: from the injection into the console to the first answer from its
//! new instance to a request sent after the injection.
//!
//! Ends with one line, `soak: faults=... restarts=... ok=... errors=...
//! bad=... hung=... console_restart_us p50=... p99=... max=...`, and exits
//! 0 if nothing was bad or hung (1 otherwise).
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use devkit::clock::rdtsc;
use devkit::sysinfo::{arg_u64, server_info};
use devkit::{Apic, Console, Timer};
use futures_util::future::join5;
use proto::{apic as aproto, echo};
use userland::{Channel, ChannelError, Descriptor, println, sys};

userland::entry!(async run);

/// The servers, in the order faults go round them.
const TARGETS: [&str; 4] = ["apic", "timer", "console", "echo"];
const CONSOLE: usize = 2;

/// Per target: answers, `PeerRestarted` errors, requests finished (either).
static OK: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static ERRORS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static DONE: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static BAD: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
/// TSC of the last injection into the console (0: none pending), and the
/// restart-to-serving times measured, in TSC cycles.
static CONSOLE_INJECTED: AtomicU64 = AtomicU64::new(0);
const MAX_SAMPLES: usize = 4096;
static SAMPLES: [AtomicU64; MAX_SAMPLES] = [const { AtomicU64::new(0) }; MAX_SAMPLES];
static SAMPLE_COUNT: AtomicU64 = AtomicU64::new(0);

/// Count one request's outcome for `target`.
fn outcome<T>(target: usize, result: &Result<T, ChannelError>, right: bool) {
    match result {
        Ok(_) if right => OK[target].fetch_add(1, Relaxed),
        Err(ChannelError::PeerRestarted) => ERRORS[target].fetch_add(1, Relaxed),
        other => {
            if BAD.fetch_add(1, Relaxed) < 8 {
                let what = match other {
                    Ok(_) => alloc::string::String::from("a wrong answer"),
                    Err(e) => alloc::format!("{e}"),
                };
                println!("soak: BAD {}: {what}", TARGETS[target]);
            }
            0
        }
    };
    DONE[target].fetch_add(1, Relaxed);
}

/// The channel a loop for `target` opened; a loop that cannot open its
/// channel is counted bad and says so.
fn opened<T, E>(target: usize, channel: Result<T, E>) -> Option<T> {
    if channel.is_err() {
        println!("soak: FAIL no {} channel", TARGETS[target]);
        BAD.fetch_add(1, Relaxed);
    }
    channel.ok()
}

/// Let the other loops and servers run (`yield`), cheaply.
async fn pause() {
    let _ = sys::yield_now();
    let mut yielded = false;
    core::future::poll_fn(|cx| {
        if yielded {
            core::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            core::task::Poll::Pending
        }
    })
    .await;
}

async fn apic_loop() {
    let Some(mut apic) = opened(0, Apic::open()) else {
        return;
    };
    while !STOP.load(Relaxed) {
        let r = apic.stat(aproto::STAT_REQUESTS).await;
        outcome(0, &r, true);
        pause().await;
    }
    let _ = apic.close().await;
}

async fn timer_loop() {
    let Some(mut timer) = opened(1, Timer::open()) else {
        return;
    };
    while !STOP.load(Relaxed) {
        let r = timer.sleep_for(50_000).await;
        outcome(1, &r, true);
    }
    let _ = timer.close().await;
}

async fn console_loop() {
    let Some(mut console) = opened(CONSOLE, Console::open()) else {
        return;
    };
    let mut n = 0u64;
    while !STOP.load(Relaxed) {
        n += 1;
        if n.is_multiple_of(256) {
            let _ = console
                .line(&alloc::format!("soak: console line {n}"))
                .await;
        }
        let sent = rdtsc();
        let r = console.stat(0).await;
        let injected = CONSOLE_INJECTED.load(Relaxed);
        if r.is_ok() && injected != 0 && sent > injected {
            // The first answer to a request sent after the injection: the
            // new instance is serving.
            CONSOLE_INJECTED.store(0, Relaxed);
            let i = SAMPLE_COUNT.fetch_add(1, Relaxed) as usize;
            if let Some(slot) = SAMPLES.get(i) {
                slot.store(rdtsc() - injected, Relaxed);
            }
        }
        outcome(CONSOLE, &r, true);
        pause().await;
    }
    let _ = console.close().await;
}

async fn echo_loop() {
    let Some(mut client) = opened(3, Channel::open("echo")) else {
        return;
    };
    let mut value = 0u64;
    while !STOP.load(Relaxed) {
        value += 1;
        let r = client
            .call(Descriptor::new(echo::OP_ECHO, 0).with_args([value]))
            .await;
        let right = matches!(&r, Ok(c) if c.result() == Ok(value));
        outcome(3, &r, right);
        pause().await;
    }
    let _ = client.close().await;
}

/// Server indices of the targets, by name.
fn target_indices() -> Option<[u32; 4]> {
    let mut out = [0u32; 4];
    for (slot, name) in out.iter_mut().zip(TARGETS) {
        *slot = sys::servers()
            .find_map(|(i, s)| (userland::abi::name_str(&s.name) == name).then_some(i))?;
    }
    Some(out)
}

async fn injector(faults: u64, hung: &AtomicU64, restarts: &AtomicU64) {
    let Some(indices) = target_indices() else {
        println!("soak: FAIL the manifest lacks one of {TARGETS:?}");
        BAD.fetch_add(1, Relaxed);
        STOP.store(true, Relaxed);
        return;
    };
    let hz = devkit::clock::tsc_hz().max(1);
    let restarts_of = |t: usize| server_info(indices[t]).map_or(0, |s| u64::from(s.restarts));
    let first: u64 = (0..4).map(restarts_of).sum();
    // Let every loop finish one request first.
    while DONE.iter().any(|d| d.load(Relaxed) == 0) {
        pause().await;
    }
    for k in 0..faults {
        let t = (k % 4) as usize;
        let before = restarts_of(t);
        let done_before: [u64; 4] = core::array::from_fn(|i| DONE[i].load(Relaxed));
        let at = rdtsc();
        if t == CONSOLE {
            CONSOLE_INJECTED.store(at, Relaxed);
        }
        if let Err(e) = sys::inject_fault(indices[t]) {
            println!("soak: FAIL inject_fault({}): {e}", TARGETS[t]);
            BAD.fetch_add(1, Relaxed);
            break;
        }
        // Until it is back and every loop has finished a request since.
        loop {
            let back = restarts_of(t) > before;
            let all_moved = (0..4).all(|i| DONE[i].load(Relaxed) > done_before[i]);
            if back && all_moved {
                break;
            }
            if rdtsc() - at > 2 * hz {
                let stuck: Vec<&str> = (0..4)
                    .filter(|&i| DONE[i].load(Relaxed) == done_before[i])
                    .map(|i| TARGETS[i])
                    .collect();
                println!(
                    "soak: FAIL hung after fault {k} into {}: restarted={back}, no progress: {stuck:?}",
                    TARGETS[t]
                );
                hung.fetch_add(1, Relaxed);
                STOP.store(true, Relaxed);
                return;
            }
            pause().await;
        }
    }
    let last: u64 = (0..4).map(restarts_of).sum();
    restarts.store(last - first, Relaxed);
    STOP.store(true, Relaxed);
}

/// The `q`-quantile (0..=1) of sorted `v`.
fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v[(((v.len() - 1) as f64) * q) as usize]
}

async fn run() -> i32 {
    let faults = arg_u64("faults", 10_000);
    let hung = AtomicU64::new(0);
    let restarts = AtomicU64::new(0);
    println!("soak: {faults} faults into {TARGETS:?}, round robin");
    let started = rdtsc();
    join5(
        apic_loop(),
        timer_loop(),
        console_loop(),
        echo_loop(),
        injector(faults, &hung, &restarts),
    )
    .await;
    let hz = devkit::clock::tsc_hz().max(1);
    let seconds = (rdtsc() - started) as f64 / hz as f64;
    let n = (SAMPLE_COUNT.load(Relaxed) as usize).min(MAX_SAMPLES);
    let mut samples: Vec<u64> = SAMPLES[..n]
        .iter()
        .map(|s| s.load(Relaxed) * 1_000_000 / hz)
        .collect();
    samples.sort_unstable();
    let sum = |a: &[AtomicU64; 4]| a.iter().map(|x| x.load(Relaxed)).sum::<u64>();
    let (bad, hung) = (BAD.load(Relaxed), hung.load(Relaxed));
    println!(
        "soak: faults={faults} restarts={} ok={} errors={} bad={bad} hung={hung} seconds={seconds:.1} \
         console_restart_us samples={n} p50={} p99={} max={}",
        restarts.load(Relaxed),
        sum(&OK),
        sum(&ERRORS),
        quantile(&samples, 0.5),
        quantile(&samples, 0.99),
        samples.last().copied().unwrap_or(0),
    );
    for (t, name) in TARGETS.iter().enumerate() {
        println!(
            "soak: {name}: ok={} errors={}",
            OK[t].load(Relaxed),
            ERRORS[t].load(Relaxed)
        );
    }
    i32::from(bad != 0 || hung != 0)
}
