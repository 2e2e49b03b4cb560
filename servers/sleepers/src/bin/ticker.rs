//! ticker: a worker of the timer benchmark. Tells `ticker-coord` it is
//! ready, sleeps `sleeps` times (`NAME.sleeps=`, default 1000) for
//! `sleep_us` microseconds (default 500) one after the other through its
//! own timer channel, checks that no sleep ended early, tells the
//! coordinator it is done (with its latest wake-up), and hangs up. Ten run
//! at once in `test=timer-bench`.
#![cfg_attr(target_os = "none", no_std, no_main)]

use ::proto::{ticks, timer as proto};
use devkit::Timer;
use devkit::clock::now_ns;
use devkit::sysinfo::arg_u64;
use userland::{Channel, ChannelError, Client, Descriptor, println};

userland::entry!(async run);

async fn work(coord: &mut Client, timer: &mut Timer) -> Result<(), ChannelError> {
    let sleeps = arg_u64("sleeps", 1000);
    let ns = arg_u64("sleep_us", 500) * 1000;
    coord.call(Descriptor::new(ticks::OP_READY, 0)).await?;
    let mut late = 0;
    for _ in 0..sleeps {
        let start = now_ns();
        let d = Descriptor::new(proto::OP_SLEEP_FOR, 0).with_args([ns]);
        let woke = timer.client().call(d).await?.value();
        if woke < start + ns {
            println!(
                "ticker: FAIL a sleep of {ns} ns ended after {} ns",
                woke - start
            );
            return Err(ChannelError::Sys(userland::abi::Error::InvalidArgument));
        }
        late = late.max(woke - start - ns);
    }
    coord
        .call(Descriptor::new(ticks::OP_DONE, 0).with_args([late]))
        .await?;
    Ok(())
}

async fn run() -> i32 {
    let (mut coord, mut timer) = match (Channel::open(ticks::SERVICE), Timer::open()) {
        (Ok(c), Ok(t)) => (c, t),
        _ => {
            println!("ticker: FAIL cannot open the ticks and timer services");
            return 1;
        }
    };
    let result = work(&mut coord, &mut timer).await;
    let _ = timer.close().await;
    let _ = coord.close().await;
    match result {
        Ok(()) => 0,
        Err(e) => {
            println!("ticker: FAIL {e}");
            1
        }
    }
}
