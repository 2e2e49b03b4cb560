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
use userland::{
    Batching, Channel, Completion, Descriptor, Failure, OP_HANGUP, OrFail, println, sys,
};

userland::entry!(async run);

/// The most messages taken out of the ring at once.
const CHUNK: usize = 256;

async fn run() -> Result<(), Failure> {
    let mut providers = Channel::clients_of(STREAM_SERVICE)
        .or_fail(format_args!("cannot attach {STREAM_SERVICE}"))?;
    let mut ring = providers
        .pop()
        .filter(|_| providers.is_empty())
        .or_fail(format_args!(
            "expected exactly one client of {STREAM_SERVICE}"
        ))?;
    consume(&mut ring).await
}

const RING_ERROR: &str = "ring error";

/// Consume until the producer hangs up; `Ok` if the stream was whole.
async fn consume(ring: &mut userland::Provider) -> Result<(), Failure> {
    let batching = sys::batching();
    let mut buf = vec![Descriptor::default(); CHUNK];
    let mut check = SeqCheck::new();
    let mut checksum = 0u64;
    let mut checksum_ok = false;
    let mut ended = false;
    loop {
        let mut n = match batching {
            Batching::On => {
                let n = ring
                    .receiver()
                    .consumer()
                    .pop_slice(&mut buf)
                    .or_fail(RING_ERROR)?;
                // Ring the producer if it waits for the space just freed.
                ring.receiver().flush();
                n
            }
            Batching::Off => match ring.try_recv().or_fail(RING_ERROR)? {
                Some(d) => {
                    buf[0] = d;
                    1
                }
                None => 0,
            },
        };
        if n == 0 {
            buf[0] = ring.recv().await.or_fail(RING_ERROR)?;
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
                    ring.reply(c).await.or_fail(RING_ERROR)?;
                    ring.flush();
                }
                OP_VERDICT => {
                    let bad = if checksum_ok { 0 } else { VERDICT_CHECKSUM_BAD };
                    let c = Completion::ok(d.cookie(), check.duplicates() | bad)
                        .with_aux(check.reordered());
                    ring.reply(c).await.or_fail(RING_ERROR)?;
                    ring.flush();
                }
                OP_HANGUP => return report(&check, ended, checksum_ok),
                other => {
                    return Err(Failure::new(format_args!(
                        "unknown opcode {other} after {} messages",
                        check.received()
                    )));
                }
            }
        }
    }
}

fn report(check: &SeqCheck, ended: bool, checksum_ok: bool) -> Result<(), Failure> {
    if !ended {
        return Err(Failure::new(format_args!(
            "producer hung up without ending the stream after {} messages",
            check.received()
        )));
    }
    if check.ok() && checksum_ok {
        println!(
            "stress-consumer: {} messages in order, checksum ok",
            check.received()
        );
        return Ok(());
    }
    let (expected, got) = check.first_error().unwrap_or((0, 0));
    Err(Failure::new(format_args!(
        "lost={} duplicates={} reordered={} checksum={} (first: expected {expected}, got {got})",
        check.lost(),
        check.duplicates(),
        check.reordered(),
        if checksum_ok { "ok" } else { "bad" }
    )))
}
