//! The `rounds` bench's printed lines read back (`rounds -- --replay`,
//! `cargo xtask rings`): what it prints, it reads; what it cannot read, it
//! names.

#[path = "../benches/common/record.rs"]
mod record;

use record::{Probes, Round, Run, parse, rings_line, round_line};

fn sample() -> String {
    let probes = [63.0, 60.4, 95.2, 64.0];
    let single = [399.31, 274.1, 266.8, 27.2];
    let batch = [1898.5, 1595.4, 1962.44, 27.7];
    [
        "5000000 items per run, 1024 slots, 2 rounds, producer on CPU 0, consumer on CPU 1"
            .to_string(),
        rings_line(&["pvchannel", "rtrb", "ringbuf", "arrayqueue"]),
        round_line(
            1,
            Probes::of(&probes),
            &[("u64_single", &single), ("u64_batch64", &batch)],
        ),
        round_line(
            12,
            Probes::of(&[340.0]),
            &[("u64_single", &single), ("u64_batch64", &batch)],
        ),
        String::new(),
        "| workload | pvchannel | ... |".to_string(),
    ]
    .join("\n")
}

#[test]
fn printed_rounds_read_back_to_their_rates_and_probe_ranges() {
    let run = parse(&sample()).unwrap();
    let rates = |r: [f64; 4], b: [f64; 4]| {
        vec![
            ("u64_single".to_string(), r.to_vec()),
            ("u64_batch64".to_string(), b.to_vec()),
        ]
    };
    assert_eq!(
        run,
        Run {
            rings: ["pvchannel", "rtrb", "ringbuf", "arrayqueue"]
                .map(String::from)
                .to_vec(),
            rounds: vec![
                Round {
                    // Whole nanoseconds, as printed.
                    probes: Probes {
                        first: 63.0,
                        lowest: 60.0,
                        highest: 95.0,
                        last: 64.0,
                    },
                    // One decimal, as printed.
                    rates: rates([399.3, 274.1, 266.8, 27.2], [1898.5, 1595.4, 1962.4, 27.7]),
                },
                Round {
                    probes: Probes {
                        first: 340.0,
                        lowest: 340.0,
                        highest: 340.0,
                        last: 340.0,
                    },
                    rates: rates([399.3, 274.1, 266.8, 27.2], [1898.5, 1595.4, 1962.4, 27.7]),
                },
            ],
        }
    );
}

#[test]
fn a_round_line_keeps_its_layout() {
    assert_eq!(
        round_line(
            3,
            Probes::of(&[70.0, 65.0, 80.0]),
            &[("u64_single", &[1.26, 2.0])]
        ),
        "round  3: probe 70 ns  u64_single 1.3/2.0  probes 65 to 80 ns, last probe 80 ns"
    );
}

#[test]
fn what_is_not_a_run_is_refused_by_name() {
    let no_rings =
        "round  1: probe 63 ns  u64_single 1.0/2.0  probes 60 to 72 ns, last probe 64 ns";
    assert!(
        parse(no_rings)
            .unwrap_err()
            .contains("before the rings: line")
    );
    assert!(parse("hello\n").unwrap_err().contains("no rings: line"));
    assert!(parse("rings: a/b\n").unwrap_err().contains("--quiet"));
    let short =
        "rings: a/b\nround  1: probe 63 ns  u64_single 1.0  probes 60 to 72 ns, last probe 64 ns";
    let e = parse(short).unwrap_err();
    assert!(
        e.starts_with("line 2:") && e.contains("1 rates for 2 rings"),
        "{e}"
    );
    let garbled =
        "rings: a/b\nround  1: probe 63 ns  u64_single 1.0/x  probes 60 to 72 ns, last probe 64 ns";
    assert!(parse(garbled).unwrap_err().contains("not a number: \"x\""));
    let cut = "rings: a/b\nround  1: probe 63 ns  u64_single 1.0/2.0";
    assert!(parse(cut).unwrap_err().contains("probes LO to HI"));
    let unprobed = "rings: a/b\nround  1: u64_single 1.0/2.0  probes 60 to 72 ns, last probe 64 ns";
    assert!(parse(unprobed).unwrap_err().contains("probe FIRST"));
}
