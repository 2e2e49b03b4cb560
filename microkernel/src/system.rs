//! The system: the servers, the channels between them, the scheduler and
//! the IRQ table, under one lock; and the glue that keeps them in step
//! (a wakeup writes the woken server's `wait` result, a switch loads the
//! next server's address space, FPU state and I/O bitmap).
//!
//! Each part has one job and its own module: the scheduler's policy
//! (`microkernel::scheduler`, host-tested) decides who runs, the server
//! table (`process`) holds what a server owns, `channels` the shared
//! regions, `microkernel::irq` who owns which line. The operations on the
//! system sit above it and call it, never the other way: `traps`
//! (dispatch of every trap), `syscall`, `supervisor` (a server's end and
//! restart), `ports`.
//!
//! Context: trap context, interrupts masked, under the system's lock.
//! Nothing here blocks.

use alloc::vec::Vec;

use abi::{KernelCounters, Syscall};
use core::sync::atomic::{AtomicBool, Ordering};
use microkernel::irq::IrqTable;
use microkernel::scheduler::{Machine, Scheduler, State};
use microkernel::ticketlock::TicketLock;

use crate::channels::Channel;
use crate::hv::cpu::IO_BITMAP_BYTES;
use crate::hv::trap::TrapFrame;
use crate::hv::{self, lapic};
use crate::kprintln;
use crate::memory::paging::kernel_space;
use crate::process::Spec;
use crate::process::{ChannelEnd, Server};

/// How long a server runs before another ready one gets the CPU.
pub const TIME_SLICE_NS: u64 = 10_000_000;

/// The machine as the scheduler's policy sees it: the TSC, IPIs and this
/// CPU's deadline timer, through the hv backend.
struct Hv;

impl Machine for Hv {
    fn now(&self) -> u64 {
        hv::rdtsc()
    }

    fn kick(&self, cpu: usize) {
        // Before the system is installed the other CPUs are not
        // scheduling yet; they look at their queues when they start.
        if started() {
            hv::smp::kick(cpu);
        }
    }

    fn set_deadline(&self, deadline: u64) {
        hv::backend().set_deadline(Some(deadline));
    }
}

/// What the kernel keeps per CPU beside the scheduler's queue: what only
/// that CPU may touch (free a server of its own, whose address space and
/// kernel stack only it ever loads).
pub struct Cpu {
    /// Where the idle loop's registers were saved when it was left.
    idle_frame: *mut TrapFrame,
    /// Which server's I/O bitmap the TSS holds (`None`: deny all).
    io_loaded: Option<usize>,
    /// Servers that ended and whose memory waits to be freed.
    zombies: Vec<usize>,
    /// Instances replaced by a restart, freed at the next trap (the one
    /// that replaced them ran on their kernel stack).
    graveyard: Vec<Server>,
}

impl Cpu {
    fn new() -> Self {
        Self {
            idle_frame: core::ptr::null_mut(),
            io_loaded: None,
            zombies: Vec::new(),
            graveyard: Vec::new(),
        }
    }
}

/// How the system was booted, as servers ask for it (`boot_info`).
pub struct BootConfig {
    pub batching: bool,
    pub test: Option<[u8; 32]>,
    pub tsc_hz: u64,
    pub cmdline: alloc::string::String,
    pub rsdp: u64,
}

pub struct System {
    /// The server table, by server index.
    pub servers: Vec<Server>,
    /// How to start each server again (`supervisor`), by server index.
    pub specs: Vec<Spec>,
    pub channels: Vec<Channel>,
    /// IRQ lines bound, by whom, and which are in service.
    pub irqs: IrqTable,
    pub counters: KernelCounters,
    pub config: BootConfig,
    sched: Scheduler,
    /// Per CPU, by CPU number; `here` is the one holding the system now.
    cpus: Vec<Cpu>,
    here: usize,
    /// TSC at the kernel's first instruction, for the "all servers ready"
    /// line, which is printed once (`ready_reported`).
    boot_tsc: u64,
    ready_reported: bool,
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
        let tsc_hz = lapic::tsc_hz().max(1);
        let cpus = hv::smp::online();
        let slice = microkernel::time::ns_to_tsc(TIME_SLICE_NS, tsc_hz);
        Self {
            servers: Vec::new(),
            specs: Vec::new(),
            channels: Vec::new(),
            irqs: IrqTable::default(),
            counters: KernelCounters::default(),
            config: BootConfig {
                batching,
                test,
                tsc_hz,
                cmdline: cmdline.into(),
                rsdp,
            },
            sched: Scheduler::new(cpus, slice, hv::smp::BOOT_CPU),
            cpus: (0..cpus).map(|_| Cpu::new()).collect(),
            here: hv::smp::BOOT_CPU,
            boot_tsc: 0,
            ready_reported: false,
        }
    }

    /// Take a loaded server into the system, on the CPU it was loaded
    /// for (`place`). Returns its index.
    pub fn admit(&mut self, server: Server, spec: Spec, cpu: usize) -> usize {
        let index = self.sched.add(cpu);
        debug_assert_eq!(index, self.servers.len());
        self.servers.push(server);
        self.specs.push(spec);
        index
    }

    /// Choose the CPU a new server runs on ([`Scheduler::place`]).
    pub fn place(&mut self, allowed: u64, has_irqs: bool) -> usize {
        self.sched.place(allowed, has_irqs)
    }

    /// Put server `index` in its CPU's ready queue.
    pub fn add_ready(&mut self, index: usize) {
        self.sched.make_ready(index, self.here, &Hv);
    }

    /// The CPU holding the system.
    pub fn here(&self) -> usize {
        self.here
    }

    /// The server this CPU runs, if any.
    pub fn current(&self) -> Option<usize> {
        self.sched.current(self.here)
    }

    /// How many CPUs the system schedules on.
    pub fn cpu_count(&self) -> usize {
        self.sched.cpu_count()
    }

    pub fn state(&self, index: usize) -> State {
        self.sched.state(index)
    }

    pub fn is_alive(&self, index: usize) -> bool {
        self.sched.is_alive(index)
    }

    /// The CPU server `index` runs on.
    pub fn cpu_of(&self, index: usize) -> usize {
        self.sched.cpu_of(index)
    }

    /// `ns` in TSC cycles, saturating ([`microkernel::time::ns_to_tsc`]).
    pub fn ns_to_tsc(&self, ns: u64) -> u64 {
        microkernel::time::ns_to_tsc(ns, self.config.tsc_hz)
    }

    /// Where the kernel started, for the boot-to-ready report.
    pub fn set_boot_tsc(&mut self, tsc: u64) {
        self.boot_tsc = tsc;
    }

    /// Print `kernel: all servers ready after N ms` the first time every
    /// server has reached its first `wait` or has ended.
    fn report_ready(&mut self) {
        if self.ready_reported || !self.sched.all_started() {
            return;
        }
        self.ready_reported = true;
        let cycles = hv::rdtsc().saturating_sub(self.boot_tsc);
        let micros = u128::from(cycles) * 1_000_000 / u128::from(self.config.tsc_hz);
        kprintln!(
            "kernel: all servers ready after {}.{:03} ms",
            micros / 1000,
            micros % 1000
        );
        crate::bootmarks::mark("all servers ready");
        crate::bootmarks::report(self.boot_tsc, self.config.tsc_hz);
    }

    /// A trap begins on this CPU with `frame` saved: remember where the
    /// idle loop was, and free what ended here.
    #[inline]
    pub fn enter(&mut self, frame: &mut TrapFrame) {
        match self.current() {
            None => self.cpus[self.here].idle_frame = frame,
            Some(index) => debug_assert_eq!(self.servers[index].frame(), frame as *mut TrapFrame),
        }
        self.reap();
    }

    /// The trap ends: choose who runs next, switch to it, arm the timer.
    /// Returns the frame to resume.
    #[inline]
    pub fn leave(&mut self) -> *mut TrapFrame {
        let next = self.schedule();
        self.arm_timer();
        next
    }

    /// This CPU's timer fired: wake the `wait`s that timed out here, and
    /// preempt a server whose slice is over.
    pub fn timer_fired(&mut self) {
        self.counters.timer_interrupts += 1;
        let servers = &self.servers;
        self.sched.timer_fired(self.here, &Hv, |index, result| {
            set_wait_result(&servers[index], result);
        });
    }

    /// Server `index`, blocked in `wait`, is woken with `result`.
    pub fn wake(&mut self, index: usize, result: i64) {
        self.sched.wake(index, self.here, &Hv);
        set_wait_result(&self.servers[index], result);
    }

    /// Set `bits` pending in `index`; wake it if it waits for one of them.
    /// Returns whether it was woken.
    #[inline]
    pub fn raise(&mut self, index: usize, bits: u64) -> bool {
        match self.sched.raise(index, bits, self.here, &Hv) {
            Some(got) => {
                set_wait_result(&self.servers[index], got as i64);
                true
            }
            None => false,
        }
    }

    /// Take the bits of `mask` pending for server `index`.
    pub fn take_pending(&mut self, index: usize, mask: u64) -> u64 {
        self.sched.take_pending(index, mask)
    }

    /// Block the current server in `wait`.
    #[inline]
    pub fn block_current(&mut self, mask: u64, deadline: Option<u64>) {
        if self.sched.block_current(self.here, mask, deadline) {
            self.report_ready();
        }
    }

    pub fn yield_current(&mut self) {
        self.sched.preempt_current(self.here);
    }

    /// IRQ `line` arrived: tell its owner, whose `irq_ack` ends it.
    pub fn deliver_irq(&mut self, line: usize) {
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

    /// Server `index` ended in `state` (a fault is counted): out of the
    /// scheduler, its IRQ lines released (and the ends of interrupt they
    /// owed issued), its I/O bitmap unloaded. The rest is the supervisor's.
    pub fn retire(&mut self, index: usize, state: State) {
        if state == State::Faulted {
            self.counters.faults += 1;
        }
        self.sched.end(index, state);
        self.report_ready();
        let eois = self.irqs.release(index);
        self.end_interrupts(eois);
        self.unload_io_bitmap(index);
    }

    /// If this CPU's TSS holds server `index`'s I/O bitmap, deny every
    /// port instead.
    fn unload_io_bitmap(&mut self, index: usize) {
        if self.cpus[self.here].io_loaded == Some(index) {
            hv::backend().set_io_bitmap(&DENY_ALL_PORTS);
            self.cpus[self.here].io_loaded = None;
        }
    }

    /// Server `index` is replaced by `new`, a fresh instance on the same
    /// CPU (a restart, which runs there): the old one is freed at this
    /// CPU's next trap, and the new one is ready.
    pub fn replace(&mut self, index: usize, new: Server) {
        let old = core::mem::replace(&mut self.servers[index], new);
        self.cpus[self.here].graveyard.push(old);
        self.sched.renew(index);
        self.add_ready(index);
    }

    /// Server `index` ended for good: its memory is freed by its CPU (this
    /// one) once no trap runs on its kernel stack. Returns whether every
    /// server has now ended.
    pub fn bury(&mut self, index: usize) -> bool {
        self.cpus[self.here].zombies.push(index);
        self.sched.all_ended()
    }

    /// Free the memory of this CPU's ended servers, except the one whose
    /// kernel stack this trap runs on, and of instances replaced by a
    /// restart. Only this CPU ever loaded their address spaces.
    fn reap(&mut self) {
        let here = self.here;
        for old in core::mem::take(&mut self.cpus[here].graveyard) {
            leave_space(&old);
            drop(old);
        }
        let running_on = self.current();
        let mut kept = Vec::new();
        for index in core::mem::take(&mut self.cpus[here].zombies) {
            if Some(index) == running_on {
                kept.push(index);
                continue;
            }
            leave_space(&self.servers[index]);
            self.unload_io_bitmap(index);
            self.servers[index].release_memory();
        }
        self.cpus[here].zombies = kept;
    }

    /// Pick who runs next and switch to it.
    #[inline]
    fn schedule(&mut self) -> *mut TrapFrame {
        let pick = self.sched.pick(self.here, &Hv);
        if let Some(previous) = pick.switched_from {
            self.switch(previous, pick.next);
        }
        match pick.next {
            Some(index) => self.servers[index].resume(),
            None => self.cpus[self.here].idle_frame,
        }
    }

    /// Save what `previous` leaves in the CPU and load `next`'s: FPU
    /// state, kernel stack, address space, I/O bitmap.
    fn switch(&mut self, previous: Option<usize>, next: Option<usize>) {
        if let Some(prev) = previous
            && self.sched.is_alive(prev)
        {
            self.servers[prev].fpu.save();
        }
        self.counters.context_switches += 1;
        let Some(index) = next else { return };
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
            self.cpus[self.here].io_loaded = Some(index);
        }
    }

    /// Arm this CPU's timer for what the scheduler needs, and for now if a
    /// server that ended here waits to be freed: an idle CPU would take no
    /// trap to do it, and that memory may be what a server on another CPU
    /// waits for.
    #[inline]
    fn arm_timer(&mut self) {
        let cpu = &self.cpus[self.here];
        let reap = (self.current().is_none() && !cpu.zombies.is_empty()).then(hv::rdtsc);
        self.sched.arm_timer(self.here, reap, &Hv);
    }

    /// Count a system call, by number and for the server making it (this
    /// CPU's current one), which it returns.
    pub fn count_syscall(&mut self, number: Option<Syscall>) -> Option<usize> {
        match number {
            Some(call) => self.counters.syscalls[call as usize] += 1,
            None => self.counters.bad_syscalls += 1,
        }
        let index = self.current()?;
        self.servers[index].count_syscall();
        Some(index)
    }

    /// Ring the doorbell of channel end `end`: count it, and set the peer's
    /// bit (waking it if it waits for it). The kernel's own log end has no
    /// peer to wake: the kernel never waits on it.
    pub fn ring(&mut self, end: &ChannelEnd) {
        self.counters.doorbells += 1;
        self.channels[end.channel].count_doorbell(end.provider);
        if let Some(peer) = end.peer
            && self.raise(peer, 1 << end.peer_bit)
        {
            self.counters.wakeups += 1;
        }
    }

    /// A port access of a server was emulated (`ports`).
    pub fn count_emulated_port_io(&mut self) {
        self.counters.emulated_port_io += 1;
    }
}

/// If this CPU runs in `server`'s address space, move to the kernel's,
/// so that the server's tables can be freed.
fn leave_space(server: &Server) {
    if hv::paging::current_address_space() == server.space.root() {
        // SAFETY: the kernel's tables map the kernel half the same way.
        unsafe { hv::paging::switch_address_space(kernel_space().root()) };
    }
}

/// Give a server blocked in `wait` its result, in the frame it resumes
/// through.
fn set_wait_result(server: &Server, result: i64) {
    // SAFETY: a blocked server's frame is at the top of its own kernel
    // stack, which is mapped and not in use by anyone (its CPU left it
    // before it gave up the system's lock).
    unsafe { (*server.frame()).rax = result as u64 };
}
