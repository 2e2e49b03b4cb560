//! `cargo xtask`: build the kernel and initrd, run them in QEMU, run the tests.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use xtask::build::{self, cargo};
use xtask::qemu::{self, Accel, Machine};
use xtask::{summary, workspace_root};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, run and test the microkernel",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the kernel ELF and the initrd image (into target/).
    Build,
    /// Build everything and boot it in QEMU, serial console on this terminal.
    /// Leave QEMU with Ctrl-A X.
    Run(RunArgs),
    /// Run the host tests, then the in-QEMU tests, with cargo's test summary.
    Test(TestArgs),
    /// Boot with a GDB server on localhost:1234, paused at the first
    /// instruction, and print the gdb command that attaches to it.
    Gdb(RunArgs),
    /// Ring-throughput stress test: one boot per accelerator, batching and
    /// batch size (plus ping-pong round trips), then a table of messages/s,
    /// kernel entries, context switches and VM exits per message.
    Stress(xtask::stress::StressArgs),
    /// pvchannel's ring benchmark (pvchannel/benches/rounds.rs) over several
    /// code layouts of the same source: builds the bench once per layout,
    /// runs the layouts in turn and pools their rounds into one table per
    /// machine state, with each run's ratio on its own.
    Rings(xtask::rings::RingsArgs),
    /// Supervision soak (minutes; not in CI): make apic, timer, console and
    /// echo fault --faults times in turn while clients run, and check that
    /// the kernel stays up, no client hangs and every request has an
    /// outcome; reports restarts, errors and the console's restart time.
    Soak(xtask::soak::SoakArgs),
    /// Create a new server, add it to the workspace and to the manifest.
    ///
    /// Writes servers/NAME (a working async request loop that answers
    /// opcode 1 with args[0]) and adds it to the workspace members and to
    /// servers/manifest.toml. A bad or taken name is refused and nothing is
    /// written. See docs/ADDING_A_SERVER.md.
    NewServer {
        /// The server's name: 1..=16 bytes of [a-z0-9-] starting with a
        /// letter; also its crate, bin and directory name.
        name: String,
        /// The service it provides (default: NAME).
        #[arg(long, value_name = "SERVICE")]
        provides: Option<String>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Args)]
struct RunArgs {
    /// Use KVM (fails if /dev/kvm is not usable). Default: KVM when usable, else TCG.
    #[arg(long, conflicts_with = "tcg")]
    kvm: bool,
    /// Use TCG, QEMU's software emulation, even when KVM is usable.
    #[arg(long)]
    tcg: bool,
    /// Batch ring crossings (on) or pay one crossing per request (off).
    #[arg(long, value_enum, default_value = "on")]
    batching: OnOff,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(32..=65536))]
    memory: u32,
    /// vCPUs to give the machine (QEMU's -smp), 1..=64.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = qemu::parse_cpus)]
    smp: u32,
    /// The QEMU machine.
    #[arg(long, value_enum, default_value = "microvm")]
    machine: Machine,
    /// The kernel's hypervisor backend (`hv=` on its command line): auto
    /// takes pvm where the machine offers PVM's native mode, else native.
    #[arg(long, value_enum, default_value = "auto")]
    hv: xtask::stress::HvChoice,
    /// More kernel command-line options, e.g. "log=debug".
    #[arg(long, default_value = "")]
    cmdline: String,
    /// At the end, print the kernel's counters (as a server last printed
    /// them) and KVM's exit counters read over QMP, as a table.
    #[arg(long)]
    stats: bool,
    /// Arguments passed to QEMU as they are (after `--`).
    #[arg(last = true)]
    qemu_args: Vec<String>,
}

#[derive(Args)]
struct TestArgs {
    /// Only the host tests (no QEMU).
    #[arg(long)]
    host_only: bool,
    /// Boot every in-QEMU test with N vCPUs (1..=64), unless the test asks
    /// for a count of its own; passed to the tests as MICROKERNEL_SMP.
    /// Without it, the tests boot as they always do (1 vCPU).
    #[arg(long, value_name = "N", value_parser = qemu::parse_cpus)]
    smp: Option<u32>,
    /// Extra arguments for the test binaries, e.g. a name filter.
    #[arg(last = true)]
    test_args: Vec<String>,
}

fn choose_accel(args: &RunArgs) -> Result<Accel> {
    if args.tcg {
        eprintln!("xtask: accelerator TCG (as asked)");
        return Ok(Accel::Tcg);
    }
    match qemu::kvm_unusable_reason() {
        None => {
            eprintln!("xtask: accelerator KVM (/dev/kvm is usable)");
            Ok(Accel::Kvm)
        }
        Some(reason) if args.kvm => bail!("--kvm asked for, but {reason}"),
        Some(reason) => {
            eprintln!("xtask: accelerator TCG ({reason})");
            Ok(Accel::Tcg)
        }
    }
}

fn qemu_config(args: &RunArgs) -> Result<qemu::Config> {
    let mut config = qemu::Config::new(choose_accel(args)?);
    config.machine = args.machine;
    config.memory_mb = args.memory;
    config.cpus = args.smp;
    let batching = if args.batching == OnOff::On {
        "on"
    } else {
        "off"
    };
    config.cmdline = format!("batching={batching} {} {}", args.hv.option(), args.cmdline)
        .trim()
        .to_string();
    config.extra_args = args.qemu_args.clone();
    Ok(config)
}

fn run(args: &RunArgs, gdb: bool) -> Result<ExitCode> {
    qemu::ensure_qemu()?;
    let image = build::all()?;
    let mut config = qemu_config(args)?;
    if gdb {
        config.extra_args.extend(["-s".into(), "-S".into()]);
        eprintln!(
            "xtask: QEMU waits for GDB on localhost:1234. In another terminal:\n    gdb {} -ex 'target remote localhost:1234'",
            image.kernel.display()
        );
    }
    // Interactive: Ctrl-A X leaves QEMU, Ctrl-A C reaches its monitor.
    config.interactive = !gdb;
    if args.stats && !gdb {
        return xtask::stress::run_with_stats(&config, &image);
    }
    let mut cmd = config.command(&image);
    eprintln!(
        "xtask: {} MiB, {} vCPU{}, machine {:?}, cmdline \"{}\"",
        config.memory_mb,
        config.cpus,
        if config.cpus == 1 { "" } else { "s" },
        config.machine,
        config.cmdline
    );
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", qemu::QEMU))?;
    let (ok, why) = qemu::describe_exit(status);
    eprintln!("xtask: {why}");
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The host-testable crates (the kernel's pure logic is its library).
const HOST_TEST_PACKAGES: &[&str] = &[
    "abi",
    "manifest",
    "apic-regs",
    "pc-ports",
    "pvchannel",
    "proto",
    "boot",
    "microkernel",
    "userland",
    "xorshift",
    "testing",
    "stress",
    "apic",
    "xtask",
];

fn test(args: &TestArgs) -> Result<ExitCode> {
    // The image first: the host tests include the check of the built
    // kernel's machine code (microkernel/tests/privileged.rs), which must
    // read this source's kernel, not an older one.
    let image = build::all()?;
    let mut host = cargo();
    // Every test binary runs, whatever fails first: the summary then
    // counts all of them, and one failure cannot hide another.
    host.args(["test", "--no-fail-fast"]);
    for p in HOST_TEST_PACKAGES {
        host.args(["--package", p]);
    }
    host.arg("--lib").arg("--bins").arg("--tests");
    host.env("MICROKERNEL_KERNEL", &image.kernel);
    if !args.test_args.is_empty() {
        host.arg("--").args(&args.test_args);
    }
    eprintln!("xtask: host tests");
    let (host_ok, mut totals) = summary::run_counted(host)?;
    let guest_ok = if host_ok && !args.host_only {
        qemu::ensure_qemu()?;
        eprintln!("xtask: in-QEMU tests");
        let mut guest = cargo();
        guest.args(["test", "--no-fail-fast", "--package", "tests"]);
        guest
            .env("MICROKERNEL_KERNEL", &image.kernel)
            .env("MICROKERNEL_INITRD", &image.initrd);
        if let Some(n) = args.smp {
            eprintln!(
                "xtask: in-QEMU tests boot with {n} vCPUs ({}={n})",
                qemu::SMP_ENV
            );
            guest.env(qemu::SMP_ENV, n.to_string());
        }
        if !args.test_args.is_empty() {
            guest.arg("--").args(&args.test_args);
        }
        let (ok, guest_totals) = summary::run_counted(guest)?;
        totals.add(guest_totals);
        ok
    } else {
        host_ok
    };
    // One line that counts everything, host and in-QEMU tests together.
    println!("summary: {totals}");
    Ok(if host_ok && guest_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Build => build::all().map(|image| {
            println!(
                "kernel: {}\ninitrd: {}",
                image.kernel.display(),
                image.initrd.display()
            );
            ExitCode::SUCCESS
        }),
        Cmd::Run(args) => run(&args, false),
        Cmd::Gdb(args) => run(&args, true),
        Cmd::Stress(args) => xtask::stress::main(&args),
        Cmd::Rings(args) => xtask::rings::main(&args),
        Cmd::Soak(args) => xtask::soak::run(&args),
        Cmd::NewServer { name, provides } => {
            xtask::new_server::run(&workspace_root(), &name, provides.as_deref())
                .map(|()| ExitCode::SUCCESS)
        }
        Cmd::Test(args) => test(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
