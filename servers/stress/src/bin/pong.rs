//! pong: provides `pong`; answers every ping with its `args[0]`, under
//! the batching policy chosen at boot, until its client hangs up.
#![cfg_attr(target_os = "none", no_std, no_main)]

use stress::PONG_SERVICE;
use userland::{Completion, println, server};

userland::entry!(async run);

async fn run() -> i32 {
    match server::serve(PONG_SERVICE, |d| Completion::ok(d.cookie(), d.arg(0))).await {
        Ok(report) => {
            println!("pong: answered {} pings", report.requests);
            report.exit_code()
        }
        Err(e) => {
            println!("pong: FAIL cannot attach {PONG_SERVICE}: {e}");
            1
        }
    }
}
