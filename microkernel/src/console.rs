//! The kernel's console front and its `log` backend: where `kprintln!`
//! and `log` lines go (the console server through `klog` once it is up,
//! else COM1 through `serial`, one of the kernel's two device accesses
//! besides the hypervisor-facing module; the other is the test exit port).
//!
//! Three kinds of line come through here, treated differently when output
//! is scarce: the kernel's own lines (`kprintln!`: fault reports, exits)
//! are never limited and never dropped (`klog` writes one to COM1 itself
//! when the console's ring is full); warnings and errors through `log` are
//! limited per call site (`microkernel::ratelimit`), because a warning can
//! cause itself again (one written to COM1 raises the UART's IRQ, which an
//! unowned line turns into the same warning); servers' `log` records
//! ([`print_server`]) are limited per server by the caller and dropped when
//! the console's ring is full.
//!
//! Context: any, including exception handlers; output is serialised by a spin
//! lock taken with interrupts masked, so a handler that logs cannot deadlock
//! against the code it interrupted. A fault while the lock is held (only a
//! kernel bug) is handled by [`force_unlock`] in the fault path.

use core::fmt::{self, Write};

use spin::Mutex;

use crate::hv;
use microkernel::cmdline::LogLevel;
use microkernel::ratelimit::{self, SiteLimiter, Suppressed};

/// Write formatted text to the kernel log: through the console server once
/// it is up (`klog`), else to COM1.
pub fn print(args: fmt::Arguments<'_>) {
    hv::interrupts::without(|| {
        let mut line = LineBuffer {
            bytes: [0; LINE_MAX],
            len: 0,
            cut: false,
        };
        let _ = line.write_fmt(args);
        if crate::klog::write(line.text()) {
            return;
        }
        crate::serial::write_fmt(args);
    });
}

/// Print a server's `log` record (one line, already escaped and ending in
/// its newline: `microkernel::logline`). False when the console's ring had
/// no room and the record was dropped; the caller counts it.
pub fn print_server(record: &[u8]) -> bool {
    hv::interrupts::without(|| match crate::klog::write_server(record) {
        crate::klog::Delivery::Queued => true,
        crate::klog::Delivery::Dropped => false,
        crate::klog::Delivery::NotAttached => {
            crate::serial::write_masked(record);
            true
        }
    })
}

/// The longest line the kernel puts through the console server.
const LINE_MAX: usize = microkernel::logline::RECORD_MAX;

/// A formatted line for the console server. A longer one is cut at a
/// character boundary and still ends in its newline: without it the console
/// would join the next line, perhaps a fault report, onto this one.
struct LineBuffer {
    bytes: [u8; LINE_MAX],
    len: usize,
    cut: bool,
}

impl LineBuffer {
    fn text(&mut self) -> &[u8] {
        if self.cut && self.bytes[self.len - 1] != b'\n' {
            let mut end = self.len - 1;
            while end > 0 && self.bytes[end] & 0xC0 == 0x80 {
                end -= 1;
            }
            self.bytes[end] = b'\n';
            self.len = end + 1;
        }
        &self.bytes[..self.len]
    }
}

impl Write for LineBuffer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut n = s.len().min(self.bytes.len() - self.len);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.cut |= n < s.len();
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Release the console lock so that a fault report can be printed even if
/// the fault hit while the lock was held.
///
/// # Safety
/// Only for the fatal-fault path, which never returns to the interrupted code.
pub unsafe fn force_unlock() {
    // SAFETY: the caller guarantees the holder never runs again; the fatal
    // report goes straight to COM1, not through a server. The warning
    // limiter's table holds only plain numbers: a fault inside its
    // arithmetic (only a kernel bug) leaves at worst wrong counts.
    unsafe {
        crate::serial::force_unlock();
        WARNINGS.force_unlock();
        crate::klog::abandon();
    }
}

#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

struct KernelLog;

impl log::Log for KernelLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warn ",
            log::Level::Info => "info ",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        if record.level() > log::Level::Warn {
            // Information and debugging are asked for on the command line
            // and come from no path that repeats without bound.
            print(format_args!("[{level}] {}\n", record.args()));
            return;
        }
        let Some(suppressed) = admit_warning(record) else {
            return;
        };
        print(format_args!(
            "[{level}] {}{}\n",
            record.args(),
            SuppressedNote(suppressed)
        ));
    }

    fn flush(&self) {}
}

static LOGGER: KernelLog = KernelLog;

/// Warning and error sites the kernel keeps a count for at once: more than
/// it has; a site pushed out has its count reported by the next warning.
const WARNING_SITES: usize = 32;

static WARNINGS: Mutex<SiteLimiter<WARNING_SITES>> = Mutex::new(SiteLimiter::new());

/// Whether the warning or error `record` may go out now (per call site:
/// `ratelimit::KERNEL_WARNINGS`), and what its site suppressed before it.
fn admit_warning(record: &log::Record<'_>) -> Option<Suppressed> {
    let key = ratelimit::site_key(
        record.file().unwrap_or(record.target()),
        record.line().unwrap_or(0),
    );
    let hz = hv::lapic::tsc_hz();
    hv::interrupts::without(|| {
        WARNINGS
            .lock()
            .admit(key, hv::rdtsc(), hz, ratelimit::KERNEL_WARNINGS)
    })
}

/// ` (N similar messages suppressed)` after a warning, when there were.
struct SuppressedNote(Suppressed);

impl fmt::Display for SuppressedNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Suppressed { similar, other } = self.0;
        if similar > 0 {
            write!(f, " ({similar} similar messages suppressed)")?;
        }
        if other > 0 {
            write!(f, " ({other} other messages suppressed)")?;
        }
        Ok(())
    }
}

/// Install the kernel log at `level`.
pub fn init_log(level: LogLevel) {
    let _ = log::set_logger(&LOGGER);
    set_log_level(level);
}

pub fn set_log_level(level: LogLevel) {
    log::set_max_level(match level {
        LogLevel::Error => log::LevelFilter::Error,
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    });
}
