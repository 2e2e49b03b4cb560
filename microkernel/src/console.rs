//! The early boot console (COM1 through uart_16550) and the kernel's `log`
//! backend. One of the kernel's two device accesses besides the
//! hypervisor-facing module (the other is the test exit port): the kernel
//! needs somewhere to report boot and faults before any server exists.
//!
//! Context: any, including exception handlers; output is serialised by a spin
//! lock taken with interrupts masked, so a handler that logs cannot deadlock
//! against the code it interrupted. A fault while the lock is held (only a
//! kernel bug) is handled by [`force_unlock`] in the fault path.

use core::fmt::{self, Write};

use spin::Mutex;
use uart_16550::Uart16550;
use uart_16550::backend::PioBackend;

use crate::hv;
use microkernel::cmdline::LogLevel;

const COM1: u16 = 0x3F8;

static SERIAL: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);

/// Bring up COM1. Output before this call is lost, so it is the first thing
/// the kernel does.
pub fn init() {
    // SAFETY: 0x3F8..0x400 is COM1 on every PC-compatible machine QEMU
    // emulates, and the kernel is its only user until the console server
    // takes over output (the kernel then stops writing to it).
    let mut uart = match unsafe { Uart16550::new_port(COM1) } {
        Ok(uart) => uart,
        Err(_) => return,
    };
    if uart.init(uart_16550::Config::default()).is_ok() {
        *SERIAL.lock() = Some(uart);
    }
}

struct SerialWriter<'a>(&'a mut Uart16550<PioBackend>);

impl Write for SerialWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        send_with_crlf(self.0, s.as_bytes());
        Ok(())
    }
}

/// Send `bytes`, turning each `\n` into `\r\n` for the terminal.
fn send_with_crlf(uart: &mut Uart16550<PioBackend>, bytes: &[u8]) {
    for chunk in bytes.split_inclusive(|&b| b == b'\n') {
        match chunk.split_last() {
            Some((b'\n', line)) => {
                uart.send_bytes_exact(line);
                uart.send_bytes_exact(b"\r\n");
            }
            _ => uart.send_bytes_exact(chunk),
        }
    }
}

/// Write formatted text to the kernel log: through the console server once
/// it is up (`klog`), else to COM1.
pub fn print(args: fmt::Arguments<'_>) {
    hv::interrupts::without(|| {
        let mut line = LineBuffer {
            bytes: [0; 256],
            len: 0,
        };
        let _ = line.write_fmt(args);
        if crate::klog::write(&line.bytes[..line.len]) {
            return;
        }
        if let Some(uart) = SERIAL.lock().as_mut() {
            let _ = SerialWriter(uart).write_fmt(args);
        }
    });
}

/// Write bytes straight to COM1, whatever the kernel log's route (for what
/// the console server left unprinted when it ended).
pub fn write_direct(bytes: &[u8]) {
    hv::interrupts::without(|| {
        if let Some(uart) = SERIAL.lock().as_mut() {
            send_with_crlf(uart, bytes);
        }
    });
}

/// A formatted line for the console server (a longer one is cut).
struct LineBuffer {
    bytes: [u8; 256],
    len: usize,
}

impl Write for LineBuffer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
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
    // report goes straight to COM1, not through a server.
    unsafe {
        SERIAL.force_unlock();
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
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                log::Level::Error => "error",
                log::Level::Warn => "warn ",
                log::Level::Info => "info ",
                log::Level::Debug => "debug",
                log::Level::Trace => "trace",
            };
            print(format_args!("[{level}] {}\n", record.args()));
        }
    }

    fn flush(&self) {}
}

static LOGGER: KernelLog = KernelLog;

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
