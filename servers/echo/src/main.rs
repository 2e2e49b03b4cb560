//! echo: provides the service `echo`. Every request is answered with a
//! completion whose value is the request's first argument (and whose `aux`
//! is its opcode). The model server: copy this crate to start a new one.
//!
//! Prints `echo: serving N client(s)` at start and, once every client has
//! hung up, `echo: answered N requests from M client(s)` and exits 0 (1 if a
//! client's ring failed).
#![cfg_attr(target_os = "none", no_std, no_main)]

use userland::{Completion, Descriptor, println, server};

userland::entry!(async run);

/// The whole protocol: echo `args[0]`.
fn answer(request: Descriptor) -> Completion {
    Completion::ok(request.cookie(), request.arg(0)).with_aux(u64::from(request.opcode()))
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "client" } else { "clients" }
}

async fn run() -> i32 {
    let clients = userland::Channel::all()
        .filter(|c| c.is_provider() && c.service() == "echo")
        .count();
    if userland::first_run() {
        println!("echo: serving {clients} {}", plural(clients));
    }
    match server::serve("echo", answer).await {
        Ok(report) => {
            println!(
                "echo: answered {} requests from {} {}",
                report.requests,
                report.clients,
                plural(report.clients)
            );
            report.exit_code()
        }
        Err(e) => {
            println!("echo: FAIL cannot attach the echo channels: {e}");
            1
        }
    }
}
