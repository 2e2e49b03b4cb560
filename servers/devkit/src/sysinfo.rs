//! `server_info` and `channel_stats`, which the runtime's `sys` module does
//! not wrap yet: the system table for `ps`, `stats` and the test clients.
//!
//! Context: anywhere in a server. The `unsafe` is the raw system call.

use userland::abi::{ChannelStats, Error, ServerInfo, Syscall};
use userland::sys;

fn call_out<T: Default>(nr: Syscall, index: u32) -> Result<T, Error> {
    let mut out = T::default();
    // SAFETY: both calls write exactly one `T` (a `repr(C)` struct of
    // plain integers from `pvchannel::abi`) to the pointer, which is this
    // local's address, sized and aligned for it; nothing else changes.
    let r = unsafe {
        sys::syscall6(
            nr as u64,
            u64::from(index),
            (&raw mut out) as u64,
            0,
            0,
            0,
            0,
        )
    };
    Error::decode(r).map(|_| out)
}

/// Describe server `index`; `BadHandle` past the last one.
pub fn server_info(index: u32) -> Result<ServerInfo, Error> {
    call_out(Syscall::ServerInfo, index)
}

/// Traffic on channel `index` (system-wide); `BadHandle` past the last.
pub fn channel_stats(index: u32) -> Result<ChannelStats, Error> {
    call_out(Syscall::ChannelStats, index)
}

/// This server's own name.
pub fn my_name() -> alloc::string::String {
    let index = sys::boot_info_cached().map(|b| b.server_index).unwrap_or(0);
    server_info(index)
        .map(|i| alloc::string::String::from(userland::abi::name_str(&i.name)))
        .unwrap_or_default()
}

/// A numeric argument `key` of this server (`NAME.key=value` on the
/// kernel command line), or `default`.
pub fn arg_u64(key: &str, default: u64) -> u64 {
    sys::boot_info_cached()
        .and_then(|b| b.arg(key).and_then(|v| v.parse().ok()))
        .unwrap_or(default)
}
