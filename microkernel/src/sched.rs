//! The system: every server, the channels between them, and the decision
//! of who runs next. `trap_dispatch` (in `traps`) hands every trap and
//! system call here once servers exist.
//!
//! Scheduling is round robin with a time slice, enforced by the kernel's
//! own deadline timer (the local APIC), so a server that never blocks
//! cannot keep the CPU. The timer is armed only when needed: for the end of
//! a slice when someone else is ready, or for the earliest `wait` timeout;
//! an idle system takes no ticks.
//!
//! A server's first touch of a page it has not used yet (its `.bss` and
//! stack are mapped on demand, `process`) arrives here as a page fault and
//! is resolved before the server goes on: [`System::dispatch`].
//!
//! Context: trap context, interrupts masked, on the kernel stack of the
//! thread that trapped. Nothing here blocks.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use abi::{Error, KernelCounters, Syscall};
use core::sync::atomic::{AtomicBool, Ordering};
use microkernel::ticketlock::TicketLock;

use crate::channels::Channel;
use crate::hv::context;
use crate::hv::cpu::IO_BITMAP_BYTES;
use crate::hv::trap::TrapFrame;
use crate::hv::{self, lapic};
use crate::memory::paging::kernel_space;
use crate::process::{Demand, Server, State};
use crate::traps::exception_name;
use crate::{exit, kprintln};
use microkernel::irq::IrqTable;

/// How long a server runs before another ready one gets the CPU.
pub const TIME_SLICE_NS: u64 = 10_000_000;
/// IRQ line `n` arrives on vector `IRQ_BASE_VECTOR + n` (the apic server
/// routes it there).
pub const IRQ_BASE_VECTOR: u64 = 0x20;
pub const IRQ_LINES: u64 = microkernel::irq::LINES as u64;

/// One CPU's share of the scheduler: its servers that are ready, the one
/// it runs, and what only it may do (free a server of its own, whose
/// address space and kernel stack only it ever loads).
pub struct Cpu {
    pub(crate) ready: VecDeque<usize>,
    /// The server on the CPU, or `None` for the idle loop.
    pub(crate) current: Option<usize>,
    /// Where the idle loop's registers were saved when it was left.
    idle_frame: *mut TrapFrame,
    /// Which server's I/O bitmap the TSS holds (`None`: deny all).
    pub(crate) io_loaded: Option<usize>,
    /// Servers that ended and whose memory waits to be freed.
    zombies: Vec<usize>,
    /// Instances replaced by a restart, freed at the next trap (the one
    /// that replaced them ran on their kernel stack).
    pub(crate) graveyard: Vec<Server>,
    slice_end: u64,
    /// The deadline the timer is armed with (see `arm_timer`: it is only
    /// ever moved earlier, never disarmed, since a timer write may exit).
    armed: Option<u64>,
    /// Servers placed here, for [`System::place`].
    placed: usize,
}

impl Cpu {
    fn new() -> Self {
        Self {
            ready: VecDeque::new(),
            current: None,
            idle_frame: core::ptr::null_mut(),
            io_loaded: None,
            zombies: Vec::new(),
            graveyard: Vec::new(),
            slice_end: 0,
            armed: None,
            placed: 0,
        }
    }
}

pub struct System {
    pub servers: Vec<Server>,
    /// How to start each server again (`supervisor`), by server index.
    pub specs: Vec<crate::supervisor::Spec>,
    pub channels: Vec<Channel>,
    /// Per CPU, by CPU number; `here` is the one holding the system now.
    cpus: Vec<Cpu>,
    here: usize,
    pub counters: KernelCounters,
    /// IRQ lines bound, by whom, and which are in service.
    pub irqs: IrqTable,
    /// TSC at the kernel's first instruction, for the "all servers ready"
    /// line, which is printed once (`ready_reported`).
    boot_tsc: u64,
    ready_reported: bool,
    pub batching: bool,
    pub test: Option<[u8; 32]>,
    pub tsc_hz: u64,
    pub cmdline: alloc::string::String,
    pub rsdp: u64,
}

// SAFETY: the raw frame pointers are only used in trap context, under the
// system's lock, each by the CPU whose idle loop it belongs to.
unsafe impl Send for System {}

/// The one lock of the system (see "Locks" in docs/ARCHITECTURE.md): fair,
/// so that a CPU entering the kernel in a loop cannot keep another out.
static SYSTEM: TicketLock<Option<System>> = TicketLock::new(None);
/// Set once the system is installed: the other CPUs start scheduling.
static STARTED: AtomicBool = AtomicBool::new(false);
pub(crate) static DENY_ALL_PORTS: [u8; IO_BITMAP_BYTES] = [0xFF; IO_BITMAP_BYTES];

/// Run `f` on the system, if servers have been started.
/// Run `f` on the system, if servers have been started. The lock is
/// taken with interrupts masked; while waiting for it this CPU keeps
/// serving TLB shootdowns, since the CPU holding it may be waiting for
/// this one to flush.
pub fn with<R>(f: impl FnOnce(&mut System) -> R) -> Option<R> {
    hv::interrupts::without(|| {
        let mut guard = SYSTEM.lock_with(hv::smp::serve_shootdown);
        let system = guard.as_mut()?;
        system.here = hv::smp::this_cpu();
        Some(f(system))
    })
}

pub fn install(system: System) {
    *SYSTEM.lock() = Some(system);
    STARTED.store(true, Ordering::Release);
}

/// Whether the system is installed (the other CPUs wait for it).
pub fn started() -> bool {
    STARTED.load(Ordering::Acquire)
}

impl System {
    pub fn new(batching: bool, test: Option<[u8; 32]>, cmdline: &str, rsdp: u64) -> Self {
        Self {
            servers: Vec::new(),
            specs: Vec::new(),
            channels: Vec::new(),
            cpus: (0..hv::smp::online()).map(|_| Cpu::new()).collect(),
            here: hv::smp::BOOT_CPU,
            counters: KernelCounters::default(),
            irqs: IrqTable::default(),
            boot_tsc: 0,
            ready_reported: false,
            batching,
            test,
            tsc_hz: lapic::tsc_hz().max(1),
            cmdline: cmdline.into(),
            rsdp,
        }
    }

    /// Put server `index` in its CPU's ready queue, and interrupt that
    /// CPU if it is another one that may not look at its queue before
    /// long (idle, or with no time slice armed since nobody else was
    /// ready).
    pub fn add_ready(&mut self, index: usize) {
        let cpu = self.servers[index].cpu;
        let queue = &mut self.cpus[cpu].ready;
        let was_empty = queue.is_empty();
        queue.push_back(index);
        if cpu != self.here && was_empty && started() {
            hv::smp::kick(cpu);
        }
    }

    /// The CPU holding the system.
    pub fn cpu(&mut self) -> &mut Cpu {
        &mut self.cpus[self.here]
    }

    /// The CPU holding the system.
    pub fn here(&self) -> usize {
        self.here
    }

    /// The server this CPU runs, if any.
    pub fn current(&self) -> Option<usize> {
        self.cpus[self.here].current
    }

    /// How many CPUs the system schedules on.
    pub fn cpu_count(&self) -> usize {
        self.cpus.len()
    }

    /// Choose the CPU a new server runs on: the least loaded of those in
    /// `allowed` (a bit per CPU; bits past the CPUs there are ignored, and
    /// none left means any), ties to the lowest number. A server with
    /// IRQ lines goes to the boot CPU unless `allowed` says otherwise:
    /// device interrupts arrive there, and so its ends of interrupt
    /// need no IPI.
    pub fn place(&mut self, allowed: u64, has_irqs: bool) -> usize {
        let online = (1u64 << self.cpus.len()) - 1;
        let allowed = match allowed & online {
            0 if has_irqs => 1 << hv::smp::BOOT_CPU,
            0 => online,
            mask => mask,
        };
        let cpu = (0..self.cpus.len())
            .filter(|&c| allowed & (1 << c) != 0)
            .min_by_key(|&c| self.cpus[c].placed)
            .unwrap_or(hv::smp::BOOT_CPU);
        self.cpus[cpu].placed += 1;
        cpu
    }

    /// `ns` in TSC cycles, saturating ([`microkernel::time::ns_to_tsc`]).
    pub fn ns_to_tsc(&self, ns: u64) -> u64 {
        microkernel::time::ns_to_tsc(ns, self.tsc_hz)
    }

    /// Where the kernel started, for the boot-to-ready report.
    pub fn set_boot_tsc(&mut self, tsc: u64) {
        self.boot_tsc = tsc;
    }

    /// Print `kernel: all servers ready after N ms` the first time every
    /// server has reached its first `wait` or has ended.
    fn report_ready(&mut self) {
        if self.ready_reported
            || !self
                .servers
                .iter()
                .all(|s| s.reached_wait || !s.state.is_alive())
        {
            return;
        }
        self.ready_reported = true;
        let cycles = hv::rdtsc().saturating_sub(self.boot_tsc);
        let micros = u128::from(cycles) * 1_000_000 / u128::from(self.tsc_hz);
        kprintln!(
            "kernel: all servers ready after {}.{:03} ms",
            micros / 1000,
            micros % 1000
        );
        crate::bootmarks::mark("all servers ready");
        crate::bootmarks::report(self.boot_tsc, self.tsc_hz);
    }

    /// Handle one trap; return the frame to resume.
    pub fn dispatch(&mut self, frame: &mut TrapFrame) -> *mut TrapFrame {
        match self.current() {
            None => self.cpu().idle_frame = frame,
            Some(index) => debug_assert_eq!(self.servers[index].frame(), frame as *mut TrapFrame),
        }
        self.reap();
        let backend = hv::backend();
        match backend.trap_vector(frame) {
            13 if !backend.ports_direct() && crate::ports::emulate(self, frame) => {}
            14 if self.fault_on_demand(frame) => {}
            0..=31 => self.fault_current(frame),
            context::SYSCALL_VECTOR => crate::syscall::handle(self, frame),
            v if v == u64::from(abi::SYSCALL_INT_VECTOR) && frame.came_from_user() => {
                crate::syscall::handle(self, frame)
            }
            v => self.interrupt(v, false),
        }
        // Interrupts that arrived during this trap, where the backend had to
        // let them in (pvm): handled now, before anyone is resumed.
        while let Some((vector, ended)) = backend.take_deferred() {
            self.interrupt(u64::from(vector), ended);
        }
        if let Some((console, bit)) = crate::klog::take_doorbell() {
            self.raise(console, 1 << bit);
        }
        let next = self.schedule();
        self.arm_timer();
        next
    }

    /// Handle interrupt `vector`; `ended` when the backend already ended
    /// it at the local APIC (a deferred timer interrupt).
    fn interrupt(&mut self, vector: u64, ended: bool) {
        let backend = hv::backend();
        match vector {
            v if v == u64::from(lapic::TIMER_VECTOR) => {
                if !ended {
                    backend.end_of_interrupt();
                }
                // A one-shot deadline is spent once it fires.
                self.cpu().armed = None;
                self.counters.timer_interrupts += 1;
                self.expire_deadlines();
                if self.current().is_some() && hv::rdtsc() >= self.cpu().slice_end {
                    self.preempt_current();
                }
            }
            v if v == u64::from(hv::smp::IPI_VECTOR) => {
                // A wake-up needs nothing more: `schedule` follows. A
                // shootdown was served before the lock.
                if !ended {
                    backend.end_of_interrupt();
                }
                if self.here == hv::smp::BOOT_CPU {
                    let owed = hv::smp::take_owed_eois();
                    self.end_interrupts(owed);
                }
            }
            v if (IRQ_BASE_VECTOR..IRQ_BASE_VECTOR + IRQ_LINES).contains(&v) => {
                self.deliver_irq((v - IRQ_BASE_VECTOR) as usize);
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

    /// Move `index` from blocked to ready with `result` as its `wait`'s
    /// return value.
    pub(crate) fn wake(&mut self, index: usize, result: i64) {
        let server = &mut self.servers[index];
        server.state = State::Ready;
        server.wait_mask = 0;
        server.deadline = None;
        // SAFETY: a blocked server's frame is at the top of its own kernel
        // stack, which is mapped and not in use by anyone (its CPU left it
        // before it gave up the system's lock).
        unsafe { (*server.frame()).rax = result as u64 };
        self.add_ready(index);
    }

    /// Set `bits` pending in `index`; wake it if it waits for one of them.
    /// Returns whether it was woken.
    pub fn raise(&mut self, index: usize, bits: u64) -> bool {
        let server = &mut self.servers[index];
        if !server.state.is_alive() {
            return false;
        }
        server.pending |= bits;
        if server.state == State::Blocked && server.pending & server.wait_mask != 0 {
            let got = server.pending & server.wait_mask;
            server.pending &= !got;
            self.wake(index, got as i64);
            return true;
        }
        false
    }

    /// Block the current server in `wait`.
    pub fn block_current(&mut self, mask: u64, deadline: Option<u64>) {
        let index = self.current().expect("only a server blocks");
        let server = &mut self.servers[index];
        server.state = State::Blocked;
        server.wait_mask = mask;
        server.deadline = deadline;
        if !server.reached_wait {
            server.reached_wait = true;
            self.report_ready();
        }
    }

    pub fn yield_current(&mut self) {
        self.preempt_current();
    }

    fn preempt_current(&mut self) {
        if let Some(index) = self.current()
            && self.servers[index].state == State::Running
        {
            self.servers[index].state = State::Ready;
            self.cpu().ready.push_back(index);
        }
    }

    /// Wake this CPU's servers whose `wait` timed out (each CPU's timer
    /// is armed for its own servers' deadlines).
    fn expire_deadlines(&mut self) {
        let now = hv::rdtsc();
        for index in 0..self.servers.len() {
            let server = &self.servers[index];
            if server.cpu == self.here
                && server.state == State::Blocked
                && server.deadline.is_some_and(|d| d <= now)
            {
                self.wake(index, Error::TimedOut.to_return());
            }
        }
    }

    fn deliver_irq(&mut self, line: usize) {
        self.counters.device_interrupts += 1;
        match self.irqs.deliver(line) {
            Some(owner) => {
                // The end of interrupt waits for the owner's `irq_ack`, so the
                // line stays masked at the local APIC until it is handled.
                let bit = self.servers[owner].irq_bits[line].expect("an owner has a bit");
                self.raise(owner, 1 << bit);
            }
            None => {
                log::warn!("IRQ {line} arrived with no server bound to it");
                hv::backend().end_of_interrupt();
            }
        }
    }

    /// Issue `count` ends of interrupt (what `IrqTable` says is owed).
    /// Device interrupts arrive at the boot CPU, so their ends are that
    /// local APIC's: from another CPU they are sent there by IPI.
    pub fn end_interrupts(&mut self, count: u32) {
        if count == 0 {
            return;
        }
        if self.here != hv::smp::BOOT_CPU {
            hv::smp::owe_eois(count);
            return;
        }
        for _ in 0..count {
            hv::backend().end_of_interrupt();
        }
    }

    /// A page fault from ring 3 on a not-present page in one of the current
    /// server's lazy ranges: map that page and resume the instruction.
    /// `true` when handled so (or when the server was stopped for want of
    /// memory); `false` leaves the fault to be the fault it is.
    fn fault_on_demand(&mut self, frame: &TrapFrame) -> bool {
        const PRESENT: u64 = 1;
        let Some(index) = self.current() else {
            return false;
        };
        if frame.vector != 14 || frame.error_code & PRESENT != 0 || !frame.came_from_user() {
            return false;
        }
        let address = hv::paging::fault_address();
        let server = &mut self.servers[index];
        match server.map_on_demand(address) {
            Demand::Mapped => true,
            Demand::NotLazy => false,
            Demand::OutOfMemory(kind) => {
                kprintln!(
                    "kernel: server {} stopped: out of memory for a page of its {kind} at {address:#x}",
                    server.name
                );
                self.counters.faults += 1;
                self.end_server(index, State::Faulted);
                true
            }
        }
    }

    /// The counters as servers and the closing line see them, with what is
    /// counted elsewhere: the hypervisor operations, the pages mapped on
    /// demand.
    pub fn counters_snapshot(&self) -> KernelCounters {
        let mut counters = self.counters;
        counters.hv_ops = hv::exits::snapshot();
        counters.ipis = hv::smp::ipis_sent();
        counters.demand_pages = self.servers.iter().map(|s| s.demand_pages).sum();
        counters
    }

    /// A CPU exception in ring 3: stop that server only, with a report.
    fn fault_current(&mut self, frame: &TrapFrame) {
        let Some(index) = self.current() else {
            unreachable!("kernel faults are handled before the system sees them");
        };
        let server = &self.servers[index];
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
        self.counters.faults += 1;
        self.end_server(index, State::Faulted);
    }

    /// The current server called `exit`.
    pub fn exit_current(&mut self, code: i64) {
        let index = self.current().expect("only a server exits");
        kprintln!(
            "kernel: server {} exited with code {code}",
            self.servers[index].name
        );
        self.end_server(index, State::Exited(code));
    }

    /// Server `index` (the current one) ended in `state`: release what it
    /// held, then restart it if its policy and intensity allow
    /// (`supervisor`), or leave it down and tell its peers.
    fn end_server(&mut self, index: usize, state: State) {
        self.servers[index].state = state;
        self.report_ready();
        self.cpu().ready.retain(|&i| i != index);
        let eois = self.irqs.release(index);
        self.end_interrupts(eois);
        if self.cpu().io_loaded == Some(index) {
            hv::backend().set_io_bitmap(&DENY_ALL_PORTS);
            self.cpu().io_loaded = None;
        }
        if crate::supervisor::restart(self, index, state) {
            return;
        }
        // Down for good: the kernel log goes back to COM1, with what the
        // console left unprinted (a restarted console gets it instead).
        let log_dropped = crate::klog::detach_if(index, crate::console::write_direct);
        if let Some(dropped) = log_dropped {
            kprintln!(
                "kernel: the console server ended; the kernel log is back on COM1 \
                 ({dropped} chunks were dropped while its ring was full)"
            );
        }
        crate::supervisor::leave_down(self, index);
        self.cpu().zombies.push(index);
        if self.servers.iter().all(|s| !s.state.is_alive()) {
            kprintln!("kernel: all servers have ended");
            let counters = self.counters_snapshot();
            kprintln!("kernel: counters: {counters}");
            if self.test.is_some() {
                exit::success();
            }
        }
    }

    /// Free the memory of this CPU's ended servers, except the one whose
    /// kernel stack this trap runs on, and of instances replaced by a
    /// restart. Only this CPU ever loaded their address spaces.
    fn reap(&mut self) {
        for old in core::mem::take(&mut self.cpu().graveyard) {
            if hv::paging::current_address_space() == old.space.root() {
                // SAFETY: the kernel's tables map the kernel half the same way.
                unsafe { hv::paging::switch_address_space(kernel_space().root()) };
            }
            drop(old);
        }
        let running_on = self.current();
        let mut kept = Vec::new();
        for index in core::mem::take(&mut self.cpu().zombies) {
            if Some(index) == running_on {
                kept.push(index);
                continue;
            }
            if hv::paging::current_address_space() == self.servers[index].space.root() {
                // SAFETY: the kernel's tables map the kernel half the same way.
                unsafe { hv::paging::switch_address_space(kernel_space().root()) };
            }
            if self.cpu().io_loaded == Some(index) {
                hv::backend().set_io_bitmap(&DENY_ALL_PORTS);
                self.cpu().io_loaded = None;
            }
            self.servers[index].release_memory();
        }
        self.cpu().zombies = kept;
    }

    /// Pick who runs next and switch to it.
    fn schedule(&mut self) -> *mut TrapFrame {
        let keep_current = self
            .current()
            .filter(|&i| self.servers[i].state == State::Running);
        let next = match keep_current {
            Some(index) => Some(index),
            None => self.cpu().ready.pop_front(),
        };
        if next != self.current() {
            self.switch(next);
        } else if next.is_some() && hv::rdtsc() >= self.cpu().slice_end {
            // Preempted with nobody else ready here: a new slice.
            self.cpus[self.here].slice_end = hv::rdtsc() + self.ns_to_tsc(TIME_SLICE_NS);
        }
        match next {
            Some(index) => {
                let server = &mut self.servers[index];
                server.state = State::Running;
                let frame = server.frame();
                if core::mem::take(&mut server.fault_pending) {
                    // SAFETY: its saved frame, which this CPU is about to resume.
                    unsafe { (*frame).rip = 0 };
                }
                frame
            }
            None => self.cpu().idle_frame,
        }
    }

    fn switch(&mut self, next: Option<usize>) {
        if let Some(prev) = self.current()
            && self.servers[prev].state.is_alive()
        {
            self.servers[prev].fpu.save();
        }
        self.counters.context_switches += 1;
        self.cpu().current = next;
        let Some(index) = next else { return };
        let now = hv::rdtsc();
        self.cpus[self.here].slice_end = now + self.ns_to_tsc(TIME_SLICE_NS);
        let server = &self.servers[index];
        let backend = hv::backend();
        server.fpu.restore();
        backend.set_kernel_stack(server.kernel_stack.top());
        // SAFETY: every server space shares the kernel half.
        unsafe { hv::paging::switch_address_space(server.space.root()) };
        let cpu = &mut self.cpus[self.here];
        match (&server.io_bitmap, cpu.io_loaded) {
            (Some(bitmap), loaded) if loaded != Some(index) => {
                backend.set_io_bitmap(bitmap);
                cpu.io_loaded = Some(index);
            }
            (None, Some(_)) => {
                backend.set_io_bitmap(&DENY_ALL_PORTS);
                cpu.io_loaded = None;
            }
            _ => {}
        }
    }

    /// Reload the current server's I/O bitmap after it changed.
    pub fn reload_io_bitmap(&mut self) {
        if let Some(index) = self.current()
            && let Some(bitmap) = &self.servers[index].io_bitmap
        {
            hv::backend().set_io_bitmap(bitmap);
            self.cpu().io_loaded = Some(index);
        }
    }

    /// Arm this CPU's timer for its slice's end, if another of its servers
    /// is ready, and for its servers' earliest `wait` timeout.
    fn arm_timer(&mut self) {
        let here = self.here;
        let cpu = &self.cpus[here];
        let slice = (cpu.current.is_some() && !cpu.ready.is_empty()).then_some(cpu.slice_end);
        let wait = self
            .servers
            .iter()
            .filter(|s| s.cpu == here && s.state == State::Blocked)
            .filter_map(|s| s.deadline)
            .min();
        let deadline = match (slice, wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // A server that ended here is freed by this CPU's next trap, which
        // an idle CPU would not take: bring one now. Its memory may be what
        // a server on another CPU waits for.
        let reap = (cpu.current.is_none() && !cpu.zombies.is_empty()).then(hv::rdtsc);
        let deadline = match (deadline, reap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // A deadline armed earlier than the one needed is left alone: it
        // fires, costs one interrupt, and the handler arms what is needed
        // then. Writing the timer is an exit on a hypervisor, and arming on
        // every wakeup and disarming on every block cost two a round trip.
        // An idle system still takes no ticks: once the last armed deadline
        // has fired, nothing is armed again.
        let rewrite = match (deadline, self.cpus[here].armed) {
            (Some(want), Some(armed)) => want < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if rewrite {
            hv::backend().set_deadline(deadline);
            self.cpus[here].armed = deadline;
        }
    }

    pub fn count_syscall(&mut self, number: Option<Syscall>) {
        match number {
            Some(call) => self.counters.syscalls[call as usize] += 1,
            None => self.counters.bad_syscalls += 1,
        }
    }
}
