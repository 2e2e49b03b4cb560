//! QEMU: finding (or installing) it, choosing KVM or TCG, building the
//! command line, and running it either interactively or captured for tests.

use std::fs::OpenOptions;
use std::io::Read;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use wait_timeout::ChildExt;

use crate::build::Image;

pub const QEMU: &str = "qemu-system-x86_64";

/// The status QEMU exits with when the kernel writes `SUCCESS` (0x10) to
/// the isa-debug-exit port: (0x10 << 1) | 1.
pub const EXIT_SUCCESS: i32 = 33;
/// ... and `FAILURE` (0x11).
pub const EXIT_FAILURE: i32 = 35;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Machine {
    /// QEMU's minimal machine: no PCI, no firmware, fastest to boot.
    Microvm,
    /// A PC with PCI Express (SeaBIOS adds about 4 s under KVM).
    Q35,
}

/// The most vCPUs a machine is given (`--smp`): the manifest's `cpus` is
/// a 64-bit mask (`::manifest::MAX_CPUS`).
pub const MAX_CPUS: u32 = ::manifest::MAX_CPUS;

/// The environment variable through which `cargo xtask test --smp N`
/// tells the in-QEMU tests (`tests::Boot::new`) how many vCPUs to boot.
pub const SMP_ENV: &str = "MICROKERNEL_SMP";

/// A vCPU count as `--smp` (and [`SMP_ENV`]) give it: 1..=[`MAX_CPUS`].
pub fn parse_cpus(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_CPUS).contains(&n) => Ok(n),
        _ => Err(format!(
            "\"{text}\" is not a vCPU count: it must be a number in 1..={MAX_CPUS}"
        )),
    }
}

/// Is `/dev/kvm` there and usable by this user? Returns why not, if not.
pub fn kvm_unusable_reason() -> Option<String> {
    match OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => None,
        Err(e) => Some(format!("/dev/kvm is not usable: {e}")),
    }
}

pub fn kvm_usable() -> bool {
    kvm_unusable_reason().is_none()
}

fn qemu_found() -> bool {
    Command::new(QEMU)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Make sure QEMU is installed: install it with apt-get when running as
/// root, otherwise stop with the exact command to run.
pub fn ensure_qemu() -> Result<()> {
    if qemu_found() {
        return Ok(());
    }
    let install = "apt-get update && apt-get install -y qemu-system-x86";
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        bail!("{QEMU} is not installed. Install it with:\n    sudo sh -c '{install}'");
    }
    eprintln!("xtask: {QEMU} not found; installing it: {install}");
    for args in [
        &["update", "-q"][..],
        &["install", "-y", "-q", "qemu-system-x86"][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!(
                "apt-get {} failed; install QEMU by hand: {install}",
                args.join(" ")
            );
        }
    }
    if !qemu_found() {
        bail!("{QEMU} still not found after installing qemu-system-x86");
    }
    Ok(())
}

/// Everything that decides one QEMU run.
#[derive(Clone, Debug)]
pub struct Config {
    pub accel: Accel,
    pub machine: Machine,
    pub memory_mb: u32,
    /// vCPUs (QEMU's `-smp`), 1..=[`MAX_CPUS`].
    pub cpus: u32,
    pub cmdline: String,
    pub extra_args: Vec<String>,
    /// Multiplex QEMU's monitor on the terminal (Ctrl-A C) for a person at
    /// the keyboard; tests leave the serial port to themselves.
    pub interactive: bool,
}

impl Config {
    pub fn new(accel: Accel) -> Self {
        Self {
            accel,
            machine: Machine::Microvm,
            memory_mb: 256,
            cpus: 1,
            cmdline: String::new(),
            extra_args: Vec::new(),
            interactive: false,
        }
    }

    /// The QEMU command for `image`, with the serial port on stdio.
    pub fn command(&self, image: &Image) -> Command {
        let mut cmd = Command::new(QEMU);
        let machine = match self.machine {
            // No option ROMs: the kernel boots by PVH and needs none, and
            // loading them cost about 15 ms of every boot.
            Machine::Microvm => "microvm,x-option-roms=off",
            Machine::Q35 => "q35",
        };
        cmd.args(["-M", machine]);
        match self.accel {
            // `-cpu host` alone aborts on these hosts (ARCH_CAPABILITIES MSR).
            Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
            Accel::Tcg => cmd.args(["-accel", "tcg", "-cpu", "max"]),
        };
        cmd.args(["-m", &self.memory_mb.to_string()]);
        cmd.args(["-smp", &self.cpus.to_string()]);
        cmd.args(["-display", "none", "-no-reboot"]);
        if self.interactive {
            cmd.args(["-serial", "mon:stdio"]);
        } else {
            cmd.args(["-monitor", "none", "-serial", "stdio"]);
        }
        cmd.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        cmd.arg("-kernel").arg(&image.kernel);
        cmd.arg("-initrd").arg(&image.initrd);
        cmd.args(["-append", &self.cmdline]);
        cmd.args(&self.extra_args);
        cmd
    }
}

/// Start QEMU from `cmd` (a [`Config::command`], perhaps with arguments
/// added) with `stdin` and `stderr` as given and the serial output on a
/// pipe: every caller reads that output, so it is handed back taken.
pub fn spawn(cmd: &mut Command, stdin: Stdio, stderr: Stdio) -> Result<(Child, ChildStdout)> {
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {QEMU}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    Ok((child, stdout))
}

/// What the kernel's exit status means.
pub fn describe_exit(status: ExitStatus) -> (bool, String) {
    match status.code() {
        Some(EXIT_SUCCESS) => (true, "the kernel reported success".into()),
        Some(EXIT_FAILURE) => (false, "the kernel reported a failure".into()),
        Some(0) => (true, "QEMU was closed".into()),
        Some(code) => (false, format!("QEMU exited with status {code}")),
        None => (false, "QEMU was killed by a signal".into()),
    }
}

/// The result of a captured run.
#[derive(Debug)]
pub struct Captured {
    /// Everything the serial port printed.
    pub output: String,
    /// QEMU's exit status, or None if it was killed after the timeout.
    pub status: Option<i32>,
    pub timed_out: bool,
}

/// Run QEMU with `input` written to the serial port, capture the serial
/// output, and kill it after `timeout`.
pub fn run_captured(
    config: &Config,
    image: &Image,
    input: &[u8],
    timeout: Duration,
) -> Result<Captured> {
    let (mut child, mut stdout) =
        spawn(&mut config.command(image), Stdio::piped(), Stdio::piped())?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    // The writer hands stdin back so that it stays open until QEMU ends:
    // closing it early would make the serial port see end of input.
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&input);
        stdin
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let (status, timed_out) = match child.wait_timeout(timeout)? {
        Some(status) => (status.code(), false),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            (None, true)
        }
    };
    drop(writer.join());
    let mut output = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let errors = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    if !errors.trim().is_empty() {
        output.push_str("\n[qemu stderr]\n");
        output.push_str(&errors);
    }
    Ok(Captured {
        output,
        status,
        timed_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: &Config) -> Vec<String> {
        let image = Image {
            kernel: "k".into(),
            initrd: "i".into(),
        };
        config
            .command(&image)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn smp(args: &[String]) -> Vec<&str> {
        args.windows(2)
            .filter(|w| w[0] == "-smp")
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn one_vcpu_unless_asked() {
        let mut config = Config::new(Accel::Tcg);
        assert_eq!(config.cpus, 1);
        assert_eq!(smp(&args(&config)), ["1"]);
        config.cpus = 4;
        assert_eq!(smp(&args(&config)), ["4"]);
    }

    #[test]
    fn vcpu_counts() {
        assert_eq!(parse_cpus("1"), Ok(1));
        assert_eq!(parse_cpus("2"), Ok(2));
        assert_eq!(parse_cpus(" 64 "), Ok(64));
        for bad in ["0", "65", "-1", "two", "", "1.5"] {
            let e = parse_cpus(bad).unwrap_err();
            assert!(e.contains("it must be a number in 1..=64"), "{e}");
            assert!(e.contains(&format!("\"{bad}\"")), "{e}");
        }
    }
}
