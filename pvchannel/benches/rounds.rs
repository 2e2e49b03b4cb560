//! Cross-thread throughput in interleaved rounds: pvchannel against rtrb,
//! ringbuf and crossbeam-queue's `ArrayQueue`. Each round runs every
//! (workload, ring) pair once, moving `--items` items through a ring of
//! `--slots` slots with the producer pinned to CPU 0 and the consumer to
//! CPU 1; the rings' order rotates from round to round, so that a burst of
//! load from elsewhere hits every ring alike. The result is the median
//! over the rounds, with the minimum and maximum, and the median of the
//! per-round ratios (pvchannel over the best peer of the same round).
//!
//! ```text
//! cargo bench -p pvchannel --bench rounds -- [--items 20000000] [--slots 1024]
//!     [--rounds 9] [--only u64_single,desc64_single,u64_batch64]
//!     [--rings pvchannel,rtrb,ringbuf,arrayqueue] [--quiet]
//! ```
//!
//! Results in docs/BENCHMARKS.md ("pvchannel rings").

mod common;

use std::time::Duration;

use common::{WORKLOADS, cpus};

struct Options {
    items: u64,
    slots: usize,
    rounds: usize,
    only: Option<Vec<String>>,
    rings: Option<Vec<String>>,
    quiet: bool,
}

fn options() -> Options {
    let mut o = Options {
        items: 20_000_000,
        slots: 1024,
        rounds: 9,
        only: None,
        rings: None,
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
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn mps(items: u64, t: Duration) -> f64 {
    items as f64 / t.as_secs_f64() / 1e6
}

fn main() {
    let o = options();
    assert!(cpus().len() >= 2, "the benchmark needs two CPUs");
    let workloads: Vec<_> = WORKLOADS
        .iter()
        .filter(|(w, _)| chosen(&o.only, w))
        .map(|(w, rings)| {
            let rings: Vec<_> = rings.iter().filter(|(r, _)| chosen(&o.rings, r)).collect();
            (w, rings)
        })
        .collect();
    println!(
        "{} items per run, {} slots, {} rounds, producer on CPU 0, consumer on CPU 1",
        o.items, o.slots, o.rounds
    );
    // results[workload][ring][round]: M items/s.
    let mut results: Vec<Vec<Vec<f64>>> = workloads
        .iter()
        .map(|(_, rings)| vec![Vec::new(); rings.len()])
        .collect();
    for round in 0..o.rounds {
        let mut line = format!("round {:>2}:", round + 1);
        for (wi, (w, rings)) in workloads.iter().enumerate() {
            for k in 0..rings.len() {
                let ri = (k + round) % rings.len();
                let (_, run) = rings[ri];
                results[wi][ri].push(mps(o.items, run(o.items, o.slots)));
            }
            let cells: Vec<_> = results[wi]
                .iter()
                .map(|r| format!("{:.1}", r[round]))
                .collect();
            line += &format!("  {w} {}", cells.join("/"));
        }
        if !o.quiet {
            println!("{line}");
        }
    }
    println!();
    let names: Vec<&str> = workloads
        .first()
        .map(|(_, rings)| rings.iter().map(|(r, _)| *r).collect())
        .unwrap_or_default();
    println!(
        "| workload | {} | pvchannel / best peer | per-round ratio |",
        names.join(" | ")
    );
    println!("| --- |{} ---: | ---: |", " ---: |".repeat(names.len()));
    for (wi, (w, _)) in workloads.iter().enumerate() {
        let r = &results[wi];
        let medians: Vec<f64> = r.iter().map(|v| median(v)).collect();
        let cells: Vec<String> = r
            .iter()
            .zip(&medians)
            .map(|(v, m)| {
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(0.0, f64::max);
                format!("{m:.1} ({lo:.1} to {hi:.1})")
            })
            .collect();
        // pvchannel is the first ring when chosen; the ratios compare it
        // with the best of the others.
        let (ratio, per_round) = if names.first() == Some(&"pvchannel") && r.len() > 1 {
            let best = medians[1..].iter().copied().fold(0.0, f64::max);
            // The median of each round's own ratio cancels slow drifts in
            // the load from elsewhere.
            let per: Vec<f64> = (0..o.rounds)
                .map(|k| r[0][k] / r[1..].iter().map(|v| v[k]).fold(0.0, f64::max))
                .collect();
            (
                format!("{:.2}", medians[0] / best),
                format!("{:.2}", median(&per)),
            )
        } else {
            ("-".into(), "-".into())
        };
        println!("| {w} | {} | {ratio} | {per_round} |", cells.join(" | "));
    }
    println!();
    println!("M items/s: median (min to max) of {} rounds", o.rounds);
}
