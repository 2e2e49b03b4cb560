//! crashy-echo: the `echo` service, except that a request to echo 13
//! makes it fault (a write to address 0) before it answers: the test
//! provider of supervision (`tests/manifests/restart.toml`), whose clients
//! must get an error for that request and an answer from the restarted
//! instance for the next.
#![cfg_attr(target_os = "none", no_std, no_main)]

use userland::{Completion, Descriptor, println, server, sys};

userland::entry!(async run);

/// The value that crashes the server.
const CRASH: u64 = 13;

fn answer(request: Descriptor) -> Completion {
    if request.arg(0) == CRASH {
        // SAFETY: the store faults on purpose (page 0 is never mapped in a
        // server) and the kernel stops the server there; it is written in
        // assembly because a Rust write through a null pointer would be
        // undefined behaviour rather than a fault.
        unsafe {
            core::arch::asm!("mov qword ptr [0], {v}", v = in(reg) CRASH, options(nostack));
        }
    }
    Completion::ok(request.cookie(), request.arg(0)).with_aux(u64::from(request.opcode()))
}

async fn run() -> i32 {
    println!("crashy-echo: serving (run {})", sys::restarts());
    match server::serve("echo", answer).await {
        Ok(report) => report.exit_code(),
        Err(e) => {
            println!("crashy-echo: FAIL cannot attach the echo channels: {e}");
            1
        }
    }
}
