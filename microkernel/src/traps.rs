//! Trap dispatch: what the kernel does with a trap once `hv::trap` has
//! saved the frame. A kernel fault is fatal and ends the machine with a
//! failing status; a server's fault ends that server (`supervisor`); a
//! system call goes to `syscall`; an interrupt is routed (the timer to the
//! scheduler, an IRQ line to the server that owns it).
//!
//! Context: trap context, interrupts masked; must not block.

use crate::hv::trap::TrapFrame;
use crate::hv::{context, lapic};
use crate::process::Demand;
use crate::system::{self, System};
use crate::{console, exit, hv, kprintln, supervisor};
use microkernel::scheduler::State;

/// IRQ line `n` arrives on vector `IRQ_BASE_VECTOR + n` (the apic server
/// routes it there).
const IRQ_BASE_VECTOR: u64 = abi::IRQ_BASE_VECTOR as u64;
const IRQ_LINES: u64 = microkernel::irq::LINES as u64;

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
fn exception_name(vector: u64) -> &'static str {
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
    let next = match system::with(|system| dispatch(system, frame)) {
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

/// Handle one trap once servers exist; return the frame to resume.
#[inline]
fn dispatch(system: &mut System, frame: &mut TrapFrame) -> *mut TrapFrame {
    system.enter(frame);
    let backend = hv::backend();
    match backend.trap_vector(frame) {
        13 if !backend.ports_direct() && crate::ports::emulate(system, frame) => {}
        14 if fault_on_demand(system, frame) => {}
        0..=31 => fault_current(system, frame),
        context::SYSCALL_VECTOR => crate::syscall::handle(system, frame),
        v if v == u64::from(abi::SYSCALL_INT_VECTOR) && frame.came_from_user() => {
            crate::syscall::handle(system, frame)
        }
        v => interrupt(system, v, false),
    }
    // Interrupts that arrived during this trap while the kernel's flag was
    // clear (pvm, where an IRETQ into kernel code can let them in): handled
    // now, before anyone is resumed.
    while let Some((vector, ended)) = backend.take_deferred() {
        interrupt(system, u64::from(vector), ended);
    }
    if let Some((console, bit)) = crate::klog::take_doorbell() {
        system.raise(console, 1 << bit);
    }
    system.leave()
}

/// Handle interrupt `vector`; `ended` when the backend already ended it
/// at the local APIC (a deferred timer interrupt).
fn interrupt(system: &mut System, vector: u64, ended: bool) {
    let backend = hv::backend();
    match vector {
        v if v == u64::from(lapic::TIMER_VECTOR) => {
            if !ended {
                backend.end_of_interrupt();
            }
            system.timer_fired();
        }
        v if v == u64::from(hv::smp::IPI_VECTOR) => {
            // A wake-up needs nothing more: `leave` schedules. A shootdown
            // was served before the lock.
            if !ended {
                backend.end_of_interrupt();
            }
            if system.here() == hv::smp::BOOT_CPU {
                system.end_interrupts(hv::smp::take_owed_eois());
            }
        }
        v if (IRQ_BASE_VECTOR..IRQ_BASE_VECTOR + IRQ_LINES).contains(&v) => {
            system.deliver_irq((v - IRQ_BASE_VECTOR) as usize);
        }
        v if v == u64::from(lapic::SPURIOUS_VECTOR) => {}
        v => {
            log::warn!("unexpected interrupt vector {v:#x}");
            if !ended {
                backend.end_of_interrupt();
            }
        }
    }
}

/// A page fault from ring 3 on a not-present page in one of the current
/// server's lazy ranges: map that page and resume the instruction. `true`
/// when handled so (or when the server was stopped for want of memory);
/// `false` leaves the fault to be the fault it is.
fn fault_on_demand(system: &mut System, frame: &TrapFrame) -> bool {
    const PRESENT: u64 = 1;
    let Some(index) = system.current() else {
        return false;
    };
    if frame.vector != 14 || frame.error_code & PRESENT != 0 || !frame.came_from_user() {
        return false;
    }
    let address = hv::paging::fault_address();
    let server = &mut system.servers[index];
    match server.map_on_demand(address) {
        Demand::Mapped => true,
        Demand::NotLazy => false,
        Demand::OutOfMemory(kind) => {
            kprintln!(
                "kernel: server {} stopped: out of memory for a page of its {kind} at {address:#x}",
                server.name
            );
            supervisor::end_server(system, index, State::Faulted);
            true
        }
    }
}

/// A CPU exception in ring 3: stop that server only, with a report.
fn fault_current(system: &mut System, frame: &TrapFrame) {
    let Some(index) = system.current() else {
        unreachable!("kernel faults are handled before the system sees them");
    };
    let server = &system.servers[index];
    let address = if frame.vector == 14 {
        hv::paging::fault_address()
    } else {
        0
    };
    kprintln!(
        "kernel: server {} stopped: exception {} ({}) at RIP {:#x}, address {:#x}, error code {:#x}{}",
        server.name,
        frame.vector,
        exception_name(frame.vector),
        frame.rip,
        address,
        frame.error_code,
        if server.injected { " (injected)" } else { "" }
    );
    supervisor::end_server(system, index, State::Faulted);
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
