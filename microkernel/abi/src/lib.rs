//! The kernel's system-call ABI: numbers, argument conventions and errors.
//!
//! This is the one definition both sides use: the kernel decodes with it, the
//! user-space runtime encodes with it.
//!
//! # Calling convention
//! `syscall`, or `int 0x80` where the kernel says so (see [`SyscallEntry`]),
//! with the number in `rax` and up to six arguments in `rdi`, `rsi`, `rdx`,
//! `r10`, `r8`, `r9`. The result comes back in `rax`: a non-negative value is
//! success, a negative value is `-(Error as i64)`. `rcx` and `r11` are
//! clobbered; every other register is preserved.
//!
//! # Server start
//! A server enters at its ELF entry with `rdi` = its manifest index and
//! `rsi` = the [`SyscallEntry`] to use.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod klog;

/// How a server enters the kernel, as the kernel tells it at start (`rsi`).
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyscallEntry {
    /// The `syscall` instruction.
    Syscall = 0,
    /// `int 0x80` ([`SYSCALL_INT_VECTOR`]): where SYSCALL would enter the
    /// kernel still on the caller's stack at a moment an interrupt can
    /// arrive (the pvm backend), an interrupt gate switches stacks first.
    Int80 = 1,
}

impl SyscallEntry {
    pub const fn from_raw(raw: u64) -> Self {
        if raw == Self::Int80 as u64 {
            Self::Int80
        } else {
            Self::Syscall
        }
    }
}

/// The interrupt vector of the system-call gate (callable from ring 3).
pub const SYSCALL_INT_VECTOR: u8 = 0x80;

/// Declares the system calls once: number, name, documentation. The enum,
/// [`Syscall::COUNT`], [`Syscall::ALL`], [`Syscall::from_raw`] and
/// [`Syscall::name`] all come from this one list, so a new call is one
/// entry here (and its handler in the kernel, which the compiler asks for:
/// the kernel's dispatch matches every variant).
macro_rules! syscalls {
    ($($(#[doc = $doc:expr])* $variant:ident = $number:literal, $name:literal;)*) => {
        /// System-call numbers.
        #[repr(u64)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Syscall {
            $($(#[doc = $doc])* $variant = $number,)*
        }

        impl Syscall {
            /// Every system call, by number.
            pub const ALL: &[Syscall] = &[$(Syscall::$variant),*];
            /// The number of system calls; numbers at or above this are invalid.
            pub const COUNT: usize = Self::ALL.len();

            /// Decode a raw number from `rax`.
            pub const fn from_raw(raw: u64) -> Option<Self> {
                match raw {
                    $($number => Some(Self::$variant),)*
                    _ => None,
                }
            }

            /// A short name for statistics and logs.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }

        // The numbers are 0..COUNT in order: `from_raw` and the counters
        // (indexed by number) rely on it.
        const _: () = {
            let mut i = 0;
            while i < Syscall::ALL.len() {
                assert!(Syscall::ALL[i] as usize == i);
                i += 1;
            }
        };
    };
}

syscalls! {
    /// `exit(code)`: end the calling server. Never returns.
    Exit = 0, "exit";
    /// `yield()`: give up the rest of the time slice.
    Yield = 1, "yield";
    /// `wait(mask, timeout_ns, ring) -> pending`: first ring the doorbell of
    /// every channel handle whose bit is set in `ring` (as `notify` would;
    /// a handle the caller does not hold fails the call with `BadHandle`
    /// before anything is rung), then block until one of the notification
    /// sources in `mask` is pending (or `timeout_ns` passes, 0 = forever),
    /// and return and clear the pending bits that are in `mask`. Ringing and
    /// sleeping in one entry halves the crossings of a request and its
    /// answer.
    Wait = 2, "wait";
    /// `notify(channel_handle)`: ring the doorbell of the peer on a channel.
    Notify = 3, "notify";
    /// `channel_info(handle, out_ptr) -> 0`: describe a channel the manifest
    /// granted: where its ring pages are mapped and which notification bit
    /// it raises. Writes a [`ChannelInfo`] to `out_ptr`.
    ChannelInfo = 4, "channel_info";
    /// `irq_bind(line) -> notification_bit`: take delivery of a granted IRQ
    /// line (`0..=MAX_IRQ`).
    IrqBind = 5, "irq_bind";
    /// `irq_ack(line)`: the handler is done; the line may fire again.
    IrqAck = 6, "irq_ack";
    /// `ioport_enable(first_port, count)`: open granted ports in this
    /// server's I/O permission bitmap.
    IoPortEnable = 7, "ioport_enable";
    /// `mmio_map(phys, len) -> user_addr`: map a granted MMIO region.
    MmioMap = 8, "mmio_map";
    /// `counters(out_ptr, len) -> written`: copy the kernel's counters.
    Counters = 9, "counters";
    /// `log(ptr, len)`: write a line (at most 1 KiB) to the kernel log as
    /// one record: `[name] text`, control characters escaped, so that no
    /// server can forge another's (or the kernel's) line. Rate-limited per
    /// server; `Busy` when the line was dropped, over the rate or for want
    /// of room in the console's ring (the count is printed later).
    Log = 10, "log";
    /// `boot_info(out_ptr, len) -> written`: the boot configuration a server
    /// needs (batching on or off, TSC frequency, test name, its arguments).
    BootInfo = 11, "boot_info";
    /// `server_info(index, out_ptr) -> 0`: describe server `index` (any
    /// server may ask: names and states are not secrets). `BadHandle` past
    /// the last server, which is how a caller counts them.
    ServerInfo = 12, "server_info";
    /// `channel_stats(index, out_ptr) -> 0`: traffic on channel `index`
    /// (system-wide index). `BadHandle` past the last channel.
    ChannelStats = 13, "channel_stats";
    /// `ioport_write_paced(port, ptr, len, status_port, ready_mask, chunk)
    /// -> written`: write `len` bytes from `ptr` to granted port `port`, one
    /// byte at a time, waiting before every `chunk` bytes until
    /// `in8(status_port) & ready_mask` is non-zero (a FIFO that has room).
    /// Stops early, returning what it wrote, when the device stays busy.
    /// The batched path for device output where ring-3 port I/O is
    /// emulated (`BootInfo::ports_direct` is 0): one kernel entry for a
    /// whole burst.
    IoPortWritePaced = 14, "ioport_write_paced";
    /// `channel_reconnect(handle, out_ptr) -> generation`: after the peer
    /// was restarted (the handle's [`ChannelStatus::generation`] in the
    /// status page moved past the generation this end attached), map the
    /// channel's current ring region in place of the old one and write its
    /// [`ChannelInfo`] to `out_ptr`. The old region stays readable until
    /// this call, so what the dead peer published is not lost. `PeerDead`
    /// when the peer stays down; a no-op on a current handle.
    ChannelReconnect = 15, "channel_reconnect";
    /// `inject_fault(server_index) -> 0`: make server `server_index` take a
    /// real page fault at its next instruction (the way its supervisor
    /// policy is exercised in tests and soaks). `Denied` unless the
    /// manifest grants the caller `inject_faults`; `BadHandle` for no such
    /// live server.
    InjectFault = 16, "inject_fault";
}

/// Errors a system call returns, as `-(error as i64)` in `rax`.
#[repr(i64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The system-call number is not one the kernel knows.
    NoSuchSyscall = 1,
    /// A pointer argument is unmapped, not user memory, or not writable
    /// where the call writes.
    BadAddress = 2,
    /// A handle names no channel, IRQ or region this server holds.
    BadHandle = 3,
    /// A length or count is impossible (too large, zero where not allowed,
    /// misaligned).
    BadSize = 4,
    /// The manifest does not grant this server what it asked for.
    Denied = 5,
    /// An argument is out of its range.
    InvalidArgument = 6,
    /// The resource is already taken (an IRQ line bound twice).
    Busy = 7,
    /// The kernel ran out of memory for this request.
    OutOfMemory = 8,
    /// A wait ended because its timeout passed.
    TimedOut = 9,
    /// The peer at the other end of a channel ended and stays down (its
    /// restart policy or intensity limit says so).
    PeerDead = 10,
    /// The peer was restarted before it answered a request (which it may
    /// or may not have carried out). The channel is usable again once
    /// reconnected.
    PeerRestarted = 11,
}

impl Error {
    /// Every error, for decoding and tests.
    pub const ALL: [Error; 11] = [
        Error::NoSuchSyscall,
        Error::BadAddress,
        Error::BadHandle,
        Error::BadSize,
        Error::Denied,
        Error::InvalidArgument,
        Error::Busy,
        Error::OutOfMemory,
        Error::TimedOut,
        Error::PeerDead,
        Error::PeerRestarted,
    ];

    /// The value placed in `rax`.
    pub const fn to_return(self) -> i64 {
        -(self as i64)
    }

    /// Decode a raw `rax` value: `Ok(value)` or the error it names.
    /// An unknown negative value decodes as `InvalidArgument` rather than
    /// panicking, so a newer kernel never crashes an older server.
    pub fn decode(rax: i64) -> Result<u64, Error> {
        if rax >= 0 {
            return Ok(rax as u64);
        }
        let code = rax.unsigned_abs() as i64;
        Err(Self::ALL
            .iter()
            .copied()
            .find(|e| *e as i64 == code)
            .unwrap_or(Error::InvalidArgument))
    }

    pub const fn name(self) -> &'static str {
        match self {
            Error::NoSuchSyscall => "no such system call",
            Error::BadAddress => "bad address",
            Error::BadHandle => "bad handle",
            Error::BadSize => "bad size",
            Error::Denied => "denied by the manifest",
            Error::InvalidArgument => "invalid argument",
            Error::Busy => "busy",
            Error::OutOfMemory => "out of memory",
            Error::TimedOut => "timed out",
            Error::PeerDead => "peer is down",
            Error::PeerRestarted => "peer restarted",
        }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The highest IRQ line (ISA/GSI lines of the I/O APIC: 0..=23), for
/// `irq_bind`, `irq_ack` and the manifest's grants.
pub const MAX_IRQ: u8 = 23;

/// The vector that IRQ line `n` arrives on is `IRQ_BASE_VECTOR + n`: the
/// apic server routes each line there and the kernel hands that vector to
/// the line's server, so both sides take it from here.
pub const IRQ_BASE_VECTOR: u8 = 0x20;

/// The kernel's own timer (preemption and deadlines). No server may raise
/// it: the apic server refuses IPIs on it.
pub const KERNEL_TIMER_VECTOR: u8 = 0xF0;

/// The longest service or server name, in bytes (NUL padded on the wire).
pub const NAME_LEN: usize = 16;

/// Declares a record that a system call copies between the kernel and a
/// server, with what every such record needs said once: `#[repr(C)]`, and
/// zerocopy's `IntoBytes`, which refuses to compile a type with padding
/// (whose bytes would leak kernel memory) and gives the kernel the bytes
/// without `unsafe`, `FromBytes`, which lets the runtime receive them the
/// same way, `Immutable` and `KnownLayout`; and `Clone, Copy, Debug,
/// PartialEq, Eq`. Doc comments and further derives (`Default`) go on the
/// struct as usual.
macro_rules! wire_record {
    ($(#[$attr:meta])* pub struct $name:ident { $($fields:tt)* }) => {
        $(#[$attr])*
        #[repr(C)]
        #[derive(
            zerocopy::IntoBytes,
            zerocopy::FromBytes,
            zerocopy::Immutable,
            zerocopy::KnownLayout,
            Clone,
            Copy,
            Debug,
            PartialEq,
            Eq,
        )]
        pub struct $name { $($fields)* }
    };
}

wire_record! {
    /// What `channel_info` writes: where a channel's shared ring memory is
    /// mapped in the caller's address space, and its notification bit.
    ///
    /// A server's channel handles are numbered from 0: first one per service it
    /// uses (in its manifest `uses` order), then one per client of each
    /// service it provides (in channel order). `channel_info` on a handle past the last
    /// returns `Error::BadHandle`, which is how a server counts its channels.
    #[derive(Default)]
    pub struct ChannelInfo {
        /// User virtual address of the shared region (page aligned).
        pub base: u64,
        /// Length of the shared region in bytes (a multiple of 4096).
        pub len: u64,
        /// The bit in the `wait` mask that the peer's `notify` sets.
        pub notify_bit: u32,
        /// 1 if the caller is the channel's provider (server side), 0 if a client.
        pub is_provider: u32,
        /// The service name, NUL padded.
        pub service: [u8; NAME_LEN],
        /// The peer server's name, NUL padded.
        pub peer: [u8; NAME_LEN],
        /// The generation of the ring region mapped for the caller: 0 at boot,
        /// one more each time either end was restarted.
        pub generation: u32,
        /// The IRQ lines the manifest grants the peer (bit `n` = line `n`):
        /// what a provider such as the apic server lets that client touch.
        pub peer_irqs: u32,
        /// The CPU the peer runs on ([`NO_CPU`] for the kernel's own end):
        /// an end whose peer runs on another CPU polls before it sleeps.
        pub peer_cpu: u32,
        /// Zero.
        pub reserved: u32,
    }
}

/// [`ChannelInfo::peer_cpu`] of a peer that is not a server.
pub const NO_CPU: u32 = u32::MAX;

/// A name as the wire carries it: NUL padded to [`NAME_LEN`] bytes (a
/// longer one is cut). The inverse of [`name_str`].
pub fn name_bytes(name: &str) -> [u8; NAME_LEN] {
    let mut out = [0u8; NAME_LEN];
    let n = name.len().min(NAME_LEN);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// A NUL-padded name as a string (invalid UTF-8 reads as empty).
pub fn name_str(name: &[u8]) -> &str {
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    core::str::from_utf8(&name[..len]).unwrap_or("")
}

/// User address-space layout: the same in every server, so that the kernel
/// and the runtime agree on it without passing it around.
pub mod layout {
    /// The page: the unit of every mapping in a server's space (image
    /// segments, stack, channel regions, MMIO grants) and of the frames
    /// behind them. x86_64's smallest; the kernel maps nothing larger for
    /// servers.
    pub const PAGE_SIZE: u64 = 4096;
    /// Where server images are linked (their ELF segments must lie in
    /// `[IMAGE_BASE, IMAGE_END)`).
    pub const IMAGE_BASE: u64 = 0x0040_0000;
    pub const IMAGE_END: u64 = 0x4000_0000;
    /// The user stack: `STACK_PAGES` pages ending at `STACK_TOP`, with an
    /// unmapped guard page below.
    pub const STACK_TOP: u64 = 0x7FFF_FFF0_0000;
    pub const STACK_PAGES: u64 = 32;
    /// Channel regions: channel `i` (a system-wide index) is mapped at
    /// `CHANNELS_BASE + i * CHANNEL_STRIDE` in both of its servers' spaces,
    /// and nowhere else.
    pub const CHANNELS_BASE: u64 = 0x1000_0000_0000;
    pub const CHANNEL_STRIDE: u64 = 0x100_0000;
    /// The server's status page: one read-only page the kernel writes (a
    /// [`StatusPage`]), so that a server learns that a peer died or came
    /// back without a system call, and no peer can forge it.
    pub const STATUS_PAGE: u64 = 0x0FFF_FFFF_F000;
    /// MMIO regions granted by the manifest are mapped from here up.
    pub const MMIO_BASE: u64 = 0x2000_0000_0000;
    /// The first address that is not user space.
    pub const USER_END: u64 = 0x0000_8000_0000_0000;
}

/// Notification bit 63 is the kernel's own: a `wait` timeout never sets it,
/// but IRQ and channel bits are allocated from 0 upward below it.
pub const MAX_NOTIFY_BITS: u32 = 63;

/// The most channel handles one server holds: each needs a notification
/// bit, so no more than there are bits.
pub const MAX_HANDLES: usize = MAX_NOTIFY_BITS as usize;

/// [`ChannelStatus::peer`]: the peer is running (or is the kernel).
pub const PEER_ALIVE: u32 = 0;
/// [`ChannelStatus::peer`]: the peer ended and stays down.
pub const PEER_DEAD: u32 = 1;

wire_record! {
    /// One channel handle's entry in the [`StatusPage`].
    #[derive(Default)]
    pub struct ChannelStatus {
        /// The channel's current generation. When it is past the generation
        /// the caller attached ([`ChannelInfo::generation`]), the peer was
        /// restarted: requests it took unanswered are lost to it, and
        /// `channel_reconnect` maps the fresh ring.
        pub generation: u32,
        /// [`PEER_ALIVE`] or [`PEER_DEAD`].
        pub peer: u32,
    }
}

wire_record! {
    /// What the kernel keeps at [`layout::STATUS_PAGE`] in every server,
    /// mapped read-only. The kernel raises the handle's notification bit
    /// whenever it changes an entry, so a waiting end wakes and looks.
    pub struct StatusPage {
        /// How many times this server was restarted (0 for its first run).
        pub restarts: u32,
        /// Zero.
        pub reserved: u32,
        /// By channel handle.
        pub channels: [ChannelStatus; MAX_HANDLES],
    }
}

const _: () = assert!(core::mem::size_of::<StatusPage>() <= 4096);

/// The kernel's operations that leave the guest (or, on a hypervisor that
/// runs the kernel at hardware CPL 3, trap to it): one counter each in
/// [`KernelCounters::hv_ops`]. Counted by the kernel's hypervisor-facing
/// module as it executes them, per backend.
#[repr(usize)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HvOp {
    /// Interrupts masked (CLI).
    Cli = 0,
    /// Interrupts unmasked (STI, also the one before HLT).
    Sti = 1,
    /// The CPU halted until an interrupt (HLT).
    Hlt = 2,
    /// An address-space switch (write of CR3).
    Cr3Write = 3,
    /// One translation flushed (INVLPG).
    Invlpg = 4,
    /// A model-specific register read (RDMSR).
    Rdmsr = 5,
    /// A model-specific register write (WRMSR: timer deadline, GS bases).
    Wrmsr = 6,
    /// SWAPGS.
    Swapgs = 7,
    /// A local-APIC register access by the kernel (end of interrupt, timer).
    ApicAccess = 8,
    /// A port read or write by the kernel, its own or emulated for a server.
    PortIo = 9,
    /// A return to ring 3 (IRETQ or SYSRETQ).
    ReturnToUser = 10,
    /// Other privileged instructions (control registers, descriptor tables,
    /// CPUID): boot only.
    Other = 11,
}

impl HvOp {
    pub const COUNT: usize = 12;
    pub const ALL: [HvOp; Self::COUNT] = [
        HvOp::Cli,
        HvOp::Sti,
        HvOp::Hlt,
        HvOp::Cr3Write,
        HvOp::Invlpg,
        HvOp::Rdmsr,
        HvOp::Wrmsr,
        HvOp::Swapgs,
        HvOp::ApicAccess,
        HvOp::PortIo,
        HvOp::ReturnToUser,
        HvOp::Other,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            HvOp::Cli => "cli",
            HvOp::Sti => "sti",
            HvOp::Hlt => "hlt",
            HvOp::Cr3Write => "cr3",
            HvOp::Invlpg => "invlpg",
            HvOp::Rdmsr => "rdmsr",
            HvOp::Wrmsr => "wrmsr",
            HvOp::Swapgs => "swapgs",
            HvOp::ApicAccess => "apic",
            HvOp::PortIo => "port",
            HvOp::ReturnToUser => "iret",
            HvOp::Other => "other",
        }
    }
}

wire_record! {
    /// The kernel's counters, as `counters` copies them.
    pub struct KernelCounters {
        /// System calls by number (index = `Syscall as usize`).
        pub syscalls: [u64; Syscall::COUNT],
        /// System calls with a number the kernel does not know.
        pub bad_syscalls: u64,
        /// `notify` calls that reached a peer (doorbells rung).
        pub doorbells: u64,
        /// Doorbells that woke a blocked peer.
        pub wakeups: u64,
        /// Device interrupts delivered to servers.
        pub device_interrupts: u64,
        /// Timer interrupts (the kernel's preemption tick).
        pub timer_interrupts: u64,
        /// Context switches between threads.
        pub context_switches: u64,
        /// Servers stopped for a fault.
        pub faults: u64,
        /// TSC when the counters were copied.
        pub tsc: u64,
        /// Exit-causing operations the kernel performed, by [`HvOp`].
        pub hv_ops: [u64; HvOp::COUNT],
        /// Port accesses by servers that the kernel emulated after a #GP
        /// (where the backend ignores the I/O permission bitmap).
        pub emulated_port_io: u64,
        /// Pages of servers' `.bss` and stacks mapped on first touch (by a page
        /// fault, or by a system call that copied into them).
        pub demand_pages: u64,
        /// Inter-processor interrupts the kernel sent (wake-ups of another
        /// CPU, TLB shootdowns, ends of interrupt owed to the boot CPU).
        pub ipis: u64,
    }
}

impl Default for KernelCounters {
    fn default() -> Self {
        Self {
            syscalls: [0; Syscall::COUNT],
            bad_syscalls: 0,
            doorbells: 0,
            wakeups: 0,
            device_interrupts: 0,
            timer_interrupts: 0,
            context_switches: 0,
            faults: 0,
            tsc: 0,
            hv_ops: [0; HvOp::COUNT],
            emulated_port_io: 0,
            demand_pages: 0,
            ipis: 0,
        }
    }
}

impl KernelCounters {
    /// All kernel entries: system calls (known or not) and interrupts.
    pub fn entries(&self) -> u64 {
        self.syscalls.iter().sum::<u64>()
            + self.bad_syscalls
            + self.device_interrupts
            + self.timer_interrupts
    }

    /// Every exit-causing operation the kernel performed.
    pub fn hv_ops_total(&self) -> u64 {
        self.hv_ops.iter().sum()
    }
}

/// The counters as `key=value` words, the form a `counters:` line carries
/// (read back by `cargo xtask run --stats`): kernel entries, then every
/// exit-causing operation as `hv.NAME=N`.
impl core::fmt::Display for KernelCounters {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "syscalls={} bad_syscalls={} doorbells={} wakeups={} device_irqs={} timer_irqs={} \
             switches={} faults={} entries={} emulated_port_io={} demand_pages={} ipis={} hv_ops={}",
            self.syscalls.iter().sum::<u64>(),
            self.bad_syscalls,
            self.doorbells,
            self.wakeups,
            self.device_interrupts,
            self.timer_interrupts,
            self.context_switches,
            self.faults,
            self.entries(),
            self.emulated_port_io,
            self.demand_pages,
            self.ipis,
            self.hv_ops_total(),
        )?;
        for op in HvOp::ALL {
            write!(f, " hv.{}={}", op.name(), self.hv_ops[op as usize])?;
        }
        Ok(())
    }
}

/// The longest argument string a server receives.
pub const SERVER_ARGS_LEN: usize = 192;

wire_record! {
    /// What `boot_info` writes.
    pub struct BootInfo {
        /// 1 if batching is on (`batching=on`), 0 if off.
        pub batching: u32,
        /// The server's index in the manifest.
        pub server_index: u32,
        /// TSC frequency in Hz (from CPUID, or measured against the PIT).
        pub tsc_hz: u64,
        /// The `test=NAME` option, NUL padded (empty when not testing).
        pub test_name: [u8; 32],
        /// Physical address of the ACPI RSDP, 0 if the loader gave none.
        pub rsdp: u64,
        /// This server's options from the kernel command line: every
        /// `NAME.key=value` for this server's NAME, as `key=value` words
        /// separated by spaces, NUL padded.
        pub args: [u8; SERVER_ARGS_LEN],
        /// 1 when a granted port is reached by IN/OUT in ring 3 at the
        /// hardware's cost; 0 when the kernel's backend emulates each such
        /// access (the hypervisor ignores the I/O permission bitmap), so that
        /// bursts should go through `ioport_write_paced`.
        pub ports_direct: u32,
        /// The kernel's hypervisor backend ("native", "pvm"), NUL padded.
        pub backend: [u8; 12],
        /// How many CPUs the kernel schedules on.
        pub cpus: u32,
        /// The CPU this server runs on (always the same one).
        pub cpu: u32,
    }
}

impl Default for BootInfo {
    fn default() -> Self {
        Self {
            batching: 0,
            server_index: 0,
            tsc_hz: 0,
            test_name: [0; 32],
            rsdp: 0,
            args: [0; SERVER_ARGS_LEN],
            ports_direct: 1,
            backend: [0; 12],
            cpus: 1,
            cpu: 0,
        }
    }
}

impl BootInfo {
    /// The value of `key` among this server's arguments.
    pub fn arg(&self, key: &str) -> Option<&str> {
        name_str(&self.args)
            .split_ascii_whitespace()
            .filter_map(|word| word.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

/// A server's state, as `server_info` reports it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerState {
    Ready = 0,
    Running = 1,
    Blocked = 2,
    Exited = 3,
    Faulted = 4,
}

impl ServerState {
    pub fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => Self::Ready,
            1 => Self::Running,
            2 => Self::Blocked,
            3 => Self::Exited,
            4 => Self::Faulted,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Running => "running",
            Self::Blocked => "blocked",
            Self::Exited => "exited",
            Self::Faulted => "faulted",
        }
    }
}

wire_record! {
    /// What `server_info` writes.
    #[derive(Default)]
    pub struct ServerInfo {
        pub name: [u8; NAME_LEN],
        /// A [`ServerState`] as a number.
        pub state: u32,
        /// The exit code, for an exited server.
        pub exit_code: i32,
        pub restarts: u32,
        pub channels: u32,
        /// System calls this server made.
        pub syscalls: u64,
    }
}

wire_record! {
    /// What `channel_stats` writes. Message counts are the rings' producer
    /// indices as the kernel last read them from shared memory: what the
    /// producers claim, reported, never trusted.
    #[derive(Default)]
    pub struct ChannelStats {
        pub service: [u8; NAME_LEN],
        pub provider: [u8; NAME_LEN],
        pub client: [u8; NAME_LEN],
        pub ring_slots: u32,
        pub reserved: u32,
        /// Requests published by the client (wrapping at 2^32).
        pub requests: u64,
        /// Completions published by the provider (wrapping at 2^32).
        pub completions: u64,
        /// `notify` calls by the client, and by the provider.
        pub doorbells_from_client: u64,
        pub doorbells_from_provider: u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_round_trips() {
        for raw in 0..Syscall::COUNT as u64 {
            let call = Syscall::from_raw(raw).expect("numbers below COUNT decode");
            assert_eq!(call as u64, raw);
        }
        assert_eq!(Syscall::from_raw(Syscall::COUNT as u64), None);
        assert_eq!(Syscall::from_raw(u64::MAX), None);
    }

    #[test]
    fn hv_op_table_is_in_number_order() {
        for (i, op) in HvOp::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i, "{}", op.name());
        }
    }

    #[test]
    fn names_round_trip_through_their_padded_form() {
        assert_eq!(name_str(&name_bytes("console")), "console");
        assert_eq!(name_str(&name_bytes("")), "");
        assert_eq!(
            name_str(&name_bytes("exactly-sixteen!")),
            "exactly-sixteen!"
        );
        assert_eq!(
            name_str(&name_bytes("longer-than-sixteen-bytes")),
            "longer-than-sixt"
        );
    }

    #[test]
    fn errors_round_trip_through_rax() {
        for e in Error::ALL {
            assert_eq!(Error::decode(e.to_return()), Err(e));
        }
        assert_eq!(Error::decode(42), Ok(42));
        assert_eq!(Error::decode(-1000), Err(Error::InvalidArgument));
        assert_eq!(Error::decode(i64::MIN), Err(Error::InvalidArgument));
    }
}
