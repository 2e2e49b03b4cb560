//! The system-call fuzzer's generator: random numbers and hostile
//! arguments, each call with what the kernel must answer where the answer
//! is certain.
//!
//! Context: `syscall-fuzz`; host-tested. The generator never produces
//! `exit`, never a `wait` that can block for long (nonzero mask, timeout at
//! most 1 ms), and passes as a pointer only (a) addresses that are not this
//! program's writable memory or (b) the scratch area, at offsets that leave
//! a page of room behind them. [`crate::hazard::fuzz_syscall`] relies on
//! that.

use userland::abi::layout::{
    CHANNEL_STRIDE, CHANNELS_BASE, IMAGE_BASE, IMAGE_END, MMIO_BASE, STACK_PAGES, STACK_TOP,
    USER_END,
};
use userland::abi::{BootInfo, ChannelInfo, Error, KernelCounters, Syscall};

use crate::XorShift;

/// Kernel addresses: never user memory.
pub const KERNEL: [u64; 7] = [
    0xffff_ffff_8000_0000,
    0xffff_ffff_8010_0000,
    0xffff_8000_0000_0000,
    0xffff_c000_0000_0000,
    0xffff_d000_0000_0000,
    0xffff_ffff_ffff_f000,
    u64::MAX - 7,
];

/// Non-canonical addresses: bits 63..47 not all equal.
pub const NON_CANONICAL: [u64; 6] = [
    USER_END,
    0x8000_0000_0000_0000,
    0x1234_5678_9abc_def0,
    0xdead_beef_0000_0000,
    0x7fff_0000_0000_0000,
    0xfff0_0000_0000_0000,
];

/// User addresses no server has mapped: the null page, below the image, far
/// above any image, the stack's guard page and just above the stack, the
/// top of user space, past any channel's region in its 16 MiB stride, and
/// high in the MMIO window.
pub const UNMAPPED: [u64; 11] = [
    0,
    8,
    0x1000,
    IMAGE_BASE - 0x1000,
    0x1234_5000,
    IMAGE_END - 0x1000,
    STACK_TOP - (STACK_PAGES + 1) * 0x1000,
    STACK_TOP,
    USER_END - 0x1000,
    CHANNELS_BASE + CHANNEL_STRIDE / 2,
    MMIO_BASE + 0x1000_0000,
];

/// Where this program's memory is, as the fuzzer needs to know it.
#[derive(Clone, Copy, Debug)]
pub struct Memory {
    /// The scratch area the kernel may write (see `hazard`).
    pub scratch: u64,
    /// Its length (at least two pages).
    pub scratch_len: u64,
    /// An address in this program's text (readable, not writable).
    pub text: u64,
    /// An address in this program's rodata (readable, not writable).
    pub rodata: u64,
}

/// What the kernel must answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Anything that decodes (success or a known error).
    Any,
    /// Success.
    Ok,
    /// Exactly this error.
    Err(Error),
    /// One of these errors.
    ErrIn(&'static [Error]),
    /// Some error, which one is not certain.
    AnyErr,
    /// A `wait`: the pending bits (a subset of the mask), or `TimedOut`.
    Wait {
        /// The mask passed.
        mask: u64,
    },
}

impl Expect {
    /// Whether `rax` is an answer this expectation allows.
    pub fn allows(&self, rax: i64) -> bool {
        let r = Error::decode(rax);
        match *self {
            Expect::Any => true,
            Expect::Ok => r.is_ok(),
            Expect::Err(e) => r == Err(e),
            Expect::ErrIn(es) => matches!(r, Err(e) if es.contains(&e)),
            Expect::AnyErr => r.is_err(),
            Expect::Wait { mask } => match r {
                Ok(bits) => bits & !mask == 0,
                Err(e) => e == Error::TimedOut,
            },
        }
    }
}

/// One planned system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The number in `rax`.
    pub nr: u64,
    /// The six arguments.
    pub args: [u64; 6],
    /// What must come back.
    pub expect: Expect,
}

/// The generator.
pub struct Fuzzer {
    rng: XorShift,
    mem: Memory,
}

const COUNT: u64 = Syscall::COUNT as u64;
const COUNTERS_LEN: u64 = core::mem::size_of::<KernelCounters>() as u64;
const BOOT_INFO_LEN: u64 = core::mem::size_of::<BootInfo>() as u64;
/// Longest wait the fuzzer asks for: 1 ms.
pub const MAX_WAIT_NS: u64 = 1_000_000;

impl Fuzzer {
    /// A generator with a fixed seed.
    pub fn new(seed: u64, mem: Memory) -> Self {
        Self {
            rng: XorShift::new(seed),
            mem,
        }
    }

    /// An address that is not this program's memory at all.
    fn foreign(&mut self) -> u64 {
        match self.rng.below(3) {
            0 => self.rng.pick(&KERNEL),
            1 => self.rng.pick(&NON_CANONICAL),
            _ => self.rng.pick(&UNMAPPED),
        }
    }

    /// An address the kernel must refuse to write: foreign, or this
    /// program's read-only text or rodata.
    fn unwritable(&mut self) -> u64 {
        match self.rng.below(8) {
            0 => self.mem.text,
            1 => self.mem.rodata,
            _ => self.foreign(),
        }
    }

    /// A pointer into the first page of the scratch area, 8-byte aligned,
    /// so at least a page of scratch lies behind it.
    fn scratch(&mut self) -> u64 {
        self.mem.scratch + (self.rng.below(4096 / 8) * 8)
    }

    /// Any argument word: small, huge, random, foreign or scratch.
    fn word(&mut self) -> u64 {
        match self.rng.below(8) {
            0 => self.rng.below(16),
            1 => self
                .rng
                .pick(&[u64::MAX, i64::MAX as u64, 1 << 63, u32::MAX as u64, 4096]),
            2 | 3 => self.rng.next_u64(),
            4 | 5 => self.foreign(),
            6 => self.scratch(),
            _ => self.rng.below(1 << 20),
        }
    }

    /// A length: zero, small, exact sizes, huge.
    fn length(&mut self) -> u64 {
        match self.rng.below(6) {
            0 => 0,
            1 => 1 + self.rng.below(64),
            2 => self.rng.pick(&[COUNTERS_LEN, BOOT_INFO_LEN, 4096]),
            3 => self
                .rng
                .pick(&[u64::MAX, 1 << 47, 1 << 32, i64::MAX as u64]),
            _ => self.rng.below(4096),
        }
    }

    /// A system-call number that is not one: the kernel must say
    /// `NoSuchSyscall`. Numbers whose low 32 bits name a real call (a
    /// kernel that truncates `rax` would run them) get harmless arguments.
    fn invalid(&mut self) -> Plan {
        let (nr, harmless) = match self.rng.below(6) {
            0 => (COUNT + self.rng.below(100), false),
            1 => (
                self.rng.pick(&[
                    u64::MAX,
                    1 << 63,
                    i64::MAX as u64,
                    u32::MAX as u64,
                    0x8000_0000,
                ]),
                false,
            ),
            2 => ((1 << 32) | (1 + self.rng.below(COUNT - 1)), true),
            _ => (self.rng.next_u64() | (1 << 40), false),
        };
        let args = if harmless {
            [1, 1_000, 0, 0, 0, 0]
        } else {
            [
                self.word(),
                self.word(),
                self.word(),
                self.word(),
                self.word(),
                self.word(),
            ]
        };
        Plan {
            nr,
            args,
            expect: Expect::Err(Error::NoSuchSyscall),
        }
    }

    /// The next call, or `None` to skip a round (an exit, or a yield or
    /// wait the fuzzer chose not to make this time).
    pub fn next_plan(&mut self) -> Option<Plan> {
        if self.rng.one_in(4) {
            return Some(self.invalid());
        }
        let call = Syscall::from_raw(self.rng.below(COUNT))?;
        let mut args = [0u64; 6];
        for a in args.iter_mut() {
            *a = self.word();
        }
        let plan = |args: [u64; 6], expect| {
            Some(Plan {
                nr: call as u64,
                args,
                expect,
            })
        };
        // One call in eight has nothing but random words (still only
        // foreign or scratch pointers); the rest are shaped to be hostile
        // in one way the answer to which is certain.
        let wild = self.rng.one_in(8);
        match call {
            Syscall::Exit => None,
            Syscall::Yield => {
                if self.rng.one_in(4) {
                    plan(args, Expect::Ok)
                } else {
                    None
                }
            }
            Syscall::Wait => {
                if !self.rng.one_in(16) {
                    return None;
                }
                let mask = (self.rng.next_u64() & ((1 << 63) - 1)).max(1);
                args[0] = mask;
                args[1] = 1 + self.rng.below(MAX_WAIT_NS);
                // Doorbells to ring first: the fuzzer holds no channel, so
                // any handle at all is refused before anything is rung or
                // waited for.
                if self.rng.one_in(2) {
                    args[2] = self.rng.next_u64().max(1);
                    return plan(args, Expect::Err(Error::BadHandle));
                }
                args[2] = 0;
                plan(args, Expect::Wait { mask })
            }
            Syscall::Log => {
                // Nothing may reach the console: a foreign pointer with a
                // nonzero length (a zero-length line from an unmapped
                // address is a valid empty line), or the scratch area with
                // a length beyond what `log` or user space allows.
                if wild || self.rng.one_in(4) {
                    if self.rng.one_in(2) {
                        args[0] = self.foreign();
                        args[1] = self.length().max(1);
                    } else {
                        args[0] = self.scratch();
                        args[1] = self
                            .rng
                            .pick(&[u64::MAX, 1 << 47, i64::MAX as u64, 1 << 32]);
                    }
                    return plan(args, Expect::AnyErr);
                }
                args[0] = self.foreign();
                args[1] = 1 + self.rng.below(128);
                plan(args, Expect::Err(Error::BadAddress))
            }
            Syscall::ChannelInfo
            | Syscall::Counters
            | Syscall::BootInfo
            | Syscall::ServerInfo
            | Syscall::ChannelStats
                if wild =>
            {
                // Only foreign or scratch pointers (see `word`).
                plan(args, Expect::Any)
            }
            Syscall::ChannelInfo | Syscall::ServerInfo | Syscall::ChannelStats => {
                args[0] = self.rng.pick(&[0, 1, 2, 3, 255, 1 << 32, u64::MAX]);
                if self.rng.one_in(4) {
                    args[1] = self.scratch();
                    return plan(args, Expect::Any);
                }
                args[1] = self.unwritable();
                // The handle may be checked first.
                plan(args, Expect::ErrIn(&[Error::BadAddress, Error::BadHandle]))
            }
            Syscall::Counters | Syscall::BootInfo => {
                let exact = if call == Syscall::Counters {
                    COUNTERS_LEN
                } else {
                    BOOT_INFO_LEN
                };
                if self.rng.one_in(4) {
                    args[0] = self.scratch();
                    args[1] = self.length();
                    return plan(args, Expect::Any);
                }
                args[0] = self.unwritable();
                args[1] = exact;
                plan(args, Expect::Err(Error::BadAddress))
            }
            // Handles, lines, ports and physical ranges this server was not
            // granted: whatever the answer, it must come back.
            Syscall::Notify
            | Syscall::IrqBind
            | Syscall::IrqAck
            | Syscall::IoPortEnable
            | Syscall::MmioMap => plan(args, Expect::Any),
            // This server holds no port: every burst is refused.
            Syscall::IoPortWritePaced => plan(args, Expect::AnyErr),
            // It holds no channel: nothing to reconnect.
            Syscall::ChannelReconnect => plan(args, Expect::AnyErr),
            // The manifest never grants the fuzzer fault injection: whatever
            // the target, the call is refused, and nobody faults.
            Syscall::InjectFault => plan(args, Expect::Err(Error::Denied)),
        }
    }
}

/// `size_of::<ChannelInfo>()`, for the record: `channel_info` writes this
/// many bytes, well within the page of scratch behind any scratch pointer.
pub const CHANNEL_INFO_LEN: usize = core::mem::size_of::<ChannelInfo>();
const _: () = assert!(CHANNEL_INFO_LEN <= 4096 && COUNTERS_LEN <= 4096);

#[cfg(test)]
mod tests {
    use super::*;

    const MEM: Memory = Memory {
        scratch: 0x0050_0000,
        scratch_len: 8192,
        text: 0x0040_1000,
        rodata: 0x0041_0000,
    };

    fn is_canonical(a: u64) -> bool {
        let top = a >> 47;
        top == 0 || top == (1 << 17) - 1
    }

    #[test]
    fn address_classes_are_what_they_claim() {
        for a in KERNEL {
            assert!(a >= 0xffff_8000_0000_0000 && is_canonical(a), "{a:#x}");
        }
        for a in NON_CANONICAL {
            assert!(!is_canonical(a), "{a:#x}");
        }
        for a in UNMAPPED {
            assert!(a < USER_END, "{a:#x}");
            assert!(
                !(IMAGE_BASE..IMAGE_BASE + (16 << 20)).contains(&a),
                "{a:#x}"
            );
            assert!(
                !(STACK_TOP - STACK_PAGES * 4096..STACK_TOP).contains(&a),
                "{a:#x}"
            );
        }
    }

    #[test]
    fn plans_are_safe_and_varied() {
        let mut f = Fuzzer::new(0x5eed, MEM);
        let mut made = 0;
        let mut by_nr = [0u32; Syscall::COUNT];
        let mut invalid = 0;
        let mut waits = 0;
        let mut certain = 0;
        for _ in 0..200_000 {
            let Some(p) = f.next_plan() else { continue };
            made += 1;
            assert_ne!(p.nr, Syscall::Exit as u64, "never exit");
            match Syscall::from_raw(p.nr) {
                None => {
                    invalid += 1;
                    assert_eq!(p.expect, Expect::Err(Error::NoSuchSyscall));
                }
                Some(call) => {
                    by_nr[call as usize] += 1;
                    if call == Syscall::Log {
                        // A zero length would print an empty line.
                        assert_ne!(p.args[1], 0);
                        assert_ne!(p.expect, Expect::Any, "log never reaches the console");
                    }
                    if call == Syscall::Wait {
                        waits += 1;
                        assert_ne!(p.args[0], 0);
                        assert!(p.args[0] < 1 << 63);
                        assert!((1..=MAX_WAIT_NS).contains(&p.args[1]));
                    }
                    // Every word that points into this program is in the
                    // first page of scratch (never the text, stack or heap
                    // as a writable target).
                    for a in p.args {
                        let in_image = (IMAGE_BASE..IMAGE_BASE + (16 << 20)).contains(&a);
                        if in_image && a != MEM.text && a != MEM.rodata {
                            let ok = (MEM.scratch..MEM.scratch + 4096).contains(&a) || a < 1 << 20;
                            assert!(ok, "{call:?} {a:#x}");
                        }
                    }
                    if matches!(
                        call,
                        Syscall::Counters | Syscall::BootInfo | Syscall::ChannelInfo
                    ) {
                        let ptr = if call == Syscall::ChannelInfo {
                            p.args[1]
                        } else {
                            p.args[0]
                        };
                        if ptr == MEM.text || ptr == MEM.rodata {
                            assert_ne!(p.expect, Expect::Any, "read-only targets are certain");
                        }
                    }
                }
            }
            if p.expect != Expect::Any {
                certain += 1;
            }
        }
        assert!(made > 100_000, "{made}");
        assert!(invalid > made / 5, "{invalid}");
        assert!(waits > 100 && waits < 2_000, "{waits}");
        assert!(certain > made / 2, "{certain} of {made}");
        for (nr, n) in by_nr.iter().enumerate() {
            if nr != Syscall::Exit as usize {
                assert!(*n > 500, "{nr}: {n}");
            } else {
                assert_eq!(*n, 0);
            }
        }
    }

    #[test]
    fn expectations_check_answers() {
        assert!(Expect::Err(Error::BadAddress).allows(Error::BadAddress.to_return()));
        assert!(!Expect::Err(Error::BadAddress).allows(0));
        assert!(!Expect::Err(Error::BadAddress).allows(Error::BadSize.to_return()));
        assert!(Expect::Wait { mask: 0b110 }.allows(0b100));
        assert!(!Expect::Wait { mask: 0b110 }.allows(0b1));
        assert!(Expect::Wait { mask: 1 }.allows(Error::TimedOut.to_return()));
        assert!(!Expect::Wait { mask: 1 }.allows(Error::InvalidArgument.to_return()));
        assert!(Expect::AnyErr.allows(-1) && !Expect::AnyErr.allows(0));
        assert!(Expect::Any.allows(i64::MIN));
    }
}
