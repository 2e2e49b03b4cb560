//! Loom model checks of the index and notification protocol: every item
//! arrives once and in order, and no wakeup is lost (a lost wakeup leaves
//! both threads blocked on their doorbells, which loom reports as a
//! deadlock).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p pvchannel --release --lib loom`

use alloc::vec::Vec;

use loom::sync::{Arc, Notify};

use crate::owned;
use crate::ring::{Consumer, Producer, RingError};

/// The two doorbells: the consumer's (items published) and the producer's
/// (space freed). Loom's `Notify` keeps one permit, like a pending
/// notification bit.
struct Bells {
    consumer: Notify,
    producer: Notify,
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

fn produce_single(mut p: Producer<u64>, bells: &Bells, items: u64) {
    for v in 0..items {
        loop {
            match p.push(v) {
                Ok(()) => break,
                Err(RingError::Full) => {
                    if p.prepare_wait().unwrap() {
                        bells.producer.wait();
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
        if p.needs_doorbell() {
            bells.consumer.notify();
        }
    }
}

fn consume_single(mut c: Consumer<u64>, bells: &Bells, items: u64) -> Vec<u64> {
    let mut got = Vec::new();
    while (got.len() as u64) < items {
        match c.pop() {
            Ok(v) => {
                got.push(v);
                if c.needs_doorbell() {
                    bells.producer.notify();
                }
            }
            Err(RingError::Empty) => {
                if c.prepare_wait().unwrap() {
                    bells.consumer.wait();
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    got
}

#[test]
fn loom_single_items_no_lost_wakeup() {
    model(|| {
        let (p, c) = owned::ring::<u64>(2).unwrap();
        let bells = Arc::new(Bells {
            consumer: Notify::new(),
            producer: Notify::new(),
        });
        let b2 = bells.clone();
        let t = loom::thread::spawn(move || produce_single(p, &b2, 3));
        let got = consume_single(c, &bells, 3);
        t.join().unwrap();
        assert_eq!(got, [0, 1, 2]);
    });
}

#[test]
fn loom_batches_no_lost_wakeup() {
    model(|| {
        let (mut p, mut c) = owned::ring::<u64>(2).unwrap();
        let bells = Arc::new(Bells {
            consumer: Notify::new(),
            producer: Notify::new(),
        });
        let b2 = bells.clone();
        let t = loom::thread::spawn(move || {
            let items = [10u64, 11, 12];
            let mut sent = 0;
            while sent < items.len() {
                let n = p.stage_slice(&items[sent..]).unwrap();
                sent += n;
                if p.flush() {
                    b2.consumer.notify();
                }
                if n == 0 && p.prepare_wait().unwrap() {
                    b2.producer.wait();
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            let mut out = [0u64; 2];
            let n = c.pop_slice(&mut out).unwrap();
            got.extend_from_slice(&out[..n]);
            if c.needs_doorbell() {
                bells.producer.notify();
            }
            if n == 0 && c.prepare_wait().unwrap() {
                bells.consumer.wait();
            }
        }
        t.join().unwrap();
        assert_eq!(got, [10, 11, 12]);
    });
}

#[test]
fn loom_deferred_release_no_lost_wakeup() {
    // The consumer takes without releasing and releases once per batch or
    // before it sleeps (what `Receiver` does with batching on).
    model(|| {
        let (p, mut c) = owned::ring::<u64>(2).unwrap();
        let bells = Arc::new(Bells {
            consumer: Notify::new(),
            producer: Notify::new(),
        });
        let b2 = bells.clone();
        let t = loom::thread::spawn(move || produce_single(p, &b2, 4));
        let mut got = Vec::new();
        while got.len() < 4 {
            match c.take() {
                Ok(v) => got.push(v),
                Err(RingError::Empty) => {
                    if c.flush() {
                        bells.producer.notify();
                    }
                    if c.prepare_wait().unwrap() {
                        bells.consumer.wait();
                    }
                }
                Err(e) => panic!("{e}"),
            }
            if c.unreleased() == 2 && c.flush() {
                bells.producer.notify();
            }
        }
        t.join().unwrap();
        assert_eq!(got, [0, 1, 2, 3]);
    });
}
