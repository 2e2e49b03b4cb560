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
//! the probes are the round's line round trips in ns (the first, the
//! lowest, the highest and the last), of which the state of the machine
//! during the round (`rounds.rs`) needs only the lowest and the highest.

/// One round: its probe range and each workload's rates.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// The lowest and the highest probe of the round, ns.
    pub probes: (f64, f64),
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

/// The line of round `number` (from 1): `probes` in the order they were
/// taken (at least one), `rates` per workload in the order of the rings.
pub fn round_line(number: usize, probes: &[f64], rates: &[(&str, &[f64])]) -> String {
    let lo = probes.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = probes.iter().copied().fold(0.0, f64::max);
    let mut line = format!("{ROUND}{number:>2}: probe {:.0} ns", probes[0]);
    for (workload, cells) in rates {
        let cells: Vec<String> = cells.iter().map(|r| format!("{r:.1}")).collect();
        line += &format!("  {workload} {}", cells.join("/"));
    }
    line + &format!(
        "  probes {lo:.0} to {hi:.0} ns, last probe {:.0} ns",
        probes[probes.len() - 1]
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
    let (last, middle) = match fields.as_slice() {
        [_first_probe, middle @ .., last] => (last, middle),
        _ => return Err("too few fields".into()),
    };
    let number = |s: &str| s.parse::<f64>().map_err(|_| format!("not a number: {s:?}"));
    let probes = last
        .strip_prefix("probes ")
        .and_then(|s| s.split_once(" ns,"))
        .and_then(|(range, _)| range.split_once(" to "))
        .ok_or("no 'probes LO to HI ns' at the end")?;
    let probes = (number(probes.0)?, number(probes.1)?);
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
