//! `cargo xtask stress`: the ring-throughput stress test. One QEMU boot per
//! configuration (accelerator x batching x batch size, plus one ping-pong
//! boot per accelerator and batching), each running the servers of
//! `tests/manifests/stress.toml` or `pingpong.toml` (`servers/stress`).
//! With `--smp N` every boot has N vCPUs, and for N >= 2 the stream runs
//! `stress-smp.toml` instead: the same servers with the producer on CPU 1
//! and the consumer on CPU 0 (ping-pong's two ends stay where the kernel
//! places them). With 2 vCPUs or more each stream boot is also bracketed
//! by a probe of how far apart the host's CPUs are ([`crate::hostprobe`]):
//! the stream runs about four times faster in one of the development VMs'
//! two states than in the other, and the table says which one it ran in.
//!
//! The guest times its workload with the TSC and prints one
//! `stress-result key=value ...` line with the kernel's counter deltas;
//! around the workload it prints `stress-ready` and `stress-done` and
//! pauses, and on KVM this module reads KVM's exit counters over QMP
//! ([`crate::qmp`]) when it sees each marker. Results become a table,
//! optionally JSON (`--json`) and an SVG plot (`--plot`).
//!
//! Also here: [`run_with_stats`], `cargo xtask run --stats`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use wait_timeout::ChildExt;

use crate::build::{self, Image};
use crate::hostprobe;
use crate::qemu::{self, Accel, Config};
use crate::qmp::{self, Stats};

/// The word that starts every result line.
pub const RESULT_TAG: &str = "stress-result";
/// The guest's markers around a workload.
pub const READY: &str = "stress-ready";
pub const DONE: &str = "stress-done";
/// The bytes of one message on the ring (a 64-byte descriptor).
pub const MESSAGE_BYTES: u64 = 64;
/// The most payload a message carries (servers/stress: `MAX_PAYLOAD`).
pub const MAX_PAYLOAD: u32 = 48;
/// The stream workload's test (`tests/manifests/stress.toml`).
pub const STREAM_TEST: &str = "stress";
/// ... with 2 vCPUs or more: the producer on CPU 1, the consumer on CPU 0
/// (`tests/manifests/stress-smp.toml`).
pub const SMP_STREAM_TEST: &str = "stress-smp";

/// The stream's test for a machine of `cpus` vCPUs.
pub fn stream_test(cpus: u32) -> &'static str {
    if cpus >= 2 {
        SMP_STREAM_TEST
    } else {
        STREAM_TEST
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    Kvm,
    Tcg,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BatchingChoice {
    On,
    Off,
    Both,
}

/// The options of `cargo xtask stress`.
#[derive(Clone, Debug, clap::Args)]
pub struct StressArgs {
    /// Run on KVM only.
    #[arg(long, conflicts_with_all = ["tcg", "both"])]
    pub kvm: bool,
    /// Run on TCG only.
    #[arg(long, conflicts_with = "both")]
    pub tcg: bool,
    /// Run on KVM and on TCG (the default is KVM when usable, else TCG).
    #[arg(long)]
    pub both: bool,
    /// Batching on, off, or both (one set of runs each).
    #[arg(long, value_enum, default_value = "both")]
    pub batching: BatchingChoice,
    /// Messages per stream run with batching on.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Messages per stream run with batching off (every one pays a doorbell,
    /// so the default is smaller; the per-message figures stay comparable).
    #[arg(long)]
    pub off_messages: Option<u64>,
    /// Payload bytes per message (0..=48: what a 64-byte descriptor carries
    /// besides its opcode, flags and sequence number).
    #[arg(long, default_value_t = MAX_PAYLOAD, value_parser = clap::value_parser!(u32).range(0..=48))]
    pub payload: u32,
    /// Batch sizes, comma separated (capped at the ring's 4096 slots).
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 16, 64, 256])]
    pub batch: Vec<u32>,
    /// Ping-pong round trips per run (0 skips ping-pong).
    #[arg(long, default_value_t = 10_000)]
    pub rounds: u64,
    /// Write every result (and the raw result lines) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an SVG plot of throughput against batch size to FILE.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Give up on one boot after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Boots of the default system per accelerator and backend, timed from
    /// QEMU's start to the kernel's `all servers ready` line (0 skips them).
    #[arg(long, default_value_t = 5)]
    pub boots: u32,
    /// Kernel backends to run on KVM, comma separated (`hv=` on the kernel
    /// command line; TCG always runs `auto`, which is native there).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [HvChoice::Auto])]
    pub hv: Vec<HvChoice>,
    /// vCPUs per boot (QEMU's -smp), 1..=64. With 2 or more, the stream's
    /// producer and consumer are placed on different CPUs (1 and 0:
    /// tests/manifests/stress-smp.toml).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = qemu::parse_cpus)]
    pub smp: u32,
}

/// A kernel backend to ask for (`hv=` on the kernel command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HvChoice {
    Auto,
    Native,
    Pvm,
}

impl HvChoice {
    /// The kernel command-line options that ask for it.
    pub fn option(self) -> &'static str {
        match self {
            HvChoice::Auto => "hv=auto",
            HvChoice::Native => "hv=native",
            HvChoice::Pvm => "hv=pvm",
        }
    }
}

impl std::fmt::Display for HvChoice {
    /// Its name on the command line (`--hv`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = clap::ValueEnum::to_possible_value(self).expect("no variant is skipped");
        f.write_str(value.get_name())
    }
}

/// The backend the kernel says it chose (its banner's `hypervisor:` line).
pub fn backend_of(output: &str) -> Option<&str> {
    output
        .lines()
        .find_map(|l| l.split_once("hypervisor: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
}

/// A row's label: the accelerator, and the backend when the output names it
/// ("KVM pvm").
fn row_label(accel: Accel, output: &str) -> String {
    match backend_of(output) {
        Some(backend) => format!("{accel} {backend}"),
        None => accel.to_string(),
    }
}

/// The `key=value` words of a result line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Fields(pub BTreeMap<String, String>);

impl Fields {
    pub fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.str(key)?.parse().ok()
    }
    /// A numeric field the line must have.
    pub fn need(&self, key: &str) -> Result<u64> {
        self.u64(key)
            .with_context(|| format!("result line without a numeric {key}="))
    }
}

/// Parse a `stress-result key=value ...` line (anything before the tag, such
/// as the kernel's `[server]` prefix, is ignored). `None` if the line has no
/// tag; words without `=` are skipped.
pub fn parse_result_line(line: &str) -> Option<Fields> {
    let at = line.find(RESULT_TAG)?;
    let after = &line[at + RESULT_TAG.len()..];
    if !after.is_empty() && !after.starts_with(' ') {
        return None;
    }
    let rest = after.trim_start();
    Some(Fields(
        rest.split_ascii_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    ))
}

/// What one boot gave.
#[derive(Debug)]
pub struct Outcome {
    pub fields: Fields,
    /// KVM's counters between `stress-ready` and `stress-done` (KVM only).
    pub kvm: Option<Stats>,
    pub output: String,
}

/// Boot `image` with `config` (whose command line selects the workload),
/// read KVM's counters at the markers, and return the result line.
pub fn run_one(
    config: &Config,
    image: &Image,
    timeout: Duration,
    mut progress: impl FnMut(&str),
) -> Result<Outcome> {
    let kvm = config.accel == Accel::Kvm;
    let socket = qmp::socket_path("stress");
    let _ = std::fs::remove_file(&socket);
    let mut cmd = config.command(image);
    if kvm {
        cmd.args(qmp::args(&socket));
    }
    let (mut child, stdout) = qemu::spawn(&mut cmd, Stdio::null(), Stdio::piped())?;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (rx, reader) = line_reader(stdout);
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut client = None;
    if kvm {
        client = Some(qmp::Client::connect(&socket, Duration::from_secs(10))?);
    }
    let deadline = Instant::now() + timeout;
    let (mut before, mut after, mut fields) = (None, None, None);
    let mut output = String::new();
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok(line) => {
                output.push_str(&line);
                output.push('\n');
                if line.contains(READY) {
                    progress("running");
                    if let Some(c) = client.as_mut() {
                        before = Some(c.vcpu_stats()?);
                    }
                } else if line.contains(DONE) {
                    progress("done");
                    if let Some(c) = client.as_mut() {
                        after = Some(c.vcpu_stats()?);
                    }
                } else if let Some(f) = parse_result_line(&line) {
                    fields = Some(f);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() >= deadline {
                    timed_out = true;
                    break;
                }
            }
        }
    }
    drop(client);
    let status = if timed_out {
        let _ = child.kill();
        let _ = child.wait();
        None
    } else {
        child
            .wait_timeout(Duration::from_secs(10))?
            .and_then(|s| s.code())
    };
    let _ = reader.join();
    let errors = err_reader.join().unwrap_or_default();
    let _ = std::fs::remove_file(&socket);
    if !errors.trim().is_empty() {
        output.push_str("[qemu stderr]\n");
        output.push_str(&errors);
    }
    let tail = || {
        let lines: Vec<&str> = output.lines().collect();
        lines[lines.len().saturating_sub(25)..].join("\n")
    };
    if timed_out {
        bail!(
            "no end after {} s (cmdline \"{}\"); last output:\n{}",
            timeout.as_secs(),
            config.cmdline,
            tail()
        );
    }
    let Some(fields) = fields else {
        bail!(
            "no {RESULT_TAG} line (QEMU status {status:?}, cmdline \"{}\"); last output:\n{}",
            config.cmdline,
            tail()
        );
    };
    if status != Some(qemu::EXIT_SUCCESS)
        || fields.str("ok") != Some("1")
        || output.contains("FAIL")
    {
        bail!(
            "the run failed (QEMU status {status:?}, cmdline \"{}\"):\n{}",
            config.cmdline,
            tail()
        );
    }
    let kvm = match (before, after) {
        (Some(b), Some(a)) => Some(a.since(&b)),
        _ => None,
    };
    Ok(Outcome {
        fields,
        kvm,
        output,
    })
}

/// One row of the table.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub accel: String,
    pub batching: String,
    pub batch: u64,
    pub payload: u64,
    pub messages: u64,
    pub seconds: f64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    pub entries_per_msg: f64,
    pub switches_per_msg: f64,
    pub doorbells_per_msg: f64,
    pub exits_per_msg: Option<f64>,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// KVM's counters over the workload (KVM only).
    pub kvm: Option<Stats>,
    /// With 2 vCPUs or more: a cache line's round trip between the host's
    /// CPUs, in ns, just before and just after the boot
    /// ([`crate::hostprobe`]).
    pub host_line_ns: Option<[f64; 2]>,
    pub result: Fields,
}

/// One ping-pong run.
#[derive(Clone, Debug, Serialize)]
pub struct PingRow {
    pub accel: String,
    pub batching: String,
    pub rounds: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p50_cycles: u64,
    pub p99_cycles: u64,
    pub entries_per_round: f64,
    /// The kernel's own exit-causing operations per round trip (counted
    /// by kind in the kernel; on TCG too).
    pub hv_ops_per_round: Option<f64>,
    /// Median TSC cycles of one null system call (a `yield` that returns
    /// at once), measured before the round trips.
    pub null_syscall_cycles: Option<u64>,
    pub exits_per_round: Option<f64>,
    pub kvm: Option<Stats>,
    pub result: Fields,
}

fn per(n: u64, d: u64) -> f64 {
    if d == 0 { 0.0 } else { n as f64 / d as f64 }
}

impl Row {
    /// The row of `o`, labelled with the accelerator and the backend the
    /// kernel chose (e.g. "KVM pvm").
    pub fn from_outcome(accel: Accel, o: &Outcome) -> Result<Self> {
        let f = &o.fields;
        let messages = f.need("messages")?;
        let cycles = f.need("cycles")?;
        let hz = f.need("tsc_hz")?.max(1);
        let seconds = cycles as f64 / hz as f64;
        let rate = if seconds > 0.0 {
            messages as f64 / seconds
        } else {
            0.0
        };
        let entries = f.need("syscalls")? + f.need("irqs")?;
        Ok(Self {
            accel: row_label(accel, &o.output),
            batching: f.str("batching").unwrap_or("?").to_string(),
            batch: f.need("batch")?,
            payload: f.need("payload")?,
            messages,
            seconds,
            msgs_per_s: rate,
            mb_per_s: rate * MESSAGE_BYTES as f64 / 1e6,
            entries_per_msg: per(entries, messages),
            switches_per_msg: per(f.need("switches")?, messages),
            doorbells_per_msg: per(f.need("doorbells")?, messages),
            exits_per_msg: o
                .kvm
                .as_ref()
                .and_then(|k| k.get("exits"))
                .map(|e| per(e, messages)),
            lost: f.need("lost")?,
            duplicates: f.need("duplicates")?,
            reordered: f.need("reordered")?,
            kvm: o.kvm.clone(),
            host_line_ns: None,
            result: f.clone(),
        })
    }
}

impl PingRow {
    pub fn from_outcome(accel: Accel, o: &Outcome) -> Result<Self> {
        let f = &o.fields;
        let rounds = f.need("rounds")?;
        Ok(Self {
            accel: row_label(accel, &o.output),
            batching: f.str("batching").unwrap_or("?").to_string(),
            rounds,
            p50_ns: f.need("p50_ns")?,
            p99_ns: f.need("p99_ns")?,
            p50_cycles: f.need("p50_cycles")?,
            p99_cycles: f.need("p99_cycles")?,
            entries_per_round: per(f.need("syscalls")? + f.need("irqs")?, rounds),
            hv_ops_per_round: f.u64("hv_ops").map(|n| per(n, rounds)),
            null_syscall_cycles: f.u64("null_syscall_cycles"),
            exits_per_round: o
                .kvm
                .as_ref()
                .and_then(|k| k.get("exits"))
                .map(|e| per(e, rounds)),
            kvm: o.kvm.clone(),
            result: f.clone(),
        })
    }
}

/// Boots of the default system, QEMU start to every server ready.
#[derive(Clone, Debug, Serialize)]
pub struct BootRow {
    pub accel: String,
    pub boots: u32,
    /// Host wall clock from spawning QEMU to the kernel's line, median.
    pub wall_ms_p50: f64,
    /// What the kernel's line says (since its first instruction), median.
    pub kernel_ms_p50: f64,
}

/// Everything one `cargo xtask stress` measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub command: String,
    /// vCPUs of every boot (`--smp`).
    pub vcpus: u32,
    /// The stream's test manifest (`test=NAME`): [`stream_test`].
    pub stream_test: String,
    pub stream: Vec<Row>,
    pub pingpong: Vec<PingRow>,
    pub boots: Vec<BootRow>,
}

impl Default for Report {
    fn default() -> Self {
        Self {
            command: String::new(),
            vcpus: 1,
            stream_test: STREAM_TEST.to_string(),
            stream: Vec::new(),
            pingpong: Vec::new(),
            boots: Vec::new(),
        }
    }
}

/// "1 vCPU", "2 vCPUs".
pub fn vcpus_label(n: u32) -> String {
    format!("{n} vCPU{}", if n == 1 { "" } else { "s" })
}

/// The line the kernel prints once every server has reached its first
/// wait (or ended), and the milliseconds it names.
pub const READY_LINE: &str = "kernel: all servers ready after ";

fn ready_ms(line: &str) -> Option<f64> {
    let at = line.find(READY_LINE)? + READY_LINE.len();
    line[at..].split_whitespace().next()?.parse().ok()
}

/// One boot of [`boot_to_ready`].
pub struct ReadyBoot {
    /// Host wall clock from spawning QEMU to the kernel's ready line, ms.
    pub wall_ms: f64,
    /// What the ready line says, ms.
    pub kernel_ms: f64,
    /// Everything printed up to it (the banner names the backend).
    pub output: String,
}

/// A thread that reads QEMU's serial output line by line and hands each
/// line (lossily decoded) to the returned receiver, until the output ends
/// or the receiver is dropped.
fn line_reader(
    stdout: std::process::ChildStdout,
) -> (mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    (rx, reader)
}

/// Boot the default system once, until the kernel's ready line; QEMU is
/// killed as soon as the line is seen.
pub fn boot_to_ready(config: &Config, image: &Image, timeout: Duration) -> Result<ReadyBoot> {
    let started = Instant::now();
    let (mut child, stdout) =
        qemu::spawn(&mut config.command(image), Stdio::null(), Stdio::null())?;
    let (rx, reader) = line_reader(stdout);
    let mut found = None;
    let mut output = String::new();
    while let Ok(line) = rx.recv_timeout(timeout.saturating_sub(started.elapsed())) {
        output.push_str(&line);
        output.push('\n');
        if let Some(kernel_ms) = ready_ms(&line) {
            found = Some((started.elapsed().as_secs_f64() * 1e3, kernel_ms));
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    drop(rx);
    let _ = reader.join();
    let (wall_ms, kernel_ms) = found
        .with_context(|| format!("no \"{READY_LINE}\" line within {} s", timeout.as_secs()))?;
    Ok(ReadyBoot {
        wall_ms,
        kernel_ms,
        output,
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn fmt_rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn fmt_ratio(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 0.01 {
        format!("{x:.3}")
    } else {
        format!("{x:.2e}")
    }
}

/// "near (64 / 66)": the state both probes saw ("mixed" if they differ),
/// and their round trips; "-" where the host was not probed.
fn host_cell(probes: Option<[f64; 2]>) -> String {
    match probes {
        Some([before, after]) => format!(
            "{} ({before:.0} / {after:.0})",
            hostprobe::run_state(before, after)
        ),
        None => "-".into(),
    }
}

/// The table, as Markdown (it reads as a table on a terminal too), under
/// a line that says how many vCPUs every boot had and where the stream's
/// ends ran.
pub fn table(report: &Report) -> String {
    let mut s = String::new();
    let placement = if report.stream_test == SMP_STREAM_TEST {
        "the manifest puts the producer on CPU 1, the consumer on CPU 0"
    } else if report.vcpus == 1 {
        "both ends on CPU 0"
    } else {
        "placed by the kernel"
    };
    let _ = writeln!(
        s,
        "{} per boot; stream: test={} ({placement})\n",
        vcpus_label(report.vcpus),
        report.stream_test
    );
    // The host's state, where it was probed (2 vCPUs or more).
    let probed = report.stream.iter().any(|r| r.host_line_ns.is_some());
    s.push_str("| accel | batching | batch | payload B | messages | msgs/s | MB/s | kernel entries/msg | switches/msg | VM exits/msg | RTT p50 ns (cycles) | RTT p99 ns (cycles) | lost |");
    s.push_str(if probed {
        " host CPUs (line round trip ns, before / after) |\n"
    } else {
        "\n"
    });
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    s.push_str(if probed { "---|\n" } else { "\n" });
    for r in &report.stream {
        let ping = report
            .pingpong
            .iter()
            .find(|p| p.accel == r.accel && p.batching == r.batching);
        let rtt = |ns: fn(&PingRow) -> (u64, u64)| {
            ping.map(|p| {
                let (n, c) = ns(p);
                format!("{n} ({c})")
            })
            .unwrap_or_else(|| "-".into())
        };
        let _ = write!(
            s,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {} |",
            r.accel,
            r.batching,
            r.batch,
            r.payload,
            r.messages,
            fmt_rate(r.msgs_per_s),
            r.mb_per_s,
            fmt_ratio(r.entries_per_msg),
            fmt_ratio(r.switches_per_msg),
            r.exits_per_msg.map(fmt_ratio).unwrap_or_else(|| "-".into()),
            rtt(|p| (p.p50_ns, p.p50_cycles)),
            rtt(|p| (p.p99_ns, p.p99_cycles)),
            r.lost + r.duplicates + r.reordered,
        );
        if probed {
            let _ = write!(s, " {} |", host_cell(r.host_line_ns));
        }
        s.push('\n');
    }
    if !report.boots.is_empty() {
        s.push_str("\n| accel | boots | QEMU start to all servers ready, host wall ms (median) | the kernel's line, ms (median) |\n");
        s.push_str("|---|---:|---:|---:|\n");
        for b in &report.boots {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} |",
                b.accel, b.boots, b.wall_ms_p50, b.kernel_ms_p50
            );
        }
    }
    if !report.pingpong.is_empty() {
        s.push_str("\n| accel | batching | round trips | null syscall cycles | RTT p50 ns | RTT p99 ns | kernel entries/round trip | kernel exit-causing ops/round trip | VM exits/round trip |\n");
        s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for p in &report.pingpong {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                p.accel,
                p.batching,
                p.rounds,
                p.null_syscall_cycles
                    .map_or_else(|| "-".into(), |c| c.to_string()),
                p.p50_ns,
                p.p99_ns,
                fmt_ratio(p.entries_per_round),
                p.hv_ops_per_round
                    .map(fmt_ratio)
                    .unwrap_or_else(|| "-".into()),
                p.exits_per_round
                    .map(fmt_ratio)
                    .unwrap_or_else(|| "-".into()),
            );
        }
    }
    s
}

/// A plot of throughput (messages/s, log scale) against batch size (log
/// scale), one line per accelerator and batching setting (dashed with
/// batching off), a dot per run, the legend on the right. Drawn by
/// plotters' SVG backend; the viewer sets the text.
pub fn svg(report: &Report) -> Result<String> {
    use plotters::element::DashedPathElement;
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};

    const PLOT_W: u32 = 570;
    const H: u32 = 440;
    const COLORS: [RGBColor; 4] = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xff, 0x7f, 0x0e),
    ];
    let mut series: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    for r in &report.stream {
        if r.msgs_per_s > 0.0 && r.batch > 0 {
            series
                .entry((r.accel.clone(), r.batching.clone()))
                .or_default()
                .push((r.batch as f64, r.msgs_per_s));
        }
    }
    for points in series.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let label = |(accel, batching): &(String, String)| format!("{accel}, batching {batching}");
    // The legend is wide enough for its longest label (about 7 pixels a
    // character at 12 pixels high), beside a plot of a fixed size.
    let longest = series.keys().map(|k| label(k).len()).max().unwrap_or(0);
    let legend_w = (60 + 7 * longest as u32).max(190);
    // The axes run over whole powers of two (x) and of ten (y).
    let (mut x0, mut x1) = (i32::MAX, i32::MIN);
    let (mut y0, mut y1) = (i32::MAX, i32::MIN);
    for &(x, y) in series.values().flatten() {
        x0 = x0.min(x.log2().floor() as i32);
        x1 = x1.max(x.log2().ceil() as i32);
        y0 = y0.min(y.log10().floor() as i32);
        y1 = y1.max(y.log10().ceil() as i32);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0, 1, 0, 1);
    }
    x1 = x1.max(x0 + 1);
    y1 = y1.max(y0 + 1);
    // A hair wider, so that rounding cannot drop the first or last tick.
    let span =
        |base: f64, lo: i32, hi: i32| base.powi(lo) * (1.0 - 1e-9)..base.powi(hi) * (1.0 + 1e-9);
    let failed = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing the plot: {e}");
    // Text `px` pixels high (plotters writes a font's size divided by 1.24).
    let font = |px: f64| ("sans-serif", px * 1.24);

    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (PLOT_W + legend_w, H)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| failed(&e))?;
        let (plot, legend) = root.split_horizontally(PLOT_W);
        let mut chart = ChartBuilder::on(&plot)
            .caption(
                "Ring throughput against batch size (cargo xtask stress)",
                font(14.0),
            )
            .margin(10)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(
                span(2.0, x0, x1).log_scale().base(2.0),
                span(10.0, y0, y1).log_scale(),
            )
            .map_err(|e| failed(&e))?;
        chart
            .configure_mesh()
            // One label and grid line per power, none between.
            .x_labels((x1 - x0 + 1) as usize)
            .y_labels((y1 - y0 + 1) as usize)
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| fmt_rate(*v).trim().to_string())
            .label_style(font(12.0))
            .axis_desc_style(font(12.0))
            .x_desc("batch size (messages per publication)")
            .y_desc("messages per second (log scale)")
            .draw()
            .map_err(|e| failed(&e))?;
        // A frame round the plot.
        let (xs, ys) = (span(2.0, x0, x1), span(10.0, y0, y1));
        chart
            .draw_series([Rectangle::new(
                [(xs.start, ys.start), (xs.end, ys.end)],
                BLACK.stroke_width(1),
            )])
            .map_err(|e| failed(&e))?;
        for (i, (key, points)) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let line = color.stroke_width(2);
            let dashed = key.1 == "off";
            if dashed {
                chart.draw_series(DashedLineSeries::new(points.iter().copied(), 6, 4, line))
            } else {
                chart.draw_series(LineSeries::new(points.iter().copied(), line))
            }
            .map_err(|e| failed(&e))?;
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|e| failed(&e))?;
            // Its legend entry, in the margin right of the plot.
            let y = 50 + 22 * i as i32;
            let sample = [(16, y), (44, y)];
            if dashed {
                legend.draw(&DashedPathElement::new(sample, 6, 4, line))
            } else {
                legend.draw(&PathElement::new(sample, line))
            }
            .map_err(|e| failed(&e))?;
            legend
                .draw(&Text::new(
                    label(key),
                    (50, y),
                    TextStyle::from(font(12.0)).pos(Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(|e| failed(&e))?;
        }
        root.present().map_err(|e| failed(&e))?;
    }
    Ok(out)
}

/// Copy the image aside, so that builds by other commands while the runs
/// go on cannot change what is measured.
fn private_image(image: &Image) -> Result<Image> {
    let dir = crate::target_dir().join(format!("stress-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let copy = Image {
        kernel: dir.join("microkernel"),
        initrd: dir.join("initrd.tar"),
    };
    std::fs::copy(&image.kernel, &copy.kernel).context("copying the kernel")?;
    std::fs::copy(&image.initrd, &copy.initrd).context("copying the initrd")?;
    Ok(copy)
}

fn accels(args: &StressArgs) -> Result<Vec<Accel>> {
    let kvm_ok = qemu::kvm_unusable_reason();
    Ok(if args.both {
        match kvm_ok {
            None => vec![Accel::Kvm, Accel::Tcg],
            Some(why) => {
                eprintln!("xtask: KVM skipped: {why}");
                vec![Accel::Tcg]
            }
        }
    } else if args.tcg {
        vec![Accel::Tcg]
    } else if args.kvm {
        if let Some(why) = kvm_ok {
            bail!("--kvm asked for, but {why}");
        }
        vec![Accel::Kvm]
    } else if kvm_ok.is_none() {
        vec![Accel::Kvm]
    } else {
        vec![Accel::Tcg]
    })
}

/// `cargo xtask stress`.
pub fn main(args: &StressArgs) -> Result<ExitCode> {
    if args.batch.is_empty() || args.batch.contains(&0) {
        bail!("--batch needs sizes of at least 1");
    }
    qemu::ensure_qemu()?;
    let accels = accels(args)?;
    let image = private_image(&build::all()?)?;
    let batchings: &[&str] = match args.batching {
        BatchingChoice::On => &["on"],
        BatchingChoice::Off => &["off"],
        BatchingChoice::Both => &["on", "off"],
    };
    let off_messages = args
        .off_messages
        .unwrap_or((args.messages / 100).max(1_000));
    // The plan: (accel, backend, batching, Some(batch) for a stream, None
    // for ping-pong).
    let mut plan = Vec::new();
    for &accel in &accels {
        let backends = match accel {
            Accel::Kvm => args.hv.clone(),
            Accel::Tcg => vec![HvChoice::Auto],
        };
        for hv in backends {
            for &batching in batchings {
                if args.rounds > 0 {
                    plan.push((accel, hv, batching, None));
                }
                for &b in &args.batch {
                    plan.push((accel, hv, batching, Some(b)));
                }
            }
        }
    }
    let stream = stream_test(args.smp);
    let vcpus = vcpus_label(args.smp);
    eprintln!("xtask: {vcpus} per boot; the stream boots test={stream}");
    let mut report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        vcpus: args.smp,
        stream_test: stream.to_string(),
        ..Report::default()
    };
    let started = Instant::now();
    let total = plan.len();
    for (i, &(accel, hv, batching, batch)) in plan.iter().enumerate() {
        let mut config = Config::new(accel);
        config.cpus = args.smp;
        let what = match batch {
            Some(b) => {
                let messages = if batching == "on" {
                    args.messages
                } else {
                    off_messages
                };
                config.cmdline = format!(
                    "test={stream} {} batching={batching} stress-producer.messages={messages} stress-producer.batch={b} stress-producer.payload={}",
                    hv.option(),
                    args.payload
                );
                format!("stream batch {b}, {messages} messages")
            }
            None => {
                config.cmdline = format!(
                    "test=pingpong {} batching={batching} ping.rounds={}",
                    hv.option(),
                    args.rounds
                );
                format!("ping-pong, {} rounds", args.rounds)
            }
        };
        let label = format!(
            "[{}/{total}] {accel} hv={hv} {vcpus} batching {batching}: {what}",
            i + 1
        );
        let show = |state: &str| {
            eprint!(
                "\r\x1b[Kxtask: {label}: {state} ({:.0} s so far)",
                started.elapsed().as_secs_f64()
            );
            let _ = std::io::stderr().flush();
        };
        // A stream across vCPUs runs as fast as lines cross between the
        // host's CPUs: say how fast that was, before and after.
        let probe = || {
            (batch.is_some() && args.smp >= 2)
                .then(hostprobe::line_round_trip_ns)
                .flatten()
        };
        let before = probe();
        show("booting");
        let outcome = run_one(&config, &image, Duration::from_secs(args.timeout), show);
        let after = probe();
        eprintln!();
        let outcome = outcome.with_context(|| label.clone())?;
        match batch {
            Some(_) => {
                let mut row = Row::from_outcome(accel, &outcome)?;
                row.host_line_ns = before.zip(after).map(|(b, a)| [b, a]);
                eprintln!(
                    "xtask:   {} msgs/s, {} kernel entries/msg, {} VM exits/msg, lost {}{}",
                    fmt_rate(row.msgs_per_s),
                    fmt_ratio(row.entries_per_msg),
                    row.exits_per_msg
                        .map(fmt_ratio)
                        .unwrap_or_else(|| "-".into()),
                    row.lost,
                    row.host_line_ns
                        .map(|p| format!(", host CPUs {}", host_cell(Some(p))))
                        .unwrap_or_default()
                );
                report.stream.push(row);
            }
            None => {
                let row = PingRow::from_outcome(accel, &outcome)?;
                eprintln!(
                    "xtask:   round trip p50 {} ns ({} cycles), p99 {} ns, {} kernel exit-causing ops and {} VM exits per round trip",
                    row.p50_ns,
                    row.p50_cycles,
                    row.p99_ns,
                    row.hv_ops_per_round
                        .map(fmt_ratio)
                        .unwrap_or_else(|| "-".into()),
                    row.exits_per_round
                        .map(fmt_ratio)
                        .unwrap_or_else(|| "-".into()),
                );
                report.pingpong.push(row);
            }
        }
    }
    if args.boots > 0 {
        for &accel in &accels {
            let backends = match accel {
                Accel::Kvm => args.hv.clone(),
                Accel::Tcg => vec![HvChoice::Auto],
            };
            for hv in backends {
                let mut config = Config::new(accel);
                config.cpus = args.smp;
                config.cmdline = hv.option().to_string();
                let (mut wall, mut kernel) = (Vec::new(), Vec::new());
                let mut label = accel.to_string();
                for i in 0..args.boots {
                    eprint!(
                        "\r\x1b[Kxtask: {accel} hv={hv} {vcpus}: boot to ready {}/{}",
                        i + 1,
                        args.boots
                    );
                    let boot = boot_to_ready(&config, &image, Duration::from_secs(args.timeout))
                        .with_context(|| format!("{accel} hv={hv}: boot to ready"))?;
                    wall.push(boot.wall_ms);
                    kernel.push(boot.kernel_ms);
                    label = row_label(accel, &boot.output);
                }
                eprintln!();
                report.boots.push(BootRow {
                    accel: label,
                    boots: args.boots,
                    wall_ms_p50: median(&mut wall),
                    kernel_ms_p50: median(&mut kernel),
                });
            }
        }
    }
    let _ = std::fs::remove_dir_all(image.kernel.parent().expect("a private directory"));
    println!("{}", table(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("xtask: results written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, svg(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("xtask: plot written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The last `counters: key=value ...` line a server printed (e.g.
/// `ring-consumer: counters: doorbells=... syscalls=...`), or the counters
/// of the last result line.
pub fn parse_counters_line(line: &str) -> Option<Fields> {
    if let Some(f) = parse_result_line(line) {
        return Some(f);
    }
    let at = line.find("counters:")?;
    let fields: BTreeMap<String, String> = line[at + "counters:".len()..]
        .split_ascii_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (!fields.is_empty()).then_some(Fields(fields))
}

/// `cargo xtask run --stats`: boot interactively with the serial port on
/// this terminal (and on KVM a QMP socket), and when QEMU ends print the
/// kernel's counters as the guest last printed them and KVM's exit
/// counters.
///
/// KVM's counters are cumulative since QEMU started. QEMU ends the moment
/// the guest writes the exit port, after which QMP is
/// gone; so KVM's counters are read every 100 ms and when a counters line
/// appears, and the table shows the last reading (at most 100 ms before
/// the end). The kernel prints no counters of its own: the table shows
/// the last `counters:` or `stress-result` line a server printed.
pub fn run_with_stats(config: &Config, image: &Image) -> Result<ExitCode> {
    let kvm = config.accel == Accel::Kvm;
    let socket = qmp::socket_path("run");
    let _ = std::fs::remove_file(&socket);
    let mut cmd = config.command(image);
    if kvm {
        cmd.args(qmp::args(&socket));
    }
    let (mut child, mut stdout) = qemu::spawn(&mut cmd, Stdio::inherit(), Stdio::inherit())?;
    let (tx, rx) = mpsc::channel::<Fields>();
    // Pass the serial output through unchanged, and watch it for counters.
    let tee = std::thread::spawn(move || {
        let mut out = std::io::stdout();
        let mut line = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
            for &b in &buf[..n] {
                if b == b'\n' {
                    if let Some(f) = parse_counters_line(&String::from_utf8_lossy(&line)) {
                        let _ = tx.send(f);
                    }
                    line.clear();
                } else {
                    line.push(b);
                }
            }
        }
    });
    let mut client = if kvm {
        qmp::Client::connect(&socket, Duration::from_secs(10)).ok()
    } else {
        None
    };
    let mut last_stats = client.as_mut().and_then(|c| c.vcpu_stats().ok());
    let mut last_counters = None;
    let status = loop {
        if let Some(status) = child.wait_timeout(Duration::from_millis(100))? {
            break status;
        }
        while let Ok(f) = rx.try_recv() {
            last_counters = Some(f);
        }
        if let Some(c) = client.as_mut() {
            match c.vcpu_stats() {
                Ok(s) => last_stats = Some(s),
                Err(_) => client = None,
            }
        }
    };
    let _ = tee.join();
    while let Ok(f) = rx.try_recv() {
        last_counters = Some(f);
    }
    let _ = std::fs::remove_file(&socket);
    let (ok, why) = qemu::describe_exit(status);
    eprintln!("xtask: {why}");
    eprintln!(
        "{}",
        stats_table(last_counters.as_ref(), last_stats.as_ref(), kvm)
    );
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The `run --stats` table.
pub fn stats_table(counters: Option<&Fields>, kvm: Option<&Stats>, on_kvm: bool) -> String {
    let mut s = String::from("| counter | value |\n|---|---:|\n");
    match counters {
        Some(f) => {
            for key in [
                "syscalls",
                "doorbells",
                "wakeups",
                "switches",
                "context_switches",
                "irqs",
                "interrupts",
                "timer_irqs",
            ] {
                if let Some(v) = f.str(key) {
                    let _ = writeln!(s, "| kernel {key} | {v} |");
                }
            }
            // The kernel's exit-causing operations by kind (`hv.NAME`).
            for (key, v) in f.0.iter().filter(|(k, _)| k.starts_with("hv")) {
                let _ = writeln!(s, "| kernel {key} | {v} |");
            }
        }
        None => s.push_str(
            "| kernel counters | (no server printed a `counters:` line; the kernel prints none itself) |\n",
        ),
    }
    match kvm {
        Some(k) => {
            for key in qmp::KEY_STATS {
                if let Some(v) = k.get(key) {
                    let _ = writeln!(s, "| KVM {key} | {v} |");
                }
            }
        }
        None if on_kvm => s.push_str("| KVM counters | (QMP gave none) |\n"),
        None => s.push_str("| KVM counters | (TCG: none) |\n"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "[stress-producer] stress-result kind=stream batching=on batch=64 payload=48 ring=1024 messages=1000000 cycles=2595545273 tsc_hz=2595545273 ns=1000000000 syscalls=3913 doorbells=1956 wakeups=1956 switches=1956 irqs=0 timer_irqs=0 received=1000000 lost=0 duplicates=0 reordered=0 checksum=ok ok=1";

    #[test]
    fn result_line_parses_after_the_server_prefix() {
        let f = parse_result_line(STREAM).unwrap();
        assert_eq!(f.str("kind"), Some("stream"));
        assert_eq!(f.u64("messages"), Some(1_000_000));
        assert_eq!(f.u64("lost"), Some(0));
        assert_eq!(f.str("checksum"), Some("ok"));
        assert!(f.need("nothing").is_err());
        assert!(parse_result_line("[x] hello").is_none());
        assert!(parse_result_line("stress-results a=1").is_none());
        assert_eq!(
            parse_result_line("stress-result").unwrap(),
            Fields::default()
        );
    }

    #[test]
    fn row_figures_follow_from_the_line() {
        let outcome = Outcome {
            fields: parse_result_line(STREAM).unwrap(),
            kvm: Some(Stats([("exits".into(), 500)].into())),
            output: String::new(),
        };
        let row = Row::from_outcome(Accel::Kvm, &outcome).unwrap();
        // One second of TSC cycles for 10^6 messages.
        assert!((row.msgs_per_s - 1e6).abs() < 1.0);
        assert!((row.mb_per_s - 64.0).abs() < 0.001);
        assert!((row.entries_per_msg - 0.003913).abs() < 1e-9);
        assert_eq!(row.exits_per_msg, Some(0.0005));
        assert_eq!(row.lost, 0);
        let report = Report {
            stream: vec![row],
            ..Report::default()
        };
        let t = table(&report);
        assert!(
            t.contains("| KVM | on | 64 | 48 | 1000000 | 1.00 M | 64.0 |"),
            "{t}"
        );
        assert!(
            t.starts_with("1 vCPU per boot; stream: test=stress (both ends on CPU 0)\n\n| accel |"),
            "{t}"
        );
    }

    #[test]
    fn the_host_state_gets_a_column_only_where_it_was_probed() {
        let outcome = Outcome {
            fields: parse_result_line(STREAM).unwrap(),
            kvm: None,
            output: String::new(),
        };
        let row = Row::from_outcome(Accel::Kvm, &outcome).unwrap();
        assert_eq!(row.host_line_ns, None);
        let mut near = row.clone();
        near.host_line_ns = Some([64.4, 66.0]);
        let mut mixed = row.clone();
        mixed.host_line_ns = Some([70.0, 455.0]);
        let unprobed = table(&Report {
            stream: vec![row.clone()],
            ..Report::default()
        });
        assert!(!unprobed.contains("host CPUs"), "{unprobed}");
        assert!(unprobed.contains("| lost |\n|---|"), "{unprobed}");
        let probed = table(&Report {
            stream: vec![near, mixed, row],
            ..Report::default()
        });
        assert!(
            probed.contains("| lost | host CPUs (line round trip ns, before / after) |\n"),
            "{probed}"
        );
        assert!(probed.contains("---:|---|\n"), "{probed}");
        assert!(probed.contains(" | 0 | near (64 / 66) |\n"), "{probed}");
        assert!(probed.contains(" | 0 | mixed (70 / 455) |\n"), "{probed}");
        assert!(probed.contains(" | 0 | - |\n"), "{probed}");
        let json = serde_json::to_value(Report {
            stream: vec![Row {
                host_line_ns: Some([64.0, 66.0]),
                ..Row::from_outcome(Accel::Kvm, &outcome).unwrap()
            }],
            ..Report::default()
        })
        .unwrap();
        assert_eq!(json["stream"][0]["host_line_ns"][1], 66.0);
    }

    #[test]
    fn backends_print_as_they_are_asked_for() {
        let names: Vec<String> = [HvChoice::Auto, HvChoice::Native, HvChoice::Pvm]
            .iter()
            .map(|hv| hv.to_string())
            .collect();
        assert_eq!(names, ["auto", "native", "pvm"]);
        assert_eq!(HvChoice::Pvm.option(), "hv=pvm");
    }

    #[test]
    fn smp_runs_the_stream_with_its_ends_on_two_cpus_and_says_so() {
        assert_eq!(stream_test(1), "stress");
        assert_eq!(stream_test(2), "stress-smp");
        assert_eq!(stream_test(64), "stress-smp");
        let report = Report {
            vcpus: 2,
            stream_test: stream_test(2).to_string(),
            ..Report::default()
        };
        let t = table(&report);
        assert!(
            t.starts_with(
                "2 vCPUs per boot; stream: test=stress-smp (the manifest puts the producer on CPU 1, the consumer on CPU 0)\n"
            ),
            "{t}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["vcpus"], 2);
        assert_eq!(json["stream_test"], "stress-smp");
        // The manifest it names is there.
        let path = crate::workspace_root().join(format!("tests/manifests/{SMP_STREAM_TEST}.toml"));
        assert!(path.is_file(), "{}", path.display());
    }

    #[test]
    fn smp_option() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: StressArgs,
        }
        let parse = |extra: &[&str]| {
            Cli::try_parse_from(std::iter::once("stress").chain(extra.iter().copied()))
                .map(|c| c.args.smp)
        };
        assert_eq!(parse(&[]).unwrap(), 1);
        assert_eq!(parse(&["--smp", "2"]).unwrap(), 2);
        assert_eq!(parse(&["--smp", "64"]).unwrap(), 64);
        for bad in ["0", "65", "x"] {
            let e = parse(&["--smp", bad]).err().unwrap().to_string();
            assert!(e.contains("it must be a number in 1..=64"), "{e}");
        }
    }

    #[test]
    fn svg_has_a_line_per_series_and_a_point_per_run() {
        // The figures of docs/stress.svg: KVM, batching on and off.
        let mut report = Report::default();
        let batches = [1u64, 16, 64, 256, 1024];
        for (batching, rates) in [
            (
                "on",
                [2_340_000u64, 2_780_000, 2_690_000, 2_200_000, 2_930_000],
            ),
            ("off", [3_000; 5]),
        ] {
            for (batch, rate) in batches.into_iter().zip(rates) {
                let line = format!(
                    "stress-result batching={batching} batch={batch} payload=48 messages={rate} cycles=1000 tsc_hz=1000 syscalls=0 irqs=0 switches=0 doorbells=0 lost=0 duplicates=0 reordered=0"
                );
                let o = Outcome {
                    fields: parse_result_line(&line).unwrap(),
                    kvm: None,
                    output: String::new(),
                };
                report
                    .stream
                    .push(Row::from_outcome(Accel::Kvm, &o).unwrap());
            }
        }
        let s = svg(&report).unwrap();
        if let Some(path) = std::env::var_os("XTASK_PLOT_OUT") {
            std::fs::write(path, &s).unwrap();
        }
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        // The series in order of (accel, batching): "off" first, in blue.
        let (off, on) = ("#1F77B4", "#D62728");
        let lines = |kind: &str, color: &str| -> Vec<&str> {
            s.lines()
                .filter(|l| l.starts_with(kind) && l.contains(color))
                .collect()
        };
        // A dot per run, in its series' colour.
        assert_eq!(lines("<circle", on).len(), 5, "{s}");
        assert_eq!(lines("<circle", off).len(), 5, "{s}");
        // With batching on one line through its dots, and the legend's
        // sample; with batching off a dashed line: many short pieces.
        let solid = lines("<polyline", on);
        assert_eq!(solid.len(), 2, "{s}");
        let attr = |l: &str, name: &str| -> String {
            let at = l.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
            l[at..].split('"').next().unwrap().to_string()
        };
        let through: Vec<String> = solid[0]
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .map(|p| p.trim_end_matches('"').to_string())
            .filter(|p| p.contains(','))
            .collect();
        for dot in lines("<circle", on) {
            let at = format!("{},{}", attr(dot, "cx"), attr(dot, "cy"));
            assert!(through.contains(&at), "{at} not on {through:?}");
        }
        assert!(lines("<polyline", off).len() > 10, "{s}");
        // Title, legend, axis names and the ticks: powers of two along,
        // powers of ten up, from 1.0 k to 10.00 M.
        for text in [
            "Ring throughput against batch size (cargo xtask stress)",
            "KVM, batching on",
            "KVM, batching off",
            "batch size (messages per publication)",
            "messages per second (log scale)",
            "1",
            "2",
            "512",
            "1024",
            "1.0 k",
            "100.0 k",
            "10.00 M",
        ] {
            assert!(s.contains(&format!(">\n{text}\n</text>")), "{text:?}: {s}");
        }
        assert!(!s.contains(">\n2048\n<") && !s.contains(">\n100\n<"), "{s}");
        assert!(!s.contains("NaN") && !s.contains("inf"));
        assert_eq!(s.matches('"').count() % 2, 0);
        // A long label widens the picture rather than being cut off.
        assert!(s.starts_with("<svg width=\"760\""), "{s}");
        let mut long = report.clone();
        for row in &mut long.stream {
            row.accel = "KVM a-rather-long-backend-name".into();
        }
        let wide = svg(&long).unwrap();
        assert!(wide.starts_with("<svg width=\"938\""), "{wide}");
        assert!(wide.contains(">\nKVM a-rather-long-backend-name, batching off\n</text>"));
        // An empty report still draws the axes.
        let empty = svg(&Report::default()).unwrap();
        assert!(
            empty.contains("batch size (messages per publication)") && empty.contains("</svg>")
        );
    }

    #[test]
    fn rows_are_labelled_with_the_backend_the_kernel_chose() {
        let banner = "microkernel 0.1.0\n  hypervisor: pvm backend (auto: MSR reads \"PVM\")\n";
        assert_eq!(row_label(Accel::Kvm, banner), "KVM pvm");
        assert_eq!(row_label(Accel::Tcg, "no banner here"), "TCG");
    }

    #[test]
    fn the_ready_line_gives_its_milliseconds() {
        assert_eq!(
            ready_ms("kernel: all servers ready after 63.390 ms"),
            Some(63.39)
        );
        assert_eq!(ready_ms("[x] kernel: all servers ready after ms"), None);
        assert_eq!(ready_ms("something else"), None);
    }

    #[test]
    fn counters_lines_are_found() {
        let f = parse_counters_line(
            "[ring-consumer] ring-consumer: counters: doorbells=5 wakeups=4 context_switches=9 syscalls=20 interrupts=1",
        )
        .unwrap();
        assert_eq!(f.u64("syscalls"), Some(20));
        let t = stats_table(Some(&f), None, false);
        assert!(t.contains("| kernel syscalls | 20 |") && t.contains("TCG: none"));
        assert!(parse_counters_line("nothing here").is_none());
    }
}
