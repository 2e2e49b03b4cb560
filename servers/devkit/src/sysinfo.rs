//! The system table for `ps`, `stats` and the test clients: every server
//! and every channel, through `server_info` and `channel_stats`.
//!
//! Context: anywhere in a server.

use userland::sys;
pub use userland::sys::{channel_stats, server_info};

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
