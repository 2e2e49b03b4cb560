//! Cross-thread throughput in interleaved rounds: pvchannel against rtrb,
//! ringbuf and crossbeam-queue's `ArrayQueue`. Each round runs every
//! (workload, ring) pair once, moving `--items` items through a ring of
//! `--slots` slots with the producer pinned to CPU 0 and the consumer to
//! CPU 1; the rings' order rotates from round to round, so that a burst of
//! load from elsewhere hits every ring alike.
//!
//! The development VMs this was written on switch, minutes at a time,
//! between a state where a cache line goes from one CPU to the other and
//! back in 60 to 80 ns and one where that takes 300 to 800 ns (presumably
//! the host moving a vCPU to another socket); every ring's rate differs
//! about fourfold between them, so a median over rounds that mix them lands
//! wherever the mix puts it. Each round therefore starts with a *probe*, a
//! ping-pong of one cache line between the two pinned threads, and probes
//! again after every run in it (a round of slow rings lasts long enough
//! for the state to change and change back unseen between two probes at
//! its ends). The rounds are reported all together and then per state
//! ("near", "far"): a round is near when all its probes take less than
//! `--near-ns` (200 ns by default), far when all take more but less than
//! `--busy-ns` (2,000 ns by default; a probe that slow means a vCPU lost
//! its CPU to something else meanwhile), and counts in neither otherwise.
//!
//! Each table gives every ring's median rate with the minimum and maximum,
//! pvchannel's median over the best peer's median, and the median over the
//! rounds of pvchannel's rate over that same peer's rate in the same round
//! (a paired ratio; the best of several noisy peers in each round would be
//! biased upwards). `--candidate` adds a design candidate
//! ([`common::stamped`]) as a column of its own, never counted as a peer.
//!
//! ```text
//! cargo bench -p pvchannel --bench rounds -- [--items 20000000] [--slots 1024]
//!     [--rounds 9] [--only u64_single,desc64_single,u64_batch64,desc64_batch64]
//!     [--rings pvchannel,rtrb,ringbuf,arrayqueue] [--candidate] [--near-ns 200]
//!     [--busy-ns 2000] [--quiet]
//! ```
//!
//! Results in docs/BENCHMARKS.md ("pvchannel rings").

mod common;

use std::hint::{black_box, spin_loop};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{CANDIDATE, Run, WORKLOADS, cpus, two_threads};

struct Options {
    items: u64,
    slots: usize,
    rounds: usize,
    only: Option<Vec<String>>,
    rings: Option<Vec<String>>,
    candidate: bool,
    near_ns: f64,
    busy_ns: f64,
    quiet: bool,
}

fn options() -> Options {
    let mut o = Options {
        items: 20_000_000,
        slots: 1024,
        rounds: 9,
        only: None,
        rings: None,
        candidate: false,
        near_ns: 200.0,
        busy_ns: 2000.0,
        quiet: false,
    };
    let list = |s: String| Some(s.split(',').map(str::to_owned).collect());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--items" => o.items = value().parse().expect("--items N"),
            "--slots" => o.slots = value().parse().expect("--slots N"),
            "--rounds" => o.rounds = value().parse().expect("--rounds N"),
            "--only" => o.only = list(value()),
            "--rings" => o.rings = list(value()),
            "--candidate" => o.candidate = true,
            "--near-ns" => o.near_ns = value().parse().expect("--near-ns NANOSECONDS"),
            "--busy-ns" => o.busy_ns = value().parse().expect("--busy-ns NANOSECONDS"),
            "--quiet" => o.quiet = true,
            // `cargo bench` passes `--bench`; ignore it and anything else.
            _ => {}
        }
    }
    o
}

fn chosen(filter: &Option<Vec<String>>, name: &str) -> bool {
    filter.as_ref().is_none_or(|f| f.iter().any(|x| x == name))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn mps(items: u64, t: Duration) -> f64 {
    items as f64 / t.as_secs_f64() / 1e6
}

/// Nanoseconds for one cache line to go from CPU 0 to CPU 1 and back:
/// the two pinned threads take turns bumping a counter alone on its line.
fn probe() -> f64 {
    #[repr(align(128))]
    struct Line(AtomicU64);
    const TRIPS: u64 = 20_000;
    let ball = Arc::new(Line(AtomicU64::new(0)));
    let t = two_threads(
        TRIPS,
        (ball.clone(), ball),
        |b, n| {
            for i in 0..n {
                b.0.store(2 * i + 1, Ordering::Release);
                while b.0.load(Ordering::Acquire) != 2 * i + 2 {
                    spin_loop();
                }
            }
        },
        |b, n| {
            for i in 0..n {
                while b.0.load(Ordering::Acquire) != 2 * i + 1 {
                    spin_loop();
                }
                b.0.store(2 * i + 2, Ordering::Release);
            }
        },
    );
    black_box(t.as_nanos() as f64 / TRIPS as f64)
}

/// One workload's rates: `rates[ring][round]`, M items/s.
struct Workload<'a> {
    name: &'a str,
    rates: Vec<Vec<f64>>,
}

/// Print one table over the rounds in `rounds`.
fn table(rings: &[&str], workloads: &[Workload<'_>], rounds: &[usize]) {
    println!(
        "| workload | {} | pvchannel / best peer | paired ratio |",
        rings.join(" | ")
    );
    println!("| --- |{} ---: | ---: |", " ---: |".repeat(rings.len()));
    // Peers: every ring but pvchannel (first, when chosen) and the candidate.
    let peers: Vec<usize> = (1..rings.len())
        .filter(|&i| rings[i] != CANDIDATE.0)
        .collect();
    for w in workloads {
        let picked: Vec<Vec<f64>> = w
            .rates
            .iter()
            .map(|r| rounds.iter().map(|&k| r[k]).collect())
            .collect();
        let medians: Vec<f64> = picked.iter().map(|v| median(v)).collect();
        let cells: Vec<String> = picked
            .iter()
            .zip(&medians)
            .map(|(v, m)| {
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(0.0, f64::max);
                format!("{m:.1} ({lo:.1} to {hi:.1})")
            })
            .collect();
        let best = peers
            .iter()
            .copied()
            .max_by(|&a, &b| medians[a].total_cmp(&medians[b]));
        let (ratio, paired) = match best {
            Some(b) if rings.first() == Some(&"pvchannel") => {
                let per: Vec<f64> = (0..rounds.len())
                    .map(|k| picked[0][k] / picked[b][k])
                    .collect();
                (
                    format!("{:.2} ({})", medians[0] / medians[b], rings[b]),
                    format!("{:.2}", median(&per)),
                )
            }
            _ => ("-".into(), "-".into()),
        };
        println!(
            "| {} | {} | {ratio} | {paired} |",
            w.name,
            cells.join(" | ")
        );
    }
    println!();
}

fn main() {
    let o = options();
    assert!(cpus().len() >= 2, "the benchmark needs two CPUs");
    let chosen_workloads: Vec<(&str, Vec<(&str, Run)>)> = WORKLOADS
        .iter()
        .zip(CANDIDATE.1)
        .filter(|((w, _), _)| chosen(&o.only, w))
        .map(|((w, rings), candidate)| {
            let mut rings: Vec<_> = rings
                .iter()
                .copied()
                .filter(|(r, _)| chosen(&o.rings, r))
                .collect();
            if o.candidate {
                rings.push((CANDIDATE.0, candidate));
            }
            (*w, rings)
        })
        .collect();
    println!(
        "{} items per run, {} slots, {} rounds, producer on CPU 0, consumer on CPU 1",
        o.items, o.slots, o.rounds
    );
    let mut workloads: Vec<Workload<'_>> = chosen_workloads
        .iter()
        .map(|(w, rings)| Workload {
            name: w,
            rates: vec![Vec::new(); rings.len()],
        })
        .collect();
    // Every round's probes: one before it and one after each run.
    let mut probes: Vec<Vec<f64>> = Vec::new();
    for round in 0..o.rounds {
        let mut seen = vec![probe()];
        let mut line = format!("round {:>2}: probe {:.0} ns", round + 1, seen[0]);
        for ((w, rings), results) in chosen_workloads.iter().zip(&mut workloads) {
            for k in 0..rings.len() {
                let ri = (k + round) % rings.len();
                let (_, run) = rings[ri];
                results.rates[ri].push(mps(o.items, run(o.items, o.slots)));
                seen.push(probe());
            }
            let cells: Vec<_> = results
                .rates
                .iter()
                .map(|r| format!("{:.1}", r[round]))
                .collect();
            line += &format!("  {w} {}", cells.join("/"));
        }
        if !o.quiet {
            let lo = seen.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = seen.iter().copied().fold(0.0, f64::max);
            println!(
                "{line}  probes {lo:.0} to {hi:.0} ns, last probe {:.0} ns",
                seen[seen.len() - 1]
            );
        }
        probes.push(seen);
    }
    println!();
    let rings: Vec<&str> = chosen_workloads
        .first()
        .map(|(_, rings)| rings.iter().map(|(r, _)| *r).collect())
        .unwrap_or_default();
    let all: Vec<usize> = (0..o.rounds).collect();
    println!("All {} rounds:", o.rounds);
    println!();
    table(&rings, &workloads, &all);
    // Which state a probe saw: near, far, or neither (a busy machine).
    let state_of = |ns: f64| {
        if ns < o.near_ns {
            Some("near")
        } else if ns < o.busy_ns {
            Some("far")
        } else {
            None
        }
    };
    let state_of_round = |k: usize| {
        let first = state_of(probes[k][0]);
        first.filter(|_| probes[k].iter().all(|&ns| state_of(ns) == first))
    };
    for state in ["near", "far"] {
        let rounds: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&k| state_of_round(k) == Some(state))
            .collect();
        let times: Vec<f64> = rounds
            .iter()
            .flat_map(|&k| probes[k].iter().copied())
            .collect();
        if rounds.is_empty() {
            println!("The {state} state: no rounds.");
            println!();
            continue;
        }
        println!(
            "The {state} state ({} rounds, line round trip median {:.0} ns):",
            rounds.len(),
            median(&times)
        );
        println!();
        table(&rings, &workloads, &rounds);
    }
    let neither = all.iter().filter(|&&k| state_of_round(k).is_none()).count();
    println!(
        "Near: every probe of the round below {:.0} ns (--near-ns); far: every probe between \
         that and {:.0} ns (--busy-ns); rounds that changed state or had a slower probe, left \
         out of both: {neither}",
        o.near_ns, o.busy_ns
    );
    println!();
    println!("M items/s: median (min to max) over the rounds of each table");
}
