//! The I/O APIC through its two windows (IOREGSEL at +0x00, IOWIN at
//! +0x10), with a shadow of every redirection entry so that a batch of
//! requests costs only the register accesses that change something.
//!
//! Context: the apic server's only thread; the kernel never touches the
//! I/O APIC, so the shadow and the cached IOREGSEL stay true.

use alloc::vec;
use alloc::vec::Vec;

pub use apic_regs::ioapic::{ACTIVE_LOW, LEVEL, MASKED, READ_ONLY};
use apic_regs::ioapic::{IOREGSEL, IOWIN, VERSION, redirection};

use crate::device::Mmio;

/// One redirection entry as its two 32-bit words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub low: u32,
    pub high: u32,
}

impl Entry {
    /// Masked, vector 0, destination 0: what the server writes at start.
    pub const MASKED: Entry = Entry {
        low: MASKED,
        high: 0,
    };

    pub fn masked(self) -> bool {
        self.low & MASKED != 0
    }

    pub fn with_mask(mut self, masked: bool) -> Self {
        if masked {
            self.low |= MASKED;
        } else {
            self.low &= !MASKED;
        }
        self
    }
}

pub struct IoApic {
    mmio: Mmio,
    pins: usize,
    /// The register IOREGSEL holds, when it is known (batching on only).
    selected: Option<u32>,
    cache_select: bool,
    shadow: Vec<Entry>,
    /// Register accesses made (each is one exit under a hypervisor).
    pub accesses: u64,
}

impl IoApic {
    /// Take over the I/O APIC in `mmio`: learn its size and mask every
    /// pin. With `coalesce`, IOREGSEL is written only when it changes and
    /// only the words of an entry that change are written.
    pub fn new(mmio: Mmio, coalesce: bool) -> Self {
        let mut io = Self::open(mmio, coalesce);
        io.shadow = vec![Entry::MASKED; io.pins];
        for pin in 0..io.pins {
            let (low, high) = redirection(pin as u32);
            io.write(low, MASKED);
            io.write(high, 0);
        }
        io
    }

    /// Take over the I/O APIC in `mmio` as a previous instance of this
    /// server left it: learn its size and read every pin's entry, changing
    /// nothing, so that the lines clients routed keep firing across a
    /// restart of this server (the caller decides which entries to keep).
    pub fn adopt(mmio: Mmio, coalesce: bool) -> Self {
        let mut io = Self::open(mmio, coalesce);
        io.shadow = (0..io.pins)
            .map(|pin| {
                let (low, high) = redirection(pin as u32);
                Entry {
                    low: io.read(low),
                    high: io.read(high),
                }
            })
            .collect();
        io
    }

    /// The I/O APIC in `mmio`, its size read, no entry known yet.
    fn open(mmio: Mmio, coalesce: bool) -> Self {
        let mut io = Self {
            mmio,
            pins: 0,
            selected: None,
            cache_select: coalesce,
            shadow: Vec::new(),
            accesses: 0,
        };
        let version = io.read(VERSION);
        io.pins = (((version >> 16) & 0xFF) as usize + 1).clamp(1, 240);
        io
    }

    pub fn pins(&self) -> usize {
        self.pins
    }

    fn select(&mut self, reg: u32) {
        if self.cache_select && self.selected == Some(reg) {
            return;
        }
        self.mmio.write32(u64::from(IOREGSEL), reg);
        self.accesses += 1;
        self.selected = Some(reg);
    }

    fn read(&mut self, reg: u32) -> u32 {
        self.select(reg);
        self.accesses += 1;
        self.mmio.read32(u64::from(IOWIN))
    }

    fn write(&mut self, reg: u32, value: u32) {
        self.select(reg);
        self.accesses += 1;
        self.mmio.write32(u64::from(IOWIN), value);
    }

    /// The entry of `pin` as last written.
    pub fn entry(&self, pin: usize) -> Entry {
        self.shadow.get(pin).copied().unwrap_or(Entry::MASKED)
    }

    /// Make `pin`'s entry `new`. With coalescing only the words that differ
    /// from the shadow are written; otherwise both are. The order keeps the
    /// pin from firing half-programmed: a destination change lands before
    /// an unmask, a mask before anything else changes.
    pub fn commit(&mut self, pin: usize, new: Entry) {
        let Some(&old) = self.shadow.get(pin) else {
            return;
        };
        let (low_reg, high_reg) = redirection(pin as u32);
        let (write_low, write_high) = if self.cache_select {
            (old.low != new.low, old.high != new.high)
        } else {
            (true, true)
        };
        if new.masked() {
            if write_low {
                self.write(low_reg, new.low);
            }
            if write_high {
                self.write(high_reg, new.high);
            }
        } else {
            if write_high {
                self.write(high_reg, new.high);
            }
            if write_low {
                self.write(low_reg, new.low);
            }
        }
        self.shadow[pin] = new;
    }
}
