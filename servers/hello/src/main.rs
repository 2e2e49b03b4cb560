//! hello: a client of `echo`. Sends a few requests, checks that each
//! answer echoes its argument, prints them, hangs up and exits 0.
//!
//! Prints `hello: echo(V) = V` per request and `hello: all N answers
//! correct`; on any mismatch or error `hello: FAIL ...` and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use userland::{Channel, Descriptor, println};

userland::entry!(async run);

/// The opcode hello uses; echo answers any opcode.
use proto::echo::OP_ECHO;

const VALUES: [u64; 4] = [1, 42, 0xdead_beef, u64::MAX];

async fn run() -> i32 {
    let mut echo = match Channel::open("echo") {
        Ok(c) => c,
        Err(e) => {
            println!("hello: FAIL cannot open the echo service: {e}");
            return 1;
        }
    };
    for value in VALUES {
        let answer = match echo
            .call(Descriptor::new(OP_ECHO, 0).with_args([value]))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                println!("hello: FAIL echo({value}): {e}");
                return 1;
            }
        };
        match answer.result() {
            Ok(v) if v == value => println!("hello: echo({value}) = {v}"),
            other => {
                println!("hello: FAIL echo({value}) answered {other:?}");
                return 1;
            }
        }
    }
    if let Err(e) = echo.close().await {
        println!("hello: FAIL hanging up: {e}");
        return 1;
    }
    println!("hello: all {} answers correct", VALUES.len());
    0
}
