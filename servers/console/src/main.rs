//! console: provides the service `console` (protocol:
//! `proto::console`) on COM1.
//!
//! * **Output, whole lines.** Each client's bytes are kept in its own
//!   buffer until a `\n` completes a line (or the client flushes); only
//!   then is the line put on the output queue, whole. Lines of different
//!   clients therefore never mix. A client line longer than 1 KiB without
//!   a newline is put out in 1 KiB pieces. `\n` goes out as `\r\n`.
//! * **Batching on:** a whole batch of requests from every client is taken
//!   first; the output queue is then drained in one burst, with one
//!   line-status read per 16-byte FIFO load. **Batching off:** each request
//!   is handled on its own and what it completes is written at once, byte
//!   by byte, with a line-status read before each byte.
//! * **Input, interrupt driven.** IRQ 4 (routed by the apic server) raises
//!   this server's notification bit; the handler reads every byte there is,
//!   then acknowledges the line. Bytes are edited into lines (echo,
//!   backspace, Enter) and handed to `OP_READ` requests in arrival order.
//!   The only read not caused by an interrupt is one drain at start, for
//!   bytes typed before the interrupt was enabled.
//!
//! The kernel is one more client when this server runs (its log lines come
//! through a ring of their own, see the kernel's `klog.rs`), so its lines
//! are interleaved by whole lines like everyone's.
//!
//! Prints `console: serving N client(s)`; exits 0 once every client but
//! the kernel has hung up and the output is drained.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

mod uart;

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use ::proto::console as proto;
use devkit::mux::unknown;
use devkit::{Apic, IrqLine, Mux};
use uart::Uart;
use userland::abi::Error;
use userland::{Batching, Completion, Descriptor, OP_HANGUP, println, sys};

userland::entry!(async run);

/// A client's partial line is put out in pieces this long.
const MAX_PARTIAL: usize = 1024;
/// Complete input lines kept for readers that have not asked yet.
const MAX_LINES: usize = 64;
/// Line reads one client may have waiting; more are refused with `Busy`.
const MAX_READS: usize = 16;
/// Return to the start of the line and erase it.
const ERASE_LINE: &[u8] = b"\r\x1b[K";
/// The longest input line (further bytes are dropped until Enter).
const MAX_INPUT: usize = 256;

struct Console {
    uart: Uart,
    batching: Batching,
    /// Per client: the line being assembled.
    partial: Vec<Vec<u8>>,
    /// Bytes waiting for the UART, whole lines (and echo).
    out: VecDeque<u8>,
    /// What stands on the terminal's current, unfinished line: a prompt a
    /// client flushed, and the input typed after it. A whole line from
    /// anyone erases them (`\r`, `ESC [K`), goes out, and they are drawn
    /// again after it.
    prompt: Vec<u8>,
    typed: Vec<u8>,
    /// Bytes ever queued; a flush waits until that many were written.
    queued: u64,
    written: u64,
    flushes: Vec<(usize, u64, u64)>,
    /// Input: the line being typed, complete lines, the line being handed
    /// out (and how far), and the readers waiting.
    typing: Vec<u8>,
    lines: VecDeque<Vec<u8>>,
    handing: Option<(Vec<u8>, usize)>,
    readers: VecDeque<(usize, u64)>,
    lines_out: u64,
    bursts: u64,
    rx_irqs: u64,
}

impl Console {
    fn queue(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.out.push_back(b'\r');
                self.queued += 1;
            }
            self.out.push_back(b);
            self.queued += 1;
        }
    }

    /// Put a whole line (ending in `\n`) out on a line of its own.
    fn put_line(&mut self, line: &[u8]) {
        if self.prompt.is_empty() && self.typed.is_empty() {
            self.queue(line);
        } else {
            // Back to the start of the line and erase it (a terminal shows
            // the line in place of the prompt), then draw the prompt and
            // the input again.
            self.queue(ERASE_LINE);
            self.queue(line);
            let (prompt, typed) = (
                core::mem::take(&mut self.prompt),
                core::mem::take(&mut self.typed),
            );
            self.queue(&prompt);
            self.queue(&typed);
            (self.prompt, self.typed) = (prompt, typed);
        }
        self.lines_out += 1;
    }

    /// Put out the unfinished part of a line (a prompt, a piece of a long
    /// line): it stays open until a newline. A prompt that nobody typed
    /// after is replaced, not repeated (type-ahead would stack them up).
    fn put_partial(&mut self, piece: &[u8]) {
        if self.typed.is_empty() && !self.prompt.is_empty() {
            self.queue(ERASE_LINE);
            self.prompt.clear();
        } else {
            let typed = core::mem::take(&mut self.typed);
            self.prompt.extend_from_slice(&typed);
        }
        self.queue(piece);
        match piece.iter().rposition(|&b| b == b'\n') {
            Some(nl) => {
                self.prompt.clear();
                self.prompt.extend_from_slice(&piece[nl + 1..]);
            }
            None => self.prompt.extend_from_slice(piece),
        }
    }

    /// Echo typed input (`\n` ends the open line).
    fn echo(&mut self, bytes: &[u8]) {
        self.queue(bytes);
        if bytes.contains(&b'\n') {
            self.prompt.clear();
            self.typed.clear();
        } else {
            self.typed.extend_from_slice(bytes);
        }
    }

    /// Take `bytes` from client `i`: complete lines go to the output queue.
    fn write(&mut self, i: usize, bytes: &[u8]) {
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let mut line = core::mem::take(&mut self.partial[i]);
            line.extend_from_slice(&rest[..=nl]);
            self.put_line(&line);
            rest = &rest[nl + 1..];
        }
        self.partial[i].extend_from_slice(rest);
        if self.partial[i].len() >= MAX_PARTIAL {
            self.flush_partial(i);
        }
    }

    fn flush_partial(&mut self, i: usize) {
        let piece = core::mem::take(&mut self.partial[i]);
        if !piece.is_empty() {
            self.put_partial(&piece);
        }
    }

    /// Write the whole output queue to the UART.
    fn drain(&mut self) {
        if self.out.is_empty() {
            return;
        }
        self.bursts += 1;
        match self.batching {
            Batching::On if self.uart.paced() => {
                while !self.out.is_empty() {
                    let sent = self.uart.send_paced(self.out.make_contiguous());
                    self.out.drain(..sent);
                    self.written += sent as u64;
                    if sent == 0 {
                        core::hint::spin_loop();
                    }
                }
            }
            Batching::On => {
                let mut chunk = [0u8; uart::FIFO];
                while !self.out.is_empty() {
                    let n = self.out.len().min(uart::FIFO);
                    for (k, b) in chunk.iter_mut().take(n).enumerate() {
                        *b = self.out[k];
                    }
                    let sent = self.uart.send_burst(&chunk[..n]);
                    self.out.drain(..sent);
                    self.written += sent as u64;
                    if sent == 0 {
                        core::hint::spin_loop();
                    }
                }
            }
            Batching::Off => {
                while let Some(&b) = self.out.front() {
                    if self.uart.send_byte(b) {
                        self.out.pop_front();
                        self.written += 1;
                    } else {
                        core::hint::spin_loop();
                    }
                }
            }
        }
    }

    /// Edit received bytes into lines, echoing them.
    fn received(&mut self, b: u8) {
        match b {
            b'\r' | b'\n' => {
                self.echo(b"\n");
                let line = core::mem::take(&mut self.typing);
                if self.lines.len() < MAX_LINES {
                    self.lines.push_back(line);
                }
            }
            0x08 | 0x7F if self.typing.pop().is_some() => {
                self.queue(b"\x08 \x08");
                self.typed.pop();
            }
            0x20..=0x7E | b'\t' if self.typing.len() < MAX_INPUT => {
                self.typing.push(b);
                self.echo(&[b]);
            }
            _ => {}
        }
    }

    /// Answer waiting readers from complete lines.
    fn answer_readers(&mut self, mux: &mut Mux) {
        while let Some(&(i, cookie)) = self.readers.front() {
            if self.handing.is_none() {
                match self.lines.pop_front() {
                    Some(line) => self.handing = Some((line, 0)),
                    None => return,
                }
            }
            let Some((line, at)) = self.handing.as_mut() else {
                return;
            };
            let end = (*at + proto::READ_CHUNK).min(line.len());
            let eol = end == line.len();
            let (value, aux) = proto::pack_read(&line[*at..end], eol);
            *at = end;
            if eol {
                self.handing = None;
            }
            self.readers.pop_front();
            mux.reply(i, Completion::ok(cookie, value).with_aux(aux));
        }
    }

    fn stat(&self, which: u64) -> Result<u64, Error> {
        Ok(match which {
            proto::STAT_TX_BYTES => self.uart.tx_bytes,
            proto::STAT_TX_STATUS_READS => self.uart.tx_status_reads,
            proto::STAT_LINES => self.lines_out,
            proto::STAT_RX_IRQS => self.rx_irqs,
            proto::STAT_RX_BYTES => self.uart.rx_bytes,
            proto::STAT_BURSTS => self.bursts,
            _ => return Err(Error::InvalidArgument),
        })
    }

    fn handle(&mut self, mux: &mut Mux, i: usize, d: &Descriptor) {
        let cookie = d.cookie();
        let answer = match d.opcode() {
            OP_HANGUP => {
                self.flush_partial(i);
                self.readers.retain(|&(c, _)| c != i);
                return;
            }
            proto::OP_WRITE => {
                let (bytes, n) = proto::unpack(&d.args());
                self.write(i, &bytes[..n]);
                Completion::ok(cookie, n as u64)
            }
            proto::OP_FLUSH => {
                self.flush_partial(i);
                self.flushes.push((i, cookie, self.queued));
                return;
            }
            proto::OP_READ => {
                // A quota, answered with a typed error: one client asking
                // for lines it never waits for must not grow this server's
                // heap without bound.
                if self.readers.iter().filter(|&&(c, _)| c == i).count() >= MAX_READS {
                    Completion::err(cookie, Error::Busy)
                } else {
                    self.readers.push_back((i, cookie));
                    return;
                }
            }
            proto::OP_STATS => Completion::from_result(cookie, self.stat(d.arg(0))),
            _ => unknown(d),
        };
        if d.wants_completion() {
            mux.reply(i, answer);
        }
    }

    fn complete_flushes(&mut self, mux: &mut Mux) {
        let written = self.written;
        self.flushes.retain(|&(i, cookie, target)| {
            if written >= target {
                mux.reply(i, Completion::ok(cookie, 0));
                false
            } else {
                true
            }
        });
    }
}

async fn run() -> i32 {
    let mut uart = match Uart::open() {
        Ok(u) => u,
        Err(e) => {
            println!("console: FAIL cannot open COM1: {e}");
            return 1;
        }
    };
    let irq = match IrqLine::bind(uart::IRQ) {
        Ok(irq) => irq,
        Err(e) => {
            println!("console: FAIL cannot bind IRQ {}: {e}", uart::IRQ);
            return 1;
        }
    };
    let mut apic = match Apic::open() {
        Ok(a) => a,
        Err(e) => {
            println!("console: FAIL cannot open the apic service: {e}");
            return 1;
        }
    };
    if let Err(e) = apic.route(uart::IRQ).await {
        println!(
            "console: FAIL the apic server did not route IRQ {}: {e}",
            uart::IRQ
        );
        return 1;
    }
    // The line is routed: now the UART may interrupt.
    uart.enable_rx_interrupt();
    let mut mux = match Mux::new(proto::SERVICE) {
        Ok(m) => m.with_irq(irq),
        Err(e) => {
            println!("console: FAIL cannot attach the console channels: {e}");
            return 1;
        }
    };
    let batching = sys::batching();
    let kernel_clients = (0..mux.clients())
        .filter(|&i| mux.peer(i) == "kernel")
        .count();
    let mut console = Console {
        uart,
        batching,
        partial: (0..mux.clients()).map(|_| Vec::new()).collect(),
        out: VecDeque::new(),
        prompt: Vec::new(),
        typed: Vec::new(),
        queued: 0,
        written: 0,
        flushes: Vec::new(),
        typing: Vec::new(),
        lines: VecDeque::new(),
        handing: None,
        readers: VecDeque::new(),
        lines_out: 0,
        bursts: 0,
        rx_irqs: 0,
    };
    if userland::first_run() {
        println!(
            "console: COM1 with input on IRQ {}, batching {:?}; serving {} client(s)",
            uart::IRQ,
            batching,
            mux.clients()
        );
    }
    // Bytes typed before the interrupt was enabled raised no edge.
    let mut first = true;
    let mut batch = Vec::new();
    loop {
        let fired = mux.irq().map(|irq| irq.take()).unwrap_or(false);
        if fired || first {
            while let Some(b) = console.uart.try_read() {
                console.received(b);
            }
            if fired {
                console.rx_irqs += 1;
                if let Some(irq) = mux.irq() {
                    let _ = irq.ack();
                }
            }
            first = false;
        }
        batch.clear();
        mux.take_batch(&mut batch);
        for (i, d) in batch.iter() {
            console.handle(&mut mux, *i, d);
            if batching == Batching::Off {
                console.drain();
            }
        }
        console.drain();
        console.complete_flushes(&mut mux);
        console.answer_readers(&mut mux);
        if mux.alive() <= kernel_clients {
            // Only the kernel's log ring is left, and the kernel never hangs
            // up: end once every server client has (the kernel then writes
            // to COM1 itself again). What the kernel logged until now is
            // printed first.
            loop {
                batch.clear();
                if mux.take_batch(&mut batch) == 0 {
                    break;
                }
                for (i, d) in batch.iter() {
                    console.handle(&mut mux, *i, d);
                }
            }
            console.drain();
            mux.flush();
            break;
        }
        if batch.is_empty() && !fired {
            mux.wait().await;
        }
    }
    // Said through the UART itself: the kernel's log ring is not read any
    // more.
    let summary = alloc::format!(
        "[console] console: done: {} lines, {} bytes out with {} status reads; {} bytes in through {} interrupts\n",
        console.lines_out,
        console.uart.tx_bytes,
        console.uart.tx_status_reads,
        console.uart.rx_bytes,
        console.rx_irqs
    );
    console.queue(summary.as_bytes());
    console.drain();
    if let Err(e) = apic.close().await {
        println!("console: hanging up on apic: {e}");
    }
    0
}
