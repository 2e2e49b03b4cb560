//! Finding the I/O APIC and the ISA interrupt overrides in the firmware's
//! ACPI tables (RSDP, then RSDT or XSDT, then the MADT, signature "APIC"),
//! with the `acpi` crate.
//!
//! The crate reads the tables through an [`AcpiHandler`] that maps physical
//! memory. This one copies instead: each region the crate asks for is
//! copied out of physical memory by a reader (in the server, through the
//! MMIO windows its manifest grants; in the tests, from captured tables)
//! into a buffer of the handler's own, so the crate only ever reads memory
//! the handler allocated. A region the reader cannot copy (outside the
//! grants, as the tables are on q35) is recorded as the error to report,
//! and the crate gets zeros, which it refuses as a wrong signature.
//!
//! Broken tables are an error, never a panic or a read out of bounds. The
//! crate checks signatures and checksums, but trusts some lengths it reads,
//! so these are checked before it uses them:
//! * a table header's length (below the header's own size the crate's
//!   arithmetic wraps): checked by the handler on every header it copies;
//! * the RSDP's length (the crate checksums that many bytes): the RSDP is
//!   copied whole;
//! * the MADT's length and each entry's (an entry of length 0 would make
//!   the crate's entry iterator loop forever, one running past the end
//!   would wrap its remaining count): walked once before that iterator
//!   runs.
//!
//! Every copy is also followed by [`SLACK`] zero bytes, so that the
//! crate's fixed-size structures read at the very end of a table stay
//! inside the buffer.
//!
//! Context: the apic server at start.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::mem::{align_of, size_of};
use core::ptr::NonNull;

use acpi::madt::{
    EntryHeader, InterruptSourceOverrideEntry, IoApicEntry, LocalApicNmiEntry, Madt, MadtEntry,
};
use acpi::rsdp::Rsdp;
use acpi::sdt::SdtHeader;
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};

/// What the apic server needs from the MADT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Physical address of the (first) I/O APIC and its first GSI.
    pub ioapic: u64,
    pub gsi_base: u32,
    /// ISA IRQ `n` -> (GSI, MPS INTI flags), from the source overrides.
    pub overrides: [Option<(u32, u16)>; 16],
    /// The local APIC input wired to NMI (LINT0 or LINT1), if the MADT says.
    pub nmi_lint: Option<u8>,
}

impl Topology {
    /// The standard PC layout when there are no tables to read: one I/O
    /// APIC at 0xFEC00000 from GSI 0, ISA IRQ 0 on pin 2 (how QEMU's PC and
    /// microvm machines wire the PIT), LINT1 = NMI.
    pub fn standard() -> Self {
        let mut overrides = [None; 16];
        overrides[0] = Some((2, 0));
        Self {
            ioapic: apic_regs::ioapic::PHYS,
            gsi_base: 0,
            overrides,
            nmi_lint: Some(1),
        }
    }
}

/// Why the tables could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// The reader could not copy a range (not granted to this server).
    Unreadable(u64),
    /// A signature, checksum or length is wrong.
    Malformed(&'static str),
    /// No MADT among the tables, or no I/O APIC in it.
    Missing(&'static str),
}

impl core::fmt::Display for AcpiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unreadable(at) => write!(f, "cannot read physical memory at {at:#x}"),
            Self::Malformed(what) => write!(f, "malformed {what}"),
            Self::Missing(what) => write!(f, "no {what}"),
        }
    }
}

impl AcpiError {
    /// What a refusal by the crate means here. `find_table` skips a table
    /// that fails its checks, so a broken MADT shows as a missing one.
    fn from_crate(e: &acpi::AcpiError) -> Self {
        use acpi::AcpiError as E;
        match e {
            E::NoValidRsdp
            | E::RsdpIncorrectSignature
            | E::RsdpInvalidOemId
            | E::RsdpInvalidChecksum => Self::Malformed("RSDP"),
            E::SdtInvalidSignature(_) => Self::Malformed("RSDT/XSDT signature"),
            E::SdtInvalidOemId(_) | E::SdtInvalidTableId(_) => Self::Malformed("table header"),
            E::SdtInvalidChecksum(_) => Self::Malformed("table checksum"),
            E::TableMissing(_) => Self::Missing("MADT with a valid header and checksum"),
            _ => Self::Malformed("ACPI tables"),
        }
    }
}

/// The longest region the handler copies (and so the longest table).
const MAX_TABLE: usize = 64 * 1024;

/// Zero bytes after every copy: more than the largest MADT entry structure
/// the crate may read at the end of a table (the GICC, 82 bytes).
const SLACK: usize = 256;

/// Copies `buf.len()` bytes of physical memory from `phys`; says whether it
/// could.
type Reader<'a> = &'a dyn Fn(u64, &mut [u8]) -> bool;

/// The [`AcpiHandler`]: "maps" a region by copying it (see the module
/// documentation).
#[derive(Clone, Copy)]
struct Copier<'a> {
    read: Reader<'a>,
    /// The first region that could not be used, to explain an error.
    failure: &'a Cell<Option<AcpiError>>,
}

impl Copier<'_> {
    fn fail(&self, e: AcpiError) {
        if self.failure.get().is_none() {
            self.failure.set(Some(e));
        }
    }

    /// The error to report when the crate refuses: what the handler met
    /// first, if anything (an unreadable table shows to the crate as zeros,
    /// so as a wrong signature).
    fn explain(&self, e: &acpi::AcpiError) -> AcpiError {
        self.failure
            .take()
            .unwrap_or_else(|| AcpiError::from_crate(e))
    }

    /// Copy `len` bytes from `phys` (zeros, with the failure recorded, if
    /// they cannot be read or are a table header whose length is shorter
    /// than the header).
    fn copy(&self, phys: usize, len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        if !(self.read)(phys as u64, &mut bytes) {
            self.fail(AcpiError::Unreadable(phys as u64));
            bytes.fill(0);
        } else if len == size_of::<SdtHeader>() && bytes[..8] != *b"RSD PTR " {
            // A header (the only 36-byte regions the crate asks for besides
            // the RSDP). Its length field, bytes 4..8, must cover it.
            let length = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            if (length as usize) < size_of::<SdtHeader>() {
                self.fail(AcpiError::Malformed("table length"));
                bytes.fill(0);
            }
        }
        bytes
    }
}

/// How many words hold a copy of `len` bytes and the slack after it.
fn words_for(len: usize) -> usize {
    (len + SLACK).div_ceil(8)
}

impl AcpiHandler for Copier<'_> {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        debug_assert!(align_of::<T>() <= align_of::<u64>());
        let mut len = size.max(size_of::<T>());
        let bytes = if len > MAX_TABLE {
            self.fail(AcpiError::Malformed("table length"));
            len = size_of::<T>();
            vec![0u8; len]
        } else {
            self.copy(physical_address, len)
        };
        // Words, for alignment; little-endian, so the bytes keep their order.
        let mut words = vec![0u64; words_for(len)].into_boxed_slice();
        for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            *word = u64::from_le_bytes(b);
        }
        let start = NonNull::new(Box::into_raw(words).cast::<T>()).expect("a Box is never null");
        // SAFETY: `start` is the start of `words_for(len)` words (at least
        // `len + SLACK` bytes, `len >= size_of::<T>()`) that this handler
        // allocated and initialised, aligned for `T`; they stay allocated
        // until `unmap_physical_region` gets this mapping. `mapped_length`
        // is the number of bytes actually copied, so the crate reuses a
        // mapping for a longer table only when the copy covers it.
        unsafe { PhysicalMapping::new(physical_address, start, len, len, *self) }
    }

    fn unmap_physical_region<T>(region: &PhysicalMapping<Self, T>) {
        let words = core::ptr::slice_from_raw_parts_mut(
            region.virtual_start().as_ptr().cast::<u64>(),
            words_for(region.mapped_length()),
        );
        // SAFETY: `map_physical_region` made this pointer with
        // `Box::into_raw` of `words_for(mapped_length)` words; the crate
        // keeps `mapped_length` when it re-types a mapping (and then lets
        // only the new one unmap), and unmaps each mapping once.
        drop(unsafe { Box::from_raw(words) });
    }
}

/// Follow the RSDP at `rsdp` to the MADT and parse it. `read(phys, buf)`
/// copies physical memory and says whether it could.
pub fn discover(rsdp: u64, read: impl Fn(u64, &mut [u8]) -> bool) -> Result<Topology, AcpiError> {
    let failure = Cell::new(None);
    let handler = Copier {
        read: &read,
        failure: &failure,
    };
    let rsdp_failed = |e: AcpiError| match e {
        AcpiError::Unreadable(_) => e,
        _ => AcpiError::Malformed("RSDP"),
    };
    // SAFETY: the handler reads physical memory only through `read` and
    // gives the crate its own copies, whatever the address.
    let mut r = unsafe { handler.map_physical_region::<Rsdp>(rsdp as usize, size_of::<Rsdp>()) };
    if let Some(e) = failure.take() {
        return Err(rsdp_failed(e));
    }
    let revision = r.revision();
    // From ACPI 2.0 on the crate checksums `length` bytes: copy them all.
    if revision > 0 && r.length() as usize > size_of::<Rsdp>() {
        let length = r.length() as usize;
        // SAFETY: as above.
        r = unsafe { handler.map_physical_region::<Rsdp>(rsdp as usize, length) };
        if let Some(e) = failure.take() {
            return Err(rsdp_failed(e));
        }
    }
    r.validate().map_err(|_| AcpiError::Malformed("RSDP"))?;
    // The XSDT from ACPI 2.0 on if there is one, else the RSDT.
    let (revision, root) = if revision >= 2 && r.xsdt_address() != 0 {
        (revision, r.xsdt_address())
    } else {
        (0, u64::from(r.rsdt_address()))
    };
    drop(r);
    // SAFETY: as above.
    let tables = unsafe { AcpiTables::from_rsdt(handler, revision, root as usize) }
        .map_err(|e| handler.explain(&e))?;
    let madt = tables
        .find_table::<Madt>()
        .map_err(|e| handler.explain(&e))?;
    topology(&madt)
}

/// Check the MADT's entry lengths, then read it through the crate.
fn topology(madt: &PhysicalMapping<Copier<'_>, Madt>) -> Result<Topology, AcpiError> {
    // SAFETY: the handler's copy of the MADT holds at least `region_length`
    // initialised bytes from `virtual_start`, alive as long as `madt`.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            madt.virtual_start().as_ptr().cast::<u8>(),
            madt.region_length(),
        )
    };
    let length = madt.get().header.length as usize;
    if length < size_of::<Madt>() || length > bytes.len() {
        return Err(AcpiError::Malformed("MADT length"));
    }
    let mut at = size_of::<Madt>();
    while at < length {
        let kind = bytes[at];
        let len = bytes.get(at + 1).map_or(0, |&l| usize::from(l));
        let needed = match kind {
            1 => size_of::<IoApicEntry>(),
            2 => size_of::<InterruptSourceOverrideEntry>(),
            4 => size_of::<LocalApicNmiEntry>(),
            _ => size_of::<EntryHeader>(),
        };
        if len < needed || at + len > length {
            return Err(AcpiError::Malformed("MADT entry length"));
        }
        at += len;
    }

    let mut topo = Topology {
        ioapic: 0,
        gsi_base: 0,
        overrides: [None; 16],
        nmi_lint: None,
    };
    let mut found_ioapic = false;
    for entry in madt.get().entries() {
        match entry {
            // The I/O APIC with the lowest GSI base serves the ISA lines.
            MadtEntry::IoApic(e) => {
                let (address, base) = (e.io_apic_address, e.global_system_interrupt_base);
                if !found_ioapic || base < topo.gsi_base {
                    topo.ioapic = u64::from(address);
                    topo.gsi_base = base;
                    found_ioapic = true;
                }
            }
            // Bus 0 is ISA.
            MadtEntry::InterruptSourceOverride(e) => {
                let (bus, irq) = (e.bus, usize::from(e.irq));
                let (gsi, flags) = (e.global_system_interrupt, e.flags);
                if bus == 0 && irq < topo.overrides.len() {
                    topo.overrides[irq] = Some((gsi, flags));
                }
            }
            // Local APIC NMI, for all processors (0xFF) or processor 0.
            MadtEntry::LocalApicNmi(e) if e.processor_id == 0xFF || e.processor_id == 0 => {
                topo.nmi_lint = Some(e.nmi_line & 1);
            }
            _ => {}
        }
    }
    if !found_ioapic {
        return Err(AcpiError::Missing("I/O APIC in the MADT"));
    }
    Ok(topo)
}

#[cfg(test)]
mod tests {
    //! On the tables QEMU 7.2 gives this system (captured with the
    //! monitor's `pmemsave` after boot, `-m 256`; see `tests/data/README.md`).

    use super::*;

    const MICROVM_RSDP: u64 = 0xF34D0;
    const MICROVM_TABLES: u64 = 0xEFD00;
    const Q35_RSDP: u64 = 0xF59E0;
    const Q35_TABLES: u64 = 0xFFE_0000;

    /// Where each table of the captures is: (offset in the tables file,
    /// signature).
    const MICROVM_LAYOUT: &[(usize, &[u8; 4])] = &[
        (0x000, b"DSDT"),
        (0x150, b"FACP"),
        (0x25C, b"APIC"),
        (0x2AE, b"XSDT"),
    ];
    const Q35_LAYOUT: &[(usize, &[u8; 4])] = &[
        (0x0000, b"FACS"),
        (0x0040, b"DSDT"),
        (0x20D9, b"FACP"),
        (0x21CD, b"APIC"),
        (0x2245, b"HPET"),
        (0x227D, b"MCFG"),
        (0x22B9, b"WAET"),
        (0x22E1, b"RSDT"),
    ];

    /// Physical memory: readable regions, anything else unreadable (as
    /// outside the manifest's grants).
    #[derive(Clone)]
    struct Memory(Vec<(u64, Vec<u8>)>);

    impl Memory {
        fn read(&self, phys: u64, out: &mut [u8]) -> bool {
            for (base, bytes) in &self.0 {
                if phys >= *base && phys - base + out.len() as u64 <= bytes.len() as u64 {
                    let at = (phys - base) as usize;
                    out.copy_from_slice(&bytes[at..at + out.len()]);
                    return true;
                }
            }
            false
        }

        fn discover(&self, rsdp: u64) -> Result<Topology, AcpiError> {
            discover(rsdp, |phys, buf| self.read(phys, buf))
        }

        /// The bytes of region `i`.
        fn region(&mut self, i: usize) -> &mut Vec<u8> {
            &mut self.0[i].1
        }
    }

    /// microvm, as the server sees it: the manifest's BIOS-area window
    /// 0xE0000..0x100000, holding the RSDP and every table.
    fn microvm() -> Memory {
        let mut window = vec![0u8; 0x20000];
        let rsdp = include_bytes!("../tests/data/microvm-rsdp-f34d0.bin");
        let tables = include_bytes!("../tests/data/microvm-tables-efd00.bin");
        let at = (MICROVM_RSDP - 0xE0000) as usize;
        window[at..at + rsdp.len()].copy_from_slice(rsdp);
        let at = (MICROVM_TABLES - 0xE0000) as usize;
        window[at..at + tables.len()].copy_from_slice(tables);
        Memory(vec![(0xE0000, window)])
    }

    /// q35 with its tables readable: region 0 the RSDP, region 1 the
    /// tables.
    fn q35() -> Memory {
        Memory(vec![
            (
                Q35_RSDP,
                include_bytes!("../tests/data/q35-rsdp-f59e0.bin").to_vec(),
            ),
            (
                Q35_TABLES,
                include_bytes!("../tests/data/q35-tables-ffe0000.bin").to_vec(),
            ),
        ])
    }

    /// The microvm tables file inside the window.
    fn microvm_tables(m: &mut Memory) -> &mut [u8] {
        let at = (MICROVM_TABLES - 0xE0000) as usize;
        let len = include_bytes!("../tests/data/microvm-tables-efd00.bin").len();
        &mut m.region(0)[at..at + len]
    }

    fn table_len(t: &[u8]) -> usize {
        u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize
    }

    /// Make the checksum of the table at the start of `t` right again.
    fn fix_checksum(t: &mut [u8]) {
        let len = table_len(t).min(t.len());
        t[9] = 0;
        let sum = t[..len].iter().fold(0u8, |s, &b| s.wrapping_add(b));
        t[9] = sum.wrapping_neg();
    }

    fn fix_rsdp(r: &mut [u8]) {
        r[8] = 0;
        r[8] = r[..20]
            .iter()
            .fold(0u8, |s, &b| s.wrapping_add(b))
            .wrapping_neg();
        r[32] = 0;
        r[32] = r[..36]
            .iter()
            .fold(0u8, |s, &b| s.wrapping_add(b))
            .wrapping_neg();
    }

    #[test]
    fn the_captures_hold_the_tables_where_the_tests_expect() {
        let mut m = microvm();
        let t = microvm_tables(&mut m);
        for &(at, sig) in MICROVM_LAYOUT {
            assert_eq!(&t[at..at + 4], sig);
        }
        let mut m = q35();
        let t = m.region(1);
        for &(at, sig) in Q35_LAYOUT {
            assert_eq!(&t[at..at + 4], sig);
        }
    }

    #[test]
    fn microvm_one_ioapic_at_gsi_0_no_override() {
        let t = microvm().discover(MICROVM_RSDP).expect("microvm's tables");
        // microvm has a second I/O APIC, 0xFEC10000 from GSI 24: the one
        // from GSI 0 serves the ISA lines.
        assert_eq!(
            t,
            Topology {
                ioapic: 0xFEC0_0000,
                gsi_base: 0,
                overrides: [None; 16],
                nmi_lint: Some(1),
            }
        );
    }

    #[test]
    fn q35_pit_on_gsi_2_and_level_pci_lines() {
        let t = q35().discover(Q35_RSDP).expect("q35's tables");
        assert_eq!(t.ioapic, 0xFEC0_0000);
        assert_eq!(t.gsi_base, 0);
        assert_eq!(t.nmi_lint, Some(1));
        let mut expected = [None; 16];
        expected[0] = Some((2, 0));
        // Active high, level triggered.
        for irq in [5, 9, 10, 11] {
            expected[irq] = Some((irq as u32, 0xD));
        }
        assert_eq!(t.overrides, expected);
        assert_eq!(t.overrides.iter().flatten().count(), 5);
    }

    #[test]
    fn q35_tables_outside_the_grants_are_unreadable() {
        // What the server meets on q35: the RSDP is in the BIOS window, the
        // RSDT in high RAM outside every grant.
        let mut m = q35();
        m.0.truncate(1);
        let e = m.discover(Q35_RSDP).unwrap_err();
        assert_eq!(e, AcpiError::Unreadable(0xFFE_22E1));
        assert_eq!(e.to_string(), "cannot read physical memory at 0xffe22e1");
    }

    #[test]
    fn no_rsdp_at_the_address() {
        assert_eq!(
            microvm().discover(0xE0000),
            Err(AcpiError::Malformed("RSDP"))
        );
        assert_eq!(
            microvm().discover(0x1000),
            Err(AcpiError::Unreadable(0x1000))
        );
        // The last RSDP-sized place in the window, and one past it.
        assert_eq!(
            microvm().discover(0x100000 - 36),
            Err(AcpiError::Malformed("RSDP"))
        );
        assert_eq!(
            microvm().discover(0x100000 - 35),
            Err(AcpiError::Unreadable(0x100000 - 35))
        );
    }

    #[test]
    fn bad_checksums_are_refused() {
        // RSDP.
        let mut m = microvm();
        let at = (MICROVM_RSDP - 0xE0000) as usize;
        m.region(0)[at + 8] ^= 1;
        assert_eq!(m.discover(MICROVM_RSDP), Err(AcpiError::Malformed("RSDP")));
        // The RSDP's extended checksum (ACPI 2.0).
        let mut m = microvm();
        m.region(0)[at + 32] ^= 1;
        assert_eq!(m.discover(MICROVM_RSDP), Err(AcpiError::Malformed("RSDP")));
        // XSDT.
        let mut m = microvm();
        microvm_tables(&mut m)[0x2AE + 9] ^= 1;
        assert_eq!(
            m.discover(MICROVM_RSDP),
            Err(AcpiError::Malformed("table checksum"))
        );
        // RSDT.
        let mut m = q35();
        m.region(1)[0x22E1 + 9] ^= 1;
        assert_eq!(
            m.discover(Q35_RSDP),
            Err(AcpiError::Malformed("table checksum"))
        );
        // MADT: the crate passes over a table that fails its checks.
        let mut m = microvm();
        microvm_tables(&mut m)[0x25C + 20] ^= 1;
        assert_eq!(
            m.discover(MICROVM_RSDP),
            Err(AcpiError::Missing("MADT with a valid header and checksum"))
        );
    }

    #[test]
    fn truncated_tables_are_refused() {
        // The MADT's end cut off: the bytes past 0xFFE2200 are not there.
        let mut m = q35();
        let tables = m.region(1).clone();
        m.0[1].1 = tables[..0x2200].to_vec();
        m.0.push((Q35_TABLES + 0x2245, tables[0x2245..].to_vec()));
        assert_eq!(
            m.discover(Q35_RSDP),
            Err(AcpiError::Unreadable(Q35_TABLES + 0x21CD))
        );
        // A MADT whose length says more than memory holds.
        let mut m = q35();
        m.region(1)[0x21CD + 4..0x21CD + 8].copy_from_slice(&0x1000u32.to_le_bytes());
        assert_eq!(
            m.discover(Q35_RSDP),
            Err(AcpiError::Unreadable(Q35_TABLES + 0x21CD))
        );
        // Or more than any table is.
        let mut m = microvm();
        let madt = &mut microvm_tables(&mut m)[0x25C..];
        madt[4..8].copy_from_slice(&0x2_0000u32.to_le_bytes());
        assert_eq!(
            m.discover(MICROVM_RSDP),
            Err(AcpiError::Malformed("table length"))
        );
        // Lengths shorter than a header, with the checksum made right.
        for len in [0u32, 1, 35] {
            let mut m = microvm();
            let madt = &mut microvm_tables(&mut m)[0x25C..];
            madt[4..8].copy_from_slice(&len.to_le_bytes());
            fix_checksum(madt);
            assert_eq!(
                m.discover(MICROVM_RSDP),
                Err(AcpiError::Malformed("table length")),
                "MADT length {len}"
            );
            let mut m = microvm();
            let xsdt = &mut microvm_tables(&mut m)[0x2AE..];
            xsdt[4..8].copy_from_slice(&len.to_le_bytes());
            fix_checksum(xsdt);
            assert_eq!(
                m.discover(MICROVM_RSDP),
                Err(AcpiError::Malformed("table length")),
                "XSDT length {len}"
            );
        }
        // A MADT as long as its header, without the local APIC address
        // and flags that follow.
        for len in [36u32, 40, 43] {
            let mut m = microvm();
            let madt = &mut microvm_tables(&mut m)[0x25C..];
            madt[4..8].copy_from_slice(&len.to_le_bytes());
            fix_checksum(madt);
            assert_eq!(
                m.discover(MICROVM_RSDP),
                Err(AcpiError::Malformed("MADT length")),
                "MADT length {len}"
            );
        }
        // An RSDP that says it is 4 GiB long.
        let mut m = microvm();
        let at = (MICROVM_RSDP - 0xE0000) as usize;
        let r = &mut m.region(0)[at..at + 36];
        r[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        fix_rsdp(r);
        assert_eq!(m.discover(MICROVM_RSDP), Err(AcpiError::Malformed("RSDP")));
    }

    #[test]
    fn bad_madt_entries_are_refused() {
        // microvm's MADT entries, from offset 44: local APIC (8 bytes) at
        // 44, I/O APICs (12) at 52 and 64, local APIC NMI (6) at 76.
        for (at, len) in [(44, 0u8), (52, 0), (52, 11), (64, 13), (76, 7), (76, 5)] {
            let mut m = microvm();
            let madt = &mut microvm_tables(&mut m)[0x25C..0x25C + 82];
            madt[at + 1] = len;
            fix_checksum(madt);
            assert_eq!(
                m.discover(MICROVM_RSDP),
                Err(AcpiError::Malformed("MADT entry length")),
                "entry at {at} of length {len}"
            );
        }
        // No I/O APIC: both made local APICs.
        let mut m = microvm();
        let madt = &mut microvm_tables(&mut m)[0x25C..0x25C + 82];
        madt[52] = 0;
        madt[64] = 0;
        fix_checksum(madt);
        assert_eq!(
            m.discover(MICROVM_RSDP),
            Err(AcpiError::Missing("I/O APIC in the MADT"))
        );
    }

    /// Which table of `layout` holds byte `at` of a tables file.
    fn table_at(layout: &[(usize, &[u8; 4])], tables: &[u8], at: usize) -> Option<usize> {
        layout
            .iter()
            .map(|&(start, _)| start)
            .find(|&start| at >= start && at < start + table_len(&tables[start..]))
    }

    /// Change every byte of the RSDP and the tables in turn, with and
    /// without the checksum made right after: never a panic, and a result
    /// each time.
    fn mutate_everything(
        base: Memory,
        rsdp: u64,
        rsdp_at: (usize, usize),
        tables_at: (usize, usize),
        layout: &[(usize, &[u8; 4])],
    ) -> usize {
        let mut accepted = 0;
        let (ri, ro) = rsdp_at;
        let (ti, to) = tables_at;
        let tables_len = table_len_sum(&base, ti, to, layout);
        let mut runs = 0;
        for fix in [false, true] {
            for at in 0..36 {
                for value in [
                    0x00,
                    0xFF,
                    base.0[ri].1[ro + at] ^ 0x01,
                    base.0[ri].1[ro + at] ^ 0x80,
                ] {
                    let mut m = base.clone();
                    let r = &mut m.region(ri)[ro..ro + 36];
                    r[at] = value;
                    if fix {
                        fix_rsdp(r);
                    }
                    accepted += usize::from(m.discover(rsdp).is_ok());
                    runs += 1;
                }
            }
            for at in 0..tables_len {
                let original = base.0[ti].1[to + at];
                for value in [0x00, 0xFF, original ^ 0x01, original ^ 0x80] {
                    let mut m = base.clone();
                    let t = &mut m.region(ti)[to..to + tables_len];
                    let table = table_at(layout, t, at);
                    t[at] = value;
                    if let (true, Some(start)) = (fix, table) {
                        fix_checksum(&mut t[start..]);
                    }
                    accepted += usize::from(m.discover(rsdp).is_ok());
                    runs += 1;
                }
            }
        }
        assert!(runs > 0);
        accepted
    }

    fn table_len_sum(m: &Memory, i: usize, at: usize, layout: &[(usize, &[u8; 4])]) -> usize {
        let t = &m.0[i].1[at..];
        layout
            .iter()
            .map(|&(start, _)| start + table_len(&t[start..]))
            .max()
            .unwrap()
    }

    #[test]
    fn any_single_byte_change_is_an_answer_not_a_panic() {
        let microvm_accepted = mutate_everything(
            microvm(),
            MICROVM_RSDP,
            (0, (MICROVM_RSDP - 0xE0000) as usize),
            (0, (MICROVM_TABLES - 0xE0000) as usize),
            MICROVM_LAYOUT,
        );
        // Changes to bytes the parse never reads (the DSDT, the FADT's
        // body, OEM fields with a fixed checksum) are accepted.
        assert!(microvm_accepted > 0);
        // On q35 the DSDT is most of the bytes and is never read: change
        // the RSDP and everything from the FADT on.
        let mut q = q35();
        let tail = q.region(1).split_off(0x20D9);
        q.0[1] = (Q35_TABLES + 0x20D9, tail);
        let layout: Vec<(usize, &[u8; 4])> = Q35_LAYOUT
            .iter()
            .filter(|&&(at, _)| at >= 0x20D9)
            .map(|&(at, sig)| (at - 0x20D9, sig))
            .collect();
        let q35_accepted = mutate_everything(q, Q35_RSDP, (0, 0), (1, 0), &layout);
        assert!(q35_accepted > 0);
    }

    #[test]
    fn any_truncation_is_an_answer_not_a_panic() {
        let full = include_bytes!("../tests/data/microvm-tables-efd00.bin");
        for keep in 0..full.len() {
            let m = Memory(vec![
                (
                    MICROVM_RSDP,
                    include_bytes!("../tests/data/microvm-rsdp-f34d0.bin").to_vec(),
                ),
                (MICROVM_TABLES, full[..keep].to_vec()),
            ]);
            assert!(m.discover(MICROVM_RSDP).is_err(), "{keep} bytes kept");
        }
    }
}
