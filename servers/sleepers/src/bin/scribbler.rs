//! scribbler: a client of `console` that writes lines in ragged pieces.
//!
//! Several instances write at once. Each writes `lines` lines (`NAME.lines=`,
//! default 200) of the form
//! `LINE NAME SEQ <payload> END`, where the payload is derived from the name
//! and the sequence number (so a reader can check every line whole), split
//! into writes of random length (1 to 40 bytes) so that one line spans
//! several requests and the requests of different writers are mixed in the
//! console's rings. Then it flushes, hangs up and exits 0.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::format;
use alloc::vec::Vec;

use devkit::Console;
use devkit::sysinfo::{arg_u64, my_name};
use sleepers::XorShift;
use userland::println;

userland::entry!(async run);

/// The payload of line `seq` of writer `name` (the harness recomputes it).
fn payload(name: &str, seq: u64) -> alloc::string::String {
    let letter = (b'a' + (seq % 26) as u8) as char;
    let width = 20 + (seq * 7 + name.len() as u64) % 60;
    core::iter::repeat_n(letter, width as usize).collect()
}

async fn run() -> i32 {
    let name = my_name();
    let lines = arg_u64("lines", 200);
    let mut console = match Console::open() {
        Ok(c) => c,
        Err(e) => {
            println!("scribbler: FAIL cannot open the console: {e}");
            return 1;
        }
    };
    let mut text = Vec::new();
    for seq in 0..lines {
        text.extend_from_slice(
            format!("LINE {name} {seq} {} END\n", payload(&name, seq)).as_bytes(),
        );
    }
    let mut rng = XorShift::new(name.bytes().fold(7, |h, b| h * 31 + u64::from(b)));
    let mut rest = &text[..];
    while !rest.is_empty() {
        let n = ((rng.next_u64() % 40) as usize + 1).min(rest.len());
        if let Err(e) = console.write(&rest[..n]).await {
            println!("scribbler: FAIL writing: {e}");
            return 1;
        }
        // Publish now and then, so that writers take turns in the rings.
        if rng.next_u64().is_multiple_of(4) {
            console.push();
        }
        rest = &rest[n..];
    }
    if let Err(e) = console.flush().await {
        println!("scribbler: FAIL flushing: {e}");
        return 1;
    }
    if let Err(e) = console.close().await {
        println!("scribbler: FAIL hanging up: {e}");
        return 1;
    }
    0
}
