//! ring-scribbler: a hostile client. Before its provider attaches, it
//! writes 0x7fff0000 over the request producer index of its first channel
//! (the shared ring both ends map), prints `ring-scribbler: producer index
//! overwritten`, then sleeps a little and exits 0. The provider must drop
//! this client alone and serve the others (tests/manifests/hostile.toml).
#![cfg_attr(target_os = "none", no_std, no_main)]

use userland::pvchannel::layout::PRODUCER_INDEX_OFFSET;
use userland::{println, sys};

userland::entry!(run);

fn run() -> i32 {
    let info = match sys::channel_info(0) {
        Ok(info) => info,
        Err(e) => {
            println!("ring-scribbler: FAIL no channel: {e}");
            return 1;
        }
    };
    let index = (info.base + PRODUCER_INDEX_OFFSET as u64) as *mut u32;
    // SAFETY: the channel's region is mapped writable in this server (the
    // kernel mapped it for both ends); writing garbage into it is the
    // point, and it harms no memory of this program.
    unsafe { index.write_volatile(0x7fff_0000) };
    println!("ring-scribbler: producer index overwritten");
    // Some time for the provider to attach and serve the others.
    let _ = sys::wait(1 << 62, 200_000_000);
    0
}
