//! ring-producer: a client of `ring-test`; sends 1,000,000 messages
//! (sequence numbers in `args[0]`, no completion wanted), then an end
//! marker whose completion says how many arrived in order.
//!
//! Prints `ring-producer: sent 1000000 messages, rang N doorbells` and
//! `ring-producer: consumer confirmed 1000000` and exits 0; on an error or
//! a short count prints `ring-producer: FAIL ...` and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use testing::ring::{MESSAGES, OP_END, OP_SEQ, SERVICE};
use userland::{Channel, Descriptor, Failure, OrFail, println, sys};

userland::entry!(async run);

fn tsc() -> u64 {
    sys::counters().map(|c| c.tsc).unwrap_or(0)
}

async fn run() -> Result<(), Failure> {
    let mut ring = Channel::open(SERVICE).or_fail(format_args!("cannot open {SERVICE}"))?;
    println!(
        "ring-producer: sending {MESSAGES} messages (batching {:?})",
        sys::batching()
    );
    let start = tsc();
    for seq in 0..MESSAGES {
        let d = Descriptor::new(OP_SEQ, seq)
            .with_args([seq])
            .with_flags(Descriptor::FLAG_NO_COMPLETION);
        ring.send(d)
            .await
            .or_fail(format_args!("sending message {seq}"))?;
    }
    let confirmed = ring
        .call(Descriptor::new(OP_END, 0))
        .await
        .or_fail("waiting for the end")?
        .value();
    let cycles = tsc().saturating_sub(start);
    println!(
        "ring-producer: sent {MESSAGES} messages, rang {} doorbells",
        ring.doorbells()
    );
    let hz = sys::boot_info_cached().map(|b| b.tsc_hz).unwrap_or(0);
    if hz != 0 && cycles != 0 {
        let us = u128::from(cycles) * 1_000_000 / u128::from(hz);
        let rate = u128::from(MESSAGES) * 1_000_000 / us.max(1);
        println!("ring-producer: {MESSAGES} messages in {us} us ({rate} messages/s)");
    } else {
        println!("ring-producer: {MESSAGES} messages in {cycles} TSC cycles");
    }
    if confirmed != MESSAGES {
        return Err(Failure::new(format_args!(
            "consumer confirmed {confirmed} of {MESSAGES}"
        )));
    }
    println!("ring-producer: consumer confirmed {confirmed}");
    Ok(())
}
