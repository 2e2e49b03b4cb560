//! Notification bits as wakers: the link between `sys::wait` and the tasks
//! of the executor.
//!
//! The kernel delivers every event (a peer's doorbell on a channel, an IRQ)
//! as a bit of a 64-bit pending set, and `wait(mask)` returns the pending
//! bits of `mask`. Here each bit has a few *lanes*: a [`Lane`] is one
//! waiter's claim on a bit (one half of a channel, one IRQ handler), holding
//! the waker of the task that last waited there. The executor waits on the
//! bits that have an armed lane and wakes every lane of the bits that come
//! back. A wake may be spurious (the woken task looks, finds nothing and
//! waits again); none is lost, because a lane is armed before the task's
//! final re-check (the ring protocol's `prepare_wait`) and the kernel keeps
//! a bit pending until a `wait` that includes it.
//!
//! Context: a server's single thread; the types are also `Sync` (atomics
//! only) so host tests may share them between threads.

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use core::task::Waker;

use futures_util::task::AtomicWaker;

/// Number of notification bits.
pub const BITS: u32 = 64;
/// Waiters one bit can have at once (a channel side needs two: its sender
/// and its receiver half).
pub const LANES: usize = 8;

struct Bit {
    wakers: [AtomicWaker; LANES],
    /// Lanes handed out (bit i = lane i).
    taken: AtomicU8,
    /// Lanes whose waker is registered and not woken yet.
    armed: AtomicU8,
}

impl Bit {
    const fn new() -> Self {
        Self {
            wakers: [const { AtomicWaker::new() }; LANES],
            taken: AtomicU8::new(0),
            armed: AtomicU8::new(0),
        }
    }
}

/// The wakers of all 64 notification bits.
pub struct Notifications {
    bits: [Bit; BITS as usize],
    /// Bits with at least one armed lane: what the executor waits on.
    armed: AtomicU64,
}

impl Default for Notifications {
    fn default() -> Self {
        Self::new()
    }
}

/// The notifications of this server (the one instance the system uses).
pub static NOTIFICATIONS: Notifications = Notifications::new();

impl Notifications {
    /// No lanes taken, nothing armed.
    pub const fn new() -> Self {
        Self {
            bits: [const { Bit::new() }; BITS as usize],
            armed: AtomicU64::new(0),
        }
    }

    /// Claim a lane on `bit`; `None` when `bit >= 64` or all its lanes are
    /// taken. The lane is given back when the [`Lane`] is dropped.
    pub fn lane(&self, bit: u32) -> Option<Lane<'_>> {
        let b = self.bits.get(bit as usize)?;
        let mut taken = b.taken.load(Ordering::Relaxed);
        loop {
            let free = (!taken).trailing_zeros() as usize;
            if free >= LANES {
                return None;
            }
            match b.taken.compare_exchange_weak(
                taken,
                taken | (1 << free),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Lane {
                        set: self,
                        bit,
                        lane: free,
                    });
                }
                Err(now) => taken = now,
            }
        }
    }

    /// The bits some task waits on: the `mask` for `sys::wait`.
    pub fn armed(&self) -> u64 {
        self.armed.load(Ordering::Acquire)
    }

    /// The kernel reported `pending`: wake every task waiting on those bits.
    /// Returns how many lanes were woken.
    pub fn wake(&self, pending: u64) -> usize {
        let hits = self.armed.fetch_and(!pending, Ordering::AcqRel) & pending;
        let mut woken = 0;
        let mut rest = hits;
        while rest != 0 {
            let bit = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            let b = &self.bits[bit];
            let mut lanes = b.armed.swap(0, Ordering::AcqRel);
            while lanes != 0 {
                let lane = lanes.trailing_zeros() as usize;
                lanes &= lanes - 1;
                b.wakers[lane].wake();
                woken += 1;
            }
        }
        woken
    }
}

/// One waiter's claim on a notification bit. Register the current task's
/// waker before the last check that precedes a sleep.
pub struct Lane<'a> {
    set: &'a Notifications,
    bit: u32,
    lane: usize,
}

impl core::fmt::Debug for Lane<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Lane")
            .field("bit", &self.bit)
            .field("lane", &self.lane)
            .finish()
    }
}

impl Lane<'_> {
    /// The notification bit.
    pub fn bit(&self) -> u32 {
        self.bit
    }

    /// Wake `waker` the next time the bit comes back from `wait`.
    pub fn register(&self, waker: &Waker) {
        let b = &self.set.bits[self.bit as usize];
        b.wakers[self.lane].register(waker);
        b.armed.fetch_or(1 << self.lane, Ordering::AcqRel);
        self.set.armed.fetch_or(1 << self.bit, Ordering::AcqRel);
    }

    /// Stop waiting (the waker is dropped).
    pub fn disarm(&self) {
        let b = &self.set.bits[self.bit as usize];
        let left = b.armed.fetch_and(!(1 << self.lane), Ordering::AcqRel) & !(1 << self.lane);
        drop(b.wakers[self.lane].take());
        if left == 0 {
            self.set.armed.fetch_and(!(1 << self.bit), Ordering::AcqRel);
        }
    }
}

impl Drop for Lane<'_> {
    fn drop(&mut self) {
        self.disarm();
        let b = &self.set.bits[self.bit as usize];
        b.taken.fetch_and(!(1 << self.lane), Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use core::sync::atomic::AtomicUsize;
    use futures_util::task::{ArcWake, waker};

    struct Count(AtomicUsize);
    impl ArcWake for Count {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), waker(c))
    }

    #[test]
    fn lanes_are_limited_and_returned() {
        let n = Notifications::new();
        let lanes: alloc::vec::Vec<_> = (0..LANES).map(|_| n.lane(5).unwrap()).collect();
        assert!(n.lane(5).is_none());
        assert!(n.lane(64).is_none());
        drop(lanes);
        assert!(n.lane(5).is_some());
    }

    #[test]
    fn registered_lanes_make_the_mask_and_wake_once() {
        let n = Notifications::new();
        let a = n.lane(3).unwrap();
        let b = n.lane(3).unwrap();
        let c = n.lane(40).unwrap();
        let (ca, wa) = counter();
        let (cb, wb) = counter();
        let (cc, wc) = counter();
        assert_eq!(n.armed(), 0);
        a.register(&wa);
        b.register(&wb);
        c.register(&wc);
        assert_eq!(n.armed(), (1 << 3) | (1 << 40));
        // A bit nobody waits on wakes nobody.
        assert_eq!(n.wake(1 << 7), 0);
        assert_eq!(n.wake(1 << 3), 2);
        assert_eq!(ca.0.load(Ordering::SeqCst), 1);
        assert_eq!(cb.0.load(Ordering::SeqCst), 1);
        assert_eq!(cc.0.load(Ordering::SeqCst), 0);
        assert_eq!(n.armed(), 1 << 40);
        // Woken lanes are disarmed until registered again.
        assert_eq!(n.wake(1 << 3), 0);
        drop(c);
        assert_eq!(n.armed(), 0);
        assert_eq!(n.wake(1 << 40), 0);
        assert_eq!(cc.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn disarm_keeps_the_bit_for_other_lanes() {
        let n = Notifications::new();
        let a = n.lane(1).unwrap();
        let b = n.lane(1).unwrap();
        let (_ca, wa) = counter();
        let (cb, wb) = counter();
        a.register(&wa);
        b.register(&wb);
        a.disarm();
        assert_eq!(n.armed(), 1 << 1);
        assert_eq!(n.wake(u64::MAX), 1);
        assert_eq!(cb.0.load(Ordering::SeqCst), 1);
    }
}
