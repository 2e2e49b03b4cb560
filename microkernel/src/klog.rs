//! The kernel's log through the console server: once servers start, and if
//! one provides the `console` service, the kernel is one more client of it.
//! Its lines go into a ring the kernel formats itself, as console `write`
//! requests that want no completion, so that kernel and server output are
//! interleaved by whole lines like every other client's. The doorbell is
//! deferred to the end of the current trap (`take_doorbell`), because the
//! log is written from inside the scheduler. When the console server ends,
//! or the kernel faults, output goes straight to COM1 again.
//!
//! Context: any; interrupts masked while the ring lock is held.

use core::sync::atomic::{AtomicBool, Ordering};

use pvchannel::proto::console::{OP_WRITE, WRITE_MAX, pack, unpack};
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
/// `ring_len` bytes at `ring_mem` in the direct map.
pub fn attach(
    ring: Producer<Descriptor>,
    ring_mem: *mut u8,
    ring_len: usize,
    console: usize,
    bit: u32,
) {
    *LOG.lock() = Some(KernelLog {
        ring,
        ring_mem,
        ring_len,
        console,
        bit,
        line: [0; WRITE_MAX],
        len: 0,
        dropped: 0,
    });
}

/// The console server `console` ended: log to COM1 again. What it never
/// consumed, and a partial line, go to `write` first, so nothing the log
/// published is lost. Returns how many chunks were dropped earlier because
/// the ring was full.
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

/// Write `bytes` through the console server; false if the kernel log is not
/// attached (the caller writes to COM1 itself).
pub fn write(bytes: &[u8]) -> bool {
    let mut guard = LOG.lock();
    let Some(log) = guard.as_mut() else {
        return false;
    };
    for &b in bytes {
        log.line[log.len] = b;
        log.len += 1;
        if log.len == WRITE_MAX || b == b'\n' {
            log.send_chunk();
        }
    }
    if log.ring.flush() {
        DOORBELL.store(true, Ordering::Relaxed);
    }
    true
}

impl KernelLog {
    fn send_chunk(&mut self) {
        let (args, _) = pack(&self.line[..self.len]);
        let request = Descriptor::new(OP_WRITE, 0)
            .with_flags(Descriptor::FLAG_NO_COMPLETION)
            .with_args(args);
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
