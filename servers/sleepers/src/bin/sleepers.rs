//! sleepers: a client of `timer` that checks its order and punctuality.
//!
//! Several instances run at once (different server names, same bin). Each
//! sends `count` sleeps (`NAME.count=`, default 250) at once, with
//! deadlines scattered over `spread_ms` (default 200) starting `lead_ms`
//! (default 2000: with batching off under KVM sending takes a while) from now, in random order; cancels every 50th; then
//! receives every answer and checks:
//!
//! * the answers come in deadline order (ties in any order);
//! * none is early: neither the time the timer reports nor the client's own
//!   TSC when the answer arrives is before the deadline;
//! * the cancelled ones come back cancelled.
//!
//! Then a periodic series (5 ticks, 2 ms) checks tick numbers and times.
//!
//! Prints, for the harness's cross-client check, lines
//! `sleepers: NAME order DEADLINE_NS:SEQ ...` (the timer's global wake-up
//! sequence numbers), then `sleepers: NAME: N sleeps woke in deadline
//! order, never early (...)` and exits 0; on any violation
//! `sleepers: NAME: FAIL ...` and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use ::proto::timer as proto;
use devkit::Timer;
use devkit::clock::now_ns;
use devkit::sysinfo::{arg_u64, my_name};
use sleepers::XorShift;
use userland::{Descriptor, println};

userland::entry!(async run);

const CANCEL_EVERY: u64 = 50;
const CANCEL_COOKIE: u64 = 1 << 40;

async fn run() -> i32 {
    let name = my_name();
    let mut timer = match Timer::open() {
        Ok(t) => t,
        Err(e) => {
            println!("sleepers: {name}: FAIL cannot open timer: {e}");
            return 1;
        }
    };
    let result = sleep_test(&name, &mut timer).await;
    // Hang up in any case, so that the timer (and the test) can end.
    if let Err(e) = timer.close().await {
        println!("sleepers: {name}: FAIL hanging up: {e}");
        return 1;
    }
    match result {
        Ok(summary) => {
            println!("sleepers: {name}: {summary}");
            0
        }
        Err(why) => {
            println!("sleepers: {name}: FAIL {why}");
            1
        }
    }
}

async fn sleep_test(name: &str, timer: &mut Timer) -> Result<String, String> {
    let count = arg_u64("count", 250);
    let spread = arg_u64("spread_ms", 200).max(1) * 1_000_000;
    let lead = arg_u64("lead_ms", 2000) * 1_000_000;
    let now = timer.now().await.map_err(|e| alloc::format!("now: {e}"))?;
    let base = now + lead;
    let seed = name.bytes().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    });
    let mut rng = XorShift::new(seed);
    // cookie (1..=count) -> deadline
    let mut deadlines = BTreeMap::new();
    for cookie in 1..=count {
        // Coarse steps, so that clients share deadlines (ties) too.
        let deadline = base + (rng.next_u64() % spread) / 50_000 * 50_000;
        deadlines.insert(cookie, deadline);
        let d = Descriptor::new(proto::OP_SLEEP_UNTIL, cookie).with_args([deadline]);
        timer
            .client()
            .send(d)
            .await
            .map_err(|e| alloc::format!("send: {e}"))?;
    }
    let mut cancels = 0;
    for cookie in (CANCEL_EVERY..=count).step_by(CANCEL_EVERY as usize) {
        let d = Descriptor::new(proto::OP_CANCEL, CANCEL_COOKIE + cookie).with_args([cookie]);
        timer
            .client()
            .send(d)
            .await
            .map_err(|e| alloc::format!("send cancel: {e}"))?;
        cancels += 1;
    }
    timer.client().flush();
    let sent_by = now_ns();
    if sent_by >= base {
        return Err(alloc::format!(
            "sending took too long ({} ms): the test needs a larger lead_ms",
            (sent_by - now) / 1_000_000
        ));
    }
    let mut last_deadline = 0;
    let mut order: Vec<(u64, u64)> = Vec::new();
    let mut max_late = 0;
    let mut cancelled = 0;
    let mut confirmed = 0;
    let expected = count + cancels;
    for _ in 0..expected {
        let c = timer
            .client()
            .recv()
            .await
            .map_err(|e| alloc::format!("recv: {e}"))?;
        let arrived = now_ns();
        if c.cookie() >= CANCEL_COOKIE {
            if c.value() != 1 {
                return Err(alloc::format!(
                    "cancel of sleep {} found nothing",
                    c.cookie() - CANCEL_COOKIE
                ));
            }
            confirmed += 1;
            continue;
        }
        let Some(deadline) = deadlines.remove(&c.cookie()) else {
            return Err(alloc::format!("answer for unknown cookie {}", c.cookie()));
        };
        if c.aux() == proto::AUX_CANCELLED {
            if c.cookie() % CANCEL_EVERY != 0 {
                return Err(alloc::format!("sleep {} cancelled unasked", c.cookie()));
            }
            cancelled += 1;
            continue;
        }
        if c.cookie() % CANCEL_EVERY == 0 {
            return Err(alloc::format!("sleep {} was not cancelled", c.cookie()));
        }
        if c.value() < deadline || arrived < deadline {
            return Err(alloc::format!(
                "sleep {} woke early: deadline {deadline}, timer says {}, arrived {arrived}",
                c.cookie(),
                c.value()
            ));
        }
        if deadline < last_deadline {
            return Err(alloc::format!(
                "sleep {} (deadline {deadline}) woke after one with deadline {last_deadline}",
                c.cookie()
            ));
        }
        last_deadline = deadline;
        max_late = max_late.max(arrived - deadline);
        order.push((deadline, c.aux()));
    }
    if cancelled != cancels || confirmed != cancels {
        return Err(alloc::format!(
            "{cancels} cancels: {cancelled} sleeps came back cancelled, {confirmed} confirmed"
        ));
    }
    for chunk in order.chunks(8) {
        let mut line = String::new();
        for (d, s) in chunk {
            let _ = write!(line, " {d}:{s}");
        }
        println!("sleepers: {name} order{line}");
    }
    // A periodic series: 5 ticks of 2 ms.
    let period = 2_000_000;
    let start = now_ns();
    let d = Descriptor::new(proto::OP_PERIODIC, 7).with_args([period, 5]);
    timer
        .client()
        .send(d)
        .await
        .map_err(|e| alloc::format!("send periodic: {e}"))?;
    for tick in 1..=5u64 {
        let c = timer
            .client()
            .recv()
            .await
            .map_err(|e| alloc::format!("recv tick: {e}"))?;
        let number = c.aux() & !proto::AUX_LAST_TICK;
        let last = c.aux() & proto::AUX_LAST_TICK != 0;
        if c.cookie() != 7 || number != tick || last != (tick == 5) {
            return Err(alloc::format!(
                "tick {tick}: cookie {} number {number} last {last}",
                c.cookie()
            ));
        }
        if c.value() < start + tick * period {
            return Err(alloc::format!("tick {tick} early"));
        }
    }
    Ok(alloc::format!(
        "{} sleeps woke in deadline order, never early (latest {} us after its deadline); {cancels} cancelled; 5 periodic ticks on time",
        order.len(),
        max_late / 1000
    ))
}
