//! syscall-fuzz: 100,000 system calls with random numbers (invalid and
//! huge ones included) and hostile arguments (kernel, non-canonical and
//! unmapped addresses, read-only targets, huge lengths, random handles),
//! from the workspace's xorshift generator (`userland::rand`) with a fixed
//! seed. Never calls `exit`; its waits have a nonzero mask and a timeout
//! of at most 1 ms.
//!
//! Where the answer is certain it is checked (see `testing::fuzz`). Prints
//! the errors by kind and `syscall-fuzz: 100000 calls, N errors, M ok, all
//! as expected`, and exits 0; otherwise a `syscall-fuzz: FAIL ...` line per
//! unexpected answer (the first 20) and a summary, and exits 1.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec::Vec;
use core::hint::black_box;

use testing::fuzz::{Fuzzer, Memory};
use testing::hazard::{self, SCRATCH_LEN};
use userland::abi::{Error, Syscall};
use userland::println;

userland::entry!(run);

const CALLS: u64 = 100_000;
const SEED: u64 = 0x5eed_f00d_cafe_d00d;
const CANARY: u64 = 0x5a5a_a5a5_c3c3_3c3c;

/// Read-only data whose address the fuzzer hands to calls that write.
static READ_ONLY: [u64; 4] = [CANARY; 4];

fn run() -> i32 {
    // Memory the kernel must never touch: checked at the end.
    let stack_canary = black_box([CANARY; 32]);
    let heap_canary: Vec<u64> = black_box(alloc::vec![CANARY; 512]);

    let text = run as fn() -> i32 as usize as u64;
    let mem = Memory {
        scratch: hazard::scratch_addr(),
        scratch_len: SCRATCH_LEN as u64,
        text,
        rodata: READ_ONLY.as_ptr() as u64,
    };
    println!("syscall-fuzz: {CALLS} calls, seed {SEED:#x}");
    let mut fuzzer = Fuzzer::new(SEED, mem);
    let mut made = 0u64;
    let mut ok = 0u64;
    let mut errors = [0u64; Error::ALL.len()];
    let mut unexpected = 0u64;
    while made < CALLS {
        let Some(plan) = fuzzer.next_plan() else {
            continue;
        };
        let Some(rax) = hazard::fuzz_syscall(plan.nr, plan.args) else {
            continue;
        };
        made += 1;
        let result = Error::decode(rax);
        match result {
            Ok(_) => ok += 1,
            Err(e) => {
                if let Some(i) = Error::ALL.iter().position(|k| *k == e) {
                    errors[i] += 1;
                }
            }
        }
        if !plan.expect.allows(rax) {
            unexpected += 1;
            if unexpected <= 20 {
                let name = Syscall::from_raw(plan.nr).map_or("invalid", Syscall::name);
                println!(
                    "syscall-fuzz: FAIL call {made}: {name} (nr {:#x}) args {:#x?} returned {result:?}, expected {:?}",
                    plan.nr, plan.args, plan.expect
                );
            }
        }
        if made.is_multiple_of(25_000) {
            println!("syscall-fuzz: {made} calls");
        }
    }
    let total_errors: u64 = errors.iter().sum();
    for (kind, n) in Error::ALL.iter().zip(errors) {
        if n != 0 {
            println!("syscall-fuzz: {n} x {kind}");
        }
    }
    let intact = black_box(&stack_canary).iter().all(|&w| w == CANARY)
        && black_box(&heap_canary).iter().all(|&w| w == CANARY)
        && READ_ONLY.iter().all(|&w| w == CANARY);
    if !intact {
        println!("syscall-fuzz: FAIL the kernel wrote into memory it was not given");
        return 1;
    }
    if unexpected != 0 {
        println!(
            "syscall-fuzz: FAIL {unexpected} of {made} answers unexpected ({total_errors} errors, {ok} ok)"
        );
        return 1;
    }
    println!("syscall-fuzz: {made} calls, {total_errors} errors, {ok} ok, all as expected");
    0
}
