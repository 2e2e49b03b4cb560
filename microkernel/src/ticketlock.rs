//! A fair spin lock (tickets, served in order), for the system's one big
//! lock: a CPU that enters the kernel in a tight loop must not keep the
//! others out. With an unfair lock it did: on PVM, where one kernel entry
//! holds the lock for a hundred microseconds of exits, a server flooding
//! system calls on one CPU starved the console server's CPU for seconds.
//!
//! The waiter may do work while it waits ([`TicketLock::lock_with`]): the
//! kernel serves TLB shootdowns there, since the holder may be waiting
//! for this CPU to flush.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

pub struct TicketLock<T> {
    next: AtomicU32,
    serving: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands `&mut T` to one holder at a time, so sharing the
// lock between threads is as safe as sending `T` to each in turn.
unsafe impl<T: Send> Sync for TicketLock<T> {}
// SAFETY: as above: the lock owns its `T`.
unsafe impl<T: Send> Send for TicketLock<T> {}

pub struct TicketGuard<'a, T> {
    lock: &'a TicketLock<T>,
}

impl<T> TicketLock<T> {
    pub const fn new(value: T) -> Self {
        Self {
            next: AtomicU32::new(0),
            serving: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// Take the lock in turn, calling `waiting` between looks.
    pub fn lock_with(&self, mut waiting: impl FnMut()) -> TicketGuard<'_, T> {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        while self.serving.load(Ordering::Acquire) != ticket {
            waiting();
            core::hint::spin_loop();
        }
        TicketGuard { lock: self }
    }

    pub fn lock(&self) -> TicketGuard<'_, T> {
        self.lock_with(|| {})
    }
}

impl<T> Deref for TicketGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this guard's ticket is the one served: nobody else has
        // the value until it is dropped.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for TicketGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and `&mut self` makes it unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for TicketGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.serving.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn holders_exclude_each_other() {
        let lock = Arc::new(TicketLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = Arc::clone(&lock);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let mut value = lock.lock();
                        // Not atomic: a second holder would lose updates.
                        let read = *value;
                        std::hint::black_box(());
                        *value = read + 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 40_000);
    }

    #[test]
    fn waiters_are_served_in_the_order_they_came() {
        let lock = TicketLock::new(Vec::new());
        let first = lock.lock();
        // A second ticket is taken; the waiter's work runs until it is served.
        let mut looks = 0;
        drop(first);
        lock.lock_with(|| looks += 1).push(1);
        assert_eq!(looks, 0, "a free lock is taken without waiting");
        assert_eq!(*lock.lock(), vec![1]);
    }
}
