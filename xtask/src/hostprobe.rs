//! How far apart the host's CPUs are right now, for `cargo xtask stress
//! --smp N`: the time one cache line takes to go from one host CPU to
//! another and back, measured by two pinned threads that take turns
//! bumping a counter alone on its line (the probe of pvchannel's `rounds`
//! bench).
//!
//! The shared development VMs switch, minutes at a time, between a state
//! where that takes 60 to 80 ns and one where it takes 300 to 800 ns, and a
//! stream between two vCPUs, which the host runs as two threads on those
//! CPUs, moves about four times faster in the first. A stream figure means
//! little without the state it was taken in, so each run is bracketed by a
//! probe and the table says which state both probes saw.

use std::hint::spin_loop;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Round trips per probe: about 2 ms near, 10 ms far.
const TRIPS: u64 = 20_000;
/// Below this a round trip is "near" (the threshold of pvchannel's
/// `rounds -- --near-ns`).
pub const NEAR_NS: f64 = 200.0;
/// At or above this the probe's threads were not both running: something
/// else had one of the CPUs (`rounds -- --busy-ns`).
pub const BUSY_NS: f64 = 2_000.0;

/// Added to the probe's start count by an end that could not be pinned.
const UNPINNED: u64 = 16;

/// A counter alone in its 128-byte block, so that nothing else shares its
/// line or the line an adjacent-line prefetcher fetches with it.
#[repr(align(128))]
struct Line(AtomicU64);

/// Nanoseconds for one round trip of a cache line between the first two
/// CPUs this process may run on; `None` with fewer than two, or when a
/// thread cannot be pinned. Both ends run on threads of their own, which
/// end with the probe: a pinned caller would pass its one CPU on to every
/// QEMU it spawns afterwards.
pub fn line_round_trip_ns() -> Option<f64> {
    let cpus = core_affinity::get_core_ids()?;
    let (&server, &answerer) = (cpus.first()?, cpus.get(1)?);
    let ball = Arc::new(Line(AtomicU64::new(0)));
    let ready = Arc::new(AtomicU64::new(0));
    let end = |cpu, serves: bool| {
        let (ball, ready) = (ball.clone(), ready.clone());
        std::thread::spawn(move || {
            let pinned = core_affinity::set_for_current(cpu);
            // Each end counts itself in (the low bits) and says whether it
            // could not be pinned (`UNPINNED`), then waits for the other:
            // both run the trips, or neither does.
            ready.fetch_add(1 + if pinned { 0 } else { UNPINNED }, Ordering::AcqRel);
            let both = loop {
                let n = ready.load(Ordering::Acquire);
                if n % UNPINNED == 2 {
                    break n < UNPINNED;
                }
                spin_loop();
            };
            if !both {
                return None;
            }
            let start = Instant::now();
            for i in 0..TRIPS {
                let (mine, theirs) = if serves {
                    (2 * i + 1, 2 * i + 2)
                } else {
                    (2 * i + 2, 2 * i + 1)
                };
                if serves {
                    ball.0.store(mine, Ordering::Release);
                }
                while ball.0.load(Ordering::Acquire) != theirs {
                    spin_loop();
                }
                if !serves {
                    ball.0.store(mine, Ordering::Release);
                }
            }
            Some(start.elapsed())
        })
    };
    let (s, a) = (end(server, true), end(answerer, false));
    let elapsed = s.join().ok()??;
    a.join().ok()??;
    Some(elapsed.as_nanos() as f64 / TRIPS as f64)
}

/// "near", "far" or "busy" for one probe.
pub fn state(ns: f64) -> &'static str {
    if ns < NEAR_NS {
        "near"
    } else if ns < BUSY_NS {
        "far"
    } else {
        "busy"
    }
}

/// The state of a run bracketed by two probes: the state both saw, or
/// "mixed".
pub fn run_state(before: f64, after: f64) -> &'static str {
    let (a, b) = (state(before), state(after));
    if a == b { a } else { "mixed" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_the_thresholds() {
        assert_eq!(state(64.0), "near");
        assert_eq!(state(NEAR_NS), "far");
        assert_eq!(state(450.0), "far");
        assert_eq!(state(BUSY_NS), "busy");
        assert_eq!(run_state(70.0, 65.0), "near");
        assert_eq!(run_state(70.0, 400.0), "mixed");
        assert_eq!(run_state(400.0, 5000.0), "mixed");
    }

    #[test]
    fn a_probe_measures_something_where_there_are_two_cpus() {
        let cpus = core_affinity::get_core_ids().unwrap_or_default();
        match line_round_trip_ns() {
            Some(ns) => {
                assert!(cpus.len() >= 2);
                assert!(ns > 0.0 && ns.is_finite(), "{ns}");
            }
            None => assert!(cpus.len() < 2),
        }
    }
}
