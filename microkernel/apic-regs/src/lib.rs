//! The xAPIC's and the I/O APIC's register offsets and bits: the one
//! definition of them in the system.
//!
//! Two programs drive the same local APIC page: the kernel (its deadline
//! timer, the end of interrupt, INIT/STARTUP and its own IPIs, in
//! `microkernel/src/hv/lapic.rs`) and the `apic` server (the LVTs the kernel
//! leaves to it and IPIs on request, and the whole I/O APIC). They are
//! built apart, so without a crate of their own the offsets were written
//! twice and could drift; a register named differently on each side would
//! be a bug that no test on either side sees. Only hardware facts live
//! here: which vectors the kernel uses is its ABI (`abi`), and how each
//! side uses a register stays with that side.
//!
//! Plain constants, no code that touches a device, `no_std`: usable in the
//! kernel, in a ring-3 server and in host tests alike.
#![no_std]

/// The local APIC in xAPIC mode: 32-bit registers at 16-byte strides in
/// one 4 KiB page, by byte offset from the page (Intel SDM vol. 3, "Local
/// APIC Register Address Map").
pub mod xapic {
    /// Where the page is after reset; QEMU keeps it there and neither the
    /// kernel nor the apic server moves it.
    pub const PHYS: u64 = 0xFEE0_0000;
    /// The page's size: one page, mapped whole by whoever uses it.
    pub const LEN: u64 = 0x1000;

    /// IA32_APIC_BASE bit 11: the APIC is globally enabled.
    pub const BASE_ENABLE: u64 = 1 << 11;

    /// Local APIC ID, in bits 24..32.
    pub const ID: u32 = 0x20;
    /// Version (bits 0..8) and the number of LVT entries less one (bits
    /// 16..24).
    pub const VERSION: u32 = 0x30;
    /// Task priority.
    pub const TPR: u32 = 0x80;
    /// End of interrupt: any write ends the interrupt in service.
    pub const EOI: u32 = 0xB0;
    /// Spurious-interrupt vector register.
    pub const SVR: u32 = 0xF0;
    /// SVR bit 8: the APIC is software-enabled.
    pub const SVR_ENABLE: u32 = 1 << 8;
    /// The first of the eight interrupt request registers (256 bits, 32
    /// per register): see [`irr`].
    pub const IRR: u32 = 0x200;
    /// Interrupt command register, low word: writing it sends.
    pub const ICR_LOW: u32 = 0x300;
    /// Interrupt command register, high word: the destination in bits
    /// 24..32.
    pub const ICR_HIGH: u32 = 0x310;
    pub const LVT_TIMER: u32 = 0x320;
    pub const LVT_THERMAL: u32 = 0x330;
    pub const LVT_PERF: u32 = 0x340;
    pub const LVT_LINT0: u32 = 0x350;
    pub const LVT_LINT1: u32 = 0x360;
    pub const LVT_ERROR: u32 = 0x370;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3E0;

    /// LVT bit 16: the entry is masked.
    pub const LVT_MASKED: u32 = 1 << 16;
    /// LVT timer mode (bits 17..19) TSC-deadline.
    pub const LVT_TSC_DEADLINE: u32 = 0b10 << 17;
    /// Timer divide configuration: divide by 16.
    pub const DIVIDE_BY_16: u32 = 0b0011;

    /// Delivery mode (bits 8..11) of an LVT entry or the ICR: NMI.
    pub const DELIVERY_NMI: u32 = 0b100 << 8;
    /// Delivery mode INIT (ICR only).
    pub const DELIVERY_INIT: u32 = 0b101 << 8;
    /// Delivery mode STARTUP (ICR only); the vector field is the page the
    /// started CPU runs from.
    pub const DELIVERY_STARTUP: u32 = 0b110 << 8;
    /// ICR bit 14: level assert (what every ICR write but an INIT
    /// de-assert carries).
    pub const ICR_ASSERT: u32 = 1 << 14;
    /// The ICR's destination shorthand, bits 18..20 (0 none, 1 self, 2 all,
    /// 3 all but self).
    pub const ICR_SHORTHAND_SHIFT: u32 = 18;
    /// The ICR high word's destination field.
    pub const ICR_DEST_SHIFT: u32 = 24;

    /// The interrupt request register that holds `vector`'s bit, and the
    /// bit.
    pub const fn irr(vector: u8) -> (u32, u32) {
        (IRR + 0x10 * (vector as u32 / 32), 1 << (vector % 32))
    }
}

/// The I/O APIC: two windows in its MMIO page (select a register, then
/// read or write it) and the registers behind them (Intel 82093AA data
/// sheet).
pub mod ioapic {
    /// Where the PC layout puts the first I/O APIC (QEMU's q35 and microvm
    /// do); the MADT says where it really is.
    pub const PHYS: u64 = 0xFEC0_0000;

    /// Byte offsets in the MMIO page: the register select window and the
    /// data window.
    pub const IOREGSEL: u32 = 0x00;
    pub const IOWIN: u32 = 0x10;

    /// Register index of the version register: the highest redirection
    /// entry's index in bits 16..24.
    pub const VERSION: u32 = 0x01;
    /// Register index of the first redirection entry's low word: see
    /// [`redirection`].
    pub const REDIRECTION: u32 = 0x10;

    /// Redirection entry bits (low word): masked, level triggered, active
    /// low.
    pub const MASKED: u32 = 1 << 16;
    pub const LEVEL: u32 = 1 << 15;
    pub const ACTIVE_LOW: u32 = 1 << 13;
    /// Delivery status (bit 12) and remote IRR (bit 14): read-only, set by
    /// the I/O APIC itself.
    pub const READ_ONLY: u32 = (1 << 12) | (1 << 14);
    /// The high word's destination field (an APIC id in physical mode).
    pub const DEST_SHIFT: u32 = 24;

    /// The register indexes of `pin`'s redirection entry: low word, high
    /// word.
    pub const fn redirection(pin: u32) -> (u32, u32) {
        let low = REDIRECTION + 2 * pin;
        (low, low + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vectors_request_bit_is_in_its_register_of_32() {
        assert_eq!(xapic::irr(0x00), (0x200, 1));
        assert_eq!(xapic::irr(0x21), (0x210, 1 << 1));
        assert_eq!(xapic::irr(0xF0), (0x270, 1 << 16));
        assert_eq!(xapic::irr(0xFF), (0x270, 1 << 31));
    }

    #[test]
    fn redirection_entries_are_register_pairs_from_0x10() {
        assert_eq!(ioapic::redirection(0), (0x10, 0x11));
        assert_eq!(ioapic::redirection(2), (0x14, 0x15));
        // The last of the 240 pins an I/O APIC can have.
        assert_eq!(ioapic::redirection(239), (0x1EE, 0x1EF));
    }

    #[test]
    fn registers_sit_in_the_page_at_16_byte_strides() {
        let regs = [
            xapic::ID,
            xapic::VERSION,
            xapic::TPR,
            xapic::EOI,
            xapic::SVR,
            xapic::IRR,
            xapic::ICR_LOW,
            xapic::ICR_HIGH,
            xapic::LVT_TIMER,
            xapic::LVT_THERMAL,
            xapic::LVT_PERF,
            xapic::LVT_LINT0,
            xapic::LVT_LINT1,
            xapic::LVT_ERROR,
            xapic::TIMER_INITIAL,
            xapic::TIMER_CURRENT,
            xapic::TIMER_DIVIDE,
        ];
        for reg in regs {
            assert!(
                reg.is_multiple_of(16) && u64::from(reg) + 4 <= xapic::LEN,
                "{reg:#x}"
            );
        }
    }
}
