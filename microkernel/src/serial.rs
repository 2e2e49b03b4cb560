//! COM1, the kernel's own serial line (through uart_16550): where the
//! kernel writes before the console server is up, after it has ended, and
//! for fault reports. Both the console front (`console`) and the kernel
//! log's ring (`klog`, for what it cannot deliver) write here; it knows
//! neither.
//!
//! Context: any; the port is serialised by a spin lock taken with
//! interrupts masked.

use core::fmt::{self, Write};

use spin::Mutex;
use uart_16550::Uart16550;
use uart_16550::backend::PioBackend;

use crate::hv;

const COM1: u16 = pc_ports::com1::BASE;

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
pub fn send_with_crlf(uart: &mut Uart16550<PioBackend>, bytes: &[u8]) {
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

/// Write bytes straight to COM1, whatever the kernel log's route (for what
/// the console server left unprinted when it ended).
pub fn write_direct(bytes: &[u8]) {
    hv::interrupts::without(|| {
        if let Some(uart) = SERIAL.lock().as_mut() {
            send_with_crlf(uart, bytes);
        }
    });
}

/// Write formatted text to COM1 (the caller has interrupts masked).
pub fn write_fmt(args: fmt::Arguments<'_>) {
    if let Some(uart) = SERIAL.lock().as_mut() {
        let _ = SerialWriter(uart).write_fmt(args);
    }
}

/// Write `bytes` to COM1 (the caller has interrupts masked).
pub fn write_masked(bytes: &[u8]) {
    if let Some(uart) = SERIAL.lock().as_mut() {
        send_with_crlf(uart, bytes);
    }
}

/// Release the port's lock for the fatal-fault path.
///
/// # Safety
/// Only for that path, which never returns to the interrupted code.
pub unsafe fn force_unlock() {
    // SAFETY: the caller guarantees the holder never runs again.
    unsafe { SERIAL.force_unlock() };
}
