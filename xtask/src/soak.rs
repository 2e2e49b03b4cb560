//! `cargo xtask soak`: the supervision soak (issue 11). Boots `test=soak`
//! (tests/manifests/soak.toml), where the `soak` server makes apic, timer,
//! console and echo fault `--faults` times in turn while four clients keep
//! them busy, and reports what it counted: restarts, answers, errors
//! returned, bad outcomes, hung clients, and the console's restart to
//! serving again. Fails unless the kernel stayed up to the end (the
//! machine ended with the kernel's success status once every server had
//! ended), nothing was bad and nothing hung.
//!
//! A benchmark, not a test: it takes minutes, and is not run by CI.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use crate::qemu::{self, Accel};
use crate::stress::HvChoice;
use crate::{build, target_dir};

#[derive(Args)]
pub struct SoakArgs {
    /// Faults to inject, round robin over apic, timer, console and echo.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub faults: u64,
    /// Use TCG even where KVM is usable.
    #[arg(long)]
    pub tcg: bool,
    /// The kernel's hypervisor backend on KVM.
    #[arg(long, value_enum, default_value = "auto")]
    pub hv: HvChoice,
    /// vCPUs to give the machine (QEMU's -smp), 1..=64.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = qemu::parse_cpus)]
    pub smp: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
}

/// What one soak printed, read back from its output.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    pub line: String,
    pub bad: u64,
    pub hung: u64,
    pub faults: u64,
    pub restarts: u64,
}

/// The number after `key=` in `line`.
fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// The soak's summary line, if it printed one.
pub fn summary(output: &str) -> Option<Summary> {
    let line = output
        .lines()
        .map(|l| l.rsplit("\x1b[K").next().unwrap_or(l))
        .find(|l| l.contains("soak: faults="))?;
    Some(Summary {
        line: line.to_string(),
        bad: field(line, "bad")?,
        hung: field(line, "hung")?,
        faults: field(line, "faults")?,
        restarts: field(line, "restarts")?,
    })
}

pub fn run(args: &SoakArgs) -> Result<ExitCode> {
    qemu::ensure_qemu()?;
    let image = build::all()?;
    let accel = if args.tcg || !qemu::kvm_usable() {
        Accel::Tcg
    } else {
        Accel::Kvm
    };
    let mut config = qemu::Config::new(accel);
    config.cpus = args.smp;
    config.cmdline = format!("test=soak soak.faults={} {}", args.faults, args.hv.option());
    eprintln!(
        "xtask: soak on {accel}, {} vCPU{}, cmdline \"{}\" (this takes a while)",
        config.cpus,
        if config.cpus == 1 { "" } else { "s" },
        config.cmdline
    );
    let started = std::time::Instant::now();
    let captured = qemu::run_captured(&config, &image, b"", Duration::from_secs(args.timeout))?;
    let took = started.elapsed();
    let log: PathBuf = target_dir().join("soak.log");
    std::fs::write(&log, &captured.output).with_context(|| format!("writing {}", log.display()))?;
    for line in captured.output.lines() {
        let line = line.rsplit("\x1b[K").next().unwrap_or(line);
        if line.contains("soak:") && !line.contains("console line") {
            println!("{line}");
        }
    }
    let reports = captured
        .output
        .lines()
        .filter(|l| l.contains("kernel: server ") && l.contains(" stopped: "))
        .count();
    println!(
        "xtask: {} s wall clock on {accel} with {} vCPU{}, {reports} fault reports from the kernel, full output in {}",
        took.as_secs(),
        config.cpus,
        if config.cpus == 1 { "" } else { "s" },
        log.display()
    );
    let kernel_up = captured.status == Some(qemu::EXIT_SUCCESS);
    let verdict = match summary(&captured.output) {
        None => "the soak printed no summary".to_string(),
        Some(_) if !kernel_up => format!(
            "the machine did not end with the kernel's success status ({:?})",
            captured.status
        ),
        Some(s) if s.bad != 0 || s.hung != 0 => format!("bad={} hung={}", s.bad, s.hung),
        Some(s) if s.restarts < s.faults => {
            format!("{} faults but only {} restarts", s.faults, s.restarts)
        }
        Some(_) => {
            println!("xtask: soak passed: the kernel stayed up, every request had an outcome");
            return Ok(ExitCode::SUCCESS);
        }
    };
    eprintln!("xtask: soak FAILED: {verdict}");
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary_line() {
        let out = "x\n\x1b[K[soak] soak: faults=12 restarts=12 ok=900 errors=7 bad=0 hung=1 seconds=1.0 console_restart_us samples=3 p50=400 p99=900 max=900\n";
        let s = summary(out).unwrap();
        assert_eq!((s.faults, s.restarts, s.bad, s.hung), (12, 12, 0, 1));
        assert!(summary("soak: 10 faults into").is_none());
    }
}
