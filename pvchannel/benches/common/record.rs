//! The lines `rounds` prints for its rings and for each round, written and
//! read back in one place: `rounds -- --replay` reads saved runs (one per
//! code layout, from `cargo xtask rings`) and pools them into one table.
//!
//! ```text
//! rings: pvchannel/rtrb/ringbuf/arrayqueue
//! round  1: probe 63 ns  u64_single 399.3/274.1/266.8/27.2  u64_batch64 ...  probes 60 to 72 ns, last probe 64 ns
//! ```
//!
//! Rates are M items/s, one per ring in the order of the `rings:` line;
//! the probes are the round's line round trips in ns.

/// A round's probes, ns: the state of the machine during the round
/// (`rounds.rs`) needs the lowest and the highest; the first and the last
/// stand for its typical round trip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probes {
    pub first: f64,
    pub lowest: f64,
    pub highest: f64,
    pub last: f64,
}

impl Probes {
    /// Of the probes in the order they were taken (at least one).
    pub fn of(taken: &[f64]) -> Self {
        Self {
            first: taken[0],
            lowest: taken.iter().copied().fold(f64::INFINITY, f64::min),
            highest: taken.iter().copied().fold(0.0, f64::max),
            last: taken[taken.len() - 1],
        }
    }
}

/// One round: its probes and each workload's rates.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    pub probes: Probes,
    /// Each workload's name and its rates, one per ring.
    pub rates: Vec<(String, Vec<f64>)>,
}

/// A whole run read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The rings, in the order of every round's rates.
    pub rings: Vec<String>,
    pub rounds: Vec<Round>,
}

const RINGS: &str = "rings: ";
const ROUND: &str = "round ";

/// The line that names the rings.
pub fn rings_line(rings: &[&str]) -> String {
    format!("{RINGS}{}", rings.join("/"))
}

/// The line of round `number` (from 1): `rates` per workload in the order
/// of the rings.
pub fn round_line(number: usize, probes: Probes, rates: &[(&str, &[f64])]) -> String {
    let mut line = format!("{ROUND}{number:>2}: probe {:.0} ns", probes.first);
    for (workload, cells) in rates {
        let cells: Vec<String> = cells.iter().map(|r| format!("{r:.1}")).collect();
        line += &format!("  {workload} {}", cells.join("/"));
    }
    line + &format!(
        "  probes {:.0} to {:.0} ns, last probe {:.0} ns",
        probes.lowest, probes.highest, probes.last
    )
}

/// Read a run's output back: the `rings:` line and every round line (other
/// lines are skipped). An error names the line it could not read.
pub fn parse(text: &str) -> Result<Run, String> {
    let mut rings: Option<Vec<String>> = None;
    let mut rounds = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = |what: &str| format!("line {}: {what}: {line:?}", i + 1);
        if let Some(names) = line.strip_prefix(RINGS) {
            rings = Some(names.split('/').map(str::to_owned).collect());
        } else if line.starts_with(ROUND) {
            let rings = rings
                .as_ref()
                .ok_or_else(|| at("a round before the rings: line"))?;
            rounds.push(parse_round(line, rings.len()).map_err(|e| at(&e))?);
        }
    }
    let rings = rings.ok_or("no rings: line (not the output of `rounds`?)")?;
    if rounds.is_empty() {
        return Err("no round lines (was it run with --quiet?)".into());
    }
    Ok(Run { rings, rounds })
}

fn parse_round(line: &str, rings: usize) -> Result<Round, String> {
    let (_, rest) = line
        .split_once(": ")
        .ok_or("no ': ' after the round number")?;
    let fields: Vec<&str> = rest.split("  ").collect();
    let (first, middle, end) = match fields.as_slice() {
        [first, middle @ .., end] => (first, middle, end),
        _ => return Err("too few fields".into()),
    };
    let number = |s: &str| s.parse::<f64>().map_err(|_| format!("not a number: {s:?}"));
    let first = first
        .strip_prefix("probe ")
        .and_then(|s| s.strip_suffix(" ns"))
        .ok_or("no 'probe FIRST ns' after the round number")?;
    let (range, last) = end
        .strip_prefix("probes ")
        .and_then(|s| s.split_once(" ns, last probe "))
        .ok_or("no 'probes LO to HI ns, last probe LAST ns' at the end")?;
    let (lowest, highest) = range
        .split_once(" to ")
        .ok_or("no 'LO to HI' in the probes")?;
    let last = last
        .strip_suffix(" ns")
        .ok_or("no ' ns' after the last probe")?;
    let probes = Probes {
        first: number(first)?,
        lowest: number(lowest)?,
        highest: number(highest)?,
        last: number(last)?,
    };
    let mut rates = Vec::new();
    for field in middle {
        let (workload, cells) = field
            .split_once(' ')
            .ok_or_else(|| format!("no rates in {field:?}"))?;
        let cells = cells
            .split('/')
            .map(number)
            .collect::<Result<Vec<f64>, String>>()?;
        if cells.len() != rings {
            return Err(format!(
                "{workload} has {} rates for {rings} rings",
                cells.len()
            ));
        }
        rates.push((workload.to_owned(), cells));
    }
    Ok(Round { probes, rates })
}
