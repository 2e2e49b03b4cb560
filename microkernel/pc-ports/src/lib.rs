//! The legacy PC devices both the kernel and a server drive, defined once:
//! the kernel calibrates its clocks against the 8254 PIT and writes to
//! COM1 at boot, and then the timer server owns the PIT and the console
//! server owns COM1. Facts of the PC platform, not of the kernel's ABI
//! (that is the `abi` crate) nor of the APICs (`apic-regs`).
#![no_std]

/// The 8254 programmable interval timer.
pub mod pit {
    /// Its input clock, in Hz.
    pub const HZ: u64 = 1_193_182;
    /// Channel 0's data port (its output is IRQ 0).
    pub const CHANNEL0: u16 = 0x40;
    /// The mode/command port.
    pub const COMMAND: u16 = 0x43;
    /// The longest count a channel takes.
    pub const MAX_COUNT: u64 = 0xFFFF;
}

/// The first 16550 UART.
pub mod com1 {
    /// Its first port; the UART takes eight.
    pub const BASE: u16 = 0x3F8;
    /// Its ISA IRQ line.
    pub const IRQ: u8 = 4;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pit_count_lasts_as_long_as_the_platform_says() {
        // 0xFFFF ticks is the PIT's well-known ~54.9 ms.
        let ns = pit::MAX_COUNT * 1_000_000_000 / pit::HZ;
        assert_eq!(ns / 100_000, 549);
    }
}
