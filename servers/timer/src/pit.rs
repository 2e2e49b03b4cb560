//! The 8254 PIT's channel 0, as a one-shot timer on IRQ 0: the timer
//! server's only device access and its only `unsafe`.
//!
//! Mode 0 (interrupt on terminal count): writing a count starts it; OUT
//! (IRQ 0) rises when it reaches zero, once. Writing a new count, even
//! before the old one ran out, restarts it. The mode is set once; each
//! programming after that is two port writes (low and high byte of the
//! count). Both q35 and microvm have the PIT; it is the one timer they
//! share (microvm has no HPET), and the local APIC timer is the kernel's.
//!
//! Context: the timer server's only thread; the kernel used channel 0 only
//! to calibrate the TSC at boot, before any server ran.

use userland::abi::Error;
use userland::sys;
use x86_64::instructions::port::Port;

/// The PIT's input clock.
pub const PIT_HZ: u64 = pc_ports::pit::HZ;
/// The longest one-shot count.
pub const MAX_TICKS: u64 = pc_ports::pit::MAX_COUNT;

const CHANNEL0: u16 = pc_ports::pit::CHANNEL0;
const COMMAND: u16 = pc_ports::pit::COMMAND;

pub struct Pit {
    mode_set: bool,
    /// Port writes made (each one an exit under a hypervisor).
    pub writes: u64,
}

impl Pit {
    /// Open the PIT's ports (the manifest must grant 0x40..=0x43).
    pub fn open() -> Result<Self, Error> {
        sys::ioport_enable(CHANNEL0, 4)?;
        Ok(Self {
            mode_set: false,
            writes: 0,
        })
    }

    /// Raise IRQ 0 once, `ticks` PIT clocks from now (clamped to
    /// `1..=MAX_TICKS`).
    pub fn one_shot(&mut self, ticks: u64) {
        let ticks = ticks.clamp(1, MAX_TICKS) as u16;
        let [lo, hi] = ticks.to_le_bytes();
        let mut channel0 = Port::<u8>::new(CHANNEL0);
        // SAFETY: ports 0x40 and 0x43 are the PIT's channel-0 data and
        // command ports, opened for this server by `ioport_enable`; they
        // touch no memory, and nothing else in the system uses channel 0.
        unsafe {
            if !self.mode_set {
                // Channel 0, low then high byte, mode 0, binary.
                Port::<u8>::new(COMMAND).write(0b0011_0000);
                self.writes += 1;
                self.mode_set = true;
            }
            channel0.write(lo);
            channel0.write(hi);
        }
        self.writes += 2;
    }
}
