//! The harness for the in-QEMU tests: build the image once, boot it with
//! `test=NAME` and other options, and hand back what the serial port printed
//! and how QEMU ended. Each test in `tests/tests/` is an ordinary cargo test.
//!
//! Every boot has one vCPU, or the count `MICROKERNEL_SMP` names (1..=64;
//! `cargo xtask test --smp N` sets it); [`Boot::smp`] sets a test's own.

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

pub use xtask::build::Image;
use xtask::qemu;
pub use xtask::qemu::{Accel, EXIT_FAILURE, EXIT_SUCCESS, Machine};

/// The image under test: the one `cargo xtask test` built (named in the
/// environment), or built here when the tests run on their own.
pub fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        match (
            std::env::var_os("MICROKERNEL_KERNEL"),
            std::env::var_os("MICROKERNEL_INITRD"),
        ) {
            (Some(kernel), Some(initrd)) => Image {
                kernel: PathBuf::from(kernel),
                initrd: PathBuf::from(initrd),
            },
            _ => {
                qemu::ensure_qemu().expect("QEMU is needed for the in-QEMU tests");
                xtask::build::all().expect("building the image")
            }
        }
    })
}

/// The vCPUs every boot has unless a test says otherwise: `MICROKERNEL_SMP`
/// (`cargo xtask test --smp N`) when set, else 1. A value that is not a
/// count in 1..=64 fails every test that boots, saying so.
pub fn default_cpus() -> u32 {
    static CPUS: OnceLock<Result<u32, String>> = OnceLock::new();
    let cpus = CPUS.get_or_init(|| match std::env::var(qemu::SMP_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(1),
        Err(e) => Err(format!("{}: {e}", qemu::SMP_ENV)),
        Ok(text) => qemu::parse_cpus(&text).map_err(|e| format!("{}={e}", qemu::SMP_ENV)),
    });
    match cpus {
        Ok(n) => *n,
        Err(e) => panic!("{e}"),
    }
}

/// One boot of the system.
pub struct Boot {
    pub config: qemu::Config,
    pub input: Vec<u8>,
    pub timeout: Duration,
}

impl Boot {
    /// A boot on `accel`; on KVM inside [`on_kvm`], with the kernel backend
    /// that round of `on_kvm` is testing (`hv=...` first on the command
    /// line, so that a test's own `hv=` wins). With [`default_cpus`] vCPUs.
    pub fn new(accel: Accel) -> Self {
        let mut config = qemu::Config::new(accel);
        config.cpus = default_cpus();
        if accel == Accel::Kvm
            && let Some(hv) = KVM_BACKEND.get()
        {
            config.cmdline = format!("hv={hv}");
        }
        Self {
            config,
            input: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }

    /// A scenario: `test=NAME` on the command line.
    pub fn test(accel: Accel, name: &str) -> Self {
        Self::new(accel).cmdline(&format!("test={name}"))
    }

    pub fn cmdline(mut self, options: &str) -> Self {
        if !self.config.cmdline.is_empty() {
            self.config.cmdline.push(' ');
        }
        self.config.cmdline.push_str(options);
        self
    }

    pub fn memory(mut self, mb: u32) -> Self {
        self.config.memory_mb = mb;
        self
    }

    /// Boot with `cpus` vCPUs (1..=64), whatever `MICROKERNEL_SMP` says.
    pub fn smp(mut self, cpus: u32) -> Self {
        assert!(
            (1..=qemu::MAX_CPUS).contains(&cpus),
            "Boot::smp({cpus}): the vCPU count must be in 1..={}",
            qemu::MAX_CPUS
        );
        self.config.cpus = cpus;
        self
    }

    pub fn machine(mut self, machine: Machine) -> Self {
        self.config.machine = machine;
        self
    }

    pub fn input(mut self, bytes: &[u8]) -> Self {
        self.input = bytes.to_vec();
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn run(&self) -> Run {
        self.run_image(image())
    }

    /// Boot `image` instead of the one under test (for hand-made initrds).
    pub fn run_image(&self, image: &Image) -> Run {
        let captured = qemu::run_captured(&self.config, image, &self.input, self.timeout)
            .expect("running QEMU");
        Run {
            cmdline: self.config.cmdline.clone(),
            accel: self.config.accel,
            cpus: self.config.cpus,
            captured,
        }
    }
}

impl Boot {
    /// Boot and type into the serial port as the output goes: each step's
    /// bytes are written once the output (after the previous step's marker)
    /// contains its marker. `Boot::input` is written first, at start. For
    /// input that must arrive while a server listens (typing before the
    /// kernel has set up the UART may lose bytes).
    pub fn run_typing(&self, steps: &[(&str, &[u8])]) -> Run {
        self.run_typing_image(image(), steps)
    }

    /// [`run_typing`](Self::run_typing) with another image.
    pub fn run_typing_image(&self, image: &Image, steps: &[(&str, &[u8])]) -> Run {
        use std::io::{Read, Write};
        use std::process::Stdio;
        use std::sync::mpsc;
        use std::time::Instant;

        let mut child = self
            .config
            .command(image)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting QEMU");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let _ = stdin.write_all(&self.input);
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let out_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        let deadline = Instant::now() + self.timeout;
        let mut output = Vec::new();
        let mut from = 0;
        let mut step = 0;
        let mut status = None;
        let mut timed_out = false;
        loop {
            while let Some((marker, bytes)) = steps.get(step) {
                let seen = String::from_utf8_lossy(&output[from..]).into_owned();
                let Some(at) = seen.find(marker) else { break };
                from += seen[..at + marker.len()].len();
                let _ = stdin.write_all(bytes);
                let _ = stdin.flush();
                step += 1;
            }
            if let Some(s) = child.try_wait().expect("waiting for QEMU") {
                status = s.code();
                break;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                timed_out = true;
                break;
            }
            if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(20)) {
                output.extend_from_slice(&chunk);
            }
        }
        drop(stdin);
        let _ = out_reader.join();
        while let Ok(chunk) = rx.try_recv() {
            output.extend_from_slice(&chunk);
        }
        let mut output = String::from_utf8_lossy(&output).into_owned();
        let errors = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
        if !errors.trim().is_empty() {
            output.push_str("\n[qemu stderr]\n");
            output.push_str(&errors);
        }
        Run {
            cmdline: self.config.cmdline.clone(),
            accel: self.config.accel,
            cpus: self.config.cpus,
            captured: qemu::Captured {
                output,
                status,
                timed_out,
            },
        }
    }
}

/// What one boot printed and how it ended.
pub struct Run {
    pub cmdline: String,
    pub accel: Accel,
    /// The vCPUs it had.
    pub cpus: u32,
    pub captured: qemu::Captured,
}

impl Run {
    pub fn output(&self) -> &str {
        &self.captured.output
    }

    fn context(&self) -> String {
        format!(
            "[{}{} \"{}\": status {:?}{}]\n{}",
            self.accel,
            if self.cpus == 1 {
                String::new()
            } else {
                format!(", {} vCPUs", self.cpus)
            },
            self.cmdline,
            self.captured.status,
            if self.captured.timed_out {
                ", timed out"
            } else {
                ""
            },
            self.captured.output
        )
    }

    /// The kernel ended the machine reporting success.
    pub fn assert_success(&self) -> &Self {
        assert_eq!(
            self.captured.status,
            Some(EXIT_SUCCESS),
            "expected success\n{}",
            self.context()
        );
        self
    }

    /// The kernel ended the machine reporting failure.
    pub fn assert_failure(&self) -> &Self {
        assert_eq!(
            self.captured.status,
            Some(EXIT_FAILURE),
            "expected a failing status\n{}",
            self.context()
        );
        self
    }

    pub fn assert_contains(&self, needle: &str) -> &Self {
        assert!(
            self.output().contains(needle),
            "expected output to contain {needle:?}\n{}",
            self.context()
        );
        self
    }

    pub fn assert_lacks(&self, needle: &str) -> &Self {
        assert!(
            !self.output().contains(needle),
            "expected output not to contain {needle:?}\n{}",
            self.context()
        );
        self
    }

    /// The first line that contains `needle`.
    pub fn line(&self, needle: &str) -> &str {
        self.output()
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line contains {needle:?}\n{}", self.context()))
    }

    /// The number after `label` on the first line that has it (the first
    /// run of digits after it).
    pub fn number_after(&self, label: &str) -> u64 {
        let line = self.line(label);
        let rest = &line[line.find(label).unwrap() + label.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .find(|t| !t.is_empty())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no number after {label:?} in {line:?}"))
    }

    /// The number just before `label` on the first line that has it.
    pub fn number_before(&self, label: &str) -> u64 {
        number_before(self.line(label), label)
    }

    /// The hexadecimal number that follows `label` on the first line with it.
    pub fn hex_after(&self, label: &str) -> u64 {
        let line = self.line(label);
        let rest = &line[line.find(label).unwrap() + label.len()..];
        let token = rest.split_whitespace().next().unwrap_or("");
        let token = token
            .trim_start_matches("0x")
            .trim_end_matches([',', ')', ':']);
        u64::from_str_radix(token, 16)
            .unwrap_or_else(|_| panic!("no hex number after {label:?} in {line:?}"))
    }
}

/// The number just before `label` on `line` (`12 accepted`, `(12 ms`).
pub fn number_before(line: &str, label: &str) -> u64 {
    let head = &line[..line
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {line:?}"))];
    head.split_whitespace()
        .last()
        .and_then(|t| t.trim_start_matches('(').parse().ok())
        .unwrap_or_else(|| panic!("no number before {label:?} in {line:?}"))
}

/// The five tests of a scenario `fn(Accel, Machine, batching: &str)`, under
/// the names given: microvm on TCG with batching on and off, q35 on TCG,
/// microvm on KVM with batching on and off, and q35 on KVM (the KVM ones
/// through [`on_kvm`], so once per backend, or skipped where KVM is not).
#[macro_export]
macro_rules! machine_matrix {
    ($scenario:ident:
        $on_tcg:ident,
        $batching_off_on_tcg:ident,
        $on_q35_tcg:ident,
        $on_kvm:ident,
        $on_q35_kvm:ident $(,)?
    ) => {
        #[test]
        fn $on_tcg() {
            $scenario($crate::Accel::Tcg, $crate::Machine::Microvm, "on");
        }

        #[test]
        fn $batching_off_on_tcg() {
            $scenario($crate::Accel::Tcg, $crate::Machine::Microvm, "off");
        }

        #[test]
        fn $on_q35_tcg() {
            $scenario($crate::Accel::Tcg, $crate::Machine::Q35, "on");
        }

        #[test]
        fn $on_kvm() {
            $crate::on_kvm(stringify!($on_kvm), || {
                $scenario($crate::Accel::Kvm, $crate::Machine::Microvm, "on");
                $scenario($crate::Accel::Kvm, $crate::Machine::Microvm, "off");
            });
        }

        #[test]
        fn $on_q35_kvm() {
            $crate::on_kvm(stringify!($on_q35_kvm), || {
                $scenario($crate::Accel::Kvm, $crate::Machine::Q35, "on")
            });
        }
    };
}

/// The kernel backends every KVM test runs on: `auto` (the pvm backend
/// where the machine offers PVM's native mode, as these machines do) and
/// `native` forced (where PVM interprets the kernel: slow, but supported).
pub const KVM_BACKENDS: [&str; 2] = ["auto", "native"];

thread_local! {
    /// The `hv=` of the current round of [`on_kvm`] on this test's thread.
    static KVM_BACKEND: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Run `f` on KVM once per backend of [`KVM_BACKENDS`] (every [`Boot`] it
/// makes on KVM carries that round's `hv=`), or say clearly why it is
/// skipped. A failure names the round: the command line is in its report.
pub fn on_kvm(name: &str, f: impl Fn()) {
    match qemu::kvm_unusable_reason() {
        None => {
            for hv in KVM_BACKENDS {
                eprintln!("{name}: KVM, hv={hv}");
                KVM_BACKEND.set(Some(hv));
                f();
            }
            KVM_BACKEND.set(None);
        }
        Some(reason) => eprintln!("SKIPPED {name} on KVM: {reason}"),
    }
}

/// Run `f` on TCG, then on KVM with every backend of [`KVM_BACKENDS`].
pub fn everywhere(name: &str, f: impl Fn(Accel)) {
    f(Accel::Tcg);
    on_kvm(name, || f(Accel::Kvm));
}

/// Whether this host's KVM is the PVM-type hypervisor whose native mode the
/// pvm backend enters (its module is loaded).
pub fn host_offers_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}
