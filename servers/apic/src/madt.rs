//! Finding the I/O APIC and the ISA interrupt overrides in the firmware's
//! ACPI tables (RSDP, then RSDT or XSDT, then the MADT, signature "APIC").
//!
//! Pure parsing over bytes that a reader copies out of physical memory:
//! every length and offset is checked, so broken tables are an error, never
//! a panic.
//!
//! Context: the apic server at start.

use alloc::vec;
use alloc::vec::Vec;

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
            ioapic: 0xFEC0_0000,
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

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

fn checksum_ok(b: &[u8]) -> bool {
    b.iter().fold(0u8, |s, &x| s.wrapping_add(x)) == 0
}

/// The longest table this parser reads.
const MAX_TABLE: u32 = 64 * 1024;

/// Read one system description table (header + body) at `phys`.
fn read_table(
    phys: u64,
    read: &mut impl FnMut(u64, &mut [u8]) -> bool,
) -> Result<Vec<u8>, AcpiError> {
    let mut header = [0u8; 36];
    if !read(phys, &mut header) {
        return Err(AcpiError::Unreadable(phys));
    }
    let len = u32_at(&header, 4).unwrap_or(0);
    if !(36..=MAX_TABLE).contains(&len) {
        return Err(AcpiError::Malformed("table length"));
    }
    let mut table = vec![0u8; len as usize];
    if !read(phys, &mut table) {
        return Err(AcpiError::Unreadable(phys));
    }
    if !checksum_ok(&table) {
        return Err(AcpiError::Malformed("table checksum"));
    }
    Ok(table)
}

/// Follow the RSDP at `rsdp` to the MADT and parse it. `read(phys, buf)`
/// copies physical memory and says whether it could.
pub fn discover(
    rsdp: u64,
    mut read: impl FnMut(u64, &mut [u8]) -> bool,
) -> Result<Topology, AcpiError> {
    let mut r = [0u8; 36];
    if !read(rsdp, &mut r[..20]) {
        return Err(AcpiError::Unreadable(rsdp));
    }
    if &r[..8] != b"RSD PTR " || !checksum_ok(&r[..20]) {
        return Err(AcpiError::Malformed("RSDP"));
    }
    let revision = r[15];
    let (root, entry_size) = if revision >= 2 {
        if !read(rsdp, &mut r) {
            return Err(AcpiError::Unreadable(rsdp));
        }
        match u64_at(&r, 24) {
            Some(x) if x != 0 => (x, 8),
            _ => (u64::from(u32_at(&r, 16).unwrap_or(0)), 4),
        }
    } else {
        (u64::from(u32_at(&r, 16).unwrap_or(0)), 4)
    };
    let root_table = read_table(root, &mut read)?;
    let sig: &[u8] = if entry_size == 8 { b"XSDT" } else { b"RSDT" };
    if &root_table[..4] != sig {
        return Err(AcpiError::Malformed("RSDT/XSDT signature"));
    }
    let mut at = 36;
    while at + entry_size <= root_table.len() {
        let phys = if entry_size == 8 {
            u64_at(&root_table, at)
        } else {
            u32_at(&root_table, at).map(u64::from)
        }
        .unwrap_or(0);
        at += entry_size;
        let mut sig = [0u8; 4];
        if phys == 0 || !read(phys, &mut sig) {
            continue;
        }
        if &sig == b"APIC" {
            return parse_madt(&read_table(phys, &mut read)?);
        }
    }
    Err(AcpiError::Missing("MADT"))
}

/// Parse a whole MADT (header included).
pub fn parse_madt(madt: &[u8]) -> Result<Topology, AcpiError> {
    if madt.get(..4) != Some(b"APIC") {
        return Err(AcpiError::Malformed("MADT signature"));
    }
    let mut topo = Topology {
        ioapic: 0,
        gsi_base: 0,
        overrides: [None; 16],
        nmi_lint: None,
    };
    let mut found_ioapic = false;
    let mut at = 44;
    while at + 2 <= madt.len() {
        let kind = madt[at];
        let len = usize::from(madt[at + 1]);
        if len < 2 || at + len > madt.len() {
            return Err(AcpiError::Malformed("MADT entry length"));
        }
        let e = &madt[at..at + len];
        match kind {
            // I/O APIC: the one with the lowest GSI base serves the ISA lines.
            1 if len >= 12 => {
                let addr = u64::from(u32_at(e, 4).unwrap_or(0));
                let base = u32_at(e, 8).unwrap_or(0);
                if !found_ioapic || base < topo.gsi_base {
                    topo.ioapic = addr;
                    topo.gsi_base = base;
                    found_ioapic = true;
                }
            }
            // Interrupt source override (bus 0 = ISA).
            2 if len >= 10 => {
                let (bus, source) = (e[2], e[3]);
                let gsi = u32_at(e, 4).unwrap_or(0);
                let flags = u16_at(e, 8).unwrap_or(0);
                if bus == 0 && usize::from(source) < topo.overrides.len() {
                    topo.overrides[usize::from(source)] = Some((gsi, flags));
                }
            }
            // Local APIC NMI, for all processors (0xFF) or processor 0.
            4 if len >= 6 && (e[2] == 0xFF || e[2] == 0) => {
                topo.nmi_lint = Some(e[5] & 1);
            }
            _ => {}
        }
        at += len;
    }
    if !found_ioapic {
        return Err(AcpiError::Missing("I/O APIC in the MADT"));
    }
    Ok(topo)
}
