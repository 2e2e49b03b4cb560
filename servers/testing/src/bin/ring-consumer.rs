//! ring-consumer: provides `ring-test` and checks that the 1,000,000
//! messages of `ring-producer` arrive complete and in order.
//!
//! Prints `ring-consumer: received 1000000 messages in order`, then the
//! kernel's counters (`ring-consumer: counters: ...`) and the doorbells it
//! rang, and exits 0. Any loss, duplicate or reordering prints
//! `ring-consumer: FAIL ...` and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use testing::ring::{MESSAGES, OP_END, OP_SEQ, SERVICE};
use userland::{Channel, Completion, Failure, OP_HANGUP, OrFail, println, sys};

userland::entry!(async run);

async fn run() -> Result<(), Failure> {
    let mut providers =
        Channel::clients_of(SERVICE).or_fail(format_args!("cannot attach {SERVICE}"))?;
    let mut ring = providers
        .pop()
        .filter(|_| providers.is_empty())
        .or_fail(format_args!("expected exactly one client of {SERVICE}"))?;
    println!(
        "ring-consumer: waiting for {MESSAGES} messages from {} (batching {:?})",
        ring.peer(),
        sys::batching()
    );
    let mut expected: u64 = 0;
    loop {
        let d = ring
            .recv()
            .await
            .or_fail(format_args!("after {expected} messages"))?;
        match d.opcode() {
            OP_SEQ if d.arg(0) == expected => expected += 1,
            OP_SEQ => {
                let what = if d.arg(0) > expected {
                    "lost"
                } else {
                    "duplicate or reordered"
                };
                return Err(Failure::new(format_args!(
                    "{what}: expected message {expected}, got {}",
                    d.arg(0)
                )));
            }
            OP_END => {
                ring.reply(Completion::ok(d.cookie(), expected))
                    .await
                    .or_fail("answering the end")?;
                ring.flush();
                break;
            }
            OP_HANGUP => {
                return Err(Failure::new(format_args!(
                    "producer hung up after {expected} messages"
                )));
            }
            other => {
                return Err(Failure::new(format_args!(
                    "unknown opcode {other} after {expected} messages"
                )));
            }
        }
    }
    if expected != MESSAGES {
        return Err(Failure::new(format_args!(
            "received {expected} of {MESSAGES} messages"
        )));
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
    Ok(())
}
