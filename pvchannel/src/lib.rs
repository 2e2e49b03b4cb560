//! pvchannel: the lock-free shared-memory rings that batch hypercalls, and
//! their async halves. The system-call ABI and the boot manifest's format
//! are crates of their own (`abi`, `manifest`).
//!
//! `#![no_std]`; the core (layout, descriptors, ring ends, async halves)
//! needs no allocator. The `alloc` feature adds heap-backed regions for host
//! tests and tools ([`owned`]). Usable from the kernel (any context: no
//! blocking, no allocation, no panics on peer input), from servers and from
//! host threads.
//!
//! # Layout of one ring
//!
//! A ring lives in a region of whole 4096-byte pages ([`ring_bytes`]) that
//! both sides map, perhaps at different virtual addresses: it holds no
//! pointers, only indices. Every index sits alone on its own 64-byte line,
//! followed by an empty one: `IndexLine` in `layout.rs` says why.
//!
//! ```text
//! offset  0  +-----------------------------------------------------------+
//!            | RingHeader: magic "PVRG", version, features, capacity,    |
//!            |             slot_size, slots_offset, reserved (64 bytes)  |
//!            |  (empty line)                                             |
//!       128  +-----------------------------------------------------------+
//!            | producer index   u32   written by the producer only       |
//!            |  (empty line)                                             |
//!       256  +-----------------------------------------------------------+
//!            | consumer index   u32   written by the consumer only       |
//!            |  (empty line)                                             |
//!       384  +-----------------------------------------------------------+
//!            | consumer event   u32   written by the consumer only       |
//!            |  (empty line)                                             |
//!       512  +-----------------------------------------------------------+
//!            | producer event   u32   written by the producer only       |
//!            |  (empty line)                                             |
//!       640  +-----------------------------------------------------------+
//!            | slot 0 | slot 1 | ...            | slot capacity-1        |
//!            +-----------------------------------------------------------+
//!            | padding to a whole page                                   |
//!            +-----------------------------------------------------------+
//! ```
//!
//! The capacity is a power of two; indices are free-running `u32`s and the
//! slot of index `i` is `i & (capacity - 1)`. A [`Duplex`] channel is two
//! rings in one region: requests ([`Descriptor`], client to server) from
//! offset 0, completions ([`Completion`], server to client) from the next
//! page boundary after the first ring ([`duplex_bytes`]).
//!
//! # Protocol
//!
//! * The **producer** writes items into slots `[producer, consumer +
//!   capacity)` and then *publishes* them by storing the producer index with
//!   release ordering (once per batch). The **consumer** reads the producer
//!   index with acquire ordering, copies items out of slots `[consumer,
//!   producer)`, and *releases* them by storing the consumer index with
//!   release ordering (once per batch).
//! * Each side keeps its own index privately and never reads it back from
//!   shared memory. It reads the peer's index once per refresh, checks that
//!   it did not go backwards and is not more than `capacity` ahead (a
//!   violation is [`RingError::Corrupt`] and poisons that end), and caches
//!   it: the peer's line is only touched when the cached view runs out.
//! * **Notification (event index, as in virtio).** A consumer about to
//!   sleep stores its consumer index into the *consumer event* ("ring me
//!   when the producer index passes this"), issues a `SeqCst` fence and
//!   reads the producer index again; only if it is still empty does it
//!   sleep. A producer, after publishing, issues a `SeqCst` fence, reads the
//!   consumer event and rings the doorbell iff the event lies in
//!   `[old, new)`, where `old` is the producer index at its previous check
//!   ([`need_event`]). The two fences order "store index, load event"
//!   against "store event, load index": at least one side sees the other,
//!   so no wakeup is lost. A consumer that is busy never updates its event,
//!   so a busy pipeline rings no doorbells at all. The same rule runs the
//!   other way for a producer waiting for space (*producer event*, checked
//!   by the consumer after releasing).
//! * **Batching** ([`Batching`], boot option `batching=on|off`): with `On`,
//!   [`Sender`] publishes once per batch (batch limit, explicit flush, full
//!   ring, or at once when the consumer's event index says it waits for the
//!   next item) and [`Receiver`] releases once per batch. With `Off`, every
//!   descriptor is published and followed by its own doorbell, and every
//!   slot is released on its own.
//! * **Hostile peers.** Descriptors are copied out of shared memory before
//!   they are decoded; header fields and indices are read exactly once into
//!   private copies, validated, then used; slot positions are masked private
//!   indices, so nothing a peer writes can cause an out-of-bounds access or
//!   a panic. The worst a peer can do is garbage data, spurious or missing
//!   doorbells for itself, or a `Corrupt` error.
//!
//! # Using it
//!
//! The kernel formats the region with [`init`] / [`init_duplex`] (or
//! [`init`] then hands out pages); each side validates it with [`attach`] /
//! [`attach_duplex`] and claims its end ([`RingMem::into_producer`],
//! [`Duplex::client`], ...). The ends offer single-item operations
//! ([`Producer::push`], [`Consumer::pop`]), batch operations
//! ([`Producer::reserve`] / [`Producer::push_slice`] + one publish,
//! [`Consumer::peek`] / [`Consumer::pop_slice`] + one release), and the
//! notification steps ([`Producer::flush`], [`Consumer::prepare_wait`],
//! ...). [`Sender`] and [`Receiver`] wrap an end with a [`Doorbell`] for
//! async code: `sender.send(item).await`, and the receiver is a
//! `futures_util::Stream`.
//!
//! # Model checking with loom
//!
//! The index protocol is model checked with loom (the ring uses loom's
//! atomics under `cfg(loom)`, see `sync.rs`):
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p pvchannel --release --lib loom
//! ```
#![no_std]

#[cfg(any(test, feature = "alloc"))]
extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod channel;
pub mod descriptor;
pub mod layout;
#[cfg(any(test, feature = "alloc"))]
pub mod owned;
pub mod ring;
pub mod spin;
mod sync;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

pub use channel::{Batching, Doorbell, PairDoorbell, Receiver, Sender, WakerPair};
pub use descriptor::{Completion, DESCRIPTOR_ARGS, Descriptor};
pub use layout::{
    ClientEnds, Duplex, LayoutError, RingHeader, RingMem, ServerEnds, Slot, attach, attach_duplex,
    duplex_bytes, init, init_duplex, ring_bytes, ring_bytes_for,
};
pub use ring::{Consumer, PeerIndex, Producer, ReadBatch, RingError, WriteBatch, need_event};
