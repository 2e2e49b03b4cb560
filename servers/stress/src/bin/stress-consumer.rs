//! stress-consumer: provides `stress` to one client (`stress-producer`)
//! and checks every message's sequence number: any loss, duplicate or
//! reordering fails the run. With batching on it drains the ring with
//! `pop_slice` (one release per chunk of up to 256); with batching off it
//! takes and releases one message at a time.
//!
//! Answers `OP_END` with (received, lost) and `OP_VERDICT` with
//! (duplicates, with bit 63 set if the payload checksum did not match;
//! reordered), prints `stress-consumer: N messages in order, checksum ok` or
//! `stress-consumer: FAIL ...`, and exits 0 or 1 when the producer hangs up.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec;

use stress::{OP_END, OP_MSG, OP_VERDICT, STREAM_SERVICE, SeqCheck, VERDICT_CHECKSUM_BAD, fold};
use userland::{Batching, Channel, ChannelError, Completion, Descriptor, OP_HANGUP, println, sys};

userland::entry!(async run);

/// The most messages taken out of the ring at once.
const CHUNK: usize = 256;

async fn run() -> i32 {
    let mut providers = match Channel::clients_of(STREAM_SERVICE) {
        Ok(p) => p,
        Err(e) => {
            println!("stress-consumer: FAIL cannot attach {STREAM_SERVICE}: {e}");
            return 1;
        }
    };
    let Some(mut ring) = providers.pop().filter(|_| providers.is_empty()) else {
        println!("stress-consumer: FAIL expected exactly one client of {STREAM_SERVICE}");
        return 1;
    };
    match consume(&mut ring).await {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            println!("stress-consumer: FAIL ring error: {e}");
            1
        }
    }
}

/// Consume until the producer hangs up; `Ok(true)` if the stream was whole.
async fn consume(ring: &mut userland::Provider) -> Result<bool, ChannelError> {
    let batching = sys::batching();
    let mut buf = vec![Descriptor::default(); CHUNK];
    let mut check = SeqCheck::new();
    let mut checksum = 0u64;
    let mut checksum_ok = false;
    let mut ended = false;
    loop {
        let mut n = match batching {
            Batching::On => {
                let n = ring.receiver().consumer().pop_slice(&mut buf)?;
                // Ring the producer if it waits for the space just freed.
                ring.receiver().flush();
                n
            }
            Batching::Off => match ring.try_recv()? {
                Some(d) => {
                    buf[0] = d;
                    1
                }
                None => 0,
            },
        };
        if n == 0 {
            buf[0] = ring.recv().await?;
            n = 1;
        }
        for d in &buf[..n] {
            match d.opcode() {
                OP_MSG => {
                    check.see(d.cookie());
                    checksum ^= fold(d);
                }
                OP_END => {
                    check.finish(d.arg(0));
                    checksum_ok = checksum == d.arg(1);
                    ended = true;
                    let c = Completion::ok(d.cookie(), check.received()).with_aux(check.lost());
                    ring.reply(c).await?;
                    ring.flush();
                }
                OP_VERDICT => {
                    let bad = if checksum_ok { 0 } else { VERDICT_CHECKSUM_BAD };
                    let c = Completion::ok(d.cookie(), check.duplicates() | bad)
                        .with_aux(check.reordered());
                    ring.reply(c).await?;
                    ring.flush();
                }
                OP_HANGUP => return Ok(report(&check, ended, checksum_ok)),
                other => {
                    println!(
                        "stress-consumer: FAIL unknown opcode {other} after {} messages",
                        check.received()
                    );
                    return Ok(false);
                }
            }
        }
    }
}

fn report(check: &SeqCheck, ended: bool, checksum_ok: bool) -> bool {
    if !ended {
        println!(
            "stress-consumer: FAIL producer hung up without ending the stream after {} messages",
            check.received()
        );
        return false;
    }
    if check.ok() && checksum_ok {
        println!(
            "stress-consumer: {} messages in order, checksum ok",
            check.received()
        );
        return true;
    }
    let (expected, got) = check.first_error().unwrap_or((0, 0));
    println!(
        "stress-consumer: FAIL lost={} duplicates={} reordered={} checksum={} (first: expected {expected}, got {got})",
        check.lost(),
        check.duplicates(),
        check.reordered(),
        if checksum_ok { "ok" } else { "bad" }
    );
    false
}
