//! hello: a client of `echo`. Sends a few requests, checks that each
//! answer echoes its argument, prints them, hangs up and exits 0.
//!
//! Prints `hello: echo(V) = V` per request and `hello: all N answers
//! correct`; on any mismatch or error `hello: FAIL ...` and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use userland::{Channel, Descriptor, Failure, OrFail, println};

userland::entry!(async run);

/// The opcode hello uses; echo answers any opcode.
use proto::echo::OP_ECHO;

const VALUES: [u64; 4] = [1, 42, 0xdead_beef, u64::MAX];

async fn run() -> Result<(), Failure> {
    let mut echo = Channel::open("echo").or_fail("cannot open the echo service")?;
    for value in VALUES {
        let answer = echo
            .call(Descriptor::new(OP_ECHO, 0).with_args([value]))
            .await
            .or_fail(format_args!("echo({value})"))?;
        match answer.result() {
            Ok(v) if v == value => println!("hello: echo({value}) = {v}"),
            other => {
                return Err(Failure::new(format_args!(
                    "echo({value}) answered {other:?}"
                )));
            }
        }
    }
    echo.close().await.or_fail("hanging up")?;
    println!("hello: all {} answers correct", VALUES.len());
    Ok(())
}
