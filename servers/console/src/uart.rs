//! COM1 through uart_16550: the console server's only device access and
//! its only `unsafe`.
//!
//! The kernel's early console already initialised the UART (8-N-1, FIFOs
//! on); this module does not run the crate's `init` again, because that
//! sets the divisor latch for a moment and the kernel may still print
//! through the same port meanwhile. It sets the receive FIFO's trigger
//! level to one byte (so each typed key interrupts at once rather than
//! after the FIFO timeout) and enables the receive interrupt.
//!
//! Output comes in three shapes, counted for the benchmarks:
//! [`Uart::send_burst`] (one line-status read, then up to 16 bytes into
//! the FIFO: batching on), [`Uart::send_paced`] (the same discipline for a
//! whole burst, done by the kernel in one system call: batching on where
//! the kernel emulates ring-3 port I/O, which would cost three exits a
//! byte) and [`Uart::send_byte`] (a line-status read before each byte:
//! batching off).
//!
//! Context: the console server's only thread.

use uart_16550::Uart16550;
use uart_16550::backend::PioBackend;
use uart_16550::spec::registers::IER;
use userland::abi::Error;
use userland::sys;
use x86_64::instructions::port::Port;

pub const COM1: u16 = pc_ports::com1::BASE;
/// The UART's IRQ line.
pub const IRQ: u32 = pc_ports::com1::IRQ as u32;
/// Bytes the transmit FIFO holds.
pub const FIFO: usize = 16;

/// The line-status register and its "transmit holding register empty" bit.
const LSR: u16 = COM1 + 5;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// FCR: FIFOs on, receive trigger at 1 byte. The FIFOs are not cleared:
/// bytes typed before the server started are kept.
const FCR_ENABLE_TRIGGER_1: u8 = 0b0000_0001;

pub struct Uart {
    uart: Uart16550<PioBackend>,
    /// Bytes written to the transmit register.
    pub tx_bytes: u64,
    /// Line-status reads made for output.
    pub tx_status_reads: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bursts go through the kernel ([`Uart::send_paced`]).
    paced: bool,
}

impl Uart {
    /// Open COM1's eight ports (the manifest must grant 0x3f8..=0x3ff).
    pub fn open() -> Result<Self, Error> {
        sys::ioport_enable(COM1, 8)?;
        // SAFETY: 0x3f8..0x400 is COM1 on every PC QEMU emulates, the
        // kernel opened all eight ports to this server, and this server is
        // the only one granted them: it has the device for its lifetime.
        let uart = unsafe { Uart16550::new_port(COM1) }.map_err(|_| Error::InvalidArgument)?;
        // SAFETY: writing FCR (COM1 + 2) only reconfigures the FIFOs of
        // the UART this server owns; no memory is involved.
        unsafe { Port::<u8>::new(COM1 + 2).write(FCR_ENABLE_TRIGGER_1) };
        Ok(Self {
            uart,
            tx_bytes: 0,
            tx_status_reads: 0,
            rx_bytes: 0,
            paced: !sys::ports_direct(),
        })
    }

    /// Interrupt on received data (IRQ 4).
    pub fn enable_rx_interrupt(&mut self) {
        self.uart.enable_interrupts(IER::DATA_READY);
    }

    /// A received byte, if one is waiting.
    pub fn try_read(&mut self) -> Option<u8> {
        let b = self.uart.try_receive_byte().ok()?;
        self.rx_bytes += 1;
        Some(b)
    }

    /// One line-status read, then up to a FIFO's worth of `bytes`; returns
    /// how many were written (0 when the FIFO was not empty yet).
    pub fn send_burst(&mut self, bytes: &[u8]) -> usize {
        self.tx_status_reads += 1;
        let n = self.uart.send_bytes(&bytes[..bytes.len().min(FIFO)]);
        self.tx_bytes += n as u64;
        n
    }

    /// Whether [`Uart::send_paced`] is the way to send a burst here.
    pub fn paced(&self) -> bool {
        self.paced
    }

    /// Up to 4 KiB of `bytes` in one kernel entry, a FIFO's worth after each
    /// line-status read; returns how many were written.
    pub fn send_paced(&mut self, bytes: &[u8]) -> usize {
        let n = sys::ioport_write_paced(
            COM1,
            &bytes[..bytes.len().min(4096)],
            LSR,
            LSR_THR_EMPTY,
            FIFO,
        )
        .unwrap_or(0);
        self.tx_status_reads += n.div_ceil(FIFO) as u64;
        self.tx_bytes += n as u64;
        n
    }

    /// One line-status read, then `byte` if the transmitter has room.
    pub fn send_byte(&mut self, byte: u8) -> bool {
        self.tx_status_reads += 1;
        let sent = self.uart.send_bytes(&[byte]) == 1;
        self.tx_bytes += u64::from(sent);
        sent
    }
}
