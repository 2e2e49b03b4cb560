//! The messages that travel through the rings: a 64-byte request
//! [`Descriptor`] and a 32-byte [`Completion`].
//!
//! Both are plain integers in a `#[repr(C)]` layout with no padding, so any
//! bit pattern a peer writes is a valid value: the ring copies a slot out of
//! shared memory first, and only the private copy is decoded. Decoding never
//! panics. Usable in any context (kernel, interrupt handlers, servers).

use crate::layout::Slot;

/// Number of argument words in a [`Descriptor`].
pub const DESCRIPTOR_ARGS: usize = 6;

/// A request: one hypercall or message, exactly one cache line.
///
/// Wire layout (little endian, 64 bytes, 64-byte aligned):
///
/// ```text
/// offset  0  u32  opcode     what to do (server defined)
/// offset  4  u32  flags      Descriptor::FLAG_*
/// offset  8  u64  cookie     chosen by the caller, echoed in the Completion
/// offset 16  u64  args[6]    argument words
/// ```
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Descriptor {
    opcode: u32,
    flags: u32,
    cookie: u64,
    args: [u64; DESCRIPTOR_ARGS],
}

// SAFETY: `Descriptor` is `repr(C)` made only of integers, with no padding
// (4 + 4 + 8 + 6 * 8 = 64 bytes = its alignment), so every bit pattern is a
// valid value and writing one leaks no uninitialised bytes.
unsafe impl Slot for Descriptor {}

const _: () = assert!(core::mem::size_of::<Descriptor>() == 64);
const _: () = assert!(core::mem::align_of::<Descriptor>() == 64);

impl Descriptor {
    /// The sender does not want a [`Completion`] for this request.
    pub const FLAG_NO_COMPLETION: u32 = 1 << 0;
    /// More descriptors of the same logical request follow (a chain).
    pub const FLAG_MORE: u32 = 1 << 1;
    /// Server-defined flags start here; lower bits are reserved by pvchannel.
    pub const FLAG_USER_SHIFT: u32 = 16;

    /// A request with the given opcode and caller cookie, no flags and all
    /// arguments zero.
    #[inline]
    pub const fn new(opcode: u32, cookie: u64) -> Self {
        Self {
            opcode,
            flags: 0,
            cookie,
            args: [0; DESCRIPTOR_ARGS],
        }
    }

    /// Replace the flags.
    #[inline]
    pub const fn with_flags(mut self, flags: u32) -> Self {
        self.flags = flags;
        self
    }

    /// Set the first `N` argument words (`N <= 6`, checked at compile time);
    /// the rest stay as they were.
    #[inline]
    pub const fn with_args<const N: usize>(mut self, args: [u64; N]) -> Self {
        const { assert!(N <= DESCRIPTOR_ARGS, "a descriptor has six argument words") };
        let mut i = 0;
        while i < N {
            self.args[i] = args[i];
            i += 1;
        }
        self
    }

    /// Set argument word `i`; an index of 6 or more is ignored (and is a
    /// bug: debug builds assert).
    #[inline]
    pub fn with_arg(mut self, i: usize, value: u64) -> Self {
        debug_assert!(i < DESCRIPTOR_ARGS, "argument index {i} out of range");
        if let Some(slot) = self.args.get_mut(i) {
            *slot = value;
        }
        self
    }

    #[inline]
    pub const fn opcode(&self) -> u32 {
        self.opcode
    }

    #[inline]
    pub const fn flags(&self) -> u32 {
        self.flags
    }

    #[inline]
    pub const fn cookie(&self) -> u64 {
        self.cookie
    }

    /// Argument word `i`, or 0 when `i >= 6`.
    #[inline]
    pub const fn arg(&self, i: usize) -> u64 {
        if i < DESCRIPTOR_ARGS { self.args[i] } else { 0 }
    }

    /// All argument words.
    #[inline]
    pub const fn args(&self) -> [u64; DESCRIPTOR_ARGS] {
        self.args
    }

    /// Whether the sender expects a completion.
    #[inline]
    pub const fn wants_completion(&self) -> bool {
        self.flags & Self::FLAG_NO_COMPLETION == 0
    }

    /// The wire bytes (little endian).
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[0..4].copy_from_slice(&self.opcode.to_le_bytes());
        out[4..8].copy_from_slice(&self.flags.to_le_bytes());
        out[8..16].copy_from_slice(&self.cookie.to_le_bytes());
        for (i, a) in self.args.iter().enumerate() {
            out[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        out
    }

    /// Decode wire bytes; every input is a valid descriptor.
    pub fn from_bytes(b: &[u8; 64]) -> Self {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(w)
        };
        let mut args = [0u64; DESCRIPTOR_ARGS];
        for (i, a) in args.iter_mut().enumerate() {
            *a = u64_at(16 + 8 * i);
        }
        Self {
            opcode: u32_at(0),
            flags: u32_at(4),
            cookie: u64_at(8),
            args,
        }
    }
}

/// The answer to a [`Descriptor`]: 32 bytes, two per cache line.
///
/// ```text
/// offset  0  u64  cookie   the request's cookie
/// offset  8  i64  status   0 = success, negative = -(abi::Error)
/// offset 16  u64  value    the result
/// offset 24  u64  aux      a second result word (server defined)
/// ```
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Completion {
    cookie: u64,
    status: i64,
    value: u64,
    aux: u64,
}

// SAFETY: `repr(C)`, four 8-byte integers, no padding: every bit pattern is
// valid and writing one leaks no uninitialised bytes.
unsafe impl Slot for Completion {}

const _: () = assert!(core::mem::size_of::<Completion>() == 32);

impl Completion {
    /// A successful completion carrying `value`.
    #[inline]
    pub const fn ok(cookie: u64, value: u64) -> Self {
        Self {
            cookie,
            status: 0,
            value,
            aux: 0,
        }
    }

    /// A failed completion.
    #[inline]
    pub const fn err(cookie: u64, error: abi::Error) -> Self {
        Self {
            cookie,
            status: error.to_return(),
            value: 0,
            aux: 0,
        }
    }

    /// The completion for a result.
    #[inline]
    pub const fn from_result(cookie: u64, result: Result<u64, abi::Error>) -> Self {
        match result {
            Ok(v) => Self::ok(cookie, v),
            Err(e) => Self::err(cookie, e),
        }
    }

    /// Replace the second result word.
    #[inline]
    pub const fn with_aux(mut self, aux: u64) -> Self {
        self.aux = aux;
        self
    }

    #[inline]
    pub const fn cookie(&self) -> u64 {
        self.cookie
    }

    /// The raw status word as the peer wrote it.
    #[inline]
    pub const fn status(&self) -> i64 {
        self.status
    }

    #[inline]
    pub const fn value(&self) -> u64 {
        self.value
    }

    #[inline]
    pub const fn aux(&self) -> u64 {
        self.aux
    }

    /// Decode: `Ok(value)` on status 0, otherwise the error the status names.
    /// A positive or unknown status decodes as `InvalidArgument` (a peer's
    /// garbage never panics).
    pub fn result(&self) -> Result<u64, abi::Error> {
        match self.status {
            0 => Ok(self.value),
            s if s > 0 => Err(abi::Error::InvalidArgument),
            s => abi::Error::decode(s).map(|_| self.value),
        }
    }
}
