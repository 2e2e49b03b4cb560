//! userland: the runtime every server is built on.
//!
//! * [`entry!`]: the server's `main` (plain or async); `_start`, the heap
//!   (1 MiB in `.bss`, so `alloc` works) and the panic handler (logs the
//!   message, exits with 101) come with the crate.
//! * [`sys`]: one safe wrapper per system call, and the raw `syscall6`.
//! * [`println!`]: formatted lines on the kernel console, no allocation.
//! * [`executor`]: a single-threaded executor that sleeps in `sys::wait`
//!   ([`block_on`], [`spawn`]); [`notify`] turns notification bits into
//!   wakers.
//! * [`channel`]: the rings the manifest granted, as an async [`Client`]
//!   (`call`, `send`, `recv`, `close`) or [`Provider`] (`recv`, `reply`,
//!   `serve`); [`server::serve`] answers every client of a service.
//! * [`fail`]: a test server's `FAIL` line and exit code, from `?`.
//!
//! Context: user space, ring 3, one thread per server. The bare-metal
//! parts (`_start`, heap, panic handler, the `syscall` instruction) are
//! built only for `target_os = "none"`; on the host the crate builds with
//! stubbed system calls so that its logic runs under `cargo test`.
//!
//! # Building a server
//! A server is a `no_std`, `no_main` binary crate that depends on
//! `userland` and has this `build.rs` (the linker script places the image
//! at `abi::layout::IMAGE_BASE` with W^X segments):
//!
//! ```ignore
//! fn main() {
//!     let script = std::env::var("DEP_USERLAND_LINKER_SCRIPT").unwrap();
//!     println!("cargo:rerun-if-changed={script}");
//!     if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
//!         println!("cargo:rustc-link-arg-bins=-T{script}");
//!         println!("cargo:rustc-link-arg-bins=--no-pie");
//!     }
//! }
//! ```
//!
//! and a `main.rs` like `servers/echo/src/main.rs`:
//!
//! ```ignore
//! #![cfg_attr(target_os = "none", no_std, no_main)]
//! userland::entry!(async run);
//! async fn run() -> i32 { 0 }
//! ```
#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod channel;
pub mod executor;
pub mod fail;
pub mod notify;
pub mod print;
/// The workspace's pseudo-random generator, for servers: the `xorshift`
/// crate, which the kernel's and the rings' tests share.
pub use xorshift as rand;
#[cfg(target_os = "none")]
mod rt;
pub mod server;
pub mod sys;

use core::sync::atomic::{AtomicU32, Ordering};

pub use abi;
pub use channel::{Channel, ChannelError, Client, OP_HANGUP, PeerChange, Provider};
pub use executor::{block_on, spawn};
pub use fail::{Failure, OrFail};
pub use pvchannel::{self, Batching, Completion, Descriptor};

static SERVER_INDEX: AtomicU32 = AtomicU32::new(0);

/// Whether this is the server's first run rather than a restart
/// (supervision): a restarted server's start-up banner would repeat what
/// the kernel's restart report already says, on a serial line where each
/// byte costs time, so servers print theirs on the first run only.
pub fn first_run() -> bool {
    sys::restarts() == 0
}

/// This server's index in the manifest (what the kernel passed in `rdi`).
pub fn server_index() -> u32 {
    SERVER_INDEX.load(Ordering::Relaxed)
}

/// Declare the server's main function.
///
/// * `userland::entry!(run);` for `fn run() -> i32`;
/// * `userland::entry!(async run);` for `async fn run() -> i32`, run by
///   [`block_on`].
///
/// The returned value is the exit code; a function may also return
/// `Result<(), Failure>` ([`fail`]): `Ok` exits 0, a failure is printed
/// as `BIN: FAIL reason` and exits 1. Do not name the function `main`
/// (on the host the macro defines a `main` that explains that servers run
/// in QEMU).
#[macro_export]
macro_rules! entry {
    (async $main:path) => {
        $crate::entry!(@define || -> i32 {
            $crate::fail::Outcome::exit_code($crate::block_on($main()), env!("CARGO_BIN_NAME"))
        });
    };
    ($main:path) => {
        $crate::entry!(@define || -> i32 {
            $crate::fail::Outcome::exit_code($main(), env!("CARGO_BIN_NAME"))
        });
    };
    (@define $body:expr) => {
        #[cfg(target_os = "none")]
        #[unsafe(no_mangle)]
        extern "Rust" fn __userland_main() -> i32 {
            let body: fn() -> i32 = $body;
            body()
        }

        #[cfg(not(target_os = "none"))]
        fn main() {
            let _body: fn() -> i32 = $body;
            ::std::eprintln!(
                "{} is a server: it runs under the microkernel (cargo xtask run)",
                env!("CARGO_BIN_NAME")
            );
            ::std::process::exit(2);
        }
    };
}
