//! The boot manifest in its binary form: which servers boot, in order, what
//! each may touch (I/O port ranges, MMIO regions, IRQ lines), and the
//! channels between them. The kernel grants exactly this and nothing else.
//!
//! `cargo xtask build` reads the TOML manifest, checks it and encodes it with
//! [`encode`]; the kernel finds it in the initrd (`manifest`, or
//! `manifests/NAME` when booted with `test=NAME`) and decodes it with
//! [`Manifest::decode`]. Both use this module, so the format is defined once.
//!
//! Context: any. No allocation to decode or encode ([`to_vec`] needs the
//! `alloc` feature). The kernel must not trust the initrd, so [`Manifest::decode`]
//! validates every field before anything can be read, and never panics:
//! bad input is a [`ManifestError`].
//!
//! # Wire format (version 2, all integers little-endian)
//!
//! ```text
//! header (32 bytes)
//!    0  magic "PVMF"              u32
//!    4  version (2)               u32
//!    8  server count (1..=32)     u32
//!   12  channel count (0..=64)    u32
//!   16  server record size (336)  u32
//!   20  channel record size (32)  u32
//!   24  reserved, zero            [u8; 8]
//! server records, in boot order (336 bytes each)
//!    0  name                      [u8; 16]  [a-z0-9-], NUL padded
//!   16  bin (initrd `servers/BIN`) [u8; 16] [a-z0-9_-], NUL padded
//!   32  port range count (0..=16) u32
//!   36  MMIO region count (0..=8) u32
//!   40  IRQ lines, bit n = line n u32       lines 0..=23
//!   44  ring slots                u32       of the channels it provides
//!   48  port ranges               [(first u32, count u32); 16]
//!  176  MMIO regions              [(base u64, size u64); 8]
//!  304  restart policy            u32       0 never, 1 on-fault, 2 always
//!  308  restart limit             u32       restarts within the period
//!  312  restart period, ms        u32       1..
//!  316  flags                     u32       FLAG_* (bit 0: inject_faults)
//!  320  CPUs, bit n = CPU n       u64       0 = unspecified (the kernel
//!                                           places it); CPUs 0..=63
//!  328  reserved, zero            [u8; 8]
//! channel records (32 bytes each)
//!    0  service                   [u8; 16]  [a-z0-9-], NUL padded
//!   16  provider server index     u32
//!   20  client server index       u32
//!   24  ring slots                u32       the provider's
//!   28  reserved, zero            u32
//! ```
//!
//! Unused port and MMIO entries, padding after a name's NUL and reserved
//! fields are zero. The buffer is exactly as long as the counts say.
//!
//! The header and the records are the `#[repr(C)]` structs of `wire.rs`,
//! whose sizes and offsets are checked against this table when the crate
//! builds; the decoder copies a record out of the bytes, checks it, and
//! only then reads it.
//!
//! Version 1 had 320-byte server records, without the CPU mask; it is
//! refused ([`ManifestError::BadVersion`]): an initrd that old must be
//! built again (`cargo xtask build`).
//!
//! # Channels and handles
//!
//! Each `uses` entry of the TOML manifest is one channel (provider, client,
//! service); xtask writes them in server order, and within a server in its
//! `uses` order. A server's channel **handles** are numbered from 0:
//!
//! 1. one per channel on which it is the client, in channel order (which is
//!    its manifest `uses` order);
//! 2. then one per channel on which it is the provider, in channel order.
//!
//! [`Manifest::handles`] lists them in that order and [`Manifest::handle`]
//! looks one up; the kernel and the runtime use only these, so they cannot
//! disagree. Channel `i` (its index in [`Manifest::channels`]) is the
//! system-wide index of `abi::layout::CHANNELS_BASE`.
//!
//! # Grant rules
//!
//! What a server may be granted is decided here, once, and applied twice:
//! by xtask to every TOML manifest, and by the kernel to every server
//! before it starts it (a refused server is reported by name and left out).
//! [`check_port_grant`]: at most [`MAX_PORT_GRANT`] ports, none of
//! [`RESERVED_PORTS`]. [`check_mmio_grant`]: whole pages below
//! [`MMIO_GRANT_LIMIT`], over no RAM: xtask passes [`STATIC_RAM`], the
//! kernel its boot memory map, its image and the initrd.
//! [`Server::check_grants`] applies both to a server record. [`encode`] and
//! [`Manifest::decode`] check only what the format can hold
//! ([`check_port_range`], [`check_mmio_region`]), so a test can still build
//! a manifest that the kernel's own check must refuse.
#![no_std]

#[cfg(any(test, feature = "alloc"))]
extern crate alloc;
#[cfg(test)]
extern crate std;

mod wire;

use core::fmt;
use core::mem::{offset_of, size_of_val};

use abi::{MAX_NOTIFY_BITS, NAME_LEN};
use wire::{ChannelRecord, Header, ServerRecord, check_zero};
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// `"PVMF"` read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"PVMF");
/// The format version this crate writes and accepts (2: server records
/// grew to 336 bytes for the CPU mask; version 1 is refused).
pub const VERSION: u32 = 2;
/// Most servers in one manifest.
pub const MAX_SERVERS: usize = 32;
/// Most channels in one manifest.
pub const MAX_CHANNELS: usize = 64;
/// Most I/O port ranges one server may hold.
pub const MAX_PORT_RANGES: usize = 16;
/// Most MMIO regions one server may hold.
pub const MAX_MMIO_REGIONS: usize = 8;
pub use abi::MAX_IRQ;
/// Every valid bit of an IRQ mask.
pub const IRQ_LINES_MASK: u32 = (1 << (MAX_IRQ as u32 + 1)) - 1;
/// One past the last I/O port.
pub const PORT_LIMIT: u32 = 0x1_0000;
/// MMIO regions are whole pages.
pub const MMIO_ALIGN: u64 = abi::layout::PAGE_SIZE;
/// MMIO regions end at or below the architectural physical-address limit.
pub const MMIO_LIMIT: u64 = 1 << 52;
/// Ring slots per channel: a power of two in `MIN_RING_SLOTS..=MAX_RING_SLOTS`.
pub const MIN_RING_SLOTS: u32 = 8;
pub const MAX_RING_SLOTS: u32 = 4096;
/// Ring slots when the manifest does not say.
pub const DEFAULT_RING_SLOTS: u32 = 256;
/// CPUs a manifest can name: `cpus` is a 64-bit mask, CPUs `0..MAX_CPUS`.
pub const MAX_CPUS: u32 = 64;

/// Size of the header.
pub const HEADER_LEN: usize = 32;
/// Size of one server record.
pub const SERVER_RECORD_LEN: usize = 336;
/// Size of one channel record.
pub const CHANNEL_RECORD_LEN: usize = 32;
/// The largest valid manifest, in bytes.
pub const MAX_ENCODED_LEN: usize = encoded_len(MAX_SERVERS, MAX_CHANNELS);

const _: () = {
    // Every CPU of the mask is one bit of its u64.
    assert!(MAX_CPUS == u64::BITS);
    // Every handle and IRQ of one server must fit its notification bits.
    assert!(MAX_NOTIFY_BITS as usize <= 64);
};

/// The length of a manifest with these counts.
pub const fn encoded_len(servers: usize, channels: usize) -> usize {
    HEADER_LEN + servers * SERVER_RECORD_LEN + channels * CHANNEL_RECORD_LEN
}

/// What the kernel does when a server ends: the supervision policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u32)]
pub enum Restart {
    /// It stays down (its peers see `PeerDead`).
    #[default]
    Never = 0,
    /// It is started again, in a fresh address space, when it ends
    /// abnormally: a fault, or an `exit` with a non-zero code. `exit(0)` is
    /// final.
    OnFault = 1,
    /// It is started again whenever it ends, faulted or exited.
    Always = 2,
}

impl Restart {
    /// The manifest's spelling.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::OnFault => "on-fault",
            Self::Always => "always",
        }
    }

    /// Parse the manifest's spelling.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Never, Self::OnFault, Self::Always]
            .into_iter()
            .find(|r| r.name() == name)
    }

    const fn from_wire(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Self::Never),
            1 => Some(Self::OnFault),
            2 => Some(Self::Always),
            _ => None,
        }
    }
}

/// Restarts allowed within [`DEFAULT_RESTART_PERIOD_MS`] when the manifest
/// does not say: a server that faults more often than this is left down,
/// as an OTP supervisor gives up past its intensity.
pub const DEFAULT_RESTART_LIMIT: u32 = 5;
/// The window of the restart limit, in ms, when the manifest does not say.
pub const DEFAULT_RESTART_PERIOD_MS: u32 = 10_000;
/// Server flag: the server may make others fault (`inject_fault`).
pub const FLAG_INJECT_FAULTS: u32 = 1 << 0;
/// Every server flag this version knows.
const KNOWN_SERVER_FLAGS: u32 = FLAG_INJECT_FAULTS;

/// Is `slots` a valid ring size?
pub const fn ring_slots_ok(slots: u32) -> bool {
    slots.is_power_of_two() && slots >= MIN_RING_SLOTS && slots <= MAX_RING_SLOTS
}

/// A validated name: 1..=16 bytes, NUL padded to [`NAME_LEN`]. Server and
/// service names are `[a-z0-9-]`; bin names may also hold `_`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Name([u8; NAME_LEN]);

impl Name {
    /// A server or service name, if `name` is one.
    pub fn new(name: &str) -> Option<Self> {
        Self::with_charset(name.as_bytes(), false)
    }

    /// A bin name (the initrd file `servers/BIN`), if `name` is one.
    pub fn bin(name: &str) -> Option<Self> {
        Self::with_charset(name.as_bytes(), true)
    }

    fn with_charset(name: &[u8], underscore: bool) -> Option<Self> {
        if name.is_empty() || name.len() > NAME_LEN {
            return None;
        }
        let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
        if !name.iter().all(|&b| ok(b) || (underscore && b == b'_')) {
            return None;
        }
        let mut bytes = [0; NAME_LEN];
        bytes[..name.len()].copy_from_slice(name);
        Some(Self(bytes))
    }

    /// Decode a NUL-padded wire name.
    fn from_wire(wire: [u8; NAME_LEN], underscore: bool) -> Option<Self> {
        let len = wire.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
        let (name, pad) = wire.split_at(len);
        if pad.iter().any(|&b| b != 0) {
            return None;
        }
        Self::with_charset(name, underscore)
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        abi::name_str(&self.0)
    }

    /// The NUL-padded bytes (as in `abi::ChannelInfo`).
    pub const fn as_bytes(&self) -> &[u8; NAME_LEN] {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// I/O ports `first .. first + count`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    /// 1..=0x10000 - first in a valid range.
    pub count: u32,
}

impl PortRange {
    /// Ports `first..=last`, if `first <= last`.
    pub const fn inclusive(first: u16, last: u16) -> Option<Self> {
        if first > last {
            return None;
        }
        Some(Self {
            first,
            count: last as u32 - first as u32 + 1,
        })
    }

    /// One past the last port (up to 0x10000 in a valid range; saturating).
    pub const fn end(&self) -> u32 {
        (self.first as u32).saturating_add(self.count)
    }

    /// Does this range hold all of `first .. first + count`?
    pub const fn contains(&self, first: u32, count: u32) -> bool {
        match first.checked_add(count) {
            Some(end) => first >= self.first as u32 && end <= self.end(),
            None => false,
        }
    }

    /// Do the two ranges share a port? (A port granted twice is refused by
    /// [`Manifest::decode`] and by xtask, both with this.)
    pub const fn overlaps(&self, other: &Self) -> bool {
        (self.first as u32) < other.end() && (other.first as u32) < self.end()
    }
}

/// Physical memory `base .. base + size`, whole pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmioRegion {
    pub base: u64,
    pub size: u64,
}

impl MmioRegion {
    /// One past the last byte (saturating; valid regions do not overflow).
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }

    /// Does this region hold all of `base .. base + len`?
    pub const fn contains(&self, base: u64, len: u64) -> bool {
        match base.checked_add(len) {
            Some(end) => base >= self.base && end <= self.end(),
            None => false,
        }
    }

    /// Do the two regions share a byte? (A byte granted twice is refused by
    /// [`Manifest::decode`] and by xtask, both with this.)
    pub const fn overlaps(&self, other: &Self) -> bool {
        self.base < other.end() && other.base < self.end()
    }

    /// Can the wire format hold this region ([`check_mmio_region`])?
    const fn valid(&self) -> bool {
        check_mmio_region(self.base, self.size).is_ok()
    }
}

/// The most ports one grant may hold. A PCI I/O BAR is at most 256 ports
/// and no ISA device decodes more, so a wider range is a mistake, or a grab
/// at devices the server does not drive.
pub const MAX_PORT_GRANT: u32 = 256;

/// MMIO grants end at or below 1 TiB. QEMU's q35 and microvm put every
/// device far below (the 64-bit PCI window follows RAM above 4 GiB), and
/// 40 physical address bits, QEMU's default, reach no further: a grant
/// above names no device, so it is refused as a mistake.
pub const MMIO_GRANT_LIMIT: u64 = 1 << 40;

/// I/O ports that no server may be granted ([`RESERVED_PORTS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservedPorts {
    pub first: u16,
    pub last: u16,
    /// What they are, for messages.
    pub what: &'static str,
}

/// I/O ports a server has no business with, whatever device it drives:
/// each of these reaches past its own device, into physical memory or the
/// whole machine, where the MMU and the kernel cannot follow.
///
/// | ports | what | why no server |
/// |---|---|---|
/// | 0x00-0x1f, 0xc0-0xdf | the two 8237 ISA DMA controllers | aim any ISA device's DMA anywhere below 16 MiB, the kernel image at 1 MiB included |
/// | 0x81-0x8f | the DMA page registers | the high address bits of those transfers (0x80, the POST port, stays allowed) |
/// | 0x92 | system control port A | its A20 gate folds every physical address with bit 20 set onto another, bit 0 resets the CPU |
/// | 0xb2-0xb3 | APM control and SMI command | enter the firmware's System Management Mode, which sees all memory |
/// | 0xcf8-0xcff | PCI configuration (mechanism 1) | reach every PCI device's configuration: move BARs over RAM, enable bus mastering (DMA); 0xcf9 also resets the machine |
///
/// Not in the list, on purpose: the ports the kernel itself touches belong,
/// once servers run, to the server that owns the device: the PIT 0x40-0x43
/// (the kernel calibrates its clocks against it before any server starts;
/// `timer`), COM1 0x3f8-0x3ff (the early console; `console`) and QEMU's
/// isa-debug-exit 0xf4 (the kernel's exit status; `shell`'s poweroff). The
/// 8259 PICs 0x20-0x21 and 0xa0-0xa1 are an ordinary device too: the kernel
/// never uses them and keeps LINT0 masked, so what a server does to them
/// reaches no CPU. Every grant of `servers/manifest.toml` and
/// `tests/manifests/*.toml` stays clear of this list.
pub const RESERVED_PORTS: [ReservedPorts; 6] = [
    reserved(0x00, 0x1f, "the first ISA DMA controller"),
    reserved(0x81, 0x8f, "the ISA DMA page registers"),
    reserved(0x92, 0x92, "system control port A (A20 gate, fast reset)"),
    reserved(0xb2, 0xb3, "the APM/SMI command ports"),
    reserved(0xc0, 0xdf, "the second ISA DMA controller"),
    reserved(0xcf8, 0xcff, "the PCI configuration ports"),
];

const fn reserved(first: u16, last: u16, what: &'static str) -> ReservedPorts {
    ReservedPorts { first, last, what }
}

/// What a range of RAM holds, for [`check_mmio_grant`]'s messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RamKind {
    /// RAM the memory map calls usable (xtask: where QEMU puts RAM).
    Usable,
    /// The kernel's own image.
    KernelImage,
    /// A boot module: the initrd.
    Initrd,
}

impl fmt::Display for RamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Usable => "RAM",
            Self::KernelImage => "RAM holding the kernel image",
            Self::Initrd => "RAM holding the initrd",
        })
    }
}

/// Physical RAM `start .. end`, which no MMIO grant may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    pub start: u64,
    pub end: u64,
    pub kind: RamKind,
}

impl RamRange {
    pub const fn new(start: u64, end: u64, kind: RamKind) -> Self {
        Self { start, end, kind }
    }

    /// Does `base .. end` share a byte with this range?
    const fn overlaps(&self, base: u64, end: u64) -> bool {
        base < self.end && self.start < end
    }
}

/// Where QEMU's q35 and microvm machines put RAM below 4 GiB, whatever the
/// guest's size: xtask's stand-in for a memory map it cannot know (the
/// kernel checks again against the real one). The low 640 KiB, and from
/// 1 MiB up to 3 GiB (q35 moves RAM above 2 GiB or 2.75 GiB to 4 GiB and
/// keeps its PCIe configuration window at 0xb0000000; microvm keeps up to
/// 3 GiB). Left out: the VGA window and the BIOS area 0xa0000..0x100000
/// (the apic server reads ACPI tables at 0xe0000), and the device window
/// from 3 GiB to 4 GiB: the I/O APIC 0xfec00000, the HPET 0xfed00000, the
/// local APIC 0xfee00000. RAM above 4 GiB is left to the kernel's check.
pub const STATIC_RAM: [RamRange; 2] = [
    RamRange::new(0, 0xa_0000, RamKind::Usable),
    RamRange::new(0x10_0000, 0xc000_0000, RamKind::Usable),
];

/// Why a grant is refused ([`check_port_grant`], [`check_mmio_grant`]).
/// Its `Display` is the reason alone, for messages that name the grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// A port range of no ports.
    NoPorts,
    /// A port range that ends past port 0xffff.
    PortsPastEnd,
    /// More ports than [`MAX_PORT_GRANT`].
    TooManyPorts { count: u32 },
    /// The range holds some of [`RESERVED_PORTS`].
    ReservedPorts(ReservedPorts),
    /// An MMIO region of no bytes.
    EmptyMmio,
    /// An MMIO base or size that is not a multiple of [`MMIO_ALIGN`].
    UnalignedMmio,
    /// An MMIO region that wraps or ends past [`MMIO_LIMIT`].
    MmioPastLimit,
    /// An MMIO region that ends past [`MMIO_GRANT_LIMIT`].
    MmioPastGrantLimit,
    /// An MMIO region that overlaps this RAM.
    MmioOverRam(RamRange),
}

impl fmt::Display for GrantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NoPorts => f.write_str("the range holds no ports"),
            Self::PortsPastEnd => f.write_str("the range ends past port 0xffff"),
            Self::TooManyPorts { count } => write!(
                f,
                "{count} ports, a grant holds at most {MAX_PORT_GRANT} (no device has more)"
            ),
            Self::ReservedPorts(r) => write!(
                f,
                "holds {} ({:#x}-{:#x}), which no server may be granted",
                r.what, r.first, r.last
            ),
            Self::EmptyMmio => f.write_str("the size is zero"),
            Self::UnalignedMmio => write!(
                f,
                "base and size must be multiples of {MMIO_ALIGN:#x} (page aligned)"
            ),
            Self::MmioPastLimit => write!(
                f,
                "the region ends past the physical address limit {MMIO_LIMIT:#x}"
            ),
            Self::MmioPastGrantLimit => write!(
                f,
                "the region ends past 1 TiB ({MMIO_GRANT_LIMIT:#x}), where these machines have no device"
            ),
            Self::MmioOverRam(ram) => write!(
                f,
                "overlaps {} at {:#x}..{:#x}",
                ram.kind, ram.start, ram.end
            ),
        }
    }
}

impl core::error::Error for GrantError {}

/// One grant of a server, as messages name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    Ports(PortRange),
    Mmio(MmioRegion),
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ports(r) => write!(f, "ports {:#x}..{:#x}", r.first, r.end()),
            Self::Mmio(r) => write!(f, "MMIO {:#x}..{:#x}", r.base, r.end()),
        }
    }
}

/// A grant that [`Server::check_grants`] refused, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantRefusal {
    pub grant: Grant,
    pub error: GrantError,
}

impl fmt::Display for GrantRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.grant, self.error)
    }
}

impl core::error::Error for GrantRefusal {}

/// Are ports `first .. first + count` a range at all: not empty, not past
/// 0xffff? The wire format's rule ([`Manifest::decode`]); a grant must also
/// pass [`check_port_grant`].
pub const fn check_port_range(first: u32, count: u32) -> Result<(), GrantError> {
    if count == 0 {
        Err(GrantError::NoPorts)
    } else if first >= PORT_LIMIT || count > PORT_LIMIT - first {
        Err(GrantError::PortsPastEnd)
    } else {
        Ok(())
    }
}

/// May a server be granted ports `first .. first + count`? A range (see
/// [`check_port_range`]) of at most [`MAX_PORT_GRANT`] ports that holds
/// none of [`RESERVED_PORTS`]. xtask checks every manifest with this, and
/// the kernel checks again before it starts a server.
pub fn check_port_grant(first: u32, count: u32) -> Result<(), GrantError> {
    check_port_range(first, count)?;
    if count > MAX_PORT_GRANT {
        return Err(GrantError::TooManyPorts { count });
    }
    let end = first.saturating_add(count);
    match RESERVED_PORTS
        .iter()
        .find(|r| first <= u32::from(r.last) && u32::from(r.first) < end)
    {
        Some(r) => Err(GrantError::ReservedPorts(*r)),
        None => Ok(()),
    }
}

/// Can the wire format hold MMIO `base .. base + size`: not empty, whole
/// pages, ending at or below [`MMIO_LIMIT`]? ([`Manifest::decode`] refuses
/// any other; a grant must also pass [`check_mmio_grant`].)
pub const fn check_mmio_region(base: u64, size: u64) -> Result<(), GrantError> {
    if size == 0 {
        return Err(GrantError::EmptyMmio);
    }
    if !base.is_multiple_of(MMIO_ALIGN) || !size.is_multiple_of(MMIO_ALIGN) {
        return Err(GrantError::UnalignedMmio);
    }
    match base.checked_add(size) {
        Some(end) if end <= MMIO_LIMIT => Ok(()),
        _ => Err(GrantError::MmioPastLimit),
    }
}

/// May a server be granted MMIO `base .. base + size`, given the physical
/// RAM `ram`? A region (see [`check_mmio_region`]) ending at or below
/// [`MMIO_GRANT_LIMIT`] that overlaps none of `ram`: a server that can map
/// RAM can read and rewrite the kernel and every other server. xtask passes
/// [`STATIC_RAM`]; the kernel passes its boot memory map's RAM, its image
/// and the initrd. The first range of `ram` overlapped is the one named.
pub fn check_mmio_grant(base: u64, size: u64, ram: &[RamRange]) -> Result<(), GrantError> {
    check_mmio_region(base, size)?;
    let end = base.saturating_add(size);
    if end > MMIO_GRANT_LIMIT {
        return Err(GrantError::MmioPastGrantLimit);
    }
    match ram.iter().find(|r| r.overlaps(base, end)) {
        Some(r) => Err(GrantError::MmioOverRam(*r)),
        None => Ok(()),
    }
}

/// A set of IRQ lines (bit n = line n).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqSet(u32);

impl IrqSet {
    pub const EMPTY: Self = Self(0);

    /// The set whose mask is `bits`, if every bit is a line `0..=MAX_IRQ`.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        if bits & !IRQ_LINES_MASK != 0 {
            None
        } else {
            Some(Self(bits))
        }
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Add `line`; false if it is above [`MAX_IRQ`].
    pub fn insert(&mut self, line: u8) -> bool {
        if line > MAX_IRQ {
            return false;
        }
        self.0 |= 1 << line;
        true
    }

    pub const fn contains(self, line: u8) -> bool {
        line <= MAX_IRQ && self.0 & (1 << line) != 0
    }

    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The lines, lowest first.
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0..=MAX_IRQ).filter(move |&line| self.contains(line))
    }
}

/// A fixed-capacity list is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no room left in the server record")
    }
}

/// One server's record: what it is and what it may touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Server {
    pub name: Name,
    /// Its ELF is `servers/BIN` in the initrd.
    pub bin: Name,
    pub irqs: IrqSet,
    /// Slots per ring of the channels it provides.
    pub ring_slots: u32,
    ports: [PortRange; MAX_PORT_RANGES],
    port_count: u8,
    mmio: [MmioRegion; MAX_MMIO_REGIONS],
    mmio_count: u8,
    /// What happens when it ends.
    pub restart: Restart,
    /// At most this many restarts within `restart_period_ms`; one more and
    /// it stays down.
    pub restart_limit: u32,
    pub restart_period_ms: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// The CPUs it may be placed on, bit n = CPU n; 0 = unspecified.
    cpus: u64,
}

impl Server {
    /// A server that may touch nothing yet, with the default ring size.
    pub const fn new(name: Name, bin: Name) -> Self {
        Self {
            name,
            bin,
            irqs: IrqSet::EMPTY,
            ring_slots: DEFAULT_RING_SLOTS,
            ports: [PortRange { first: 0, count: 0 }; MAX_PORT_RANGES],
            port_count: 0,
            mmio: [MmioRegion { base: 0, size: 0 }; MAX_MMIO_REGIONS],
            mmio_count: 0,
            restart: Restart::Never,
            restart_limit: DEFAULT_RESTART_LIMIT,
            restart_period_ms: DEFAULT_RESTART_PERIOD_MS,
            flags: 0,
            cpus: 0,
        }
    }

    /// Grant a port range (its shape checked by [`encode`], the grant
    /// rules by [`Server::check_grants`]).
    pub fn push_ports(&mut self, range: PortRange) -> Result<(), Full> {
        let slot = self.ports.get_mut(self.port_count as usize).ok_or(Full)?;
        *slot = range;
        self.port_count += 1;
        Ok(())
    }

    /// Grant an MMIO region (its shape checked by [`encode`], the grant
    /// rules by [`Server::check_grants`]).
    pub fn push_mmio(&mut self, region: MmioRegion) -> Result<(), Full> {
        let slot = self.mmio.get_mut(self.mmio_count as usize).ok_or(Full)?;
        *slot = region;
        self.mmio_count += 1;
        Ok(())
    }

    /// The granted port ranges.
    pub fn ports(&self) -> &[PortRange] {
        self.ports.get(..self.port_count as usize).unwrap_or(&[])
    }

    /// The granted MMIO regions.
    pub fn mmio(&self) -> &[MmioRegion] {
        self.mmio.get(..self.mmio_count as usize).unwrap_or(&[])
    }

    /// May this server open ports `first .. first + count` (all inside one
    /// granted range)?
    pub fn grants_ports(&self, first: u32, count: u32) -> bool {
        count != 0 && self.ports().iter().any(|r| r.contains(first, count))
    }

    /// May this server map `base .. base + len` (all inside one granted
    /// region)?
    pub fn grants_mmio(&self, base: u64, len: u64) -> bool {
        len != 0 && self.mmio().iter().any(|r| r.contains(base, len))
    }

    /// May this server make other servers fault (`inject_fault`)?
    pub fn may_inject_faults(&self) -> bool {
        self.flags & FLAG_INJECT_FAULTS != 0
    }

    /// The CPUs this server may be placed on (the manifest's `cpus`), bit
    /// n = CPU n, CPUs `0..MAX_CPUS`. 0 means the manifest does not say:
    /// the kernel places it wherever it likes ("spread"). A mask may name
    /// CPUs the machine does not have; that is the kernel's to judge.
    pub const fn cpus(&self) -> u64 {
        self.cpus
    }

    /// Set the CPU mask ([`Server::cpus`]; 0 = unspecified).
    pub fn set_cpus(&mut self, mask: u64) {
        self.cpus = mask;
    }

    /// Add CPU `cpu` to the CPUs it may be placed on; false (and nothing
    /// changed) if `cpu` is not below [`MAX_CPUS`].
    pub fn allow_cpu(&mut self, cpu: u32) -> bool {
        if cpu >= MAX_CPUS {
            return false;
        }
        self.cpus |= 1 << cpu;
        true
    }

    /// May this server be placed on CPU `cpu`? Any CPU when its mask is
    /// unspecified (0); otherwise only a CPU whose bit is set.
    pub const fn may_run_on(&self, cpu: u32) -> bool {
        self.cpus == 0 || (cpu < MAX_CPUS && self.cpus & (1 << cpu) != 0)
    }

    /// May this server bind IRQ `line`?
    pub fn grants_irq(&self, line: u8) -> bool {
        self.irqs.contains(line)
    }

    /// Every port range and MMIO region of this server against the grant
    /// rules ([`check_port_grant`], and [`check_mmio_grant`] with `ram`);
    /// the first refused. Not part of [`encode`] or [`Manifest::decode`]:
    /// the kernel runs it per server at boot, to leave out only the server
    /// whose grant is refused.
    pub fn check_grants(&self, ram: &[RamRange]) -> Result<(), GrantRefusal> {
        for &range in self.ports() {
            check_port_grant(u32::from(range.first), range.count).map_err(|error| {
                GrantRefusal {
                    grant: Grant::Ports(range),
                    error,
                }
            })?;
        }
        for &region in self.mmio() {
            check_mmio_grant(region.base, region.size, ram).map_err(|error| GrantRefusal {
                grant: Grant::Mmio(region),
                error,
            })?;
        }
        Ok(())
    }
}

/// One channel: a client connected to a service's provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Channel {
    pub service: Name,
    /// Index of the providing server.
    pub provider: usize,
    /// Index of the client server.
    pub client: usize,
    /// Slots per ring (the provider's [`Server::ring_slots`]).
    pub ring_slots: u32,
}

/// Which end of a channel a handle is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The server uses the service.
    Client,
    /// The server provides the service.
    Provider,
}

/// One of a server's channel handles (see the module docs for the order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle {
    /// The handle number, from 0.
    pub handle: usize,
    /// The system-wide channel index.
    pub channel: usize,
    pub role: Role,
    /// The server at the other end.
    pub peer: usize,
    pub service: Name,
    pub ring_slots: u32,
}

/// Which name field is bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameField {
    Server,
    Bin,
    Service,
}

/// Why bytes are not a valid manifest (or a manifest cannot be encoded).
/// `server`, `channel`, `range` and `region` fields are indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestError {
    /// Shorter than the header.
    TooShort {
        len: usize,
    },
    BadMagic(u32),
    /// Not [`VERSION`]; an older version (1: 320-byte server records, no
    /// CPU mask) says so and how to build a new one.
    BadVersion(u32),
    /// A record size in the header is not this version's.
    BadRecordSize {
        found: u32,
        expected: u32,
    },
    NoServers,
    TooManyServers(u32),
    TooManyChannels(u32),
    /// The buffer's length is not what the counts say.
    LengthMismatch {
        expected: usize,
        len: usize,
    },
    /// The output buffer of [`encode`] is too small.
    BufferTooSmall {
        needed: usize,
        len: usize,
    },
    /// A reserved or unused byte is not zero.
    NotZero {
        offset: usize,
    },
    BadName {
        field: NameField,
        index: usize,
    },
    DuplicateServer {
        server: usize,
        other: usize,
    },
    TooManyPortRanges {
        server: usize,
        count: u32,
    },
    BadPortRange {
        server: usize,
        range: usize,
        first: u32,
        count: u32,
    },
    PortOverlap {
        server: usize,
        range: usize,
        other_server: usize,
        other_range: usize,
    },
    BadIrqs {
        server: usize,
        bits: u32,
    },
    IrqConflict {
        server: usize,
        other_server: usize,
        line: u8,
    },
    TooManyMmioRegions {
        server: usize,
        count: u32,
    },
    BadMmio {
        server: usize,
        region: usize,
        base: u64,
        size: u64,
    },
    MmioOverlap {
        server: usize,
        region: usize,
        other_server: usize,
        other_region: usize,
    },
    BadRingSlots {
        server: usize,
        slots: u32,
    },
    /// An unknown restart policy, a zero restart period, or unknown flags.
    BadSupervision {
        server: usize,
    },
    /// A channel names a server index past the last.
    BadChannelServer {
        channel: usize,
        index: u32,
    },
    /// A channel's provider is its client.
    SelfChannel {
        channel: usize,
    },
    /// A service has two providers.
    ProvidedTwice {
        channel: usize,
        other: usize,
    },
    /// A client uses the same service twice.
    DuplicateChannel {
        channel: usize,
        other: usize,
    },
    ChannelRingSlots {
        channel: usize,
        slots: u32,
        expected: u32,
    },
    /// A server's channels and IRQ lines need more notification bits than
    /// there are (`abi::MAX_NOTIFY_BITS`).
    TooManyNotifications {
        server: usize,
        needed: usize,
    },
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort { len } => {
                write!(
                    f,
                    "manifest too short: {len} bytes, the header needs {HEADER_LEN}"
                )
            }
            Self::BadMagic(m) => write!(f, "bad manifest magic {m:#x}"),
            Self::BadVersion(v) if (1..VERSION).contains(&v) => write!(
                f,
                "manifest version {v} is older than this kernel's version {VERSION} (server records grew for the CPU mask): build the initrd again with `cargo xtask build`"
            ),
            Self::BadVersion(v) => write!(
                f,
                "unsupported manifest version {v}: this kernel reads version {VERSION}"
            ),
            Self::BadRecordSize { found, expected } => {
                write!(f, "manifest record size {found}, expected {expected}")
            }
            Self::NoServers => f.write_str("the manifest lists no servers"),
            Self::TooManyServers(n) => {
                write!(f, "{n} servers, the manifest holds at most {MAX_SERVERS}")
            }
            Self::TooManyChannels(n) => {
                write!(f, "{n} channels, the manifest holds at most {MAX_CHANNELS}")
            }
            Self::LengthMismatch { expected, len } => {
                write!(f, "manifest is {len} bytes, its counts say {expected}")
            }
            Self::BufferTooSmall { needed, len } => {
                write!(f, "manifest buffer is {len} bytes, {needed} needed")
            }
            Self::NotZero { offset } => {
                write!(
                    f,
                    "reserved or unused manifest byte at offset {offset} is not zero"
                )
            }
            Self::BadName { field, index } => match field {
                NameField::Server => write!(f, "server {index}: bad name"),
                NameField::Bin => write!(f, "server {index}: bad bin name"),
                NameField::Service => write!(f, "channel {index}: bad service name"),
            },
            Self::DuplicateServer { server, other } => {
                write!(f, "server {server} has the same name as server {other}")
            }
            Self::TooManyPortRanges { server, count } => write!(
                f,
                "server {server}: {count} port ranges, at most {MAX_PORT_RANGES}"
            ),
            Self::BadPortRange {
                server,
                range,
                first,
                count,
            } => write!(
                f,
                "server {server}: port range {range} ({first:#x}, {count} ports) is empty or past 0xffff"
            ),
            Self::PortOverlap {
                server,
                range,
                other_server,
                other_range,
            } => write!(
                f,
                "server {server}: port range {range} overlaps server {other_server} port range {other_range}"
            ),
            Self::BadIrqs { server, bits } => write!(
                f,
                "server {server}: IRQ mask {bits:#x} has lines above {MAX_IRQ}"
            ),
            Self::IrqConflict {
                server,
                other_server,
                line,
            } => {
                write!(
                    f,
                    "server {server}: IRQ {line} is also granted to server {other_server}"
                )
            }
            Self::TooManyMmioRegions { server, count } => write!(
                f,
                "server {server}: {count} MMIO regions, at most {MAX_MMIO_REGIONS}"
            ),
            Self::BadMmio {
                server,
                region,
                base,
                size,
            } => write!(
                f,
                "server {server}: MMIO region {region} ({base:#x}, {size:#x} bytes) is empty, not page aligned or past the physical address limit"
            ),
            Self::MmioOverlap {
                server,
                region,
                other_server,
                other_region,
            } => write!(
                f,
                "server {server}: MMIO region {region} overlaps server {other_server} MMIO region {other_region}"
            ),
            Self::BadRingSlots { server, slots } => write!(
                f,
                "server {server}: ring slots {slots} is not a power of two in {MIN_RING_SLOTS}..={MAX_RING_SLOTS}"
            ),
            Self::BadSupervision { server } => write!(
                f,
                "server {server}: unknown restart policy or flags, or a zero restart period"
            ),
            Self::BadChannelServer { channel, index } => {
                write!(f, "channel {channel}: no server {index}")
            }
            Self::SelfChannel { channel } => {
                write!(f, "channel {channel}: a server is its own client")
            }
            Self::ProvidedTwice { channel, other } => write!(
                f,
                "channel {channel}: its service has another provider in channel {other}"
            ),
            Self::DuplicateChannel { channel, other } => {
                write!(f, "channel {channel} duplicates channel {other}")
            }
            Self::ChannelRingSlots {
                channel,
                slots,
                expected,
            } => write!(
                f,
                "channel {channel}: ring slots {slots}, its provider says {expected}"
            ),
            Self::TooManyNotifications { server, needed } => write!(
                f,
                "server {server}: its channels and IRQs need {needed} notification bits, there are {MAX_NOTIFY_BITS}"
            ),
        }
    }
}

impl core::error::Error for ManifestError {}

/// Where server record `index` starts.
const fn server_offset(index: usize) -> usize {
    HEADER_LEN + index * SERVER_RECORD_LEN
}

/// Where channel record `index` starts, after `servers` server records.
const fn channel_offset(servers: usize, index: usize) -> usize {
    server_offset(servers) + index * CHANNEL_RECORD_LEN
}

/// A validated manifest: a view of the bytes it was decoded from.
#[derive(Clone, Copy, Debug)]
pub struct Manifest<'a> {
    bytes: &'a [u8],
    servers: usize,
    channels: usize,
}

impl<'a> Manifest<'a> {
    /// Validate `bytes` as a manifest. Everything is checked here, once:
    /// afterwards every accessor returns consistent, in-range values.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, ManifestError> {
        let Ok((header, _)) = Header::read_from_prefix(bytes) else {
            return Err(ManifestError::TooShort { len: bytes.len() });
        };
        let magic = header.magic.get();
        if magic != MAGIC {
            return Err(ManifestError::BadMagic(magic));
        }
        let version = header.version.get();
        if version != VERSION {
            return Err(ManifestError::BadVersion(version));
        }
        for (found, expected) in [
            (header.server_record_len, SERVER_RECORD_LEN),
            (header.channel_record_len, CHANNEL_RECORD_LEN),
        ] {
            let found = found.get();
            if found as usize != expected {
                return Err(ManifestError::BadRecordSize {
                    found,
                    expected: expected as u32,
                });
            }
        }
        check_zero(&header.reserved, offset_of!(Header, reserved))?;
        let servers = header.server_count.get();
        let channels = header.channel_count.get();
        if servers == 0 {
            return Err(ManifestError::NoServers);
        }
        if servers as usize > MAX_SERVERS {
            return Err(ManifestError::TooManyServers(servers));
        }
        if channels as usize > MAX_CHANNELS {
            return Err(ManifestError::TooManyChannels(channels));
        }
        let manifest = Self {
            bytes,
            servers: servers as usize,
            channels: channels as usize,
        };
        let expected = encoded_len(manifest.servers, manifest.channels);
        if bytes.len() != expected {
            return Err(ManifestError::LengthMismatch {
                expected,
                len: bytes.len(),
            });
        }
        for i in 0..manifest.servers {
            manifest.check_server(i)?;
        }
        manifest.check_grants_between_servers()?;
        for i in 0..manifest.channels {
            manifest.check_channel(i)?;
        }
        for server in 0..manifest.servers {
            let irqs = manifest.server(server).map_or(0, |s| s.irqs.len());
            let needed = manifest.handle_count(server) + irqs;
            if needed > MAX_NOTIFY_BITS as usize {
                return Err(ManifestError::TooManyNotifications { server, needed });
            }
        }
        Ok(manifest)
    }

    /// The bytes this manifest was decoded from.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn server_count(&self) -> usize {
        self.servers
    }

    pub fn channel_count(&self) -> usize {
        self.channels
    }

    /// A copy of server record `index` (zero past the last, which the
    /// callers never ask for).
    fn server_record(&self, index: usize) -> ServerRecord {
        record(self.bytes, server_offset(index))
    }

    /// A copy of channel record `index`, as [`Manifest::server_record`].
    fn channel_record(&self, index: usize) -> ChannelRecord {
        record(self.bytes, channel_offset(self.servers, index))
    }

    /// Server `index` (boot order), or None past the last.
    pub fn server(&self, index: usize) -> Option<Server> {
        if index >= self.servers {
            return None;
        }
        Some(read_server(&self.server_record(index)))
    }

    /// The servers in boot order.
    pub fn servers(&self) -> impl Iterator<Item = Server> + 'a {
        let this = *self;
        (0..self.servers).filter_map(move |i| this.server(i))
    }

    /// The index of the server called `name`.
    pub fn find_server(&self, name: &str) -> Option<usize> {
        self.servers().position(|s| s.name.as_str() == name)
    }

    /// Channel `index` (system-wide), or None past the last.
    pub fn channel(&self, index: usize) -> Option<Channel> {
        if index >= self.channels {
            return None;
        }
        Some(read_channel(&self.channel_record(index)))
    }

    /// The channels, in channel order.
    pub fn channels(&self) -> impl Iterator<Item = Channel> + 'a {
        let this = *self;
        (0..self.channels).filter_map(move |i| this.channel(i))
    }

    /// Server `server`'s channel handles, in handle order: first the
    /// channels it uses, then those it provides, each in channel order.
    /// Empty for a server index past the last.
    pub fn handles(&self, server: usize) -> Handles<'a> {
        Handles {
            manifest: *self,
            server,
            role: Role::Client,
            next_channel: 0,
            next_handle: 0,
        }
    }

    /// Server `server`'s handle number `handle`, or None if it has no such
    /// handle (`abi::Error::BadHandle`).
    pub fn handle(&self, server: usize, handle: usize) -> Option<Handle> {
        self.handles(server).nth(handle)
    }

    /// How many channel handles server `server` has.
    pub fn handle_count(&self, server: usize) -> usize {
        self.handles(server).count()
    }

    fn check_server(&self, index: usize) -> Result<(), ManifestError> {
        let rec = self.server_record(index);
        let at = |field: usize| server_offset(index) + field;
        let bad_name = |field| ManifestError::BadName { field, index };
        let name = Name::from_wire(rec.name, false).ok_or(bad_name(NameField::Server))?;
        Name::from_wire(rec.bin, true).ok_or(bad_name(NameField::Bin))?;
        for other in 0..index {
            if self.server_record(other).name == *name.as_bytes() {
                return Err(ManifestError::DuplicateServer {
                    server: index,
                    other,
                });
            }
        }

        let port_count = rec.port_count.get();
        if port_count as usize > MAX_PORT_RANGES {
            return Err(ManifestError::TooManyPortRanges {
                server: index,
                count: port_count,
            });
        }
        let mmio_count = rec.mmio_count.get();
        if mmio_count as usize > MAX_MMIO_REGIONS {
            return Err(ManifestError::TooManyMmioRegions {
                server: index,
                count: mmio_count,
            });
        }
        let bits = rec.irqs.get();
        if IrqSet::from_bits(bits).is_none() {
            return Err(ManifestError::BadIrqs {
                server: index,
                bits,
            });
        }
        let slots = rec.ring_slots.get();
        if !ring_slots_ok(slots) {
            return Err(ManifestError::BadRingSlots {
                server: index,
                slots,
            });
        }

        let (ports, unused_ports) = rec.ports.split_at(port_count as usize);
        for (range, entry) in ports.iter().enumerate() {
            let (first, count) = (entry.first.get(), entry.count.get());
            if check_port_range(first, count).is_err() {
                return Err(ManifestError::BadPortRange {
                    server: index,
                    range,
                    first,
                    count,
                });
            }
        }
        check_zero(
            unused_ports.as_bytes(),
            at(offset_of!(ServerRecord, ports) + size_of_val(ports)),
        )?;
        let (regions, unused_regions) = rec.mmio.split_at(mmio_count as usize);
        for (region, entry) in regions.iter().enumerate() {
            let r = MmioRegion {
                base: entry.base.get(),
                size: entry.size.get(),
            };
            if !r.valid() {
                return Err(ManifestError::BadMmio {
                    server: index,
                    region,
                    base: r.base,
                    size: r.size,
                });
            }
        }
        check_zero(
            unused_regions.as_bytes(),
            at(offset_of!(ServerRecord, mmio) + size_of_val(regions)),
        )?;
        if Restart::from_wire(rec.restart.get()).is_none()
            || rec.restart_period_ms.get() == 0
            || rec.flags.get() & !KNOWN_SERVER_FLAGS != 0
        {
            return Err(ManifestError::BadSupervision { server: index });
        }
        // Any mask names only CPUs 0..=63 (one bit each); past it, zero.
        check_zero(&rec.reserved, at(offset_of!(ServerRecord, reserved)))?;

        // Within the server: no range or region overlaps another.
        let server = read_server(&rec);
        for (range, r) in server.ports().iter().enumerate() {
            if let Some(other_range) = server.ports()[..range].iter().position(|o| o.overlaps(r)) {
                return Err(ManifestError::PortOverlap {
                    server: index,
                    range,
                    other_server: index,
                    other_range,
                });
            }
        }
        for (region, r) in server.mmio().iter().enumerate() {
            if let Some(other_region) = server.mmio()[..region].iter().position(|o| o.overlaps(r)) {
                return Err(ManifestError::MmioOverlap {
                    server: index,
                    region,
                    other_server: index,
                    other_region,
                });
            }
        }
        Ok(())
    }

    /// No port, MMIO byte or IRQ line is granted to two servers.
    fn check_grants_between_servers(&self) -> Result<(), ManifestError> {
        for (index, server) in self.servers().enumerate() {
            for (other_server, other) in self.servers().take(index).enumerate() {
                for (range, r) in server.ports().iter().enumerate() {
                    if let Some(other_range) = other.ports().iter().position(|o| o.overlaps(r)) {
                        return Err(ManifestError::PortOverlap {
                            server: index,
                            range,
                            other_server,
                            other_range,
                        });
                    }
                }
                for (region, r) in server.mmio().iter().enumerate() {
                    if let Some(other_region) = other.mmio().iter().position(|o| o.overlaps(r)) {
                        return Err(ManifestError::MmioOverlap {
                            server: index,
                            region,
                            other_server,
                            other_region,
                        });
                    }
                }
                let shared = server.irqs.bits() & other.irqs.bits();
                if shared != 0 {
                    return Err(ManifestError::IrqConflict {
                        server: index,
                        other_server,
                        line: shared.trailing_zeros() as u8,
                    });
                }
            }
        }
        Ok(())
    }

    fn check_channel(&self, index: usize) -> Result<(), ManifestError> {
        let rec = self.channel_record(index);
        let service = Name::from_wire(rec.service, false).ok_or(ManifestError::BadName {
            field: NameField::Service,
            index,
        })?;
        let mut ends = [0; 2];
        for (end, server) in ends.iter_mut().zip([rec.provider, rec.client]) {
            let server = server.get();
            if server as usize >= self.servers {
                return Err(ManifestError::BadChannelServer {
                    channel: index,
                    index: server,
                });
            }
            *end = server as usize;
        }
        let [provider, client] = ends;
        if provider == client {
            return Err(ManifestError::SelfChannel { channel: index });
        }
        let slots = rec.ring_slots.get();
        let expected = self.server_record(provider).ring_slots.get();
        if slots != expected {
            return Err(ManifestError::ChannelRingSlots {
                channel: index,
                slots,
                expected,
            });
        }
        check_zero(
            rec.reserved.as_bytes(),
            channel_offset(self.servers, index) + offset_of!(ChannelRecord, reserved),
        )?;
        for other in 0..index {
            let o = read_channel(&self.channel_record(other));
            if o.service != service {
                continue;
            }
            if o.provider != provider {
                return Err(ManifestError::ProvidedTwice {
                    channel: index,
                    other,
                });
            }
            if o.client == client {
                return Err(ManifestError::DuplicateChannel {
                    channel: index,
                    other,
                });
            }
        }
        Ok(())
    }
}

/// A copy of the record at `offset` of `bytes`; zero where `bytes` ends
/// first (a decoded manifest's records are all there).
fn record<R: FromBytes>(bytes: &[u8], offset: usize) -> R {
    bytes
        .get(offset..)
        .and_then(|rest| R::read_from_prefix(rest).ok())
        .map_or_else(R::new_zeroed, |(record, _)| record)
}

/// A server record as it is (validated by `check_server` before use).
fn read_server(rec: &ServerRecord) -> Server {
    let mut server = Server::new(Name(rec.name), Name(rec.bin));
    server.irqs = IrqSet(rec.irqs.get() & IRQ_LINES_MASK);
    server.ring_slots = rec.ring_slots.get();
    server.restart = Restart::from_wire(rec.restart.get()).unwrap_or(Restart::Never);
    server.restart_limit = rec.restart_limit.get();
    server.restart_period_ms = rec.restart_period_ms.get();
    server.flags = rec.flags.get() & KNOWN_SERVER_FLAGS;
    server.cpus = rec.cpus.get();
    let port_count = (rec.port_count.get() as usize).min(MAX_PORT_RANGES);
    for (range, entry) in server.ports.iter_mut().zip(&rec.ports[..port_count]) {
        // A valid range starts below 0x10000.
        range.first = entry.first.get() as u16;
        range.count = entry.count.get();
    }
    server.port_count = port_count as u8;
    let mmio_count = (rec.mmio_count.get() as usize).min(MAX_MMIO_REGIONS);
    for (region, entry) in server.mmio.iter_mut().zip(&rec.mmio[..mmio_count]) {
        region.base = entry.base.get();
        region.size = entry.size.get();
    }
    server.mmio_count = mmio_count as u8;
    server
}

/// `server` as its record.
fn write_server(server: &Server) -> ServerRecord {
    let mut rec = ServerRecord::new_zeroed();
    rec.name = *server.name.as_bytes();
    rec.bin = *server.bin.as_bytes();
    rec.port_count = u32::from(server.port_count).into();
    rec.mmio_count = u32::from(server.mmio_count).into();
    rec.irqs = server.irqs.bits().into();
    rec.ring_slots = server.ring_slots.into();
    for (entry, range) in rec.ports.iter_mut().zip(server.ports()) {
        entry.first = u32::from(range.first).into();
        entry.count = range.count.into();
    }
    for (entry, region) in rec.mmio.iter_mut().zip(server.mmio()) {
        entry.base = region.base.into();
        entry.size = region.size.into();
    }
    rec.restart = (server.restart as u32).into();
    rec.restart_limit = server.restart_limit.into();
    rec.restart_period_ms = server.restart_period_ms.into();
    rec.flags = server.flags.into();
    rec.cpus = server.cpus.into();
    rec
}

/// A channel record as it is (validated by `check_channel` before use).
fn read_channel(rec: &ChannelRecord) -> Channel {
    Channel {
        service: Name(rec.service),
        provider: rec.provider.get() as usize,
        client: rec.client.get() as usize,
        ring_slots: rec.ring_slots.get(),
    }
}

/// `channel` as its record.
fn write_channel(channel: &Channel) -> ChannelRecord {
    // An index that does not fit a u32 is out of range anyway.
    let index = |i: usize| u32::try_from(i).unwrap_or(u32::MAX).into();
    ChannelRecord {
        service: *channel.service.as_bytes(),
        provider: index(channel.provider),
        client: index(channel.client),
        ring_slots: channel.ring_slots.into(),
        reserved: 0.into(),
    }
}

/// A server's channel handles in handle order ([`Manifest::handles`]).
#[derive(Clone, Debug)]
pub struct Handles<'a> {
    manifest: Manifest<'a>,
    server: usize,
    role: Role,
    next_channel: usize,
    next_handle: usize,
}

impl Iterator for Handles<'_> {
    type Item = Handle;

    fn next(&mut self) -> Option<Handle> {
        loop {
            let Some(channel) = self.manifest.channel(self.next_channel) else {
                match self.role {
                    Role::Client => {
                        self.role = Role::Provider;
                        self.next_channel = 0;
                        continue;
                    }
                    Role::Provider => return None,
                }
            };
            let index = self.next_channel;
            self.next_channel += 1;
            let (me, peer) = match self.role {
                Role::Client => (channel.client, channel.provider),
                Role::Provider => (channel.provider, channel.client),
            };
            if me != self.server {
                continue;
            }
            let handle = self.next_handle;
            self.next_handle += 1;
            return Some(Handle {
                handle,
                channel: index,
                role: self.role,
                peer,
                service: channel.service,
                ring_slots: channel.ring_slots,
            });
        }
    }
}

/// Encode `servers` (boot order) and `channels` into `out`, and return the
/// length written. The result is decoded again before returning, so
/// anything [`Manifest::decode`] would reject is an error here too.
pub fn encode(
    servers: &[Server],
    channels: &[Channel],
    out: &mut [u8],
) -> Result<usize, ManifestError> {
    if servers.len() > MAX_SERVERS {
        return Err(ManifestError::TooManyServers(servers.len() as u32));
    }
    if channels.len() > MAX_CHANNELS {
        return Err(ManifestError::TooManyChannels(channels.len() as u32));
    }
    let len = encoded_len(servers.len(), channels.len());
    let available = out.len();
    let out = out.get_mut(..len).ok_or(ManifestError::BufferTooSmall {
        needed: len,
        len: available,
    })?;
    let header = Header {
        magic: MAGIC.into(),
        version: VERSION.into(),
        // Both counts are at most MAX_SERVERS or MAX_CHANNELS (above).
        server_count: (servers.len() as u32).into(),
        channel_count: (channels.len() as u32).into(),
        server_record_len: (SERVER_RECORD_LEN as u32).into(),
        channel_record_len: (CHANNEL_RECORD_LEN as u32).into(),
        reserved: [0; 8],
    };
    let (head, rest) = out.split_at_mut(HEADER_LEN);
    head.copy_from_slice(header.as_bytes());
    let (server_bytes, channel_bytes) = rest.split_at_mut(servers.len() * SERVER_RECORD_LEN);
    for (server, out) in servers
        .iter()
        .zip(server_bytes.chunks_exact_mut(SERVER_RECORD_LEN))
    {
        out.copy_from_slice(write_server(server).as_bytes());
    }
    for (channel, out) in channels
        .iter()
        .zip(channel_bytes.chunks_exact_mut(CHANNEL_RECORD_LEN))
    {
        out.copy_from_slice(write_channel(channel).as_bytes());
    }
    Manifest::decode(out)?;
    Ok(len)
}

/// [`encode`] into a new vector.
#[cfg(any(test, feature = "alloc"))]
pub fn to_vec(
    servers: &[Server],
    channels: &[Channel],
) -> Result<alloc::vec::Vec<u8>, ManifestError> {
    // Oversized inputs are refused by `encode` before it writes.
    let len = encoded_len(
        servers.len().min(MAX_SERVERS),
        channels.len().min(MAX_CHANNELS),
    );
    let mut out = alloc::vec![0; len];
    let len = encode(servers, channels, &mut out)?;
    out.truncate(len);
    Ok(out)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn server(n: &str) -> Server {
        Server::new(name(n), Name::bin(n).unwrap())
    }

    fn channel(service: &str, provider: usize, client: usize) -> Channel {
        Channel {
            service: name(service),
            provider,
            client,
            ring_slots: DEFAULT_RING_SLOTS,
        }
    }

    /// A console with devices, an echo service, and two clients.
    fn sample() -> (Vec<Server>, Vec<Channel>) {
        let mut console = server("console");
        console
            .push_ports(PortRange::inclusive(0x3f8, 0x3ff).unwrap())
            .unwrap();
        console
            .push_ports(PortRange::inclusive(0x60, 0x60).unwrap())
            .unwrap();
        console.irqs.insert(4);
        console.ring_slots = 1024;
        let mut apic = server("apic");
        apic.push_mmio(MmioRegion {
            base: 0xfec0_0000,
            size: 0x1000,
        })
        .unwrap();
        apic.push_mmio(MmioRegion {
            base: 0xfee0_0000,
            size: 0x1000,
        })
        .unwrap();
        let mut echo = server("echo");
        echo.set_cpus(1 << 1);
        let mut hello = server("hello");
        assert!(hello.allow_cpu(0) && hello.allow_cpu(63));
        let c = |s: &str, p: usize, cl: usize, slots: u32| Channel {
            ring_slots: slots,
            ..channel(s, p, cl)
        };
        // In the order xtask writes them: by client, then its `uses` order.
        let channels = [
            c("apic", 1, 0, 256),
            c("console", 0, 2, 1024),
            c("echo", 2, 3, 256),
            c("console", 0, 3, 1024),
        ]
        .to_vec();
        (alloc::vec![console, apic, echo, hello], channels)
    }

    fn sample_bytes() -> Vec<u8> {
        let (servers, channels) = sample();
        to_vec(&servers, &channels).unwrap()
    }

    fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    fn server_at(index: usize, field: usize) -> usize {
        HEADER_LEN + index * SERVER_RECORD_LEN + field
    }

    fn channel_at(servers: usize, index: usize, field: usize) -> usize {
        HEADER_LEN + servers * SERVER_RECORD_LEN + index * CHANNEL_RECORD_LEN + field
    }

    /// A manifest laid out byte by byte from the module docs' table, as the
    /// byte-offset encoder before zerocopy wrote it: the records must keep
    /// reading it, and writing it, to the byte.
    #[test]
    fn the_documented_layout_decodes_and_encodes_to_the_byte() {
        let mut bytes = alloc::vec![0u8; 32 + 2 * 336 + 32];
        bytes[0..4].copy_from_slice(b"PVMF");
        for (at, value) in [(4, 2), (8, 2), (12, 1), (16, 336), (20, 32)] {
            put_u32(&mut bytes, at, value);
        }
        // Server 0: a console with two port ranges, IRQ 4 and an MMIO page.
        let s0 = 32;
        bytes[s0..s0 + 7].copy_from_slice(b"console");
        bytes[s0 + 16..s0 + 23].copy_from_slice(b"con_bin");
        for (at, value) in [
            (32, 2),      // port ranges
            (36, 1),      // MMIO regions
            (40, 1 << 4), // IRQ 4
            (44, 1024),   // ring slots
            (48, 0x3f8),  // port range 0: first
            (52, 8),      //               count
            (56, 0x60),   // port range 1
            (60, 1),      //
            (304, 1),     // on-fault
            (308, 7),     // restart limit
            (312, 2500),  // restart period
            (316, FLAG_INJECT_FAULTS),
        ] {
            put_u32(&mut bytes, s0 + at, value);
        }
        put_u64(&mut bytes, s0 + 176, 0xfee0_0000);
        put_u64(&mut bytes, s0 + 184, 0x2000);
        put_u64(&mut bytes, s0 + 320, 1 << 1 | 1 << 63);
        // Server 1: a bare client on the default ring size.
        let s1 = 32 + 336;
        bytes[s1..s1 + 5].copy_from_slice(b"hello");
        bytes[s1 + 16..s1 + 21].copy_from_slice(b"hello");
        for (at, value) in [(44, 256), (312, 10_000)] {
            put_u32(&mut bytes, s1 + at, value);
        }
        // Channel 0: hello uses console.
        let c0 = 32 + 2 * 336;
        bytes[c0..c0 + 7].copy_from_slice(b"console");
        for (at, value) in [(16, 0), (20, 1), (24, 1024)] {
            put_u32(&mut bytes, c0 + at, value);
        }

        let mut console = Server::new(name("console"), Name::bin("con_bin").unwrap());
        console
            .push_ports(PortRange::inclusive(0x3f8, 0x3ff).unwrap())
            .unwrap();
        console
            .push_ports(PortRange::inclusive(0x60, 0x60).unwrap())
            .unwrap();
        console
            .push_mmio(MmioRegion {
                base: 0xfee0_0000,
                size: 0x2000,
            })
            .unwrap();
        console.irqs.insert(4);
        console.ring_slots = 1024;
        console.restart = Restart::OnFault;
        console.restart_limit = 7;
        console.restart_period_ms = 2500;
        console.flags = FLAG_INJECT_FAULTS;
        console.set_cpus(1 << 1 | 1 << 63);
        let mut hello = server("hello");
        hello.restart_limit = 0;
        let servers = [console, hello];
        let channels = [Channel {
            ring_slots: 1024,
            ..channel("console", 0, 1)
        }];

        let m = Manifest::decode(&bytes).unwrap();
        assert_eq!(m.servers().collect::<Vec<_>>(), servers);
        assert_eq!(m.channels().collect::<Vec<_>>(), channels);
        assert_eq!(to_vec(&servers, &channels).unwrap(), bytes);
    }

    #[test]
    fn round_trips() {
        let (servers, channels) = sample();
        let bytes = to_vec(&servers, &channels).unwrap();
        assert_eq!(bytes.len(), encoded_len(4, 4));
        let m = Manifest::decode(&bytes).unwrap();
        assert_eq!(m.servers().collect::<Vec<_>>(), servers);
        assert_eq!(m.channels().collect::<Vec<_>>(), channels);
        assert_eq!(m.find_server("echo"), Some(2));
        assert_eq!(m.find_server("nope"), None);
        assert_eq!(m.server(4), None);
        assert_eq!(m.channel(4), None);
        let console = m.server(0).unwrap();
        assert_eq!(console.name.as_str(), "console");
        assert!(console.grants_ports(0x3f8, 8));
        assert!(console.grants_ports(0x3fd, 1));
        assert!(!console.grants_ports(0x3f8, 9));
        assert!(!console.grants_ports(0x3f8, 0));
        assert!(!console.grants_ports(u32::MAX, 2));
        assert!(console.grants_irq(4) && !console.grants_irq(3) && !console.grants_irq(200));
        let apic = m.server(1).unwrap();
        assert!(apic.grants_mmio(0xfee0_0000, 0x1000));
        assert!(!apic.grants_mmio(0xfee0_0000, 0x1001));
        assert!(!apic.grants_mmio(u64::MAX, 2));
        assert_eq!(console.irqs.iter().collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn handles_are_uses_then_provided_clients() {
        let bytes = sample_bytes();
        let m = Manifest::decode(&bytes).unwrap();
        let list = |s: usize| {
            m.handles(s)
                .map(|h| {
                    (
                        h.handle,
                        h.channel,
                        h.role,
                        h.peer,
                        alloc::string::String::from(h.service.as_str()),
                    )
                })
                .collect::<Vec<_>>()
        };
        use Role::*;
        let s = alloc::string::String::from;
        // console: uses apic, then provides console to echo and hello.
        assert_eq!(
            list(0),
            [
                (0, 0, Client, 1, s("apic")),
                (1, 1, Provider, 2, s("console")),
                (2, 3, Provider, 3, s("console")),
            ]
        );
        assert_eq!(list(1), [(0, 0, Provider, 0, s("apic"))]);
        // echo: uses console, provides echo.
        assert_eq!(
            list(2),
            [
                (0, 1, Client, 0, s("console")),
                (1, 2, Provider, 3, s("echo"))
            ]
        );
        // hello: uses echo then console, in its `uses` order.
        assert_eq!(
            list(3),
            [
                (0, 2, Client, 2, s("echo")),
                (1, 3, Client, 0, s("console"))
            ]
        );
        assert_eq!(list(4), []);
        assert_eq!(m.handle_count(0), 3);
        assert_eq!(m.handle(3, 1).unwrap().channel, 3);
        assert_eq!(m.handle(3, 2), None);
        assert_eq!(m.handle(0, 2).unwrap().ring_slots, 1024);
    }

    #[test]
    fn names() {
        assert!(Name::new("console").is_some());
        assert!(Name::new("a-0").is_some());
        assert!(Name::new("fault-privileged").is_some());
        assert!(Name::new("fault-privileged1").is_none());
        assert!(Name::new("").is_none());
        assert!(Name::new("Console").is_none());
        assert!(Name::new("a_b").is_none());
        assert!(Name::bin("a_b").is_some());
        assert!(Name::new("a b").is_none());
        assert!(Name::from_wire(*b"ab\0c\0\0\0\0\0\0\0\0\0\0\0\0", false).is_none());
        assert!(Name::from_wire([0; NAME_LEN], false).is_none());
        assert_eq!(name("echo").as_str(), "echo");
        assert_eq!(alloc::format!("{}", name("echo")), "echo");
    }

    #[test]
    fn header_errors() {
        let good = sample_bytes();
        let decode = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            Manifest::decode(&b).unwrap_err()
        };
        assert_eq!(
            decode(&|b| b.truncate(10)),
            ManifestError::TooShort { len: 10 }
        );
        assert_eq!(
            decode(&|b| b[0] = b'X'),
            ManifestError::BadMagic(u32::from_le_bytes(*b"XVMF"))
        );
        assert_eq!(decode(&|b| put_u32(b, 4, 3)), ManifestError::BadVersion(3));
        assert_eq!(decode(&|b| put_u32(b, 4, 0)), ManifestError::BadVersion(0));
        // Version 1 (320-byte server records) is refused by its version,
        // with what to do about it, before its record size is looked at.
        let old = decode(&|b| {
            put_u32(b, 4, 1);
            put_u32(b, 16, 320);
        });
        assert_eq!(old, ManifestError::BadVersion(1));
        assert_eq!(
            alloc::format!("{old}"),
            "manifest version 1 is older than this kernel's version 2 (server records grew for the CPU mask): build the initrd again with `cargo xtask build`"
        );
        assert_eq!(
            alloc::format!("{}", ManifestError::BadVersion(3)),
            "unsupported manifest version 3: this kernel reads version 2"
        );
        assert_eq!(
            decode(&|b| put_u32(b, 16, 320)),
            ManifestError::BadRecordSize {
                found: 320,
                expected: 336
            }
        );
        assert_eq!(
            decode(&|b| b[30] = 1),
            ManifestError::NotZero { offset: 30 }
        );
        assert_eq!(decode(&|b| put_u32(b, 8, 0)), ManifestError::NoServers);
        assert_eq!(
            decode(&|b| put_u32(b, 8, 33)),
            ManifestError::TooManyServers(33)
        );
        assert_eq!(
            decode(&|b| put_u32(b, 12, 65)),
            ManifestError::TooManyChannels(65)
        );
        assert_eq!(
            decode(&|b| b.push(0)),
            ManifestError::LengthMismatch {
                expected: good.len(),
                len: good.len() + 1
            }
        );
        assert_eq!(
            decode(&|b| put_u32(b, 12, 3)),
            ManifestError::LengthMismatch {
                expected: encoded_len(4, 3),
                len: good.len()
            }
        );
    }

    #[test]
    fn server_errors() {
        let good = sample_bytes();
        let decode = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            Manifest::decode(&b).unwrap_err()
        };
        assert_eq!(
            decode(&|b| b[server_at(1, 0)] = b'A'),
            ManifestError::BadName {
                field: NameField::Server,
                index: 1
            }
        );
        assert_eq!(
            decode(&|b| b[server_at(1, 16)] = 0),
            ManifestError::BadName {
                field: NameField::Bin,
                index: 1
            }
        );
        assert_eq!(
            decode(
                &|b| b[server_at(3, 0)..server_at(3, 16)].copy_from_slice(name("echo").as_bytes())
            ),
            ManifestError::DuplicateServer {
                server: 3,
                other: 2
            }
        );
        assert_eq!(
            decode(&|b| put_u32(b, server_at(0, 32), 17)),
            ManifestError::TooManyPortRanges {
                server: 0,
                count: 17
            }
        );
        assert_eq!(
            decode(&|b| put_u32(b, server_at(1, 36), 9)),
            ManifestError::TooManyMmioRegions {
                server: 1,
                count: 9
            }
        );
        assert_eq!(
            decode(&|b| put_u32(b, server_at(0, 40), 1 << 24)),
            ManifestError::BadIrqs {
                server: 0,
                bits: 1 << 24
            }
        );
        assert_eq!(
            decode(&|b| put_u32(b, server_at(2, 44), 100)),
            ManifestError::BadRingSlots {
                server: 2,
                slots: 100
            }
        );
        for slots in [0, 4, 8192] {
            assert_eq!(
                decode(&|b| put_u32(b, server_at(2, 44), slots)),
                ManifestError::BadRingSlots { server: 2, slots }
            );
        }
        // Port ranges: empty, past 0xffff, overlapping within a server.
        let port = |b: &mut Vec<u8>, range: usize, first: u32, count: u32| {
            put_u32(b, server_at(0, 48 + range * 8), first);
            put_u32(b, server_at(0, 52 + range * 8), count);
        };
        assert_eq!(
            decode(&|b| port(b, 1, 0x60, 0)),
            ManifestError::BadPortRange {
                server: 0,
                range: 1,
                first: 0x60,
                count: 0
            }
        );
        assert_eq!(
            decode(&|b| port(b, 1, 0xfff0, 0x11)),
            ManifestError::BadPortRange {
                server: 0,
                range: 1,
                first: 0xfff0,
                count: 0x11
            }
        );
        assert_eq!(
            decode(&|b| port(b, 1, 0x1_0000, 1)),
            ManifestError::BadPortRange {
                server: 0,
                range: 1,
                first: 0x1_0000,
                count: 1
            }
        );
        assert_eq!(
            decode(&|b| port(b, 1, 0x3ff, 1)),
            ManifestError::PortOverlap {
                server: 0,
                range: 1,
                other_server: 0,
                other_range: 0
            }
        );
        // An unused entry that is not zero.
        assert_eq!(
            decode(&|b| port(b, 2, 0x70, 1)),
            ManifestError::NotZero {
                offset: server_at(0, 48 + 16)
            }
        );
        // Supervision: an unknown policy, a zero period, an unknown flag.
        for (field, value) in [(304, 3), (312, 0), (316, 2), (319, 1)] {
            assert_eq!(
                decode(&|b| put_u32(b, server_at(3, field & !3), value << (8 * (field & 3)))),
                ManifestError::BadSupervision { server: 3 },
                "field {field} = {value}"
            );
        }
        // MMIO: unaligned, empty, overflowing, overlapping.
        let mmio = |b: &mut Vec<u8>, region: usize, base: u64, size: u64| {
            put_u64(b, server_at(1, 176 + region * 16), base);
            put_u64(b, server_at(1, 184 + region * 16), size);
        };
        for (base, size) in [
            (0xfee0_0800, 0x1000),
            (0xfee0_0000, 0x800),
            (0xfee0_0000, 0),
            (u64::MAX - 0xfff, 0x2000),
            (MMIO_LIMIT, 0x1000),
        ] {
            assert_eq!(
                decode(&|b| mmio(b, 1, base, size)),
                ManifestError::BadMmio {
                    server: 1,
                    region: 1,
                    base,
                    size
                }
            );
        }
        assert_eq!(
            decode(&|b| mmio(b, 1, 0xfec0_0000, 0x2000)),
            ManifestError::MmioOverlap {
                server: 1,
                region: 1,
                other_server: 1,
                other_region: 0
            }
        );
    }

    #[test]
    fn cpus_round_trip_and_default_to_unspecified() {
        let (mut servers, channels) = sample();
        assert_eq!(server("x").cpus(), 0);
        assert!(server("x").may_run_on(0) && server("x").may_run_on(200));
        servers[0].set_cpus(1 << 0);
        servers[1].set_cpus(u64::MAX);
        let bytes = to_vec(&servers, &channels).unwrap();
        // At offset 320 of each record, little-endian.
        assert_eq!(
            bytes[server_at(2, 320)..server_at(2, 328)],
            2u64.to_le_bytes()
        );
        let m = Manifest::decode(&bytes).unwrap();
        let cpus: Vec<u64> = m.servers().map(|s| s.cpus()).collect();
        assert_eq!(cpus, [1, u64::MAX, 1 << 1, 1 | 1 << 63]);
        assert_eq!(m.servers().collect::<Vec<_>>(), servers);
        let echo = m.server(2).unwrap();
        assert!(echo.may_run_on(1) && !echo.may_run_on(0) && !echo.may_run_on(64));
        let hello = m.server(3).unwrap();
        assert!(hello.may_run_on(0) && hello.may_run_on(63) && !hello.may_run_on(1));
        // Setting 0 makes it unspecified again.
        servers[1].set_cpus(0);
        let bytes = to_vec(&servers, &channels).unwrap();
        let m = Manifest::decode(&bytes).unwrap();
        assert_eq!(m.server(1).unwrap().cpus(), 0);
        // Only CPUs 0..=63 exist in the mask.
        let mut s = server("x");
        assert!(!s.allow_cpu(64) && !s.allow_cpu(u32::MAX));
        assert_eq!(s.cpus(), 0);
    }

    #[test]
    fn cpus_reserved_bytes_must_be_zero() {
        let good = sample_bytes();
        for at in 328..SERVER_RECORD_LEN {
            let mut b = good.clone();
            b[server_at(3, at)] = 1;
            assert_eq!(
                Manifest::decode(&b).unwrap_err(),
                ManifestError::NotZero {
                    offset: server_at(3, at)
                }
            );
        }
        // Any mask decodes: every bit is a CPU 0..=63.
        for mask in [1, 1 << 63, u64::MAX, 0x5555_5555_5555_5555] {
            let mut b = good.clone();
            put_u64(&mut b, server_at(0, 320), mask);
            assert_eq!(
                Manifest::decode(&b).unwrap().server(0).unwrap().cpus(),
                mask
            );
        }
    }

    #[test]
    fn grants_between_servers_do_not_overlap() {
        let (mut servers, channels) = sample();
        let mut bad = servers.clone();
        bad[3]
            .push_ports(PortRange::inclusive(0x3f0, 0x3f8).unwrap())
            .unwrap();
        assert_eq!(
            to_vec(&bad, &channels).unwrap_err(),
            ManifestError::PortOverlap {
                server: 3,
                range: 0,
                other_server: 0,
                other_range: 0
            }
        );
        let mut bad = servers.clone();
        bad[2]
            .push_mmio(MmioRegion {
                base: 0xfee0_0000,
                size: 0x10_0000,
            })
            .unwrap();
        assert_eq!(
            to_vec(&bad, &channels).unwrap_err(),
            ManifestError::MmioOverlap {
                server: 2,
                region: 0,
                other_server: 1,
                other_region: 1
            }
        );
        let mut bad = servers.clone();
        bad[3].irqs.insert(4);
        assert_eq!(
            to_vec(&bad, &channels).unwrap_err(),
            ManifestError::IrqConflict {
                server: 3,
                other_server: 0,
                line: 4
            }
        );
        // Adjacent ranges are fine.
        servers[3]
            .push_ports(PortRange::inclusive(0x400, 0x400).unwrap())
            .unwrap();
        servers[3]
            .push_mmio(MmioRegion {
                base: 0xfee0_1000,
                size: 0x1000,
            })
            .unwrap();
        to_vec(&servers, &channels).unwrap();
    }

    #[test]
    fn channel_errors() {
        let (servers, channels) = sample();
        let with = |f: &dyn Fn(&mut Vec<Channel>)| {
            let mut c = channels.clone();
            f(&mut c);
            to_vec(&servers, &c).unwrap_err()
        };
        assert_eq!(
            with(&|c| c[1].client = 4),
            ManifestError::BadChannelServer {
                channel: 1,
                index: 4
            }
        );
        assert_eq!(
            with(&|c| c[1].provider = usize::MAX),
            ManifestError::BadChannelServer {
                channel: 1,
                index: u32::MAX
            }
        );
        assert_eq!(
            with(&|c| c[2].client = 2),
            ManifestError::SelfChannel { channel: 2 }
        );
        assert_eq!(
            with(&|c| c[3].provider = 1),
            ManifestError::ChannelRingSlots {
                channel: 3,
                slots: 1024,
                expected: 256
            }
        );
        assert_eq!(
            with(&|c| {
                c[3].provider = 1;
                c[3].ring_slots = 256;
            }),
            ManifestError::ProvidedTwice {
                channel: 3,
                other: 1
            }
        );
        assert_eq!(
            with(&|c| c.push(channel("echo", 2, 3))),
            ManifestError::DuplicateChannel {
                channel: 4,
                other: 2
            }
        );
        let mut bytes = sample_bytes();
        bytes[channel_at(4, 0, 0)] = b'!';
        assert_eq!(
            Manifest::decode(&bytes).unwrap_err(),
            ManifestError::BadName {
                field: NameField::Service,
                index: 0
            }
        );
        let mut bytes = sample_bytes();
        bytes[channel_at(4, 3, 31)] = 1;
        assert_eq!(
            Manifest::decode(&bytes).unwrap_err(),
            ManifestError::NotZero {
                offset: channel_at(4, 3, 31)
            }
        );
    }

    #[test]
    fn limits() {
        let servers: Vec<Server> = (0..33).map(|i| server(&alloc::format!("s{i}"))).collect();
        assert_eq!(
            to_vec(&servers, &[]).unwrap_err(),
            ManifestError::TooManyServers(33)
        );
        to_vec(&servers[..32], &[]).unwrap();
        assert_eq!(to_vec(&[], &[]).unwrap_err(), ManifestError::NoServers);
        let channels: Vec<Channel> = (1..33)
            .flat_map(|i| [channel("a", 0, i), channel("b", 0, i)])
            .chain([channel("c", 1, 2)])
            .collect();
        assert_eq!(
            to_vec(&servers[..32], &channels).unwrap_err(),
            ManifestError::TooManyChannels(65)
        );
        // 62 channels on server 0 plus 2 IRQ lines: 64 bits > 63.
        let mut servers = servers[..32].to_vec();
        servers[0].irqs.insert(0);
        servers[0].irqs.insert(1);
        assert_eq!(
            to_vec(&servers, &channels[..62]).unwrap_err(),
            ManifestError::TooManyNotifications {
                server: 0,
                needed: 64
            }
        );
        servers[0].irqs = IrqSet::EMPTY;
        to_vec(&servers, &channels[..64]).map(|_| ()).unwrap_err();
        let mut s = server("x");
        for i in 0..16 {
            s.push_ports(PortRange::inclusive(i, i).unwrap()).unwrap();
        }
        assert_eq!(
            s.push_ports(PortRange::inclusive(20, 20).unwrap()),
            Err(Full)
        );
        for i in 0..8 {
            s.push_mmio(MmioRegion {
                base: i * 0x1000,
                size: 0x1000,
            })
            .unwrap();
        }
        assert_eq!(s.push_mmio(MmioRegion::default()), Err(Full));
        let bytes = to_vec(&[s], &[]).unwrap();
        assert_eq!(bytes.len(), encoded_len(1, 0));
        assert!(MAX_ENCODED_LEN >= bytes.len());
        let mut small = [0u8; 100];
        assert_eq!(
            encode(&[s], &[], &mut small),
            Err(ManifestError::BufferTooSmall {
                needed: encoded_len(1, 0),
                len: 100
            })
        );
    }

    /// Every port range and MMIO region granted by `servers/manifest.toml`
    /// and `tests/manifests/*.toml` (xtask's `repository_manifests_*` tests
    /// check the files themselves).
    const REPOSITORY_PORTS: [(u32, u32); 4] = [(0x40, 4), (0x3f8, 8), (0xf4, 4), (0x70, 2)];
    const REPOSITORY_MMIO: [(u64, u64); 4] = [
        (0xe0000, 0x20000),
        (0xfec0_0000, 0x1000),
        (0xfee0_0000, 0x1000),
        (0xfed0_0000, 0x1000),
    ];

    #[test]
    fn repository_manifest_grants_pass_the_rules() {
        for (first, count) in REPOSITORY_PORTS {
            assert_eq!(check_port_grant(first, count), Ok(()), "{first:#x}");
        }
        for (base, size) in REPOSITORY_MMIO {
            assert_eq!(
                check_mmio_grant(base, size, &STATIC_RAM),
                Ok(()),
                "{base:#x}"
            );
        }
    }

    #[test]
    fn port_grants() {
        // Devices a server may drive: the keyboard controller, the PICs,
        // the POST port, a full 256-port window, one ending at 0xffff.
        for (first, count) in [
            (0x60, 1),
            (0x64, 1),
            (0x20, 2),
            (0xa0, 2),
            (0x80, 1),
            (0x300, 256),
            (0xff00, 256),
        ] {
            assert_eq!(check_port_grant(first, count), Ok(()), "{first:#x}");
        }
        assert_eq!(check_port_grant(0x60, 0), Err(GrantError::NoPorts));
        assert_eq!(check_port_grant(0xffff, 2), Err(GrantError::PortsPastEnd));
        assert_eq!(check_port_grant(0x1_0000, 1), Err(GrantError::PortsPastEnd));
        // first + count would overflow a u32.
        assert_eq!(
            check_port_grant(0xffff, u32::MAX),
            Err(GrantError::PortsPastEnd)
        );
        assert_eq!(
            check_port_grant(u32::MAX, u32::MAX),
            Err(GrantError::PortsPastEnd)
        );
        // "0x0-0xffff": every port.
        assert_eq!(
            check_port_grant(0, 0x1_0000),
            Err(GrantError::TooManyPorts { count: 0x1_0000 })
        );
        assert_eq!(
            check_port_grant(0x300, 257),
            Err(GrantError::TooManyPorts { count: 257 })
        );
        let pci = GrantError::ReservedPorts(RESERVED_PORTS[5]);
        assert_eq!(RESERVED_PORTS[5].first, 0xcf8);
        assert_eq!(check_port_grant(0xcf8, 1), Err(pci));
        assert_eq!(check_port_grant(0xcfc, 4), Err(pci));
        assert_eq!(check_port_grant(0xcf0, 0x10), Err(pci));
        assert_eq!(check_port_grant(0xcff, 2), Err(pci));
        // Each reserved range is refused at both ends, and only there.
        for r in RESERVED_PORTS {
            let refused = Err(GrantError::ReservedPorts(r));
            assert_eq!(check_port_grant(r.first.into(), 1), refused);
            assert_eq!(check_port_grant(r.last.into(), 1), refused);
        }
        for port in [0x20, 0x80, 0x90, 0x93, 0xb1, 0xb4, 0xbf, 0xe0, 0xcf7, 0xd00] {
            assert_eq!(check_port_grant(port, 1), Ok(()), "{port:#x}");
        }
        assert_eq!(
            alloc::format!("{pci}"),
            "holds the PCI configuration ports (0xcf8-0xcff), which no server may be granted"
        );
    }

    #[test]
    fn mmio_grants_against_the_static_ram() {
        let over = |i: usize| Err(GrantError::MmioOverRam(STATIC_RAM[i]));
        // The issue's exploit: a window over the kernel at 1 MiB.
        assert_eq!(check_mmio_grant(0x10_0000, 0x10_0000, &STATIC_RAM), over(1));
        assert_eq!(check_mmio_grant(0, 0x1000, &STATIC_RAM), over(0));
        assert_eq!(check_mmio_grant(0x9_f000, 0x2000, &STATIC_RAM), over(0));
        assert_eq!(check_mmio_grant(0xf_f000, 0x2000, &STATIC_RAM), over(1));
        assert_eq!(check_mmio_grant(0xbfff_f000, 0x1000, &STATIC_RAM), over(1));
        // q35's PCIe configuration window lies below 3 GiB too.
        assert_eq!(check_mmio_grant(0xb000_0000, 0x1000, &STATIC_RAM), over(1));
        // VGA, the BIOS area, the device window, RAM-free high memory.
        for (base, size) in [
            (0xa_0000, 0x2_0000),
            (0xe_0000, 0x2_0000),
            (0xc000_0000, 0x1000),
            (0xfed0_0000, 0x1000),
            (0x1_0000_0000, 0x1000),
            (MMIO_GRANT_LIMIT - 0x1000, 0x1000),
        ] {
            assert_eq!(
                check_mmio_grant(base, size, &STATIC_RAM),
                Ok(()),
                "{base:#x}"
            );
        }
        assert_eq!(
            check_mmio_grant(MMIO_GRANT_LIMIT, 0x1000, &STATIC_RAM),
            Err(GrantError::MmioPastGrantLimit)
        );
        assert_eq!(
            check_mmio_grant(MMIO_GRANT_LIMIT - 0x1000, 0x2000, &[]),
            Err(GrantError::MmioPastGrantLimit)
        );
        // The shape of the region, checked first.
        assert_eq!(
            check_mmio_grant(0xfec0_0000, 0, &STATIC_RAM),
            Err(GrantError::EmptyMmio)
        );
        assert_eq!(
            check_mmio_grant(0xfec0_0800, 0x1000, &STATIC_RAM),
            Err(GrantError::UnalignedMmio)
        );
        assert_eq!(
            check_mmio_grant(0xfec0_0000, 0x800, &STATIC_RAM),
            Err(GrantError::UnalignedMmio)
        );
        // base + size overflows.
        assert_eq!(
            check_mmio_grant(u64::MAX - 0xfff, 0x2000, &STATIC_RAM),
            Err(GrantError::MmioPastLimit)
        );
        assert_eq!(
            check_mmio_grant(MMIO_LIMIT, 0x1000, &[]),
            Err(GrantError::MmioPastLimit)
        );
    }

    /// A boot memory map as the kernel passes it: its image and the
    /// initrd first, then the map's RAM.
    fn boot_ram() -> [RamRange; 4] {
        [
            RamRange::new(0x10_0000, 0x1e_5000, RamKind::KernelImage),
            RamRange::new(0x700_0000, 0x740_0000, RamKind::Initrd),
            RamRange::new(0, 0x9_fc00, RamKind::Usable),
            RamRange::new(0x10_0000, 0x7fe_0000, RamKind::Usable),
        ]
    }

    #[test]
    fn mmio_grants_against_a_boot_memory_map() {
        let ram = boot_ram();
        let over = |i: usize| Err(GrantError::MmioOverRam(ram[i]));
        assert_eq!(check_mmio_grant(0x10_0000, 0x10_0000, &ram), over(0));
        assert_eq!(check_mmio_grant(0x73f_f000, 0x1000, &ram), over(1));
        assert_eq!(check_mmio_grant(0x9_f000, 0x1000, &ram), over(2));
        assert_eq!(check_mmio_grant(0x300_0000, 0x1000, &ram), over(3));
        // Outside the map's usable RAM: the BIOS area and firmware's ACPI
        // memory (which the apic server reads), above the top of RAM.
        assert_eq!(check_mmio_grant(0x7ff_f000, 0x1000, &ram), Ok(()));
        assert_eq!(check_mmio_grant(0xe_0000, 0x2_0000, &ram), Ok(()));
        assert_eq!(check_mmio_grant(0x800_0000, 0x1000, &ram), Ok(()));
        assert_eq!(
            alloc::format!("{}", GrantError::MmioOverRam(ram[0])),
            "overlaps RAM holding the kernel image at 0x100000..0x1e5000"
        );
    }

    #[test]
    fn a_server_record_is_checked_grant_by_grant() {
        let (servers, _) = sample();
        for s in &servers {
            assert_eq!(s.check_grants(&STATIC_RAM), Ok(()), "{}", s.name);
            assert_eq!(s.check_grants(&boot_ram()), Ok(()), "{}", s.name);
        }
        let mut bad = servers[1];
        let kernel = MmioRegion {
            base: 0x10_0000,
            size: 0x10_0000,
        };
        bad.push_mmio(kernel).unwrap();
        let refusal = bad.check_grants(&boot_ram()).unwrap_err();
        assert_eq!(
            refusal,
            GrantRefusal {
                grant: Grant::Mmio(kernel),
                error: GrantError::MmioOverRam(boot_ram()[0]),
            }
        );
        assert_eq!(
            alloc::format!("{refusal}"),
            "MMIO 0x100000..0x200000: overlaps RAM holding the kernel image at 0x100000..0x1e5000"
        );
        let mut bad = servers[0];
        let every = PortRange::inclusive(0, 0xffff).unwrap();
        bad.push_ports(every).unwrap();
        assert_eq!(
            bad.check_grants(&[]),
            Err(GrantRefusal {
                grant: Grant::Ports(every),
                error: GrantError::TooManyPorts { count: 0x1_0000 },
            })
        );
        assert_eq!(
            alloc::format!("{}", bad.check_grants(&[]).unwrap_err()),
            "ports 0x0..0x10000: 65536 ports, a grant holds at most 256 (no device has more)"
        );
    }

    /// The in-QEMU test of the kernel's check builds a manifest that breaks
    /// the grant rules with `encode`: the format must still carry it.
    #[test]
    fn encode_and_decode_leave_the_grant_rules_to_check_grants() {
        let mut survivor = server("survivor");
        survivor
            .push_mmio(MmioRegion {
                base: 0x10_0000,
                size: 0x10_0000,
            })
            .unwrap();
        survivor
            .push_ports(PortRange::inclusive(0, 0xffff).unwrap())
            .unwrap();
        let bytes = to_vec(&[survivor], &[]).unwrap();
        let decoded = Manifest::decode(&bytes).unwrap().server(0).unwrap();
        assert_eq!(decoded, survivor);
        assert!(decoded.check_grants(&STATIC_RAM).is_err());
    }

    #[test]
    fn errors_display() {
        let e = ManifestError::PortOverlap {
            server: 3,
            range: 0,
            other_server: 0,
            other_range: 1,
        };
        assert_eq!(
            alloc::format!("{e}"),
            "server 3: port range 0 overlaps server 0 port range 1"
        );
    }

    /// Everything a kernel could read from a manifest that decoded.
    fn walk(m: &Manifest<'_>) {
        for (i, s) in m.servers().enumerate() {
            assert!(!s.name.as_str().is_empty() && !s.bin.as_str().is_empty());
            assert!(ring_slots_ok(s.ring_slots));
            for r in s.ports() {
                assert!(r.count > 0 && r.end() <= PORT_LIMIT);
            }
            for r in s.mmio() {
                assert!(r.valid());
            }
            let _ = s.irqs.iter().count();
            let _ = (0..=MAX_CPUS).filter(|&cpu| s.may_run_on(cpu)).count();
            let mut count = 0;
            for (n, h) in m.handles(i).enumerate() {
                assert_eq!(h.handle, n);
                assert!(h.peer < m.server_count() && h.peer != i);
                assert!(h.channel < m.channel_count());
                count += 1;
            }
            assert!(count + s.irqs.len() <= MAX_NOTIFY_BITS as usize);
        }
        for c in m.channels() {
            assert!(c.provider < m.server_count() && c.client < m.server_count());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(m) = Manifest::decode(&bytes) {
                walk(&m);
            }
        }

        #[test]
        fn random_header_with_valid_lengths_never_panics(
            servers in 0u32..40,
            channels in 0u32..70,
            fill in any::<u8>(),
            seed in proptest::collection::vec(any::<u8>(), 64),
        ) {
            let len = encoded_len(servers as usize, channels as usize);
            let mut bytes = alloc::vec![fill; len.max(HEADER_LEN)];
            for (i, b) in seed.iter().enumerate() {
                let at = (usize::from(*b) * 37 + i * 101) % bytes.len();
                bytes[at] = seed[(i + 1) % seed.len()];
            }
            bytes[..HEADER_LEN].fill(0);
            put_u32(&mut bytes, 0, MAGIC);
            put_u32(&mut bytes, 4, VERSION);
            put_u32(&mut bytes, 8, servers);
            put_u32(&mut bytes, 12, channels);
            put_u32(&mut bytes, 16, SERVER_RECORD_LEN as u32);
            put_u32(&mut bytes, 20, CHANNEL_RECORD_LEN as u32);
            if let Ok(m) = Manifest::decode(&bytes) {
                walk(&m);
            }
        }

        #[test]
        fn damaged_manifests_never_panic(
            flips in proptest::collection::vec((any::<usize>(), 0u8..8), 1..8),
            cut in any::<usize>(),
            truncate in any::<bool>(),
        ) {
            let mut bytes = sample_bytes();
            for (at, bit) in flips {
                let at = at % bytes.len();
                bytes[at] ^= 1 << bit;
            }
            if truncate {
                bytes.truncate(cut % bytes.len());
            }
            if let Ok(m) = Manifest::decode(&bytes) {
                walk(&m);
            }
        }
    }

    #[test]
    fn every_single_bit_flip_and_truncation() {
        let good = sample_bytes();
        for at in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[at] ^= 1 << bit;
                if let Ok(m) = Manifest::decode(&b) {
                    walk(&m);
                }
            }
            let m = Manifest::decode(&good[..at]);
            assert!(m.is_err());
        }
    }
}
