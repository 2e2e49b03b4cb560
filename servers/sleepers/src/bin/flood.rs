//! flood: the console benchmark. Writes `bytes` (`NAME.bytes=`, default
//! 1 MiB) through the console in 64-byte lines, waits until they are on the
//! wire, and reports what it cost:
//!
//! `stress-ready`, pause, the workload, `stress-done`, pause, then
//! `stress-result kind=console ok=1 bytes=N tx_bytes=N status_reads=N
//! bursts=N ns=N entries=N ...` (console counters and kernel counter
//! deltas). The pauses let the harness read KVM's exit counters over QMP
//! at each marker.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec::Vec;

use ::proto::console as proto;
use devkit::Console;
use devkit::clock::now_ns;
use devkit::sysinfo::arg_u64;
use sleepers::{MARKER_PAUSE_NS, kernel_delta, pause};
use userland::{ChannelError, println, sys};

userland::entry!(async run);

/// The console's counters the result reports, read before and after.
const COUNTERS: [u64; 3] = [
    proto::STAT_TX_BYTES,
    proto::STAT_TX_STATUS_READS,
    proto::STAT_BURSTS,
];

async fn flood(console: &mut Console, bytes: u64) -> Result<(), ChannelError> {
    // Whatever booting printed is out before the counters are read.
    console.flush().await?;
    let before = console.stats(COUNTERS).await?;
    let k0 = sys::counters().unwrap_or_default();
    println!("stress-ready");
    pause(MARKER_PAUSE_NS);
    let t0 = now_ns();
    let mut line: Vec<u8> = Vec::with_capacity(64);
    let mut sent = 0;
    let mut n = 0u64;
    while sent < bytes {
        line.clear();
        line.extend_from_slice(alloc::format!("flood {n:08} ").as_bytes());
        while line.len() < 63 {
            line.push(b'a' + (line.len() % 26) as u8);
        }
        line.push(b'\n');
        let take = line.len().min((bytes - sent) as usize);
        console.write(&line[..take]).await?;
        sent += take as u64;
        n += 1;
    }
    console.flush().await?;
    let ns = now_ns() - t0;
    let k1 = sys::counters().unwrap_or_default();
    let after = console.stats(COUNTERS).await?;
    println!("stress-done");
    pause(MARKER_PAUSE_NS);
    println!(
        "stress-result kind=console ok=1 batching={:?} bytes={bytes} tx_bytes={} status_reads={} bursts={} ns={ns} {}",
        sys::batching(),
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
        kernel_delta(&k0, &k1)
    );
    Ok(())
}

async fn run() -> i32 {
    let bytes = arg_u64("bytes", 1 << 20);
    let mut console = match Console::open() {
        Ok(c) => c,
        Err(e) => {
            println!("flood: FAIL cannot open the console: {e}");
            return 1;
        }
    };
    let result = flood(&mut console, bytes).await;
    let _ = console.close().await;
    match result {
        Ok(()) => 0,
        Err(e) => {
            println!("flood: FAIL {e}");
            1
        }
    }
}
