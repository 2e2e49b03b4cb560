//! demo-client: a client for a server made by `cargo xtask new-server`.
//! It opens the service named by its argument `demo-client.service=NAME`
//! on the kernel command line (default `demo`), sends opcode 1 (echo) with
//! a few values, checks that each answer echoes its value, hangs up and
//! exits 0.
//!
//! Prints `demo-client: NAME echo(V) = V` per request and `demo-client:
//! all N answers from NAME correct`; on any mismatch or error
//! `demo-client: FAIL ...` and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use userland::{Channel, Descriptor, Failure, OrFail, println, sys};

userland::entry!(async run);

/// The echo opcode of the new-server template.
use proto::echo::OP_ECHO;

const VALUES: [u64; 3] = [7, 0x5eed, u64::MAX];

async fn run() -> Result<(), Failure> {
    let service = sys::boot_info_cached()
        .and_then(|b| b.arg("service"))
        .unwrap_or("demo");
    let mut client =
        Channel::open(service).or_fail(format_args!("cannot open the {service} service"))?;
    for value in VALUES {
        let request = Descriptor::new(OP_ECHO, 0).with_args([value]);
        match client.call(request).await.map(|c| c.result()) {
            Ok(Ok(v)) if v == value => println!("demo-client: {service} echo({value:#x}) = {v:#x}"),
            other => {
                return Err(Failure::new(format_args!(
                    "{service} echo({value:#x}) answered {other:?}"
                )));
            }
        }
    }
    client.close().await.or_fail("hanging up")?;
    println!(
        "demo-client: all {} answers from {service} correct",
        VALUES.len()
    );
    Ok(())
}
