//! Async halves over the ring ends, with the batching policy.
//!
//! Context: user space (an async executor) or host threads. No allocation.
//! The doorbell and the wait are a [`Doorbell`]: on the host, wakers shared
//! between threads ([`WakerPair`]); in the system, a `notify` system call to
//! ring and the executor's per-notification waker to wait.

use core::future::poll_fn;
use core::ops::Deref;
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Context, Poll, Waker};

use futures_util::Stream;
use futures_util::task::AtomicWaker;

use crate::layout::Slot;
use crate::ring::{Consumer, Producer, RingError};
use crate::spin::SpinBudget;

/// When to publish and notify (boot option `batching=on|off`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Batching {
    /// Publish once per batch: when `batch_limit` items are staged, on an
    /// explicit `flush`, when the ring is full, or at once when the consumer
    /// is waiting for the next item. Doorbells only when the peer's event
    /// index asks for one. The consumer releases once per batch.
    #[default]
    On,
    /// Publish and ring the doorbell after every descriptor, unconditionally;
    /// the consumer releases every slot on its own. The baseline.
    Off,
}

impl Batching {
    /// Parse the value of the `batching=` boot option.
    pub fn from_option(value: &str) -> Option<Self> {
        match value {
            "on" | "1" | "yes" | "true" => Some(Self::On),
            "off" | "0" | "no" | "false" => Some(Self::Off),
            _ => None,
        }
    }

    /// From `BootInfo::batching` (1 = on).
    pub fn from_flag(on: u32) -> Self {
        if on != 0 { Self::On } else { Self::Off }
    }
}

/// How one side of a channel tells its peer "look at the ring", and how it
/// waits for the peer to do the same.
pub trait Doorbell {
    /// Wake the peer (in the system: the `notify` system call).
    fn ring(&self);
    /// Make `waker` the task to wake when the peer rings *our* doorbell.
    /// Called before every re-check that precedes a sleep, so a doorbell
    /// that arrives after the re-check wakes the latest waker.
    fn register(&self, waker: &Waker);
}

impl<D: Doorbell + ?Sized> Doorbell for &D {
    fn ring(&self) {
        (**self).ring();
    }
    fn register(&self, waker: &Waker) {
        (**self).register(waker);
    }
}

/// Two wakers, one per side, for two tasks or threads in one address space
/// (host tests, loopback). Side 0 ringing wakes side 1 and vice versa.
pub struct WakerPair {
    wakers: [AtomicWaker; 2],
    rings: [AtomicU64; 2],
}

impl Default for WakerPair {
    fn default() -> Self {
        Self::new()
    }
}

impl WakerPair {
    pub const fn new() -> Self {
        Self {
            wakers: [AtomicWaker::new(), AtomicWaker::new()],
            rings: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// How often side `side` (0 or 1) rang its peer.
    pub fn rings(&self, side: usize) -> u64 {
        self.rings[side & 1].load(Ordering::Relaxed)
    }
}

/// One side's doorbell of a [`WakerPair`], held through any pointer to it
/// (`&WakerPair`, `Arc<WakerPair>`).
#[derive(Clone)]
pub struct PairDoorbell<P: Deref<Target = WakerPair>> {
    pair: P,
    side: usize,
}

impl<P: Deref<Target = WakerPair>> PairDoorbell<P> {
    /// Side `side & 1` of `pair`.
    pub fn new(pair: P, side: usize) -> Self {
        Self {
            pair,
            side: side & 1,
        }
    }
}

impl<P: Deref<Target = WakerPair>> Doorbell for PairDoorbell<P> {
    fn ring(&self) {
        self.pair.rings[self.side].fetch_add(1, Ordering::Relaxed);
        self.pair.wakers[self.side ^ 1].wake();
    }
    fn register(&self, waker: &Waker) {
        self.pair.wakers[self.side].register(waker);
    }
}

/// Default number of staged items that forces a publication.
pub fn default_batch_limit(capacity: u32) -> u32 {
    (capacity / 2).clamp(1, 64)
}

/// The async sending half: a [`Producer`], a [`Doorbell`] and a policy.
pub struct Sender<T: Slot, D: Doorbell> {
    ring: Producer<T>,
    bell: D,
    batching: Batching,
    batch_limit: u32,
    doorbells: u64,
    spin: SpinBudget,
}

impl<T: Slot, D: Doorbell> Sender<T, D> {
    pub fn new(ring: Producer<T>, bell: D, batching: Batching) -> Self {
        let batch_limit = default_batch_limit(ring.capacity());
        Self {
            ring,
            bell,
            batching,
            batch_limit,
            doorbells: 0,
            spin: SpinBudget::off(),
        }
    }

    /// Poll a full ring up to `budget` before sleeping on it (for a
    /// consumer that runs on another CPU: `crate::spin`).
    pub fn set_spin(&mut self, budget: SpinBudget) {
        self.spin = budget;
    }

    /// The polling budget, with its hits and misses so far.
    pub fn spin(&self) -> &SpinBudget {
        &self.spin
    }

    /// Publish at the latest when `limit` items are staged (1..=capacity).
    pub fn with_batch_limit(mut self, limit: u32) -> Self {
        self.batch_limit = limit.clamp(1, self.ring.capacity());
        self
    }

    pub fn batching(&self) -> Batching {
        self.batching
    }

    /// Doorbells this half has rung.
    pub fn doorbells(&self) -> u64 {
        self.doorbells
    }

    /// The ring end underneath.
    pub fn producer(&mut self) -> &mut Producer<T> {
        &mut self.ring
    }

    pub fn into_parts(self) -> (Producer<T>, D) {
        (self.ring, self.bell)
    }

    /// Carry on over `ring` (a new generation of the channel, after the
    /// peer was restarted), keeping the doorbell and the policy; returns
    /// the old ring end, which must not be used once its memory is gone.
    pub fn replace_ring(&mut self, ring: Producer<T>) -> Producer<T> {
        self.batch_limit = self.batch_limit.clamp(1, ring.capacity());
        core::mem::replace(&mut self.ring, ring)
    }

    fn ring_bell(&mut self) {
        self.bell.ring();
        self.doorbells += 1;
    }

    /// Publish everything staged and ring the doorbell if the consumer
    /// asked for one. Call at the end of a burst with `Batching::On`.
    pub fn flush(&mut self) {
        if self.ring.flush() {
            self.ring_bell();
        }
    }

    fn after_stage(&mut self) {
        match self.batching {
            Batching::Off => {
                self.ring.publish();
                self.ring.mark_notified();
                self.ring_bell();
            }
            Batching::On => {
                if self.ring.staged() >= self.batch_limit || self.ring.consumer_waiting() {
                    self.flush();
                }
            }
        }
    }

    /// Send without waiting; `Err(Full)` when no slot is free (what was
    /// staged is then published, so the consumer can make room).
    pub fn try_send(&mut self, item: T) -> Result<(), RingError> {
        match self.ring.stage(item) {
            Ok(()) => {
                self.after_stage();
                Ok(())
            }
            Err(RingError::Full) => {
                self.flush();
                Err(RingError::Full)
            }
            Err(e) => Err(e),
        }
    }

    /// Send as many of `items` as fit without waiting; returns how many.
    /// With `Batching::On` they are published with one store and at most one
    /// doorbell.
    pub fn try_send_slice(&mut self, items: &[T]) -> Result<usize, RingError> {
        match self.batching {
            Batching::On => {
                let n = self.ring.stage_slice(items)?;
                self.flush();
                Ok(n)
            }
            Batching::Off => {
                let mut sent = 0;
                for &item in items {
                    match self.try_send(item) {
                        Ok(()) => sent += 1,
                        Err(RingError::Full) => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(sent)
            }
        }
    }

    /// Ready when a slot is free. When the ring is full: publishes what is
    /// staged, registers the waker, asks the consumer for a doorbell and
    /// looks again (so no wakeup is lost).
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RingError>> {
        self.spin.resumed();
        if self.ring.free_cached() > 0 {
            return Poll::Ready(Ok(()));
        }
        match self.ring.free() {
            Ok(0) => {}
            Ok(_) => return Poll::Ready(Ok(())),
            Err(e) => return Poll::Ready(Err(e)),
        }
        self.flush();
        let ring = &mut self.ring;
        if self.spin.poll(|| ring.free().map_or(true, |n| n > 0)) {
            return Poll::Ready(Ok(()));
        }
        self.bell.register(cx.waker());
        match self.ring.prepare_wait() {
            Ok(true) => Poll::Pending,
            Ok(false) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Send one item, waiting for space.
    pub async fn send(&mut self, item: T) -> Result<(), RingError> {
        loop {
            poll_fn(|cx| self.poll_ready(cx)).await?;
            match self.try_send(item) {
                Err(RingError::Full) => continue,
                other => return other,
            }
        }
    }
}

/// The async receiving half: a [`Consumer`], a [`Doorbell`] and a policy.
/// A [`Stream`] of `Result<T, RingError>`; after a `Corrupt` error the
/// stream ends.
pub struct Receiver<T: Slot, D: Doorbell> {
    ring: Consumer<T>,
    bell: D,
    batching: Batching,
    batch_limit: u32,
    doorbells: u64,
    done: bool,
    spin: SpinBudget,
}

impl<T: Slot, D: Doorbell> Receiver<T, D> {
    pub fn new(ring: Consumer<T>, bell: D, batching: Batching) -> Self {
        let batch_limit = default_batch_limit(ring.capacity());
        Self {
            ring,
            bell,
            batching,
            batch_limit,
            doorbells: 0,
            done: false,
            spin: SpinBudget::off(),
        }
    }

    /// Poll an empty ring up to `budget` before sleeping on it (for a
    /// producer that runs on another CPU: `crate::spin`).
    pub fn set_spin(&mut self, budget: SpinBudget) {
        self.spin = budget;
    }

    /// The polling budget, with its hits and misses so far.
    pub fn spin(&self) -> &SpinBudget {
        &self.spin
    }

    /// Release slots at the latest after `limit` items (1..=capacity).
    pub fn with_batch_limit(mut self, limit: u32) -> Self {
        self.batch_limit = limit.clamp(1, self.ring.capacity());
        self
    }

    pub fn batching(&self) -> Batching {
        self.batching
    }

    /// Doorbells this half has rung (space freed for a waiting producer).
    pub fn doorbells(&self) -> u64 {
        self.doorbells
    }

    /// The ring end underneath.
    pub fn consumer(&mut self) -> &mut Consumer<T> {
        &mut self.ring
    }

    pub fn into_parts(self) -> (Consumer<T>, D) {
        (self.ring, self.bell)
    }

    /// Carry on over `ring` (see [`Sender::replace_ring`]); a stream that
    /// ended on a corrupt ring starts again.
    pub fn replace_ring(&mut self, ring: Consumer<T>) -> Consumer<T> {
        self.batch_limit = self.batch_limit.clamp(1, ring.capacity());
        self.done = false;
        core::mem::replace(&mut self.ring, ring)
    }

    /// Release every taken slot and ring the producer's doorbell if it is
    /// waiting for space.
    pub fn flush(&mut self) {
        if self.ring.flush() {
            self.bell.ring();
            self.doorbells += 1;
        }
    }

    /// Receive without waiting; `Err(Empty)` when nothing is there (taken
    /// slots are then released).
    pub fn try_recv(&mut self) -> Result<T, RingError> {
        match self.ring.take() {
            Ok(item) => {
                if self.batching == Batching::Off || self.ring.unreleased() >= self.batch_limit {
                    self.flush();
                }
                Ok(item)
            }
            Err(RingError::Empty) => {
                self.flush();
                Err(RingError::Empty)
            }
            Err(e) => Err(e),
        }
    }

    /// Receive up to `out.len()` items without waiting; returns how many.
    pub fn try_recv_slice(&mut self, out: &mut [T]) -> Result<usize, RingError> {
        if self.batching == Batching::Off {
            let Some(first) = out.first_mut() else {
                return Ok(0);
            };
            return match self.try_recv() {
                Ok(item) => {
                    *first = item;
                    Ok(1)
                }
                Err(RingError::Empty) => Ok(0),
                Err(e) => Err(e),
            };
        }
        let n = self.ring.pop_slice(out)?;
        self.flush();
        Ok(n)
    }

    /// Poll for one item. When the ring is empty: releases, registers the
    /// waker, asks the producer for a doorbell and looks again.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<T, RingError>> {
        self.spin.resumed();
        loop {
            match self.try_recv() {
                Err(RingError::Empty) => {}
                other => return Poll::Ready(other),
            }
            let ring = &mut self.ring;
            if self.spin.poll(|| ring.available().map_or(true, |n| n > 0)) {
                continue;
            }
            self.bell.register(cx.waker());
            match self.ring.prepare_wait() {
                Ok(true) => return Poll::Pending,
                Ok(false) => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Receive one item, waiting for it.
    pub async fn recv(&mut self) -> Result<T, RingError> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl<T: Slot, D: Doorbell + Unpin> Stream for Receiver<T, D> {
    type Item = Result<T, RingError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.poll_recv(cx) {
            Poll::Ready(Ok(item)) => Poll::Ready(Some(Ok(item))),
            Poll::Ready(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
