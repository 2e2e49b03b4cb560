//! The kernel's host-testable logic: pure functions with no hardware access,
//! shared by the kernel binary (`main.rs`) and `cargo test -p microkernel`.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod channel;
pub mod cmdline;
pub mod elf;
pub mod framemap;
pub mod initrd;
pub mod intensity;
pub mod irq;
pub mod logline;
pub mod physmem;
pub mod portinsn;
pub mod ratelimit;
pub mod scheduler;
pub mod syscall_args;
pub mod ticketlock;
pub mod time;
