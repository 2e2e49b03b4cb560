//! Client handles for the device services, over `userland::Client`.
//!
//! Each wraps the channel the manifest granted (`uses = ["console"]`, ...)
//! and speaks the protocol of `proto` (servers/proto). Errors from the server
//! (a negative completion status) come back as `ChannelError::Sys`.
//!
//! What every service answers alike (opening, counters, hanging up) is
//! written once, in [`Service`]; each service's own requests are in an
//! `impl` block of its own below.
//!
//! Context: a server's only thread, inside the executor.

use core::marker::PhantomData;

use alloc::vec::Vec;

use proto::{apic, console, timer};
use userland::{Channel, ChannelError, Client, Completion, Descriptor};

fn check(c: Completion) -> Result<Completion, ChannelError> {
    c.result().map(|_| c).map_err(ChannelError::Sys)
}

/// What [`Service`] needs of a service's protocol.
pub trait Protocol {
    /// The service's name in the manifest.
    const SERVICE: &'static str;
    /// The request that reads one of its counters (`STAT_*`).
    const OP_STATS: u32;
}

/// A client of the service that `P` describes.
pub struct Service<P: Protocol> {
    client: Client,
    protocol: PhantomData<P>,
}

impl<P: Protocol> Service<P> {
    /// Open the manifest's channel to the service.
    pub fn open() -> Result<Self, ChannelError> {
        Ok(Self {
            client: Channel::open(P::SERVICE)?,
            protocol: PhantomData,
        })
    }

    /// Send `d` and wait for its completion, which must report success.
    async fn ask(&mut self, d: Descriptor) -> Result<Completion, ChannelError> {
        check(self.client.call(d).await?)
    }

    /// Hang up (the server may end once all its clients have).
    pub async fn close(self) -> Result<(), ChannelError> {
        self.client.close().await
    }

    /// One of the service's counters (`proto::SERVICE::STAT_*`).
    pub async fn stat(&mut self, which: u64) -> Result<u64, ChannelError> {
        let d = Descriptor::new(P::OP_STATS, 0).with_args([which]);
        Ok(self.ask(d).await?.value())
    }

    /// The counters `which`, one request each, in that order.
    pub async fn stats<const N: usize>(
        &mut self,
        which: [u64; N],
    ) -> Result<[u64; N], ChannelError> {
        let mut values = [0; N];
        for (value, which) in values.iter_mut().zip(which) {
            *value = self.stat(which).await?;
        }
        Ok(values)
    }

    /// The channel underneath (e.g. for the timer's pipelined sleeps:
    /// `send` with distinct cookies, then `recv`).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// The three protocols, for [`Service`].
pub struct ConsoleProtocol;
pub struct TimerProtocol;
pub struct ApicProtocol;

impl Protocol for ConsoleProtocol {
    const SERVICE: &'static str = console::SERVICE;
    const OP_STATS: u32 = console::OP_STATS;
}
impl Protocol for TimerProtocol {
    const SERVICE: &'static str = timer::SERVICE;
    const OP_STATS: u32 = timer::OP_STATS;
}
impl Protocol for ApicProtocol {
    const SERVICE: &'static str = apic::SERVICE;
    const OP_STATS: u32 = apic::OP_STATS;
}

/// The `console` service: line-interleaved output, line input.
pub type Console = Service<ConsoleProtocol>;

impl Console {
    /// Queue `bytes` for output (no answer is awaited; a line is printed
    /// whole once its `\n` arrives, or on [`flush`](Self::flush)).
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), ChannelError> {
        for chunk in bytes.chunks(console::WRITE_MAX) {
            let (args, _) = console::pack(chunk);
            let d = Descriptor::new(console::OP_WRITE, 0)
                .with_args(args)
                .with_flags(Descriptor::FLAG_NO_COMPLETION);
            self.client.send(d).await?;
        }
        Ok(())
    }

    /// Write `text` and a newline.
    pub async fn line(&mut self, text: &str) -> Result<(), ChannelError> {
        let mut bytes = Vec::with_capacity(text.len() + 1);
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(b'\n');
        self.write(&bytes).await
    }

    /// Print the partial line too, and wait until everything written so far
    /// is on the wire.
    pub async fn flush(&mut self) -> Result<(), ChannelError> {
        self.ask(Descriptor::new(console::OP_FLUSH, 0))
            .await
            .map(drop)
    }

    /// Publish queued writes without waiting for them.
    pub fn push(&mut self) {
        self.client.flush();
    }

    /// The next input line (without its newline), appended to `out`.
    pub async fn read_line(&mut self, out: &mut Vec<u8>) -> Result<(), ChannelError> {
        loop {
            let c = self.ask(Descriptor::new(console::OP_READ, 0)).await?;
            let (bytes, n, end) = console::unpack_read(c.value(), c.aux());
            out.extend_from_slice(&bytes[..n]);
            if end {
                return Ok(());
            }
        }
    }
}

/// The `timer` service: the clock, sleeps, ticks.
pub type Timer = Service<TimerProtocol>;

impl Timer {
    /// The timer's clock, in ns.
    pub async fn now(&mut self) -> Result<u64, ChannelError> {
        Ok(self.ask(Descriptor::new(timer::OP_NOW, 0)).await?.value())
    }

    /// Sleep for `ns`; returns the time the sleep ended.
    pub async fn sleep_for(&mut self, ns: u64) -> Result<u64, ChannelError> {
        let d = Descriptor::new(timer::OP_SLEEP_FOR, 0).with_args([ns]);
        Ok(self.ask(d).await?.value())
    }

    /// Sleep until `ns` on the timer's clock; returns the time it ended.
    pub async fn sleep_until(&mut self, ns: u64) -> Result<u64, ChannelError> {
        let d = Descriptor::new(timer::OP_SLEEP_UNTIL, 0).with_args([ns]);
        Ok(self.ask(d).await?.value())
    }
}

/// The `apic` service: routing, masking, IPIs. A client touches only the
/// lines its own manifest entry grants (`irqs`) and sends IPIs only to
/// itself on those lines' vectors; anything else fails with `Denied`.
pub type Apic = Service<ApicProtocol>;

impl Apic {
    /// Route ISA line `line` (granted to this server) to vector
    /// `0x20 + line` and unmask it; returns the I/O APIC pin (GSI) used.
    /// The line stays this server's until it hangs up or ends, when the
    /// apic server masks it. Routing is idempotent, so a request lost to a
    /// restart of the apic server is asked again (a few times).
    pub async fn route(&mut self, line: u32) -> Result<u64, ChannelError> {
        let d = Descriptor::new(apic::OP_ROUTE, 0).with_args([u64::from(line)]);
        let mut tries = 0;
        loop {
            match self.client.call(d).await {
                Err(ChannelError::PeerRestarted) if tries < 3 => tries += 1,
                answer => return Ok(check(answer?)?.value()),
            }
        }
    }

    /// Mask `line` (routed by this server).
    pub async fn mask(&mut self, line: u32) -> Result<(), ChannelError> {
        let d = Descriptor::new(apic::OP_MASK, 0).with_args([u64::from(line)]);
        self.ask(d).await.map(drop)
    }

    /// Unmask `line` (routed by this server).
    pub async fn unmask(&mut self, line: u32) -> Result<(), ChannelError> {
        let d = Descriptor::new(apic::OP_UNMASK, 0).with_args([u64::from(line)]);
        self.ask(d).await.map(drop)
    }

    /// Send `vector` (`0x20 + line` of a line granted to this server) to
    /// this CPU.
    pub async fn ipi_self(&mut self, vector: u8) -> Result<(), ChannelError> {
        let d = Descriptor::new(apic::OP_IPI, 0).with_args([u64::from(vector), 0, apic::DEST_SELF]);
        self.ask(d).await.map(drop)
    }
}
