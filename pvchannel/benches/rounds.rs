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
//!     [--busy-ns 2000] [--quiet] [--replay RUN.txt,RUN.txt,...]
//! ```
//!
//! `--replay` runs nothing: it reads the saved output of earlier runs
//! (`common::record`) and reports their rounds pooled, and each run's
//! ratios on its own. `cargo xtask rings` uses it to pool runs of several
//! code layouts of this bench, because which of two rings is ahead in one
//! binary can be a matter of its layout (docs/BENCHMARKS.md).
//!
//! Results in docs/BENCHMARKS.md ("pvchannel rings").

mod common;

use std::hint::{black_box, spin_loop};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::record;
use common::{BATCH, CANDIDATE, Run, WORKLOADS, cpus, two_threads};

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
    replay: Option<Vec<String>>,
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
        replay: None,
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
            "--replay" => o.replay = list(value()),
            // `cargo bench` passes `--bench`; ignore it and anything else.
            _ => {}
        }
    }
    // A batch workload's producer sends whole batches and its consumer
    // waits for every item: any other count would never finish.
    if o.replay.is_none() && (o.items == 0 || !o.items.is_multiple_of(BATCH as u64)) {
        eprintln!("rounds: --items must be a positive multiple of {BATCH} (the batch size)");
        std::process::exit(2);
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
struct Workload {
    name: String,
    rates: Vec<Vec<f64>>,
}

/// Every round of a run, or of the runs replayed together.
struct Gathered {
    rings: Vec<String>,
    workloads: Vec<Workload>,
    probes: Vec<record::Probes>,
    /// Which replayed run each round came from (all 0 for a run).
    layout: Vec<usize>,
}

/// The ring with the best median among the peers: every ring but
/// pvchannel (first, when chosen) and the candidate. `None` when pvchannel
/// is not first or there is no peer.
fn best_peer(rings: &[String], medians: &[f64]) -> Option<usize> {
    if rings.first().map(String::as_str) != Some("pvchannel") {
        return None;
    }
    (1..rings.len())
        .filter(|&i| rings[i] != CANDIDATE.0)
        .max_by(|&a, &b| medians[a].total_cmp(&medians[b]))
}

/// A workload's rates over the rounds in `rounds`, per ring.
fn picked(w: &Workload, rounds: &[usize]) -> Vec<Vec<f64>> {
    w.rates
        .iter()
        .map(|r| rounds.iter().map(|&k| r[k]).collect())
        .collect()
}

/// Print one table over the rounds in `rounds`.
fn table(g: &Gathered, rounds: &[usize]) {
    println!(
        "| workload | {} | pvchannel / best peer | paired ratio |",
        g.rings.join(" | ")
    );
    println!("| --- |{} ---: | ---: |", " ---: |".repeat(g.rings.len()));
    for w in &g.workloads {
        let picked = picked(w, rounds);
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
        let (ratio, paired) = match best_peer(&g.rings, &medians) {
            Some(b) => {
                let per: Vec<f64> = (0..rounds.len())
                    .map(|k| picked[0][k] / picked[b][k])
                    .collect();
                (
                    format!("{:.2} ({})", medians[0] / medians[b], g.rings[b]),
                    format!("{:.2}", median(&per)),
                )
            }
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {} | {} | {ratio} | {paired} |",
            w.name,
            cells.join(" | ")
        );
    }
    println!();
}

/// Print, per replayed run, pvchannel's median over the best peer's median
/// among that run's rounds in `rounds`, and the median of those ratios.
fn layout_table(g: &Gathered, layouts: &[String], rounds: &[usize]) {
    let names: Vec<&str> = g.workloads.iter().map(|w| w.name.as_str()).collect();
    println!("| run | rounds | {} |", names.join(" | "));
    println!("| --- | ---: |{}", " ---: |".repeat(names.len()));
    let mut ratios = vec![Vec::new(); names.len()];
    for (l, layout) in layouts.iter().enumerate() {
        let mine: Vec<usize> = rounds
            .iter()
            .copied()
            .filter(|&k| g.layout[k] == l)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let cells: Vec<String> = g
            .workloads
            .iter()
            .zip(&mut ratios)
            .map(|(w, all)| {
                let medians: Vec<f64> = picked(w, &mine).iter().map(|v| median(v)).collect();
                match best_peer(&g.rings, &medians) {
                    Some(b) => {
                        let r = medians[0] / medians[b];
                        all.push(r);
                        format!("{r:.2} ({})", g.rings[b])
                    }
                    None => "-".into(),
                }
            })
            .collect();
        println!("| {layout} | {} | {} |", mine.len(), cells.join(" | "));
    }
    let medians: Vec<String> = ratios.iter().map(|r| format!("{:.2}", median(r))).collect();
    println!("| median over the runs | | {} |", medians.join(" | "));
    println!();
}

/// Run the rounds, printing each one.
fn run(o: &Options) -> Gathered {
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
    let rings: Vec<&str> = chosen_workloads
        .first()
        .map(|(_, rings)| rings.iter().map(|(r, _)| *r).collect())
        .unwrap_or_default();
    println!(
        "{} items per run, {} slots, {} rounds, producer on CPU 0, consumer on CPU 1",
        o.items, o.slots, o.rounds
    );
    println!("{}", record::rings_line(&rings));
    let mut g = Gathered {
        rings: rings.iter().map(|r| r.to_string()).collect(),
        workloads: chosen_workloads
            .iter()
            .map(|(w, rings)| Workload {
                name: w.to_string(),
                rates: vec![Vec::new(); rings.len()],
            })
            .collect(),
        probes: Vec::new(),
        layout: vec![0; o.rounds],
    };
    for round in 0..o.rounds {
        // One probe before the round and one after each run in it.
        let mut seen = vec![probe()];
        for ((_, rings), results) in chosen_workloads.iter().zip(&mut g.workloads) {
            for k in 0..rings.len() {
                let ri = (k + round) % rings.len();
                let (_, run) = rings[ri];
                results.rates[ri].push(mps(o.items, run(o.items, o.slots)));
                seen.push(probe());
            }
        }
        let probes = record::Probes::of(&seen);
        if !o.quiet {
            let rates: Vec<Vec<f64>> = g
                .workloads
                .iter()
                .map(|w| w.rates.iter().map(|r| r[round]).collect())
                .collect();
            let cells: Vec<(&str, &[f64])> = g
                .workloads
                .iter()
                .zip(&rates)
                .map(|(w, r)| (w.name.as_str(), r.as_slice()))
                .collect();
            println!("{}", record::round_line(round + 1, probes, &cells));
        }
        g.probes.push(probes);
    }
    println!();
    g
}

/// Read saved runs back and pool their rounds. They must have measured the
/// same rings and workloads.
fn replay(files: &[String]) -> Result<Gathered, String> {
    let mut g: Option<Gathered> = None;
    for (l, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
        let run = record::parse(&text).map_err(|e| format!("{file}: {e}"))?;
        let g = g.get_or_insert_with(|| Gathered {
            rings: run.rings.clone(),
            workloads: run.rounds[0]
                .rates
                .iter()
                .map(|(w, _)| Workload {
                    name: w.clone(),
                    rates: vec![Vec::new(); run.rings.len()],
                })
                .collect(),
            probes: Vec::new(),
            layout: Vec::new(),
        });
        if run.rings != g.rings {
            return Err(format!(
                "{file}: rings {} where the first run had {}",
                run.rings.join("/"),
                g.rings.join("/")
            ));
        }
        for (k, round) in run.rounds.iter().enumerate() {
            let names = round.rates.iter().map(|(w, _)| w);
            if !names.clone().eq(g.workloads.iter().map(|w| &w.name)) {
                let want: Vec<&String> = g.workloads.iter().map(|w| &w.name).collect();
                return Err(format!(
                    "{file}: round {} has workloads {:?}, the first run {want:?}",
                    k + 1,
                    names.collect::<Vec<_>>()
                ));
            }
            for (w, (_, rates)) in g.workloads.iter_mut().zip(&round.rates) {
                for (ring, &rate) in w.rates.iter_mut().zip(rates) {
                    ring.push(rate);
                }
            }
            g.probes.push(round.probes);
            g.layout.push(l);
        }
    }
    g.ok_or_else(|| "--replay needs at least one file".into())
}

fn main() {
    let o = options();
    let g = match &o.replay {
        None => run(&o),
        Some(files) => replay(files).unwrap_or_else(|e| {
            eprintln!("rounds: {e}");
            std::process::exit(2)
        }),
    };
    let all: Vec<usize> = (0..g.probes.len()).collect();
    match &o.replay {
        Some(files) => println!("All {} rounds of {} runs:", all.len(), files.len()),
        None => println!("All {} rounds:", all.len()),
    }
    println!();
    table(&g, &all);
    // Which state a probe saw: near, far, or neither (a busy machine). A
    // round is in a state when all its probes are, that is when its lowest
    // and its highest are.
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
        let p = g.probes[k];
        state_of(p.lowest).filter(|&s| state_of(p.highest) == Some(s))
    };
    for state in ["near", "far"] {
        let rounds: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&k| state_of_round(k) == Some(state))
            .collect();
        if rounds.is_empty() {
            println!("The {state} state: no rounds.");
            println!();
            continue;
        }
        let times: Vec<f64> = rounds
            .iter()
            .flat_map(|&k| [g.probes[k].first, g.probes[k].last])
            .collect();
        println!(
            "The {state} state ({} rounds, line round trip median {:.0} ns):",
            rounds.len(),
            median(&times)
        );
        println!();
        table(&g, &rounds);
        if let Some(files) = o.replay.as_ref().filter(|f| f.len() > 1) {
            // Each run by its file's name.
            let names: Vec<String> = files
                .iter()
                .map(|f| {
                    let path = std::path::Path::new(f);
                    path.file_name()
                        .unwrap_or(path.as_os_str())
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            println!("The {state} state, each run on its own:");
            println!();
            layout_table(&g, &names, &rounds);
        }
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
