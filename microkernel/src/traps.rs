//! What the kernel does with a trap once `hv::trap` has saved the frame:
//! CPU exceptions are reported (a kernel fault is fatal and ends the machine
//! with a failing status), interrupts are acknowledged.
//!
//! Context: trap context, interrupts masked; must not allocate or block.

use crate::hv::lapic;
use crate::hv::trap::TrapFrame;
use crate::{console, exit, hv, kprintln, sched};

const EXCEPTION_NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "non-maskable interrupt",
    "breakpoint",
    "overflow",
    "bound range exceeded",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor segment overrun",
    "invalid TSS",
    "segment not present",
    "stack-segment fault",
    "general protection fault",
    "page fault",
    "reserved (15)",
    "x87 floating-point error",
    "alignment check",
    "machine check",
    "SIMD floating-point error",
    "virtualization exception",
    "control protection exception",
    "reserved (22)",
    "reserved (23)",
    "reserved (24)",
    "reserved (25)",
    "reserved (26)",
    "reserved (27)",
    "hypervisor injection exception",
    "VMM communication exception",
    "security exception",
    "reserved (31)",
];

/// The name of exception `vector`.
pub fn exception_name(vector: u64) -> &'static str {
    EXCEPTION_NAMES
        .get(vector as usize)
        .copied()
        .unwrap_or("interrupt")
}

/// Called by `hv::trap` (and the SYSCALL entry) for every trap; returns the
/// frame to resume, which is another thread's after a context switch.
#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) -> *mut TrapFrame {
    let backend = hv::backend();
    // A TLB shootdown first, whatever this trap is: the CPU that asked
    // spins, holding the system, until this one has flushed.
    hv::smp::serve_shootdown();
    // Before anything else, and touching nothing but the backend's record:
    // this interrupt may have arrived in the middle of another trap.
    if backend.defer_interrupt(frame) {
        return frame;
    }
    backend.trap_entered(frame);
    let from_user = frame.came_from_user();
    if frame.vector < 32 && !from_user {
        if !hv::fixup::recover(frame) {
            kernel_fault(frame);
        }
        // A fault the fixup table expects (a guarded probe, a user copy)
        // resumes where the table says, in the code that was running: the
        // system is that code's, and may be locked by it.
        backend.trap_leaving(frame);
        return frame;
    }
    let next = match sched::with(|system| system.dispatch(frame)) {
        Some(next) => next,
        None => {
            // Before servers exist only the boot path runs; nothing is
            // routed yet, and what was deferred needs nothing either.
            if frame.vector == u64::from(lapic::TIMER_VECTOR) {
                backend.end_of_interrupt();
            }
            while backend.take_deferred().is_some() {}
            frame as *mut TrapFrame
        }
    };
    // SAFETY: `dispatch` returns a frame at the top of a live kernel stack
    // (a server's, or the one the idle loop trapped on).
    let resumed = unsafe { &*next };
    hv::note_crossings(from_user, resumed.came_from_user());
    backend.trap_leaving(resumed);
    next
}

/// A CPU exception in the kernel: report everything and end the machine.
fn kernel_fault(frame: &TrapFrame) -> ! {
    // SAFETY: this path never returns to the interrupted code, so a console
    // lock it may have held can be broken.
    unsafe { console::force_unlock() };
    let cr2 = hv::paging::fault_address();
    kprintln!();
    kprintln!(
        "KERNEL FAULT on CPU {}: exception {} ({}) error code {:#x} at RIP {:#018x}",
        hv::smp::this_cpu(),
        frame.vector,
        exception_name(frame.vector),
        frame.error_code,
        frame.rip
    );
    if frame.vector == 14 {
        kprintln!(
            "  CR2 {:#018x} ({})",
            cr2,
            describe_page_fault(frame.error_code)
        );
    } else {
        kprintln!("  CR2 {cr2:#018x}");
    }
    dump_frame(frame);
    exit::failure()
}

fn describe_page_fault(code: u64) -> &'static str {
    match (code & 1 != 0, code & 2 != 0, code & 0x10 != 0) {
        (_, _, true) => "instruction fetch",
        (false, false, _) => "read of a non-present page",
        (false, true, _) => "write to a non-present page",
        (true, false, _) => "read: protection violation",
        (true, true, _) => "write: protection violation",
    }
}

pub fn dump_frame(f: &TrapFrame) {
    kprintln!(
        "  RSP {:#018x}  RFLAGS {:#010x}  CS {:#x}  SS {:#x}",
        f.rsp,
        f.rflags,
        f.cs,
        f.ss
    );
    kprintln!(
        "  RAX {:#018x}  RBX {:#018x}  RCX {:#018x}  RDX {:#018x}",
        f.rax,
        f.rbx,
        f.rcx,
        f.rdx
    );
    kprintln!(
        "  RSI {:#018x}  RDI {:#018x}  RBP {:#018x}  R8  {:#018x}",
        f.rsi,
        f.rdi,
        f.rbp,
        f.r8
    );
    kprintln!(
        "  R9  {:#018x}  R10 {:#018x}  R11 {:#018x}  R12 {:#018x}",
        f.r9,
        f.r10,
        f.r11,
        f.r12
    );
    kprintln!(
        "  R13 {:#018x}  R14 {:#018x}  R15 {:#018x}",
        f.r13,
        f.r14,
        f.r15
    );
}
