//! Client handles for the device services, over `userland::Client`.
//!
//! Each wraps the channel the manifest granted (`uses = ["console"]`, ...)
//! and speaks the protocol of `proto` (servers/proto). Errors from the server
//! (a negative completion status) come back as `ChannelError::Sys`.
//!
//! Context: a server's only thread, inside the executor.

use alloc::vec::Vec;

use proto::{apic, console, timer};
use userland::{Channel, ChannelError, Client, Completion, Descriptor};

fn check(c: Completion) -> Result<Completion, ChannelError> {
    c.result().map(|_| c).map_err(ChannelError::Sys)
}

/// The `console` service: line-interleaved output, line input.
pub struct Console {
    client: Client,
}

impl Console {
    /// Open the manifest's channel to the console.
    pub fn open() -> Result<Self, ChannelError> {
        Ok(Self {
            client: Channel::open(console::SERVICE)?,
        })
    }

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
        check(
            self.client
                .call(Descriptor::new(console::OP_FLUSH, 0))
                .await?,
        )
        .map(drop)
    }

    /// Publish queued writes without waiting for them.
    pub fn push(&mut self) {
        self.client.flush();
    }

    /// The next input line (without its newline), appended to `out`.
    pub async fn read_line(&mut self, out: &mut Vec<u8>) -> Result<(), ChannelError> {
        loop {
            let c = check(
                self.client
                    .call(Descriptor::new(console::OP_READ, 0))
                    .await?,
            )?;
            let (bytes, n, end) = console::unpack_read(c.value(), c.aux());
            out.extend_from_slice(&bytes[..n]);
            if end {
                return Ok(());
            }
        }
    }

    /// Hang up (the server may end once all its clients have).
    pub async fn close(self) -> Result<(), ChannelError> {
        self.client.close().await
    }

    /// A console counter (`proto::console::STAT_*`).
    pub async fn stat(&mut self, which: u64) -> Result<u64, ChannelError> {
        let d = Descriptor::new(console::OP_STATS, 0).with_args([which]);
        Ok(check(self.client.call(d).await?)?.value())
    }

    /// The channel underneath.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// The `timer` service: the clock, sleeps, ticks.
pub struct Timer {
    client: Client,
}

impl Timer {
    /// Open the manifest's channel to the timer.
    pub fn open() -> Result<Self, ChannelError> {
        Ok(Self {
            client: Channel::open(timer::SERVICE)?,
        })
    }

    /// The timer's clock, in ns.
    pub async fn now(&mut self) -> Result<u64, ChannelError> {
        Ok(check(self.client.call(Descriptor::new(timer::OP_NOW, 0)).await?)?.value())
    }

    /// Sleep for `ns`; returns the time the sleep ended.
    pub async fn sleep_for(&mut self, ns: u64) -> Result<u64, ChannelError> {
        let d = Descriptor::new(timer::OP_SLEEP_FOR, 0).with_args([ns]);
        Ok(check(self.client.call(d).await?)?.value())
    }

    /// Sleep until `ns` on the timer's clock; returns the time it ended.
    pub async fn sleep_until(&mut self, ns: u64) -> Result<u64, ChannelError> {
        let d = Descriptor::new(timer::OP_SLEEP_UNTIL, 0).with_args([ns]);
        Ok(check(self.client.call(d).await?)?.value())
    }

    /// Hang up (the server may end once all its clients have).
    pub async fn close(self) -> Result<(), ChannelError> {
        self.client.close().await
    }

    /// A timer counter (`proto::timer::STAT_*`).
    pub async fn stat(&mut self, which: u64) -> Result<u64, ChannelError> {
        let d = Descriptor::new(timer::OP_STATS, 0).with_args([which]);
        Ok(check(self.client.call(d).await?)?.value())
    }

    /// The channel underneath, for pipelined sleeps (`send` with distinct
    /// cookies, then `recv`).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// The `apic` service: routing, masking, IPIs. A client touches only the
/// lines its own manifest entry grants (`irqs`) and sends IPIs only to
/// itself on those lines' vectors; anything else fails with `Denied`.
pub struct Apic {
    client: Client,
}

impl Apic {
    /// Open the manifest's channel to the apic server.
    pub fn open() -> Result<Self, ChannelError> {
        Ok(Self {
            client: Channel::open(apic::SERVICE)?,
        })
    }

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
        check(self.client.call(d).await?).map(drop)
    }

    /// Unmask `line` (routed by this server).
    pub async fn unmask(&mut self, line: u32) -> Result<(), ChannelError> {
        let d = Descriptor::new(apic::OP_UNMASK, 0).with_args([u64::from(line)]);
        check(self.client.call(d).await?).map(drop)
    }

    /// Send `vector` (`0x20 + line` of a line granted to this server) to
    /// this CPU.
    pub async fn ipi_self(&mut self, vector: u8) -> Result<(), ChannelError> {
        let d = Descriptor::new(apic::OP_IPI, 0).with_args([u64::from(vector), 0, apic::DEST_SELF]);
        check(self.client.call(d).await?).map(drop)
    }

    /// Hang up (the server may end once all its clients have).
    pub async fn close(self) -> Result<(), ChannelError> {
        self.client.close().await
    }

    /// An apic counter (`proto::apic::STAT_*`).
    pub async fn stat(&mut self, which: u64) -> Result<u64, ChannelError> {
        let d = Descriptor::new(apic::OP_STATS, 0).with_args([which]);
        Ok(check(self.client.call(d).await?)?.value())
    }
}
