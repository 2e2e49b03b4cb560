//! The local APIC registers the kernel leaves to this server: the
//! interrupt command register (IPIs) and the LVT entries other than the
//! timer (LINT0, LINT1, performance counters, thermal sensor, error).
//!
//! Only reachable in xAPIC mode, through the page at 0xFEE00000 the
//! manifest grants. The kernel keeps the local APIC in xAPIC mode even
//! where the CPU offers x2APIC (`microkernel/src/hv/lapic.rs`), so that
//! this page answers. Should it not (in x2APIC mode the registers are MSRs
//! that ring 3 cannot touch and the page reads as all ones), the server
//! says so and answers IPI requests with `Denied`.
//!
//! Context: the apic server's only thread.

use apic_regs::xapic::{
    DELIVERY_NMI, ICR_ASSERT, ICR_DEST_SHIFT, ICR_HIGH, ICR_LOW, ICR_SHORTHAND_SHIFT, LVT_LINT0,
    LVT_LINT1, LVT_MASKED, LVT_PERF, LVT_THERMAL, VERSION,
};

use crate::device::Mmio;

pub struct LocalApic {
    mmio: Mmio,
    /// The ICR high word last written (destination), when known.
    icr_high: Option<u32>,
    coalesce: bool,
    pub accesses: u64,
}

impl LocalApic {
    /// The local APIC, if its xAPIC page answers like one (a version
    /// register with a plausible version and LVT count).
    pub fn probe(mmio: Mmio, coalesce: bool) -> Result<Self, u32> {
        let version = mmio.read32(u64::from(VERSION));
        let plausible = version != u32::MAX && (0x10..=0x1F).contains(&(version & 0xFF));
        if !plausible {
            return Err(version);
        }
        Ok(Self {
            mmio,
            icr_high: None,
            coalesce,
            accesses: 1,
        })
    }

    fn write(&mut self, reg: u32, value: u32) {
        self.accesses += 1;
        self.mmio.write32(u64::from(reg), value);
    }

    /// LVT setup: LINT0 masked (the legacy PIC must not reach the CPU: all
    /// device interrupts come through the I/O APIC), `nmi_lint` (LINT0 or
    /// LINT1) as NMI as the MADT says, the other one masked, and the
    /// performance-counter and thermal entries masked. The timer and error
    /// entries are the kernel's.
    pub fn setup_lvts(&mut self, nmi_lint: Option<u8>) {
        let nmi = DELIVERY_NMI;
        let (lint0, lint1) = match nmi_lint {
            Some(0) => (nmi, LVT_MASKED),
            Some(_) => (LVT_MASKED, nmi),
            None => (LVT_MASKED, LVT_MASKED),
        };
        self.write(LVT_LINT0, lint0);
        self.write(LVT_LINT1, lint1);
        self.write(LVT_PERF, LVT_MASKED);
        self.write(LVT_THERMAL, LVT_MASKED);
    }

    /// Send `vector` with `shorthand` (0 none, 1 self, 2 all, 3 others) to
    /// APIC id `dest` (used only without a shorthand).
    pub fn ipi(&mut self, vector: u8, dest: u8, shorthand: u8) {
        if shorthand == 0 {
            let high = u32::from(dest) << ICR_DEST_SHIFT;
            if !(self.coalesce && self.icr_high == Some(high)) {
                self.write(ICR_HIGH, high);
                self.icr_high = Some(high);
            }
        }
        let low =
            u32::from(vector) | ICR_ASSERT | (u32::from(shorthand & 3) << ICR_SHORTHAND_SHIFT);
        self.write(ICR_LOW, low);
    }
}
