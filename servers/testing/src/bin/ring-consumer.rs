//! ring-consumer: provides `ring-test` and checks that the 1,000,000
//! messages of `ring-producer` arrive complete and in order.
//!
//! Prints `ring-consumer: received 1000000 messages in order`, then the
//! kernel's counters (`ring-consumer: counters: ...`) and the doorbells it
//! rang, and exits 0. Any loss, duplicate or reordering prints
//! `ring-consumer: FAIL ...` and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use testing::ring::{MESSAGES, OP_END, OP_SEQ, SERVICE};
use userland::{Channel, Completion, OP_HANGUP, println, sys};

userland::entry!(async run);

async fn run() -> i32 {
    let mut providers = match Channel::clients_of(SERVICE) {
        Ok(p) => p,
        Err(e) => {
            println!("ring-consumer: FAIL cannot attach {SERVICE}: {e}");
            return 1;
        }
    };
    let Some(mut ring) = providers.pop().filter(|_| providers.is_empty()) else {
        println!("ring-consumer: FAIL expected exactly one client of {SERVICE}");
        return 1;
    };
    println!(
        "ring-consumer: waiting for {MESSAGES} messages from {} (batching {:?})",
        ring.peer(),
        sys::batching()
    );
    let mut expected: u64 = 0;
    loop {
        let d = match ring.recv().await {
            Ok(d) => d,
            Err(e) => {
                println!("ring-consumer: FAIL after {expected} messages: {e}");
                return 1;
            }
        };
        match d.opcode() {
            OP_SEQ if d.arg(0) == expected => expected += 1,
            OP_SEQ => {
                let what = if d.arg(0) > expected {
                    "lost"
                } else {
                    "duplicate or reordered"
                };
                println!(
                    "ring-consumer: FAIL {what}: expected message {expected}, got {}",
                    d.arg(0)
                );
                return 1;
            }
            OP_END => {
                if let Err(e) = ring.reply(Completion::ok(d.cookie(), expected)).await {
                    println!("ring-consumer: FAIL answering the end: {e}");
                    return 1;
                }
                ring.flush();
                break;
            }
            OP_HANGUP => {
                println!("ring-consumer: FAIL producer hung up after {expected} messages");
                return 1;
            }
            other => {
                println!("ring-consumer: FAIL unknown opcode {other} after {expected} messages");
                return 1;
            }
        }
    }
    if expected != MESSAGES {
        println!("ring-consumer: FAIL received {expected} of {MESSAGES} messages");
        return 1;
    }
    println!("ring-consumer: received {expected} messages in order");
    match sys::counters() {
        Ok(c) => println!(
            "ring-consumer: counters: doorbells={} wakeups={} context_switches={} syscalls={} interrupts={}",
            c.doorbells,
            c.wakeups,
            c.context_switches,
            c.syscalls.iter().sum::<u64>() + c.bad_syscalls,
            c.device_interrupts + c.timer_interrupts,
        ),
        Err(e) => println!("ring-consumer: counters unavailable: {e}"),
    }
    println!("ring-consumer: rang {} doorbells", ring.doorbells());
    0
}
