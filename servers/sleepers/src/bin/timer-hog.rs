//! timer-hog: a client that asks the timer for 200 periodic series of
//! 100 us and never reads an answer (issue 11, case 5: such a client used to
//! exhaust the timer's heap, and every other client's sleep hung). The
//! timer must refuse what is past its per-client quota and, once this
//! client leaves too many answers unread, drop it; the other clients'
//! sleeps go on. Prints `timer-hog: 200 series asked`, sleeps 2 s in the
//! kernel (reading nothing), then exits 0.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use ::proto::timer as proto;
use devkit::Timer;
use userland::{Descriptor, Failure, OrFail, println, sys};

userland::entry!(async run);

const SERIES: u64 = 200;

async fn run() -> Result<(), Failure> {
    let mut timer = Timer::open().or_fail("cannot open timer")?;
    for cookie in 1..=SERIES {
        // Period 100 us, no end.
        let d = Descriptor::new(proto::OP_PERIODIC, cookie).with_args([100_000, 0]);
        if let Err(e) = timer.client().send(d).await {
            println!("timer-hog: send {cookie}: {e}");
            break;
        }
    }
    timer.client().flush();
    println!("timer-hog: {SERIES} series asked");
    // Never read the ticks: a wait on a bit nothing raises, long enough for
    // the timer to find the backlog even where PVM interprets the kernel
    // (once the hog ends, the timer just forgets it).
    let _ = sys::wait(1 << 62, 2_000_000_000);
    Ok(())
}
