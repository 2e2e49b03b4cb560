//! The scheduler's policy: which server runs next on each CPU, time
//! slices, `wait` and what wakes it, where a new server is placed, and
//! when each CPU's timer must fire. It holds no registers, frames or
//! address spaces (the kernel's `sched` switches those when this says
//! so), and sees the machine only through [`Machine`]: the kernel
//! implements it over the hv backend, the host tests below over a
//! recording fake (as Hubris's `arch/host` stands in for a real CPU).
//!
//! Scheduling is round robin per CPU with a time slice. A server never
//! moves between CPUs. The timer is armed only when needed: for the end of
//! a slice when someone else is ready on that CPU, or for the earliest
//! `wait` timeout there; an idle CPU takes no ticks.
//!
//! Context: the kernel calls it in trap context under the system's lock;
//! nothing here blocks. `here` is always the CPU holding that lock.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use abi::Error;

/// What the policy needs from the machine.
pub trait Machine {
    /// The time now, in TSC cycles.
    fn now(&self) -> u64;
    /// Make CPU `cpu` look at its ready queue soon (an IPI).
    fn kick(&self, cpu: usize);
    /// Arm this CPU's one-shot timer for `deadline` (TSC cycles).
    fn set_deadline(&self, deadline: u64);
}

/// Where a server is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Ready,
    Running,
    /// In `wait`, until a bit of its wait mask is pending or its deadline
    /// passes.
    Blocked,
    Exited(i64),
    Faulted,
}

impl State {
    pub fn is_alive(self) -> bool {
        matches!(self, State::Ready | State::Running | State::Blocked)
    }
}

/// One server as the scheduler sees it.
#[derive(Clone, Debug)]
struct Task {
    state: State,
    /// The CPU it runs on, for its whole life (its kernel stack serves
    /// that CPU).
    cpu: usize,
    /// Notification bits set and not yet taken by a `wait`.
    pending: u64,
    wait_mask: u64,
    /// TSC value at which its `wait` gives up.
    deadline: Option<u64>,
    /// Set at its first `wait`: it has finished starting up.
    reached_wait: bool,
}

impl Task {
    const fn new(cpu: usize) -> Self {
        Self {
            state: State::Ready,
            cpu,
            pending: 0,
            wait_mask: 0,
            deadline: None,
            reached_wait: false,
        }
    }
}

/// One CPU's share.
#[derive(Debug, Default)]
struct RunQueue {
    ready: VecDeque<usize>,
    /// The server on the CPU, or `None` for its idle loop.
    current: Option<usize>,
    slice_end: u64,
    /// The deadline the timer is armed with (see [`Scheduler::arm_timer`]:
    /// it is only ever moved earlier, never disarmed, since a timer write
    /// may exit to the hypervisor).
    armed: Option<u64>,
    /// Servers placed here, for [`Scheduler::place`].
    placed: usize,
}

/// What [`Scheduler::pick`] decided for a CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    /// Who runs now (`None`: the idle loop).
    pub next: Option<usize>,
    /// Who ran before, when that is someone else: its registers must be
    /// saved and `next`'s loaded.
    pub switched_from: Option<Option<usize>>,
}

/// The policy for every CPU. Servers are numbered as the kernel's server
/// table numbers them ([`Scheduler::add`] in the same order).
#[derive(Debug)]
pub struct Scheduler {
    tasks: Vec<Task>,
    cpus: Vec<RunQueue>,
    /// A time slice, in TSC cycles.
    slice: u64,
    boot_cpu: usize,
}

impl Scheduler {
    /// A scheduler for `cpus` CPUs (at least one) with time slices of
    /// `slice` TSC cycles; servers with IRQ lines go to `boot_cpu`.
    pub fn new(cpus: usize, slice: u64, boot_cpu: usize) -> Self {
        let cpus = cpus.max(1);
        Self {
            tasks: Vec::new(),
            cpus: (0..cpus).map(|_| RunQueue::default()).collect(),
            slice,
            boot_cpu: boot_cpu.min(cpus - 1),
        }
    }

    /// How many CPUs it schedules.
    #[inline]
    pub fn cpu_count(&self) -> usize {
        self.cpus.len()
    }

    /// Choose the CPU a new server runs on: the least loaded of those in
    /// `allowed` (a bit per CPU; bits past the CPUs there are ignored, and
    /// none left means any), ties to the lowest number. A server with IRQ
    /// lines goes to the boot CPU unless `allowed` says otherwise: device
    /// interrupts arrive there, so its ends of interrupt need no IPI.
    pub fn place(&mut self, allowed: u64, has_irqs: bool) -> usize {
        let online = match self.cpus.len() {
            64.. => u64::MAX,
            n => (1u64 << n) - 1,
        };
        let allowed = match allowed & online {
            0 if has_irqs => 1 << self.boot_cpu,
            0 => online,
            mask => mask,
        };
        let cpu = (0..self.cpus.len())
            .filter(|&c| allowed & (1 << c) != 0)
            .min_by_key(|&c| self.cpus[c].placed)
            .unwrap_or(self.boot_cpu);
        self.cpus[cpu].placed += 1;
        cpu
    }

    /// Take the next server, on `cpu` (from [`Scheduler::place`]); it is
    /// not ready until [`Scheduler::make_ready`]. Returns its number.
    pub fn add(&mut self, cpu: usize) -> usize {
        assert!(cpu < self.cpus.len(), "CPU {cpu} is not scheduled");
        self.tasks.push(Task::new(cpu));
        self.tasks.len() - 1
    }

    /// Server `index` starts over (a restart): nothing pending, not
    /// waiting, on the same CPU, and not on it now. Ready once
    /// [`Scheduler::make_ready`] says so.
    pub fn renew(&mut self, index: usize) {
        let cpu = self.tasks[index].cpu;
        self.tasks[index] = Task {
            reached_wait: self.tasks[index].reached_wait,
            ..Task::new(cpu)
        };
        let queue = &mut self.cpus[cpu];
        queue.ready.retain(|&i| i != index);
        if queue.current == Some(index) {
            queue.current = None;
        }
    }

    #[inline]
    pub fn state(&self, index: usize) -> State {
        self.tasks[index].state
    }

    #[inline]
    pub fn is_alive(&self, index: usize) -> bool {
        self.tasks[index].state.is_alive()
    }

    /// The CPU server `index` runs on.
    #[inline]
    pub fn cpu_of(&self, index: usize) -> usize {
        self.tasks[index].cpu
    }

    /// The server on CPU `cpu`, if any.
    #[inline]
    pub fn current(&self, cpu: usize) -> Option<usize> {
        self.cpus[cpu].current
    }

    /// Whether every server has reached its first `wait` or has ended.
    pub fn all_started(&self) -> bool {
        self.tasks
            .iter()
            .all(|t| t.reached_wait || !t.state.is_alive())
    }

    /// Whether every server has ended.
    pub fn all_ended(&self) -> bool {
        self.tasks.iter().all(|t| !t.state.is_alive())
    }

    /// Put server `index` in its CPU's ready queue, and interrupt that CPU
    /// if it is not `here` and its queue was empty: it may be idle, or
    /// have no time slice armed, and not look at its queue for long.
    #[inline]
    pub fn make_ready(&mut self, index: usize, here: usize, machine: &impl Machine) {
        let task = &mut self.tasks[index];
        task.state = State::Ready;
        let cpu = task.cpu;
        let queue = &mut self.cpus[cpu].ready;
        let was_empty = queue.is_empty();
        queue.push_back(index);
        if cpu != here && was_empty {
            machine.kick(cpu);
        }
    }

    /// End server `index`'s `wait` and make it ready; its `wait` returns
    /// what the caller writes into its frame.
    #[inline]
    pub fn wake(&mut self, index: usize, here: usize, machine: &impl Machine) {
        let task = &mut self.tasks[index];
        task.wait_mask = 0;
        task.deadline = None;
        self.make_ready(index, here, machine);
    }

    /// Set `bits` pending in server `index`. If it waits for one of them
    /// it is woken, and the bits it waited for are returned: its `wait`'s
    /// result.
    #[inline]
    pub fn raise(
        &mut self,
        index: usize,
        bits: u64,
        here: usize,
        machine: &impl Machine,
    ) -> Option<u64> {
        let task = &mut self.tasks[index];
        if !task.state.is_alive() {
            return None;
        }
        task.pending |= bits;
        if task.state != State::Blocked {
            return None;
        }
        let got = self.take_pending(index, self.tasks[index].wait_mask);
        if got == 0 {
            return None;
        }
        self.wake(index, here, machine);
        Some(got)
    }

    /// Take the bits of `mask` that server `index` has pending (a `wait`
    /// that need not block).
    #[inline]
    pub fn take_pending(&mut self, index: usize, mask: u64) -> u64 {
        let task = &mut self.tasks[index];
        let got = task.pending & mask;
        task.pending &= !got;
        got
    }

    /// Block the server on `here` in `wait` for `mask` until `deadline`.
    /// Returns whether this is its first `wait` (it has started up).
    #[inline]
    pub fn block_current(&mut self, here: usize, mask: u64, deadline: Option<u64>) -> bool {
        let index = self.cpus[here].current.expect("only a server blocks");
        let task = &mut self.tasks[index];
        task.state = State::Blocked;
        task.wait_mask = mask;
        task.deadline = deadline;
        !core::mem::replace(&mut task.reached_wait, true)
    }

    /// The server on `here` gives up the rest of its slice: to the back
    /// of its queue.
    #[inline]
    pub fn preempt_current(&mut self, here: usize) {
        if let Some(index) = self.cpus[here].current
            && self.tasks[index].state == State::Running
        {
            self.tasks[index].state = State::Ready;
            self.cpus[here].ready.push_back(index);
        }
    }

    /// Server `index` ended in `state` (not alive): out of its queue.
    pub fn end(&mut self, index: usize, state: State) {
        debug_assert!(!state.is_alive());
        let task = &mut self.tasks[index];
        task.state = state;
        let cpu = task.cpu;
        self.cpus[cpu].ready.retain(|&i| i != index);
    }

    /// `here`'s timer fired: its armed deadline is spent, the servers there
    /// whose `wait` timed out are woken (`timed_out` gets each, to give
    /// its `wait` the error), and the current server is preempted if its
    /// slice is over.
    pub fn timer_fired(
        &mut self,
        here: usize,
        machine: &impl Machine,
        mut timed_out: impl FnMut(usize, i64),
    ) {
        self.cpus[here].armed = None;
        let now = machine.now();
        for index in 0..self.tasks.len() {
            let task = &self.tasks[index];
            if task.cpu == here
                && task.state == State::Blocked
                && task.deadline.is_some_and(|d| d <= now)
            {
                self.wake(index, here, machine);
                timed_out(index, Error::TimedOut.to_return());
            }
        }
        if self.cpus[here].current.is_some() && now >= self.cpus[here].slice_end {
            self.preempt_current(here);
        }
    }

    /// Choose who runs on `here` next: the current server while it runs,
    /// else the first ready one, else the idle loop. A server that gets
    /// the CPU gets a new slice, and so does one preempted with nobody
    /// else ready.
    #[inline]
    pub fn pick(&mut self, here: usize, machine: &impl Machine) -> Pick {
        let cpu = &mut self.cpus[here];
        let previous = cpu.current;
        let next = match previous.filter(|&i| self.tasks[i].state == State::Running) {
            Some(index) => Some(index),
            None => cpu.ready.pop_front(),
        };
        let switched = next != previous;
        // The clock is read only for a server: the idle loop has no slice
        // (where the kernel is interpreted, a TSC read costs a crossing).
        if next.is_some() && (switched || machine.now() >= cpu.slice_end) {
            cpu.slice_end = machine.now().saturating_add(self.slice);
        }
        cpu.current = next;
        if let Some(index) = next {
            self.tasks[index].state = State::Running;
        }
        Pick {
            next,
            switched_from: switched.then_some(previous),
        }
    }

    /// Arm `here`'s timer for its slice's end if another of its servers is
    /// ready, for its servers' earliest `wait` timeout, and for `also` (a
    /// deadline of the kernel's own), whichever is first.
    ///
    /// A deadline armed earlier than the one needed is left alone: it
    /// fires, costs one interrupt, and the handler arms what is needed
    /// then. Writing the timer is an exit on a hypervisor, and arming on
    /// every wakeup and disarming on every block cost two a round trip. An
    /// idle CPU still takes no ticks: once its last armed deadline has
    /// fired, nothing is armed again.
    #[inline]
    pub fn arm_timer(&mut self, here: usize, also: Option<u64>, machine: &impl Machine) {
        // Plain loops: where the kernel is interpreted every instruction
        // of a trap costs thousands of cycles.
        let cpu = &self.cpus[here];
        let mut want = also;
        let mut consider = |deadline: u64| {
            want = Some(want.map_or(deadline, |w| w.min(deadline)));
        };
        if cpu.current.is_some() && !cpu.ready.is_empty() {
            consider(cpu.slice_end);
        }
        for task in &self.tasks {
            if let (true, State::Blocked, Some(deadline)) =
                (task.cpu == here, task.state, task.deadline)
            {
                consider(deadline);
            }
        }
        let Some(want) = want else {
            return;
        };
        if self.cpus[here].armed.is_none_or(|armed| want < armed) {
            machine.set_deadline(want);
            self.cpus[here].armed = Some(want);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::{Cell, RefCell};
    use std::vec;

    /// The host's machine: a clock the test moves, and a record of every
    /// IPI and timer write.
    #[derive(Default)]
    struct HostMachine {
        now: Cell<u64>,
        kicks: RefCell<Vec<usize>>,
        deadlines: RefCell<Vec<u64>>,
    }

    impl Machine for HostMachine {
        fn now(&self) -> u64 {
            self.now.get()
        }
        fn kick(&self, cpu: usize) {
            self.kicks.borrow_mut().push(cpu);
        }
        fn set_deadline(&self, deadline: u64) {
            self.deadlines.borrow_mut().push(deadline);
        }
    }

    const SLICE: u64 = 1000;

    /// A `cpus`-CPU scheduler with a server on each CPU of `on` (server
    /// `i` on `on[i]`), all made ready from CPU 0.
    fn ready_on(cpus: usize, on: &[usize], m: &HostMachine) -> Scheduler {
        let mut s = Scheduler::new(cpus, SLICE, 0);
        for &cpu in on {
            let i = s.add(cpu);
            s.make_ready(i, 0, m);
        }
        s
    }

    #[test]
    fn round_robin_with_slices() {
        let m = HostMachine::default();
        let mut s = ready_on(1, &[0; 3], &m);
        let first = s.pick(0, &m);
        assert_eq!(first.next, Some(0));
        assert_eq!(first.switched_from, Some(None), "from the idle loop");
        // Within the slice the running server keeps the CPU.
        m.now.set(SLICE - 1);
        assert_eq!(s.pick(0, &m).next, Some(0));
        assert_eq!(s.pick(0, &m).switched_from, None);
        // The slice ends: the timer preempts it, the next one runs.
        m.now.set(SLICE);
        s.timer_fired(0, &m, |_, _| panic!("nobody waits"));
        assert_eq!(s.state(0), State::Ready);
        assert_eq!(
            s.pick(0, &m),
            Pick {
                next: Some(1),
                switched_from: Some(Some(0))
            }
        );
        m.now.set(2 * SLICE);
        s.timer_fired(0, &m, |_, _| {});
        assert_eq!(s.pick(0, &m).next, Some(2));
        m.now.set(3 * SLICE);
        s.timer_fired(0, &m, |_, _| {});
        assert_eq!(s.pick(0, &m).next, Some(0), "back to the first");
    }

    #[test]
    fn a_lone_server_preempted_gets_a_new_slice() {
        let m = HostMachine::default();
        let mut s = ready_on(1, &[0; 1], &m);
        s.pick(0, &m);
        m.now.set(SLICE + 5);
        s.timer_fired(0, &m, |_, _| {});
        let pick = s.pick(0, &m);
        assert_eq!(pick.next, Some(0));
        assert_eq!(pick.switched_from, None, "it stays: nothing to save");
        // No one else is ready: no timer for its slice.
        s.arm_timer(0, None, &m);
        assert!(m.deadlines.borrow().is_empty());
        // Another becomes ready: the slice's end, from the renewal, is armed.
        let other = s.add(0);
        s.make_ready(other, 0, &m);
        s.arm_timer(0, None, &m);
        assert_eq!(*m.deadlines.borrow(), vec![2 * SLICE + 5]);
    }

    #[test]
    fn wait_blocks_and_a_raised_bit_wakes_with_the_bits_waited_for() {
        let m = HostMachine::default();
        let mut s = ready_on(1, &[0; 2], &m);
        assert_eq!(s.pick(0, &m).next, Some(0));
        assert!(s.block_current(0, 0b110, None), "first wait");
        assert_eq!(s.state(0), State::Blocked);
        // A bit it does not wait for stays pending and wakes nobody.
        assert_eq!(s.raise(0, 0b001, 0, &m), None);
        assert_eq!(s.state(0), State::Blocked);
        assert_eq!(s.pick(0, &m).next, Some(1));
        assert_eq!(s.raise(0, 0b010, 0, &m), Some(0b010));
        assert_eq!(s.state(0), State::Ready);
        // The bit it did not wait for is still there for the next wait.
        assert_eq!(s.take_pending(0, 0b111), 0b001);
        assert_eq!(s.take_pending(0, 0b111), 0);
        assert!(m.kicks.borrow().is_empty(), "one CPU: no IPIs");
    }

    #[test]
    fn an_ended_server_is_never_woken_nor_picked() {
        let m = HostMachine::default();
        let mut s = ready_on(1, &[0; 2], &m);
        s.end(1, State::Faulted);
        assert_eq!(s.raise(1, 1, 0, &m), None);
        assert_eq!(s.pick(0, &m).next, Some(0));
        s.end(0, State::Exited(3));
        assert_eq!(s.pick(0, &m).next, None, "the idle loop");
        assert!(s.all_ended());
    }

    #[test]
    fn timeouts_wake_with_timed_out_on_their_own_cpu_only() {
        let m = HostMachine::default();
        let mut s = ready_on(2, &[0, 1], &m);
        let (a, b) = (0, 1);
        assert_eq!(*m.kicks.borrow(), vec![1], "b's CPU is told");
        s.pick(0, &m);
        s.pick(1, &m);
        s.block_current(0, 1, Some(500));
        s.block_current(1, 1, Some(500));
        s.arm_timer(0, None, &m);
        assert_eq!(*m.deadlines.borrow(), vec![500]);
        m.now.set(500);
        let mut woken = Vec::new();
        s.timer_fired(0, &m, |i, result| woken.push((i, result)));
        assert_eq!(woken, vec![(a, Error::TimedOut.to_return())]);
        assert_eq!(s.state(b), State::Blocked, "CPU 1's timer is its own");
    }

    #[test]
    fn the_timer_is_only_moved_earlier() {
        let m = HostMachine::default();
        let mut s = ready_on(1, &[0; 1], &m);
        s.pick(0, &m);
        s.arm_timer(0, Some(900), &m);
        s.arm_timer(0, Some(950), &m);
        s.arm_timer(0, Some(800), &m);
        assert_eq!(*m.deadlines.borrow(), vec![900, 800]);
        // Once it fired, the next one needed is armed again.
        m.now.set(800);
        s.timer_fired(0, &m, |_, _| {});
        s.arm_timer(0, Some(950), &m);
        assert_eq!(*m.deadlines.borrow(), vec![900, 800, 950]);
    }

    #[test]
    fn an_idle_cpu_takes_no_ticks() {
        let m = HostMachine::default();
        let mut s = ready_on(1, &[0; 1], &m);
        s.pick(0, &m);
        s.block_current(0, 1, None);
        assert_eq!(s.pick(0, &m).next, None);
        s.arm_timer(0, None, &m);
        assert!(m.deadlines.borrow().is_empty());
    }

    #[test]
    fn placement_spreads_and_respects_masks() {
        let mut s = Scheduler::new(3, SLICE, 0);
        assert_eq!(s.place(0, false), 0);
        assert_eq!(s.place(0, false), 1);
        assert_eq!(s.place(0, false), 2);
        assert_eq!(s.place(0, false), 0);
        // IRQ owners go to the boot CPU unless told otherwise.
        assert_eq!(s.place(0, true), 0);
        assert_eq!(s.place(0b100, true), 2);
        // CPUs that are not there are ignored; none left means any.
        assert_eq!(s.place(0b1000, false), 1);
        assert_eq!(s.place(0b10, false), 1);
        let mut many = Scheduler::new(64, SLICE, 0);
        assert_eq!(many.place(1 << 63, false), 63);
    }

    #[test]
    fn a_remote_cpu_is_kicked_only_when_its_queue_was_empty() {
        let m = HostMachine::default();
        let mut s = ready_on(2, &[1, 1], &m);
        assert_eq!(
            *m.kicks.borrow(),
            vec![1],
            "once: the second found it queued"
        );
        // Its own CPU needs no IPI.
        let c = s.add(1);
        s.make_ready(c, 1, &m);
        assert_eq!(*m.kicks.borrow(), vec![1]);
    }

    #[test]
    fn a_renewed_server_starts_clean_on_its_cpu() {
        let m = HostMachine::default();
        let mut s = ready_on(1, &[0; 1], &m);
        s.pick(0, &m);
        s.raise(0, 0b100, 0, &m);
        s.block_current(0, 1, Some(7));
        s.end(0, State::Faulted);
        s.renew(0);
        assert_eq!(s.current(0), None);
        assert_eq!(s.state(0), State::Ready);
        assert_eq!(s.take_pending(0, u64::MAX), 0, "nothing carried over");
        s.make_ready(0, 0, &m);
        assert_eq!(s.pick(0, &m).next, Some(0));
        assert!(!s.block_current(0, 1, None), "its start was reported once");
    }

    #[test]
    fn all_started_waits_for_every_live_server() {
        let m = HostMachine::default();
        let mut s = ready_on(1, &[0; 2], &m);
        s.pick(0, &m);
        s.block_current(0, 1, None);
        assert!(!s.all_started());
        s.end(1, State::Exited(0));
        assert!(s.all_started());
    }
}
