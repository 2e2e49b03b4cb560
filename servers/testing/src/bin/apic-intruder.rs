//! apic-intruder: a client of the apic server that reaches for lines and
//! vectors its manifest entry does not grant it (issue 11, "Why" case 4:
//! any apic client could mask line 0 and stop every timer sleep, or line 4
//! and stop console input). Booted by `tests/manifests/apicgrants.toml`,
//! which grants it line 5 only, beside the timer (line 0) and the console
//! (line 4).
//!
//! 1. Waits until the timer and the console serve (a 1 ms sleep, a console
//!    flush): both have routed their lines by then.
//! 2. Uses its own grant: binds line 5, routes it masked, unmasks and masks
//!    it, and sends vector 0x25 to itself; prints `apic-intruder: granted
//!    IPI on vector 0x25 delivered` when the kernel hands it line 5, or the
//!    answer when the apic has no local APIC to send with (x2APIC mode).
//! 3. Tries what it is not granted, printing `apic-intruder: WHAT: denied`
//!    for each: mask, unmask and route the timer's and the console's lines,
//!    mask the apic's own line 23, IPIs on vectors 0x20, 0x24 and 0xF0 (the
//!    kernel's timer), and its own vector 0x25 to every CPU, to the others
//!    and to APIC id 0. Then reads the apic's `STAT_DENIED` and prints
//!    `apic-intruder: the apic counted N refusals`.
//! 4. Checks the others were not harmed: sleeps 20 ms through the timer
//!    (`apic-intruder: the timer still wakes me after 20 ms`), then prints
//!    `apic-intruder: type a line` and reads one from the console (which
//!    arrives only through IRQ 4): `apic-intruder: the console still reads
//!    input: LINE`.
//!
//! Hangs up and exits 0; any other answer is `apic-intruder: FAIL ...` and
//! exit 1 (at the end, so that every attempt is reported).
#![cfg_attr(target_os = "none", no_std, no_main)]

use proto::{apic, console, timer};
use userland::abi::Error;
use userland::{Channel, Client, Descriptor, println, sys};

userland::entry!(async run);

/// The line tests/manifests/apicgrants.toml grants this server.
const GRANTED: u64 = 5;
/// The timer's, the console's and the apic server's own lines.
const TIMER_LINE: u64 = 0;
const CONSOLE_LINE: u64 = 4;
const APIC_LINE: u64 = 23;
/// The kernel's local-APIC timer vector.
const KERNEL_TIMER_VECTOR: u64 = userland::abi::KERNEL_TIMER_VECTOR as u64;

const MS: u64 = 1_000_000;

/// The answer to `request`; a broken channel ends the server.
async fn ask(client: &mut Client, request: Descriptor) -> Result<(u64, u64), Error> {
    match client.call(request).await {
        Ok(c) => c.result().map(|v| (v, c.aux())),
        Err(e) => {
            println!("apic-intruder: FAIL the channel broke: {e}");
            sys::exit(1)
        }
    }
}

fn line_request(op: u32, line: u64) -> Descriptor {
    Descriptor::new(op, 0).with_args([line])
}

fn ipi_request(vector: u64, dest: u64, shorthand: u64) -> Descriptor {
    Descriptor::new(apic::OP_IPI, 0).with_args([vector, dest, shorthand])
}

fn open(service: &str) -> Client {
    match Channel::open(service) {
        Ok(c) => c,
        Err(e) => {
            println!("apic-intruder: FAIL cannot open the {service} service: {e}");
            sys::exit(1)
        }
    }
}

async fn run() -> i32 {
    let mut apic_client = open(apic::SERVICE);
    let mut timer_client = open(timer::SERVICE);
    let mut console_client = open(console::SERVICE);
    let mut failures = 0u32;
    let mut fail = |what: &str, got: &dyn core::fmt::Debug| {
        println!("apic-intruder: FAIL {what}: answered {got:?}");
        failures += 1;
    };

    // 1. The timer and the console route their lines before they serve.
    let sleep = Descriptor::new(timer::OP_SLEEP_FOR, 0).with_args([MS]);
    if let Err(e) = ask(&mut timer_client, sleep).await {
        fail("the first sleep", &e);
    }
    let flush = Descriptor::new(console::OP_FLUSH, 0);
    if let Err(e) = ask(&mut console_client, flush).await {
        fail("the first console flush", &e);
    }
    println!("apic-intruder: the timer and the console serve; reaching for their lines");

    // 2. What it is granted works.
    let bit = match sys::irq_bind(GRANTED as u32) {
        Ok(bit) => Some(bit),
        Err(e) => {
            fail("irq_bind of its granted line", &e);
            None
        }
    };
    let route = Descriptor::new(apic::OP_ROUTE, 0).with_args([GRANTED, apic::ROUTE_MASKED]);
    match ask(&mut apic_client, route).await {
        Ok((gsi, _)) => println!("apic-intruder: route line {GRANTED} (granted): GSI {gsi}"),
        Err(e) => fail("route of its granted line", &e),
    }
    for (op, what) in [(apic::OP_UNMASK, "unmask"), (apic::OP_MASK, "mask")] {
        match ask(&mut apic_client, line_request(op, GRANTED)).await {
            Ok(_) => println!("apic-intruder: {what} line {GRANTED} (granted): ok"),
            Err(e) => fail(what, &e),
        }
    }
    let own_vector = apic::IRQ_BASE_VECTOR + GRANTED;
    match ask(
        &mut apic_client,
        ipi_request(own_vector, 0, apic::DEST_SELF),
    )
    .await
    {
        Ok(_) => {
            // The executor waits only on the bits of its channels: this
            // line's bit stays pending in the kernel until asked for here.
            let mask = bit.map_or(0, |b| 1u64 << b);
            match sys::wait(mask, 1_000 * MS) {
                Ok(got) if got & mask != 0 => {
                    let _ = sys::irq_ack(GRANTED as u32);
                    println!("apic-intruder: granted IPI on vector {own_vector:#x} delivered");
                }
                other => fail("the granted IPI's delivery", &other),
            }
        }
        // No xAPIC page to send with (x2APIC mode): the apic says so.
        Err(e) => println!("apic-intruder: granted IPI on vector {own_vector:#x} answered {e:?}"),
    }

    // 3. What it is not granted is refused.
    let attempts = [
        ("mask line 0", line_request(apic::OP_MASK, TIMER_LINE)),
        ("unmask line 0", line_request(apic::OP_UNMASK, TIMER_LINE)),
        (
            "route line 0",
            Descriptor::new(apic::OP_ROUTE, 0).with_args([TIMER_LINE, apic::ROUTE_MASKED]),
        ),
        ("mask line 4", line_request(apic::OP_MASK, CONSOLE_LINE)),
        ("route line 4", line_request(apic::OP_ROUTE, CONSOLE_LINE)),
        ("mask line 23", line_request(apic::OP_MASK, APIC_LINE)),
        (
            "IPI vector 0x20 to self",
            ipi_request(apic::IRQ_BASE_VECTOR + TIMER_LINE, 0, apic::DEST_SELF),
        ),
        (
            "IPI vector 0x24 to self",
            ipi_request(apic::IRQ_BASE_VECTOR + CONSOLE_LINE, 0, apic::DEST_SELF),
        ),
        (
            "IPI vector 0xf0 to self",
            ipi_request(KERNEL_TIMER_VECTOR, 0, apic::DEST_SELF),
        ),
        (
            "IPI vector 0x25 to all",
            ipi_request(own_vector, 0, apic::DEST_ALL),
        ),
        (
            "IPI vector 0x25 to others",
            ipi_request(own_vector, 0, apic::DEST_OTHERS),
        ),
        (
            "IPI vector 0x25 to APIC id 0",
            ipi_request(own_vector, 0, apic::DEST_ID),
        ),
    ];
    for (what, request) in attempts {
        match ask(&mut apic_client, request).await {
            Err(Error::Denied) => println!("apic-intruder: {what}: denied"),
            other => fail(what, &other),
        }
    }
    let stat = Descriptor::new(apic::OP_STATS, 0).with_args([apic::STAT_DENIED]);
    match ask(&mut apic_client, stat).await {
        Ok((n, _)) => println!("apic-intruder: the apic counted {n} refusals"),
        Err(e) => fail("STAT_DENIED", &e),
    }

    // 4. The timer still interrupts, and so does the console.
    let now = Descriptor::new(timer::OP_NOW, 0);
    let before = ask(&mut timer_client, now).await.map_or(0, |(t, _)| t);
    let sleep = Descriptor::new(timer::OP_SLEEP_FOR, 0).with_args([20 * MS]);
    match ask(&mut timer_client, sleep).await {
        Ok((woke, _)) if woke >= before + 20 * MS => {
            println!("apic-intruder: the timer still wakes me after 20 ms")
        }
        other => fail("the sleep after the attempts", &other),
    }
    println!("apic-intruder: type a line");
    let mut line = [0u8; 64];
    let mut len = 0;
    loop {
        let read = Descriptor::new(console::OP_READ, 0);
        match ask(&mut console_client, read).await {
            Ok((value, aux)) => {
                let (bytes, n, end) = console::unpack_read(value, aux);
                let take = n.min(line.len() - len);
                line[len..len + take].copy_from_slice(&bytes[..take]);
                len += take;
                if end {
                    break;
                }
            }
            Err(e) => {
                fail("the console read", &e);
                break;
            }
        }
    }
    println!(
        "apic-intruder: the console still reads input: {}",
        core::str::from_utf8(&line[..len]).unwrap_or("(not UTF-8)")
    );

    for client in [apic_client, timer_client, console_client] {
        let _ = client.close().await;
    }
    if failures != 0 {
        println!("apic-intruder: FAIL {failures} answer(s) not as expected");
        return 1;
    }
    println!("apic-intruder: done");
    0
}
