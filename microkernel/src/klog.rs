//! The kernel's log through the console server: once servers start, and if
//! one provides the `console` service, the kernel is one more client of it.
//! Its lines go into a ring the kernel formats itself, as console `write`
//! requests that want no completion, so that kernel and server output are
//! interleaved by whole lines like every other client's. The doorbell is
//! deferred to the end of the current trap (`take_doorbell`), because the
//! log is written from inside the scheduler. When the console server ends,
//! or the kernel faults, output goes straight to COM1 again.
//!
//! A line is queued whole or not at all, so that a full ring never leaves
//! half a line behind for the console to join to the next one. When the
//! ring has no room, what happens depends on whose line it is: the
//! kernel's own ([`write`]: fault reports, exits) goes to COM1 at once, so
//! that no server, however much it logs, can make a kernel report vanish;
//! a server's record ([`write_server`]) is dropped and its caller counts it.
//!
//! Context: any; interrupts masked while the ring lock is held.

use core::sync::atomic::{AtomicBool, Ordering};

use abi::klog::{OP_WRITE, WRITE_MAX, pack, unpack};
use pvchannel::{Descriptor, Producer};
use spin::Mutex;

struct KernelLog {
    ring: Producer<Descriptor>,
    /// The request ring's memory (direct map), to take over its consumer
    /// end when the console server is gone.
    ring_mem: *mut u8,
    ring_len: usize,
    /// The console server and the bit that is its doorbell for this ring.
    console: usize,
    bit: u32,
    line: [u8; WRITE_MAX],
    len: usize,
    dropped: u64,
}

// SAFETY: one CPU; the producer's shared memory is the kernel's own channel
// region, reached through the direct map from any context.
unsafe impl Send for KernelLog {}

static LOG: Mutex<Option<KernelLog>> = Mutex::new(None);
static DOORBELL: AtomicBool = AtomicBool::new(false);

/// Send the kernel log to `console` through `ring`, whose memory is
/// `ring_len` bytes at `ring_mem` in the direct map. When the log was
/// already going to that console (it was restarted and this is its new
/// ring), what the old instance never released, and a partial line, are
/// carried over into the new ring, so that the new instance prints them:
/// no kernel line is lost across a console restart, and the kernel does
/// not write them to COM1 itself, byte by byte, inside a trap.
pub fn attach(
    ring: Producer<Descriptor>,
    ring_mem: *mut u8,
    ring_len: usize,
    console: usize,
    bit: u32,
) {
    let mut guard = LOG.lock();
    let old = guard.take().filter(|old| old.console == console);
    let mut log = KernelLog {
        ring,
        ring_mem,
        ring_len,
        console,
        bit,
        line: [0; WRITE_MAX],
        len: 0,
        dropped: 0,
    };
    if let Some(mut old) = old {
        let mut pending = alloc::vec![Descriptor::default(); old.ring.capacity() as usize];
        let n = old.ring.unconsumed(&mut pending).unwrap_or_else(|_| {
            // The dead console left a consumer index that cannot be; which
            // lines it printed is unknown. Say so rather than lose them
            // silently.
            crate::serial::write_direct(
                b"kernel: the console corrupted the kernel log's ring before it restarted: unprinted kernel lines were lost\n",
            );
            0
        });
        for &request in &pending[..n] {
            if log.ring.stage(request).is_err() {
                // Cannot happen with rings of one size; never silently.
                if request.opcode() == OP_WRITE {
                    let (bytes, len) = unpack(&request.args());
                    crate::serial::write_direct(&bytes[..len]);
                }
            }
        }
        log.line = old.line;
        log.len = old.len;
        log.dropped = old.dropped;
        if log.ring.flush() || n > 0 {
            DOORBELL.store(true, Ordering::Relaxed);
        }
    }
    *guard = Some(log);
}

/// The console server `console` ended: log to COM1 again. What it never
/// consumed, and a partial line, go to `write` first, so nothing the log
/// published is lost. Returns how many chunks of servers' records were
/// dropped earlier because the ring was full (the kernel's own lines went
/// to COM1 instead).
pub fn detach_if(console: usize, mut write: impl FnMut(&[u8])) -> Option<u64> {
    let log = {
        let mut guard = LOG.lock();
        if guard.as_ref().is_none_or(|l| l.console != console) {
            return None;
        }
        guard.take()?
    };
    // Every write ends with a publish, so all the log staged is published.
    // SAFETY: the region is the kernel's channel memory, live in the direct
    // map; the console server that consumed it has ended, so the kernel is
    // now its only consumer.
    let ring = unsafe { pvchannel::attach::<Descriptor>(log.ring_mem, log.ring_len) };
    if let Ok(mut consumer) = ring
        .map_err(|_| ())
        .and_then(|mem| mem.into_consumer().map_err(|_| ()))
    {
        while let Ok(request) = consumer.pop() {
            if request.opcode() == OP_WRITE {
                let (bytes, n) = unpack(&request.args());
                write(&bytes[..n]);
            }
        }
    }
    write(&log.line[..log.len]);
    Some(log.dropped)
}

/// Stop using the ring for good (the fatal-fault path).
///
/// # Safety
/// Only on a path that never returns to whoever held the lock.
pub unsafe fn abandon() {
    // SAFETY: the caller's guarantee.
    unsafe { LOG.force_unlock() };
    *LOG.lock() = None;
}

/// Write the kernel's `bytes` through the console server, or straight to
/// COM1 when its ring has no room for them; false if the kernel log is not
/// attached (the caller writes to COM1 itself).
pub fn write(bytes: &[u8]) -> bool {
    let mut guard = LOG.lock();
    let Some(log) = guard.as_mut() else {
        return false;
    };
    if !log.queue(bytes) {
        // On a line of its own: the console may have stopped halfway
        // through putting out one of its lines when it was preempted. What
        // the kernel had begun of a line goes first.
        crate::serial::write_direct(b"\n");
        crate::serial::write_direct(&log.line[..log.len]);
        crate::serial::write_direct(bytes);
        log.len = 0;
    }
    true
}

/// What became of a server's record given to [`write_server`].
pub enum Delivery {
    /// Queued for the console server.
    Queued,
    /// The console's ring had no room for all of it: none of it was queued.
    Dropped,
    /// The kernel log is not attached: the caller writes to COM1.
    NotAttached,
}

/// Write a server's record through the console server, if its ring has
/// room for all of it.
pub fn write_server(record: &[u8]) -> Delivery {
    let mut guard = LOG.lock();
    let Some(log) = guard.as_mut() else {
        return Delivery::NotAttached;
    };
    if log.queue(record) {
        Delivery::Queued
    } else {
        log.dropped += microkernel::logline::chunks(log.len, record, WRITE_MAX) as u64;
        Delivery::Dropped
    }
}

impl KernelLog {
    /// Queue `bytes` if the ring has room for every request they complete
    /// (a partial line stays in `line` until its newline); false, and
    /// nothing queued, if not. A ring the console corrupted counts as full.
    fn queue(&mut self, bytes: &[u8]) -> bool {
        let needed = microkernel::logline::chunks(self.len, bytes, WRITE_MAX);
        if needed > 0 && self.ring.free().map_or(0, |free| free as usize) < needed {
            return false;
        }
        for &b in bytes {
            self.line[self.len] = b;
            self.len += 1;
            if self.len == WRITE_MAX || b == b'\n' {
                self.send_chunk();
            }
        }
        if self.ring.flush() {
            DOORBELL.store(true, Ordering::Relaxed);
        }
        true
    }

    fn send_chunk(&mut self) {
        let (args, _) = pack(&self.line[..self.len]);
        let request = Descriptor::new(OP_WRITE, 0)
            .with_flags(Descriptor::FLAG_NO_COMPLETION)
            .with_args(args);
        // `queue` made sure of the room; should the console have corrupted
        // the ring since, the chunk is counted as dropped.
        if self.ring.stage(request).is_err() {
            self.dropped += 1;
        }
        self.len = 0;
    }
}

/// The console server to wake and its bit, if the log published anything
/// it has not been told about.
pub fn take_doorbell() -> Option<(usize, u32)> {
    if !DOORBELL.swap(false, Ordering::Relaxed) {
        return None;
    }
    LOG.lock().as_ref().map(|l| (l.console, l.bit))
}
