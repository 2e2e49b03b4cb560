//! The manifest's header and records as they lie in the bytes (the crate
//! docs' "Wire format"), so that no byte offset is kept by hand.
//!
//! Every field is a little-endian integer type of alignment 1, so a record
//! is a plain copy of its bytes on any host and holds no padding. These
//! types say only where a field lies; what a value may be is the decoder's
//! to check (`Manifest::decode` copies a record out of the input, checks it,
//! and only then turns it into a [`Server`](crate::Server) or a
//! [`Channel`](crate::Channel)).

use core::mem::{offset_of, size_of};

use abi::NAME_LEN;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{CHANNEL_RECORD_LEN, HEADER_LEN, MAX_MMIO_REGIONS, MAX_PORT_RANGES, SERVER_RECORD_LEN};

/// The header, at offset 0.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct Header {
    pub magic: U32,
    pub version: U32,
    pub server_count: U32,
    pub channel_count: U32,
    pub server_record_len: U32,
    pub channel_record_len: U32,
    pub reserved: [u8; 8],
}

/// One port range of a server record; unused entries are zero.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct PortEntry {
    pub first: U32,
    pub count: U32,
}

/// One MMIO region of a server record; unused entries are zero.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct MmioEntry {
    pub base: U64,
    pub size: U64,
}

/// One server, in boot order after the header.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct ServerRecord {
    pub name: [u8; NAME_LEN],
    pub bin: [u8; NAME_LEN],
    pub port_count: U32,
    pub mmio_count: U32,
    pub irqs: U32,
    pub ring_slots: U32,
    pub ports: [PortEntry; MAX_PORT_RANGES],
    pub mmio: [MmioEntry; MAX_MMIO_REGIONS],
    pub restart: U32,
    pub restart_limit: U32,
    pub restart_period_ms: U32,
    pub flags: U32,
    pub cpus: U64,
    pub reserved: [u8; 8],
}

/// One channel, after the server records.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct ChannelRecord {
    pub service: [u8; NAME_LEN],
    pub provider: U32,
    pub client: U32,
    pub ring_slots: U32,
    pub reserved: U32,
}

// The documented wire format: a size or an array moved by an edit here
// fails the build instead of every manifest already written (the crate's
// tests pin every field against a manifest laid out by hand).
const _: () = {
    assert!(size_of::<Header>() == HEADER_LEN);
    assert!(size_of::<ServerRecord>() == SERVER_RECORD_LEN);
    assert!(size_of::<ChannelRecord>() == CHANNEL_RECORD_LEN);
    assert!(offset_of!(ServerRecord, ports) == 48);
    assert!(offset_of!(ServerRecord, mmio) == 176);
    assert!(offset_of!(ServerRecord, restart) == 304);
    assert!(offset_of!(ServerRecord, cpus) == 320);
};

/// The first non-zero byte of `field`, which lies at `offset` of the
/// manifest, as the decoder's error.
pub(crate) fn check_zero(field: &[u8], offset: usize) -> Result<(), crate::ManifestError> {
    match field.iter().position(|&b| b != 0) {
        Some(i) => Err(crate::ManifestError::NotZero { offset: offset + i }),
        None => Ok(()),
    }
}
