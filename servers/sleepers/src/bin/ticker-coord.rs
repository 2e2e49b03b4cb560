//! ticker-coord: the timer benchmark's coordinator. Waits until every
//! `ticker` worker is ready, reads the timer's and the kernel's counters,
//! prints `stress-ready` and pauses (so the harness reads KVM's counters),
//! lets the workers go, waits until all are done, reads the counters again,
//! prints `stress-done`, pauses, and prints
//! `stress-result kind=timer ok=1 clients=N sleeps=N programmings=N
//! port_writes=N irqs=N wakeups=N latest_us=N ns=N entries=N ...`.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec::Vec;

use ::proto::{ticks, timer as proto};
use devkit::Timer;
use devkit::clock::now_ns;
use devkit::sysinfo::arg_u64;
use sleepers::{MARKER_PAUSE_NS, kernel_delta, pause};
use userland::{
    Channel, ChannelError, Completion, Failure, OP_HANGUP, OrFail, Provider, println, sys,
};

userland::entry!(async run);

/// The timer's counters the result reports, read before and after.
const COUNTERS: [u64; 4] = [
    proto::STAT_PROGRAMMINGS,
    proto::STAT_PORT_WRITES,
    proto::STAT_IRQS,
    proto::STAT_WAKEUPS,
];

/// Wait for one `op` request from every worker; returns their cookies and
/// first arguments.
async fn gather(workers: &mut [Provider], op: u32) -> Result<Vec<(u64, u64)>, ChannelError> {
    let mut got = Vec::new();
    for w in workers.iter_mut() {
        let d = w.recv().await?;
        if d.opcode() != op {
            println!(
                "ticker-coord: FAIL expected opcode {op}, got {}",
                d.opcode()
            );
            return Err(ChannelError::Sys(userland::abi::Error::InvalidArgument));
        }
        got.push((d.cookie(), d.arg(0)));
    }
    Ok(got)
}

async fn release(workers: &mut [Provider], cookies: &[(u64, u64)]) -> Result<(), ChannelError> {
    for (w, (cookie, _)) in workers.iter_mut().zip(cookies) {
        w.reply(Completion::ok(*cookie, 0)).await?;
        w.flush();
    }
    Ok(())
}

async fn bench(timer: &mut Timer, workers: &mut [Provider]) -> Result<(), ChannelError> {
    let sleeps = arg_u64("sleeps", 1000);
    let ready = gather(workers, ticks::OP_READY).await?;
    let before = timer.stats(COUNTERS).await?;
    let k0 = sys::counters().unwrap_or_default();
    println!("stress-ready");
    pause(MARKER_PAUSE_NS);
    let t0 = now_ns();
    release(workers, &ready).await?;
    let done = gather(workers, ticks::OP_DONE).await?;
    let elapsed = now_ns() - t0;
    let k1 = sys::counters().unwrap_or_default();
    let after = timer.stats(COUNTERS).await?;
    println!("stress-done");
    pause(MARKER_PAUSE_NS);
    let latest = done.iter().map(|d| d.1).max().unwrap_or(0);
    println!(
        "stress-result kind=timer ok=1 batching={:?} clients={} sleeps={} programmings={} port_writes={} irqs={} wakeups={} latest_us={} ns={elapsed} {}",
        sys::batching(),
        workers.len(),
        sleeps * workers.len() as u64,
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
        after[3] - before[3],
        latest / 1000,
        kernel_delta(&k0, &k1)
    );
    release(workers, &done).await?;
    for w in workers.iter_mut() {
        while w.recv().await?.opcode() != OP_HANGUP {}
    }
    Ok(())
}

async fn run() -> Result<(), Failure> {
    let mut timer = Timer::open().or_fail("cannot open the timer")?;
    let mut workers =
        Channel::clients_of(ticks::SERVICE).or_fail("cannot attach the ticks channels")?;
    let result = bench(&mut timer, &mut workers).await;
    let _ = timer.close().await;
    result.map_err(Failure::new)
}
