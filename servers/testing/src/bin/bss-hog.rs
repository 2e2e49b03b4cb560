//! bss-hog: touches every page of its 16 MiB `.bss`, which the kernel maps
//! a page at a time on first touch (tests/manifests/lazyoom.toml runs two
//! of them on a machine too small for both). Prints `NAME: touched 4096
//! pages`, holds them until every other server has ended (so that the
//! other hog cannot have its memory yet, however slow the kernel is: where
//! PVM interprets it, a first touch costs milliseconds), at most 30 s, and
//! exits 0. The hog that finds no memory left is
//! stopped by the kernel (`kernel: server NAME stopped: out of memory for a
//! page of its .bss at 0x...`) and never prints. A page that does not read
//! as zero before it is written prints `NAME: FAIL ...` and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

use userland::abi::Error;
use userland::{abi, println, sys};

userland::entry!(run);

const PAGE: usize = userland::abi::layout::PAGE_SIZE as usize;
const SIZE: usize = 16 << 20;
/// The longest the hog holds its pages, waiting for the others to end.
const HOLD_MAX_NS: u64 = 30_000_000_000;
/// How often it looks whether they have.
const LOOK_NS: u64 = 20_000_000;
/// A bit no channel or IRQ of this server uses.
const IDLE_BIT: u64 = 1 << 62;

/// Zero-initialised, so it lands in `.bss`; `#[used]` keeps it whole.
#[used]
static mut HOARD: [u8; SIZE] = [0; SIZE];

fn run() -> i32 {
    let name = sys::server_info(userland::server_index())
        .map(|me| me.name)
        .unwrap_or_default();
    let name = abi::name_str(&name);
    let hoard = (&raw mut HOARD).cast::<u8>();
    for page in 0..SIZE / PAGE {
        // SAFETY: inside `HOARD` (page < SIZE / PAGE); the server's only
        // thread, and nothing holds a reference to `HOARD`; volatile, so the
        // compiler neither removes the accesses nor assumes the zeros.
        let seen = unsafe {
            let byte = hoard.add(page * PAGE + page % PAGE);
            let seen = byte.read_volatile();
            byte.write_volatile(1);
            seen
        };
        if seen != 0 {
            println!("{name}: FAIL page {page} of .bss read {seen:#x} before it was written");
            return 1;
        }
    }
    println!("{name}: touched {} pages", SIZE / PAGE);
    let mut held = 0;
    while held < HOLD_MAX_NS && others_alive() {
        match sys::wait(IDLE_BIT, LOOK_NS) {
            Err(Error::TimedOut) => held += LOOK_NS,
            other => {
                println!("{name}: FAIL wait on an idle bit returned {other:?}");
                return 1;
            }
        }
    }
    0
}

/// Whether another server is still loaded and not ended.
fn others_alive() -> bool {
    let me = userland::server_index();
    sys::servers().any(|(i, info)| {
        i != me
            && matches!(
                abi::ServerState::from_raw(info.state),
                Some(
                    abi::ServerState::Ready | abi::ServerState::Running | abi::ServerState::Blocked
                )
            )
    })
}
