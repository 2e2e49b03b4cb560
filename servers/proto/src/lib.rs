//! The protocols of the device servers: opcodes, argument layouts and the
//! small packing helpers both sides use. One module per service. Owned by
//! the servers' side: the kernel does not depend on this crate (the one
//! protocol it speaks, its log's writes to the console, is
//! `abi::klog`, which `console` re-exports).
//!
//! Every request is a [`Descriptor`](pvchannel::Descriptor) (opcode, flags,
//! cookie, six argument words) and every answer a
//! [`Completion`](pvchannel::Completion) (cookie, status, value, aux); this
//! module says what the words mean. Opcode `u32::MAX` is the runtime's
//! hang-up and never appears here.
//!
//! Context: any. No allocation, no panics on peer input: every decoder
//! accepts any bit pattern and clamps what it reads.
#![cfg_attr(not(test), no_std)]

/// The echo-style request every new server answers (`cargo xtask
/// new-server` generates it, `servers/echo` is the model), and which the
/// shell's `call SERVICE VALUE` sends.
pub mod echo {
    /// Answer with a completion whose value is `args[0]`.
    pub const OP_ECHO: u32 = 1;
}

/// The console server (`servers/console`): line-interleaved output from many
/// clients, and line-buffered input from the 16550 (interrupt driven).
pub mod console {
    pub use abi::klog::{OP_WRITE, SERVICE, WRITE_MAX, pack, unpack};

    /// Write this client's partial line (if any) and answer once everything
    /// the client wrote before is on the wire. Value 0.
    pub const OP_FLUSH: u32 = 2;
    /// Read the next chunk of an input line. The console edits input a line
    /// at a time (echo, backspace) and answers once a line is complete; a
    /// line comes back as one or more chunks of up to [`READ_CHUNK`] bytes
    /// (the `\n` is not included), the last one flagged end of line. Packed
    /// with [`pack_read`] into value and aux. A client may have 16 reads
    /// waiting; more are answered `Busy` at once.
    pub const OP_READ: u32 = 3;
    /// A counter of the console: `args[0]` = one of the `STAT_*` indices;
    /// value = the counter. `InvalidArgument` past the last.
    pub const OP_STATS: u32 = 4;

    /// Bytes written to the UART's transmit register.
    pub const STAT_TX_BYTES: u64 = 0;
    /// Line-status register reads made for output.
    pub const STAT_TX_STATUS_READS: u64 = 1;
    /// Whole lines written.
    pub const STAT_LINES: u64 = 2;
    /// Receive interrupts (IRQ 4) handled.
    pub const STAT_RX_IRQS: u64 = 3;
    /// Bytes received.
    pub const STAT_RX_BYTES: u64 = 4;
    /// Output bursts (one per drain of the output queue).
    pub const STAT_BURSTS: u64 = 5;
    /// Number of `STAT_*` counters.
    pub const STAT_COUNT: u64 = 6;

    /// The most bytes one [`OP_READ`] answer carries.
    pub const READ_CHUNK: usize = 14;
    /// Set in the aux word of the last chunk of a line.
    const READ_END_OF_LINE: u64 = 1 << 56;

    /// Value and aux of an [`OP_READ`] answer: up to [`READ_CHUNK`] bytes
    /// of `chunk`, and whether they end the line.
    pub fn pack_read(chunk: &[u8], end_of_line: bool) -> (u64, u64) {
        let n = chunk.len().min(READ_CHUNK);
        let mut words = [0u64; 2];
        for (i, &b) in chunk[..n].iter().enumerate() {
            words[i / 8] |= u64::from(b) << (8 * (i % 8));
        }
        let mut aux = words[1] | ((n as u64) << 48);
        if end_of_line {
            aux |= READ_END_OF_LINE;
        }
        (words[0], aux)
    }

    /// Decode an [`OP_READ`] answer: the bytes, how many, end of line.
    pub fn unpack_read(value: u64, aux: u64) -> ([u8; READ_CHUNK], usize, bool) {
        let n = (((aux >> 48) & 0xFF) as usize).min(READ_CHUNK);
        let words = [value, aux & ((1 << 48) - 1)];
        let mut out = [0u8; READ_CHUNK];
        for (i, b) in out.iter_mut().enumerate().take(n) {
            *b = (words[i / 8] >> (8 * (i % 8))) as u8;
        }
        (out, n, aux & READ_END_OF_LINE != 0)
    }
}

/// The timer server (`servers/timer`): monotonic time from the TSC, sleeps
/// and periodic ticks, coalesced into few hardware programmings.
///
/// Time is nanoseconds on the timer's clock: [`tsc_to_ns`] of the TSC with
/// the rate `BootInfo::tsc_hz`, so a client can read the same clock itself
/// (`rdtsc`) and check that it was never woken early.
pub mod timer {
    /// The service name in the manifest.
    pub const SERVICE: &str = "timer";

    /// The current time: value = now in ns.
    pub const OP_NOW: u32 = 1;
    /// Sleep until `args[0]` (ns on the timer's clock). Answered once that
    /// time has passed: value = the time the sleep ended (ns), aux = the
    /// timer's sequence number of this wake-up (counting every sleep and
    /// tick it ended, from 0), or [`AUX_CANCELLED`] if it was cancelled.
    /// The cookie names the sleep for [`OP_CANCEL`]; a client keeps the
    /// cookies of its outstanding sleeps distinct.
    pub const OP_SLEEP_UNTIL: u32 = 2;
    /// Sleep for `args[0]` ns from when the timer sees the request; answered
    /// as [`OP_SLEEP_UNTIL`].
    pub const OP_SLEEP_FOR: u32 = 3;
    /// Periodic ticks: every `args[0]` ns (at least [`MIN_PERIOD_NS`]), the
    /// first one period from now, `args[1]` of them (0 = until cancelled).
    /// Each tick is a completion with the request's cookie: value = the
    /// tick's time, aux = the tick's number from 1; the last tick of a
    /// counted series has [`AUX_LAST_TICK`] set in aux.
    pub const OP_PERIODIC: u32 = 4;
    /// Cancel the sleep or periodic series whose cookie is `args[0]`: it is
    /// answered at once with aux = [`AUX_CANCELLED`]. Value of the cancel's
    /// own answer: 1 if something was cancelled, 0 if nothing had that
    /// cookie (it may have just ended).
    pub const OP_CANCEL: u32 = 5;
    /// A counter of the timer: `args[0]` = one of the `STAT_*` indices.
    pub const OP_STATS: u32 = 6;

    /// Hardware programmings (each one a few port writes).
    pub const STAT_PROGRAMMINGS: u64 = 0;
    /// Timer interrupts handled.
    pub const STAT_IRQS: u64 = 1;
    /// Sleeps and ticks ended.
    pub const STAT_WAKEUPS: u64 = 2;
    /// Requests handled.
    pub const STAT_REQUESTS: u64 = 3;
    /// Port writes made to program the hardware.
    pub const STAT_PORT_WRITES: u64 = 4;
    /// Number of `STAT_*` counters.
    pub const STAT_COUNT: u64 = 5;

    /// The aux word of a cancelled sleep or series.
    pub const AUX_CANCELLED: u64 = u64::MAX;
    /// Set in the aux word of the last tick of a counted series.
    pub const AUX_LAST_TICK: u64 = 1 << 63;
    /// The shortest period [`OP_PERIODIC`] accepts (shorter ones are
    /// raised to it).
    pub const MIN_PERIOD_NS: u64 = 100_000;

    /// Nanoseconds on the timer's clock for a TSC value at `hz` (0 when
    /// the rate is unknown).
    pub fn tsc_to_ns(tsc: u64, hz: u64) -> u64 {
        if hz == 0 {
            return 0;
        }
        let ns = u128::from(tsc) * 1_000_000_000 / u128::from(hz);
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// The first TSC value at which [`tsc_to_ns`] reaches `ns` (rounded up,
    /// so a wake-up at this TSC is never early).
    pub fn ns_to_tsc(ns: u64, hz: u64) -> u64 {
        let tsc = (u128::from(ns) * u128::from(hz)).div_ceil(1_000_000_000);
        u64::try_from(tsc).unwrap_or(u64::MAX)
    }
}

/// The APIC server (`servers/apic`): I/O APIC routing and masking, IPIs.
pub mod apic {
    /// The service name in the manifest.
    pub const SERVICE: &str = "apic";

    /// The vector that ISA/GSI line `n` is routed to (where the kernel
    /// expects it), as the 64-bit request argument it travels in.
    pub const IRQ_BASE_VECTOR: u64 = abi::IRQ_BASE_VECTOR as u64;

    /// Route ISA IRQ line `args[0]` (0..=23) to vector
    /// `IRQ_BASE_VECTOR + line` on the boot CPU and unmask it, with the
    /// polarity and trigger mode the firmware's interrupt source overrides
    /// give (edge, active high for ISA lines otherwise). `args[1]` bit 0
    /// ([`ROUTE_MASKED`]) leaves it masked. Value = the GSI (I/O APIC pin)
    /// used, aux = the redirection entry's low word.
    pub const OP_ROUTE: u32 = 1;
    /// Mask line `args[0]` (routed before).
    pub const OP_MASK: u32 = 2;
    /// Unmask line `args[0]` (routed before).
    pub const OP_UNMASK: u32 = 3;
    /// Send an IPI: vector `args[0]` (0x20..=0xFE), destination local APIC
    /// id `args[1]`, shorthand `args[2]` (one of `DEST_*`). `Denied` when
    /// the local APIC cannot be reached from user space (x2APIC mode).
    pub const OP_IPI: u32 = 4;
    /// A counter of the APIC server: `args[0]` = one of the `STAT_*`.
    pub const OP_STATS: u32 = 5;

    /// [`OP_ROUTE`] flag: program the route but leave the line masked.
    pub const ROUTE_MASKED: u64 = 1;

    /// No shorthand: the destination is `args[1]`.
    pub const DEST_ID: u64 = 0;
    /// The sending CPU itself.
    pub const DEST_SELF: u64 = 1;
    /// Every CPU including the sender.
    pub const DEST_ALL: u64 = 2;
    /// Every CPU but the sender.
    pub const DEST_OTHERS: u64 = 3;

    /// I/O APIC and local APIC register accesses (reads and writes).
    pub const STAT_REGISTER_ACCESSES: u64 = 0;
    /// Requests handled.
    pub const STAT_REQUESTS: u64 = 1;
    /// Batches handled (drains of the request rings).
    pub const STAT_BATCHES: u64 = 2;
    /// IPIs sent.
    pub const STAT_IPIS: u64 = 3;
    /// Requests refused with `Denied` because they reach outside the
    /// client's grant: a line not in its manifest entry's `irqs`, a line
    /// another client routed, or an IPI other than one to itself on the
    /// vector of a line it is granted (`servers/apic`'s module doc).
    pub const STAT_DENIED: u64 = 4;
    /// Number of `STAT_*` counters.
    pub const STAT_COUNT: u64 = 5;
}

/// The timer benchmark's barrier (`servers/sleepers`: `ticker-coord` and
/// its `ticker` workers), so that ten timer clients start and end together
/// inside the harness's `stress-ready` / `stress-done` markers.
pub mod ticks {
    /// The service name in the manifest.
    pub const SERVICE: &str = "ticks";
    /// "I am ready": answered once every worker is and the counters have
    /// been read.
    pub const OP_READY: u32 = 1;
    /// "I am done": `args[0]` = the latest wake-up after its deadline (ns);
    /// answered once every worker is done.
    pub const OP_DONE: u32 = 2;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_write_round_trips() {
        let text = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
        for len in [0, 1, 7, 8, 9, 39, 40, 43] {
            let (args, n) = console::pack(&text[..len]);
            assert_eq!(n, len.min(console::WRITE_MAX));
            let (bytes, m) = console::unpack(&args);
            assert_eq!(&bytes[..m], &text[..n]);
        }
    }

    #[test]
    fn console_unpack_clamps_garbage() {
        let (_, n) = console::unpack(&[u64::MAX; 6]);
        assert_eq!(n, console::WRITE_MAX);
        let (_, n, _) = console::unpack_read(u64::MAX, u64::MAX);
        assert_eq!(n, console::READ_CHUNK);
    }

    #[test]
    fn console_read_round_trips() {
        let text = b"help me please!!";
        for len in [0, 1, 8, 13, 14, 16] {
            for eol in [false, true] {
                let (v, a) = console::pack_read(&text[..len], eol);
                let (bytes, n, e) = console::unpack_read(v, a);
                assert_eq!(n, len.min(console::READ_CHUNK));
                assert_eq!(&bytes[..n], &text[..n]);
                assert_eq!(e, eol);
            }
        }
    }

    #[test]
    fn timer_conversions_never_wake_early() {
        for hz in [1_000_000_000u64, 2_419_200_000, 3_000_000_007] {
            for ns in [0u64, 1, 999, 1_000_000, 123_456_789_012] {
                let tsc = timer::ns_to_tsc(ns, hz);
                assert!(timer::tsc_to_ns(tsc, hz) >= ns, "{ns} ns at {hz} Hz");
                if tsc > 0 {
                    assert!(timer::tsc_to_ns(tsc - 1, hz) < ns, "{ns} ns at {hz} Hz");
                }
            }
        }
        assert_eq!(timer::tsc_to_ns(5, 0), 0);
    }
}
