//! The kernel log's protocol: how the kernel writes its lines to the
//! console service as one more client. The kernel owns it (it is part of
//! the contract between the kernel and whichever server provides
//! `console`), so that the servers' own protocols (the `proto` crate, which
//! re-exports these for the console's writes) can change without
//! rebuilding the kernel.
//!
//! Context: any. No allocation, no panics on peer input.

/// The service name in the manifest.
pub const SERVICE: &str = "console";

/// Write bytes. `args[0]` = count (`0..=WRITE_MAX`, larger counts are
/// clamped), `args[1..=5]` = the bytes, packed little-endian
/// ([`pack`]). Output is buffered per client until a `\n` and then
/// written as one whole line, so lines of different clients never mix.
/// Usually sent with `FLAG_NO_COMPLETION`; the completion's value is the
/// count taken.
pub const OP_WRITE: u32 = 1;

/// The most bytes one [`OP_WRITE`] carries.
pub const WRITE_MAX: usize = 40;

/// The argument words of an [`OP_WRITE`] of `bytes` (at most
/// [`WRITE_MAX`] of them are taken); returns them and how many were.
pub fn pack(bytes: &[u8]) -> ([u64; 6], usize) {
    let n = bytes.len().min(WRITE_MAX);
    let mut args = [0u64; 6];
    args[0] = n as u64;
    for (i, &b) in bytes[..n].iter().enumerate() {
        args[1 + i / 8] |= u64::from(b) << (8 * (i % 8));
    }
    (args, n)
}

/// The bytes of an [`OP_WRITE`]: a buffer and how many of it are valid.
pub fn unpack(args: &[u64; 6]) -> ([u8; WRITE_MAX], usize) {
    let n = (args[0] as usize).min(WRITE_MAX);
    let mut out = [0u8; WRITE_MAX];
    for (i, b) in out.iter_mut().enumerate().take(n) {
        *b = (args[1 + i / 8] >> (8 * (i % 8))) as u8;
    }
    (out, n)
}
