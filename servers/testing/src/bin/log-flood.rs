//! log-flood: a hostile user of the kernel's `log` call (issue 11, case 6).
//! It holds a console channel open (so that the console, and the kernel's
//! log through it, stay up while it runs), then:
//!
//! 1. logs a line that tries to forge a kernel report: a newline followed by
//!    `kernel: server console stopped: exception 13 ...`, with terminal
//!    escape codes (clear screen, red), and one with bytes that are not
//!    UTF-8; the kernel must print each as one escaped record;
//! 2. floods lines of `log-flood.bytes=` bytes (default 1024, as in the
//!    report of case 6) through `log` for `log-flood.ms=` ms (default 1000)
//!    as fast as it can; the kernel must admit only its rate and refuse the
//!    rest with `Busy`, while another server's fault report still gets out;
//!    with `log-flood.after_console=1`, only once the console has answered
//!    a request (so that the flood does not share the processor with the
//!    other servers' start);
//! 3. after a pause, prints `log-flood: flooded N-byte lines for N ms: N
//!    lines, N accepted, N refused (busy), N other errors` (the kernel puts
//!    its `(N lines dropped)` note first), hangs up and exits 0.
//!
//! Any other answer from `log` than success or `Busy` is counted as an
//! error, and the server then exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use ::proto::console as proto;
use userland::abi::Error;
use userland::{Channel, Descriptor, println, sys};

userland::entry!(async run);

/// How long the flood lasts, unless `ms=` says.
const FLOOD_MS: u64 = 1000;
/// The longest flood line (what `log` takes), and the default length.
const LINE: usize = 1024;
/// A bit no channel or IRQ of this server uses, to sleep on.
const IDLE_BIT: u64 = 1 << 62;

/// The forged report: what a server could print as if it were the kernel.
const FORGED: &[u8] = b"forged: ok\nkernel: server console stopped: exception 13 \
(general protection fault) at RIP 0x0\x1b[2J\x1b[31m\r\n";
/// Bytes that are not UTF-8 between valid text.
const NOT_UTF8: &[u8] = b"not utf-8: \xff\xfe end";

async fn run() -> i32 {
    let mut console = match Channel::open("console") {
        Ok(c) => c,
        Err(e) => {
            println!("log-flood: FAIL cannot open the console: {e}");
            return 1;
        }
    };
    println!("log-flood: forging a kernel line");
    let forged = [sys::log(FORGED), sys::log(NOT_UTF8)];
    let Some(info) = sys::boot_info_cached().filter(|b| b.tsc_hz > 0) else {
        println!("log-flood: FAIL no TSC rate in boot_info");
        return 1;
    };
    let hz = info.tsc_hz;
    let arg = |key: &str| info.arg(key).and_then(|v| v.parse::<u64>().ok());
    let flood_ms = arg("ms").unwrap_or(FLOOD_MS);
    let bytes = arg("bytes").map_or(LINE, |n| (n as usize).clamp(16, LINE));
    if arg("after_console") == Some(1) {
        let stats =
            Descriptor::new(proto::OP_STATS, 1).with_args([proto::STAT_LINES, 0, 0, 0, 0, 0]);
        if let Err(e) = console.call(stats).await {
            println!("log-flood: FAIL the console did not answer: {e}");
            return 1;
        }
    }
    let Ok(start) = now() else {
        println!("log-flood: FAIL counters refused");
        return 1;
    };
    let end = start + flood_ms * hz / 1000;

    let mut line = [b'x'; LINE];
    let (mut sent, mut accepted, mut refused, mut other) = (0u64, 0u64, 0u64, 0u64);
    let mut at = start;
    while at < end {
        number(&mut line, sent);
        match sys::log(&line[..bytes]) {
            Ok(()) => accepted += 1,
            Err(Error::Busy) => refused += 1,
            Err(_) => other += 1,
        }
        sent += 1;
        // The clock is a system call too: read it every 16 lines.
        if sent.is_multiple_of(16) {
            at = now().unwrap_or(end);
        }
    }
    let ms = (at - start) * 1000 / hz;

    // Let the bucket refill (50 lines a second) and the console drain.
    let _ = sys::wait(IDLE_BIT, 200_000_000);
    let mut summary = userland::print::LineWriter::<_, 200>::new(|text: &[u8]| {
        // Retried while the kernel says Busy: this is the line the test reads.
        for _ in 0..50 {
            if sys::log(text) != Err(Error::Busy) {
                break;
            }
            let _ = sys::wait(IDLE_BIT, 50_000_000);
        }
    });
    let _ = core::fmt::Write::write_fmt(
        &mut summary,
        format_args!(
            "log-flood: flooded {bytes}-byte lines for {ms} ms: {sent} lines, \
             {accepted} accepted, {refused} refused (busy), {other} other errors; \
             forged lines {:?} {:?}",
            forged[0], forged[1]
        ),
    );
    summary.finish();
    let failed = other > 0 || forged.iter().any(Result::is_err);
    if let Err(e) = console.close().await {
        println!("log-flood: FAIL hanging up: {e}");
        return 1;
    }
    i32::from(failed)
}

/// The TSC, as the kernel's counters report it (no `unsafe` here).
fn now() -> Result<u64, Error> {
    sys::counters().map(|c| c.tsc)
}

/// `flood NNNNNNNN ` at the start of `line`, so that lines can be told apart.
fn number(line: &mut [u8; LINE], n: u64) {
    line[..6].copy_from_slice(b"flood ");
    let mut v = n;
    for i in (6..14).rev() {
        line[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
    line[14] = b' ';
}
