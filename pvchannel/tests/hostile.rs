//! A hostile peer scribbles random values into the shared indices, event
//! indices, slots and header while our end runs: our end must report clean
//! errors (or garbage data), never panic, never touch memory outside the
//! region.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;

use pvchannel::layout::{
    CONSUMER_EVENT_OFFSET, CONSUMER_INDEX_OFFSET, MAGIC, PRODUCER_EVENT_OFFSET,
    PRODUCER_INDEX_OFFSET, SLOTS_OFFSET, VERSION,
};
use pvchannel::owned::HeapRegion;
use pvchannel::{Completion, Descriptor, PeerIndex, RingError, attach, init, ring_bytes};
use xorshift::XorShift;

fn word(region: &HeapRegion, offset: usize) -> &AtomicU32 {
    // SAFETY: a 4-aligned offset inside the region; only atomics access it.
    unsafe { &*(region.as_ptr().add(offset) as *const AtomicU32) }
}

/// Runs `scribble` on another thread until `ours` returns.
fn with_scribbler<R>(
    region: &Arc<HeapRegion>,
    seed: u64,
    scribble: fn(&HeapRegion, &mut XorShift),
    ours: impl FnOnce() -> R,
) -> R {
    let stop = Arc::new(AtomicBool::new(false));
    let (r2, s2) = (region.clone(), stop.clone());
    let t = thread::spawn(move || {
        let mut rng = XorShift::new(seed);
        while !s2.load(Ordering::Relaxed) {
            scribble(&r2, &mut rng);
            thread::yield_now();
        }
    });
    let out = ours();
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    out
}

#[test]
fn producer_survives_a_hostile_consumer() {
    for seed in 1..=8u64 {
        let region = Arc::new(HeapRegion::new(ring_bytes::<Descriptor>(64).unwrap()));
        // SAFETY: the region outlives the ends (the Arc is held to the end of
        // the iteration); the scribbler only uses atomics on index words.
        let mem = unsafe { init::<Descriptor>(region.as_ptr(), region.len(), 64) }.unwrap();
        let mut p = mem.into_producer().unwrap();
        let result = with_scribbler(
            &region,
            seed,
            |r, rng| {
                let v = rng.next_u64();
                let off = [CONSUMER_INDEX_OFFSET, CONSUMER_EVENT_OFFSET][(v & 1) as usize];
                // Small values are plausible, large ones are nonsense.
                let value = if v & 2 == 0 {
                    (v >> 32) as u32 & 127
                } else {
                    (v >> 32) as u32
                };
                word(r, off).store(value, Ordering::Release);
            },
            || {
                for i in 0..2_000_000u64 {
                    match p.push(Descriptor::new(1, i)) {
                        Ok(()) | Err(RingError::Full) => {}
                        Err(e) => return Err(e),
                    }
                    let _ = p.needs_doorbell();
                }
                Ok(())
            },
        );
        match result {
            Err(RingError::Corrupt {
                index: PeerIndex::Consumer,
                seen,
                low,
                high,
            }) => {
                assert!(seen.wrapping_sub(low) > high.wrapping_sub(low));
                // Poisoned: the next write that needs the peer fails too.
                let mut failed = false;
                for _ in 0..65 {
                    if p.push(Descriptor::default()).is_err() {
                        failed = true;
                        break;
                    }
                }
                assert!(failed);
            }
            Ok(()) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
}

#[test]
fn consumer_survives_a_hostile_producer() {
    let mut corrupt_seen = 0;
    for seed in 1..=8u64 {
        let region = Arc::new(HeapRegion::new(ring_bytes::<Completion>(64).unwrap()));
        // SAFETY: as above.
        let mem = unsafe { init::<Completion>(region.as_ptr(), region.len(), 64) }.unwrap();
        let mut c = mem.into_consumer().unwrap();
        let result = with_scribbler(
            &region,
            seed,
            |r, rng| {
                let v = rng.next_u64();
                match v % 4 {
                    0 | 1 => {
                        let value = if v & 16 == 0 {
                            (v >> 32) as u32 & 255
                        } else {
                            (v >> 32) as u32
                        };
                        word(r, PRODUCER_INDEX_OFFSET).store(value, Ordering::Release);
                    }
                    2 => word(r, PRODUCER_EVENT_OFFSET).store((v >> 32) as u32, Ordering::Relaxed),
                    _ => {
                        // Garbage in a slot word.
                        let w = (v >> 8) as usize % (64 * 32 / 4);
                        word(r, SLOTS_OFFSET + 4 * w).store((v >> 32) as u32, Ordering::Relaxed);
                    }
                }
            },
            || {
                let mut out = [Completion::default(); 16];
                for i in 0..1_000_000u32 {
                    let got = if i % 2 == 0 {
                        c.pop().map(|x| {
                            out[0] = x;
                            1
                        })
                    } else {
                        c.pop_slice(&mut out)
                    };
                    match got {
                        // Decoding garbage never panics.
                        Ok(n) => out[..n].iter().for_each(|x| {
                            let _ = x.result();
                        }),
                        Err(RingError::Empty) => {}
                        Err(e) => return Err(e),
                    }
                    if c.needs_doorbell() {
                        // would ring
                    }
                }
                Ok(())
            },
        );
        match result {
            Err(RingError::Corrupt {
                index: PeerIndex::Producer,
                ..
            }) => {
                corrupt_seen += 1;
                assert!(c.pop().unwrap_err().is_corrupt());
            }
            Ok(()) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(corrupt_seen > 0, "random indices should trip the check");
}

#[test]
fn attach_survives_a_scribbled_header() {
    let region = Arc::new(HeapRegion::new(ring_bytes::<u64>(256).unwrap()));
    // SAFETY: as above.
    drop(unsafe { init::<u64>(region.as_ptr(), region.len(), 256) }.unwrap());
    let (ok, bad) = with_scribbler(
        &region,
        42,
        |r, rng| {
            let v = rng.next_u64();
            let field = (v % 6) as usize;
            // Sometimes the right value, sometimes garbage.
            let good = [MAGIC, VERSION, 1, 256, 8, SLOTS_OFFSET as u32][field];
            let value = if v & 64 == 0 { good } else { (v >> 32) as u32 };
            word(r, field * 4).store(value, Ordering::Relaxed);
        },
        || {
            let (mut ok, mut bad) = (0, 0);
            for _ in 0..200_000 {
                // SAFETY: region valid for its length while the Arc lives.
                match unsafe { attach::<u64>(region.as_ptr(), region.len()) } {
                    Ok(mem) => {
                        assert!(mem.capacity().is_power_of_two());
                        assert!(mem.bytes() <= region.len());
                        ok += 1;
                    }
                    Err(_) => bad += 1,
                }
            }
            (ok, bad)
        },
    );
    assert!(ok + bad == 200_000);
}
