//! The ring stress workloads of `cargo xtask stress`, and what their
//! servers share: the protocols, the message payload, the sequence check,
//! percentiles, and the one-line machine-readable result.
//!
//! * `stress-producer` (client of `stress`) moves N messages in batches of
//!   B to `stress-consumer` (provider), which checks their sequence
//!   numbers: any loss, duplicate or reordering fails the run.
//! * `ping` (client of `pong`) times one message at a time, each waiting
//!   for its answer.
//!
//! Both print `stress-ready`, pause, run the workload, print `stress-done`,
//! pause again, and print one `stress-result key=value ...` line. The
//! pauses give `cargo xtask stress` time to read KVM's exit counters over
//! QMP when it sees each marker, so the workload is bracketed by them.
//!
//! Context: user space, one thread per server. Everything here except
//! [`tsc`] (the one `unsafe` instruction) and the system-call helpers is
//! plain logic that `cargo test -p stress` runs on the host.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::vec::Vec;
use core::fmt::{self, Write};

use userland::abi::KernelCounters;
use userland::{Descriptor, sys};

pub mod tsc;

/// The service `stress-consumer` provides.
pub const STREAM_SERVICE: &str = "stress";
/// The service `pong` provides.
pub const PONG_SERVICE: &str = "pong";

/// A stream message: `cookie` is its sequence number (0, 1, ...), the
/// argument words carry the payload; no completion is wanted.
pub const OP_MSG: u32 = 1;
/// The end of the stream: `args[0]` = messages sent, `args[1]` = the XOR
/// of every payload word sent. Answered with value = messages received,
/// aux = messages lost.
pub const OP_END: u32 = 2;
/// After the end: answered with value = duplicates (with
/// [`VERDICT_CHECKSUM_BAD`] set when the payload checksum did not match)
/// and aux = reordered.
pub const OP_VERDICT: u32 = 3;
/// The bit of the verdict's value that reports a payload mismatch.
pub const VERDICT_CHECKSUM_BAD: u64 = 1 << 63;
/// A ping: answered with its `args[0]`.
pub const OP_PING: u32 = 4;

/// The most payload one message carries: the six argument words of a
/// 64-byte descriptor (the other 16 bytes are the opcode, flags and the
/// sequence number in the cookie). Every message is one 64-byte slot on
/// the ring whatever its payload.
pub const MAX_PAYLOAD: usize = 48;
/// The bytes one message occupies on the ring.
pub const MESSAGE_BYTES: usize = 64;

/// Defaults of the producer's arguments.
pub const DEFAULT_MESSAGES: u64 = 1_000_000;
pub const DEFAULT_BATCH: usize = 64;
pub const DEFAULT_PAYLOAD: usize = MAX_PAYLOAD;
/// The largest batch the producer accepts (it is also capped at the ring).
pub const MAX_BATCH: usize = 4096;
/// Defaults of ping's arguments.
pub const DEFAULT_ROUNDS: u64 = 100_000;
pub const MAX_ROUNDS: u64 = 200_000;
pub const WARMUP_ROUNDS: u64 = 1_000;

/// How long the workloads pause after `stress-ready` and `stress-done`.
pub const MARKER_PAUSE_NS: u64 = 300_000_000;

/// The payload word `i` of message `seq` (a pattern the consumer can
/// recompute, different for every message and word).
#[inline]
pub const fn payload_word(seq: u64, i: usize) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(i as u32 * 8 + 1)
        ^ (i as u64)
}

/// The mask of the bytes of word `i` that a payload of `bytes` fills.
#[inline]
pub const fn payload_mask(bytes: usize, i: usize) -> u64 {
    let start = i * 8;
    if bytes >= start + 8 {
        u64::MAX
    } else if bytes <= start {
        0
    } else {
        (1u64 << ((bytes - start) * 8)) - 1
    }
}

/// Stream message `seq` with `payload` bytes (at most [`MAX_PAYLOAD`]).
#[inline]
pub fn message(seq: u64, payload: usize) -> Descriptor {
    let mut args = [0u64; 6];
    for (i, a) in args.iter_mut().enumerate() {
        *a = payload_word(seq, i) & payload_mask(payload, i);
    }
    Descriptor::new(OP_MSG, seq)
        .with_flags(Descriptor::FLAG_NO_COMPLETION)
        .with_args(args)
}

/// The XOR of a message's argument words (the running payload checksum).
#[inline]
pub fn fold(d: &Descriptor) -> u64 {
    d.args().iter().fold(0, |acc, w| acc ^ w)
}

/// The consumer's check of sequence numbers: counts messages lost,
/// duplicated and reordered. A gap is counted as lost until its messages
/// arrive late (then they count as reordered instead); a number seen
/// before, or never missing, is a duplicate. At most [`MAX_GAPS`] gaps are
/// tracked; past that a late message counts as a duplicate (the run has
/// failed anyway).
#[derive(Debug, Default)]
pub struct SeqCheck {
    expected: u64,
    received: u64,
    lost: u64,
    duplicates: u64,
    reordered: u64,
    gaps: Vec<(u64, u64)>,
    first_error: Option<(u64, u64)>,
}

/// Gaps of missing sequence numbers remembered by [`SeqCheck`].
pub const MAX_GAPS: usize = 64;

impl SeqCheck {
    pub fn new() -> Self {
        Self::default()
    }

    /// Check the next message's sequence number.
    #[inline]
    pub fn see(&mut self, seq: u64) {
        self.received += 1;
        if seq == self.expected {
            self.expected += 1;
        } else {
            self.slow(seq);
        }
    }

    #[cold]
    fn slow(&mut self, seq: u64) {
        self.first_error.get_or_insert((self.expected, seq));
        if seq > self.expected {
            self.lost += seq - self.expected;
            if self.gaps.len() < MAX_GAPS {
                self.gaps.push((self.expected, seq));
            }
            self.expected = seq + 1;
            return;
        }
        // Late or repeated: is it inside a gap?
        if let Some(pos) = self.gaps.iter().position(|&(a, b)| (a..b).contains(&seq)) {
            let (a, b) = self.gaps.remove(pos);
            if a < seq {
                self.gaps.push((a, seq));
            }
            if seq + 1 < b {
                self.gaps.push((seq + 1, b));
            }
            self.lost -= 1;
            self.reordered += 1;
        } else {
            self.duplicates += 1;
        }
    }

    /// At the end of a stream of `sent` messages: count those that never
    /// came as lost.
    pub fn finish(&mut self, sent: u64) {
        if sent > self.expected {
            self.first_error.get_or_insert((self.expected, sent));
            self.lost += sent - self.expected;
            self.expected = sent;
        }
    }

    pub fn received(&self) -> u64 {
        self.received
    }
    pub fn lost(&self) -> u64 {
        self.lost
    }
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
    pub fn reordered(&self) -> u64 {
        self.reordered
    }
    /// Nothing lost, duplicated or reordered.
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.reordered == 0
    }
    /// The first wrong number: (expected, got).
    pub fn first_error(&self) -> Option<(u64, u64)> {
        self.first_error
    }
}

/// The value at percentile `p` (0..=100, nearest rank) of `sorted`; 0 if
/// empty.
pub fn percentile(sorted: &[u32], p: usize) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p.min(100) * sorted.len()).div_ceil(100);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// TSC cycles to nanoseconds (0 when the rate is unknown).
pub fn cycles_to_ns(cycles: u64, tsc_hz: u64) -> u64 {
    if tsc_hz == 0 {
        return 0;
    }
    (u128::from(cycles) * 1_000_000_000 / u128::from(tsc_hz)) as u64
}

/// A numeric server argument (`NAME.key=value` on the kernel command
/// line), `default` when absent; `Err` names a malformed value.
pub fn arg_u64(key: &'static str, default: u64) -> Result<u64, &'static str> {
    match sys::boot_info_cached().and_then(|b| b.arg(key)) {
        None => Ok(default),
        Some(v) => v.replace('_', "").parse().map_err(|_| key),
    }
}

/// Sleep `ns` (a `wait` on a bit nobody raises).
pub fn pause(ns: u64) {
    // Bit 62 belongs to no channel or IRQ in these servers; the wait ends
    // with `TimedOut`, which is the point.
    let _ = sys::wait(1 << 62, ns);
}

/// The longest result line.
pub const RESULT_MAX: usize = 600;

/// One machine-readable line: `stress-result key=value key=value ...`,
/// built in a fixed buffer (no allocation) and logged whole (longer than
/// `println!`'s 240-byte lines allow).
pub struct ResultLine {
    buf: [u8; RESULT_MAX],
    len: usize,
}

/// The word every result line starts with.
pub const RESULT_TAG: &str = "stress-result";

impl Default for ResultLine {
    fn default() -> Self {
        Self::new()
    }
}

impl ResultLine {
    pub fn new() -> Self {
        let mut line = Self {
            buf: [0; RESULT_MAX],
            len: 0,
        };
        let _ = line.write_str(RESULT_TAG);
        line
    }

    /// Append ` key=value`.
    pub fn field(&mut self, key: &str, value: impl fmt::Display) -> &mut Self {
        let _ = write!(self, " {key}={value}");
        self
    }

    /// Append how long the workload took: `cycles`, the TSC rate `tsc_hz`,
    /// and the time in ns they make (what the harness reports).
    pub fn elapsed(&mut self, cycles: u64, tsc_hz: u64) -> &mut Self {
        self.field("cycles", cycles)
            .field("tsc_hz", tsc_hz)
            .field("ns", cycles_to_ns(cycles, tsc_hz))
    }

    /// Append the kernel-counter deltas between `before` and `after`.
    pub fn counters(&mut self, before: &KernelCounters, after: &KernelCounters) -> &mut Self {
        let sum = |c: &KernelCounters| c.syscalls.iter().sum::<u64>() + c.bad_syscalls;
        let irqs = |c: &KernelCounters| c.device_interrupts + c.timer_interrupts;
        self.field("syscalls", sum(after).wrapping_sub(sum(before)))
            .field("doorbells", after.doorbells.wrapping_sub(before.doorbells))
            .field("wakeups", after.wakeups.wrapping_sub(before.wakeups))
            .field(
                "switches",
                after.context_switches.wrapping_sub(before.context_switches),
            )
            .field("irqs", irqs(after).wrapping_sub(irqs(before)))
            .field(
                "timer_irqs",
                after.timer_interrupts.wrapping_sub(before.timer_interrupts),
            )
            .field(
                "hv_ops",
                after.hv_ops_total().wrapping_sub(before.hv_ops_total()),
            )
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }

    /// Print the line on the kernel console.
    pub fn emit(&self) {
        let _ = sys::log(&self.buf[..self.len]);
    }
}

impl Write for ResultLine {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = RESULT_MAX - self.len;
        if s.len() > room {
            return Err(fmt::Error);
        }
        self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len();
        Ok(())
    }
}

/// The kernel's counters, or zeros when the call fails (reported as such).
pub fn counters() -> KernelCounters {
    sys::counters().unwrap_or_default()
}

/// The batching policy as the result lines spell it.
pub fn batching_word() -> &'static str {
    match sys::batching() {
        userland::Batching::On => "on",
        userland::Batching::Off => "off",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_is_ok() {
        let mut c = SeqCheck::new();
        for s in 0..1000 {
            c.see(s);
        }
        c.finish(1000);
        assert!(c.ok());
        assert_eq!(c.received(), 1000);
    }

    #[test]
    fn loss_duplicate_and_reordering_are_told_apart() {
        let mut c = SeqCheck::new();
        for s in [0, 1, 3, 4, 2, 4, 7] {
            c.see(s);
        }
        c.finish(9);
        // 2 came late (reordered), 4 twice (duplicate), 5, 6 and 8 never.
        assert_eq!(c.reordered(), 1);
        assert_eq!(c.duplicates(), 1);
        assert_eq!(c.lost(), 3);
        assert!(!c.ok());
        assert_eq!(c.first_error(), Some((2, 3)));
    }

    #[test]
    fn a_short_stream_counts_the_missing_tail_as_lost() {
        let mut c = SeqCheck::new();
        c.see(0);
        c.finish(5);
        assert_eq!(c.lost(), 4);
    }

    #[test]
    fn payload_masks_cover_exactly_the_bytes() {
        assert_eq!(payload_mask(0, 0), 0);
        assert_eq!(payload_mask(3, 0), 0xFF_FFFF);
        assert_eq!(payload_mask(8, 0), u64::MAX);
        assert_eq!(payload_mask(8, 1), 0);
        assert_eq!(payload_mask(12, 1), 0xFFFF_FFFF);
        assert_eq!(payload_mask(48, 5), u64::MAX);
        let d = message(7, 10);
        assert_eq!(d.cookie(), 7);
        assert_eq!(d.arg(1) >> 16, 0);
        assert_eq!(d.arg(2), 0);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 99), 99);
        assert_eq!(percentile(&v, 100), 100);
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[5], 99), 5);
    }

    #[test]
    fn result_line_is_key_value_words() {
        let mut line = ResultLine::new();
        line.field("kind", "stream").field("messages", 10u64);
        assert_eq!(line.as_str(), "stress-result kind=stream messages=10");
        line.elapsed(6_000, 3_000_000_000);
        assert!(
            line.as_str()
                .ends_with(" cycles=6000 tsc_hz=3000000000 ns=2000")
        );
        assert_eq!(cycles_to_ns(3_000, 3_000_000_000), 1_000);
    }
}
