//! An IRQ line as an awaitable event.
//!
//! The kernel delivers line `n` (vector `0x20 + n`, once the apic server
//! routes it) as a notification bit to the server that bound it, and keeps
//! the local APIC's end of interrupt until that server calls `irq_ack(n)`.
//! [`IrqLine`] binds the line, holds a lane on its bit whose waker records
//! that the bit came back, and acknowledges on request.
//!
//! Context: a server's only thread, inside the executor.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll};

use futures_util::task::{ArcWake, AtomicWaker, waker};
use userland::abi::Error;
use userland::notify::{Lane, NOTIFICATIONS};
use userland::sys;

struct Fired {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl ArcWake for Fired {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.fired.store(true, Ordering::Release);
        arc_self.task.wake();
    }
}

/// A bound IRQ line.
pub struct IrqLine {
    line: u32,
    lane: Lane<'static>,
    fired: Arc<Fired>,
    count: u64,
}

impl IrqLine {
    /// Take delivery of `line` (the manifest must grant it).
    pub fn bind(line: u32) -> Result<Self, Error> {
        let bit = sys::irq_bind(line)?;
        let lane = NOTIFICATIONS.lane(bit).ok_or(Error::Busy)?;
        Ok(Self {
            line,
            lane,
            fired: Arc::new(Fired {
                fired: AtomicBool::new(false),
                task: AtomicWaker::new(),
            }),
            count: 0,
        })
    }

    /// The line number.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// Interrupts seen so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether the interrupt came (and forget that it did).
    pub fn take(&mut self) -> bool {
        let fired = self.fired.fired.swap(false, Ordering::AcqRel);
        if fired {
            self.count += 1;
        }
        fired
    }

    /// Ready once the interrupt came (it stays pending until [`take`](Self::take));
    /// otherwise arms the lane with the task's waker.
    pub fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.fired.task.register(cx.waker());
        self.lane.register(&waker(self.fired.clone()));
        if self.fired.fired.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Wait for the interrupt and take it.
    pub async fn fired(&mut self) {
        core::future::poll_fn(|cx| self.poll_fired(cx)).await;
        self.take();
    }

    /// The handler is done: the line may fire again.
    pub fn ack(&self) -> Result<(), Error> {
        sys::irq_ack(self.line)
    }
}
