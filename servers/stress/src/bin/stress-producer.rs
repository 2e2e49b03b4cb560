//! stress-producer: a client of `stress`; moves N messages to
//! `stress-consumer` in batches of B, then asks for the consumer's verdict
//! and prints one `stress-result kind=stream ...` line.
//!
//! Arguments (kernel command line): `stress-producer.messages=N`,
//! `stress-producer.batch=B` (capped at the ring's slots),
//! `stress-producer.payload=BYTES` (0..=48: what a 64-byte descriptor
//! carries besides its opcode, flags and sequence number).
//!
//! With batching on, each batch is staged with one `stage_slice` and
//! published with one store (in two pieces only when the ring is nearly
//! full), and the consumer is rung only when it sleeps. With batching off,
//! every message is published and followed by its own doorbell.
//!
//! Exits 0 when the consumer saw every message once and in order, 1
//! otherwise (the line then says what went wrong, and so does the consumer).
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec;
use core::future::poll_fn;

use stress::{
    DEFAULT_BATCH, DEFAULT_MESSAGES, DEFAULT_PAYLOAD, MARKER_PAUSE_NS, MAX_BATCH, MAX_PAYLOAD,
    OP_END, OP_VERDICT, ResultLine, STREAM_SERVICE, VERDICT_CHECKSUM_BAD, arg_u64, batching_word,
    counters, fold, message, pause, tsc,
};
use userland::channel::ChannelBell;
use userland::pvchannel::{RingError, Sender};
use userland::{Batching, Channel, Descriptor, println, sys};

userland::entry!(async run);

/// Hand `items` to the ring: one batch.
async fn send_batch(
    tx: &mut Sender<Descriptor, ChannelBell>,
    items: &[Descriptor],
    batching: Batching,
) -> Result<(), RingError> {
    match batching {
        Batching::Off => {
            for &d in items {
                tx.send(d).await?;
            }
            Ok(())
        }
        Batching::On => {
            let mut sent = 0;
            loop {
                sent += tx.producer().stage_slice(&items[sent..])?;
                // One publication, and a doorbell only if the consumer sleeps.
                tx.flush();
                if sent == items.len() {
                    return Ok(());
                }
                poll_fn(|cx| tx.poll_ready(cx)).await?;
            }
        }
    }
}

async fn run() -> i32 {
    let (messages, batch, payload) = match (
        arg_u64("messages", DEFAULT_MESSAGES),
        arg_u64("batch", DEFAULT_BATCH as u64),
        arg_u64("payload", DEFAULT_PAYLOAD as u64),
    ) {
        (Ok(m), Ok(b), Ok(p)) => (m, b, p),
        (Err(key), _, _) | (_, Err(key), _) | (_, _, Err(key)) => {
            println!("stress-producer: FAIL stress-producer.{key}= is not a number");
            return 1;
        }
    };
    if payload as usize > MAX_PAYLOAD {
        println!(
            "stress-producer: FAIL payload {payload} bytes: a 64-byte descriptor carries at most {MAX_PAYLOAD}"
        );
        return 1;
    }
    let payload = payload as usize;
    let mut client = match Channel::open(STREAM_SERVICE) {
        Ok(c) => c,
        Err(e) => {
            println!("stress-producer: FAIL cannot open {STREAM_SERVICE}: {e}");
            return 1;
        }
    };
    let capacity = client.sender().producer().capacity() as usize;
    let batch = (batch.max(1) as usize).min(MAX_BATCH).min(capacity);
    let batching = sys::batching();
    let tsc_hz = sys::boot_info_cached().map(|b| b.tsc_hz).unwrap_or(0);
    println!(
        "stress-producer: {messages} messages in batches of {batch}, payload {payload} bytes, ring of {capacity} slots, batching {}",
        batching_word()
    );
    let mut buf = vec![Descriptor::default(); batch];
    let mut checksum = 0u64;

    println!("stress-ready");
    pause(MARKER_PAUSE_NS);
    let c0 = counters();
    let t0 = tsc::now();
    let mut seq = 0u64;
    while seq < messages {
        let n = (messages - seq).min(batch as u64) as usize;
        for (i, slot) in buf[..n].iter_mut().enumerate() {
            let d = message(seq + i as u64, payload);
            checksum ^= fold(&d);
            *slot = d;
        }
        if let Err(e) = send_batch(client.sender(), &buf[..n], batching).await {
            println!("stress-producer: FAIL sending message {seq}: {e}");
            return 1;
        }
        seq += n as u64;
    }
    let end = client
        .call(Descriptor::new(OP_END, 0).with_args([messages, checksum]))
        .await;
    let verdict = client.call(Descriptor::new(OP_VERDICT, 0)).await;
    let t1 = tsc::now();
    let c1 = counters();
    println!("stress-done");
    pause(MARKER_PAUSE_NS);

    let (end, verdict) = match (end, verdict) {
        (Ok(e), Ok(v)) => (e, v),
        (Err(e), _) | (_, Err(e)) => {
            println!("stress-producer: FAIL no verdict from the consumer: {e}");
            return 1;
        }
    };
    let (received, lost) = (end.value(), end.aux());
    let duplicates = verdict.value() & !VERDICT_CHECKSUM_BAD;
    let reordered = verdict.aux();
    let checksum_ok = verdict.value() & VERDICT_CHECKSUM_BAD == 0;
    let ok = lost == 0 && duplicates == 0 && reordered == 0 && checksum_ok && received == messages;
    let cycles = t1.wrapping_sub(t0);
    let mut line = ResultLine::new();
    line.field("kind", "stream")
        .field("batching", batching_word())
        .field("batch", batch)
        .field("payload", payload)
        .field("ring", capacity)
        .field("messages", messages)
        .elapsed(cycles, tsc_hz)
        .counters(&c0, &c1)
        .field("received", received)
        .field("lost", lost)
        .field("duplicates", duplicates)
        .field("reordered", reordered)
        .field("checksum", if checksum_ok { "ok" } else { "bad" })
        .field("ok", u8::from(ok));
    line.emit();
    if let Err(e) = client.close().await {
        println!("stress-producer: FAIL hanging up: {e}");
        return 1;
    }
    i32::from(!ok)
}
