//! timer: provides the service `timer` (protocol: `proto::timer`).
//!
//! * **Clock.** Monotonic time is the TSC, in nanoseconds at the rate the
//!   kernel measured at boot (`BootInfo::tsc_hz`: CPUID leaf 0x15 or KVM's
//!   leaf 0x40000010 when offered, else calibrated against the PIT).
//!   Clients can read the same clock themselves (`rdtsc`), so "never
//!   early" is checkable by anyone.
//! * **Sleeps and ticks.** Every client's sleeps and periodic series wait
//!   in one queue ordered by deadline (then by arrival). Expired entries are
//!   answered in that order, each with the timer's wake-up sequence number,
//!   and only once the TSC has reached their deadline: a sleep never ends
//!   early.
//! * **Hardware.** The PIT's channel 0 in one-shot mode on IRQ 0 (see
//!   `pit.rs`), which the apic server routes (on q35 to GSI 2, through the
//!   MADT's override). A deadline further than the PIT's 55 ms reach is
//!   reached in several shots.
//! * **Batching on:** a whole batch of requests is queued first, then the
//!   hardware is programmed once, and only if the earliest deadline moved
//!   before what is already programmed: many clients' deadlines coalesce
//!   into one programming. An optional slack (`timer.slack_us=N` on the
//!   kernel command line, default 0) lets deadlines that close to the first
//!   one share its interrupt: they end up to N us late, never early.
//!   **Batching off:** every request, and every interrupt, programs the
//!   hardware.
//!
//! Prints `timer: serving N client(s)`; exits 0 when every client has hung
//! up, with its counters.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

mod pit;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use ::proto::timer as proto;
use devkit::clock::{rdtsc, tsc_hz};
use devkit::mux::unknown;
use devkit::{Apic, IrqLine, Mux};
use pit::{PIT_HZ, Pit};
use userland::abi::Error;
use userland::{Batching, Completion, Descriptor, OP_HANGUP, println, sys};

userland::entry!(async run);

/// The PIT's IRQ line.
const IRQ_LINE: u32 = 0;

/// Sleeps and periodic series one client may have waiting at once; more
/// are answered `Busy`.
const MAX_WAITERS: usize = 1024;
/// Ticks a second one client's periodic series may ask for together (five
/// series at the shortest period); a series past it is answered `Busy`.
/// One client's demand must not take the timer, or its heap, from the
/// others.
const MAX_TICK_RATE: u64 = 50_000;

/// One client's share of the queue.
#[derive(Clone, Copy, Debug, Default)]
struct Quota {
    waiting: usize,
    tick_rate: u64,
}

/// A sleep or a periodic series, waiting in the queue.
#[derive(Clone, Copy, Debug)]
struct Waiter {
    client: usize,
    cookie: u64,
    /// Period in TSC ticks (0 for a sleep).
    period: u64,
    /// Ticks delivered so far, and how many to deliver (0 = no end).
    ticks: u64,
    count: u64,
}

struct Timer {
    hz: u64,
    pit: Pit,
    batching: Batching,
    slack: u64,
    /// (deadline in TSC, arrival number) -> waiter.
    queue: BTreeMap<(u64, u64), Waiter>,
    /// (client, cookie) -> its queue key, for cancel.
    by_cookie: BTreeMap<(usize, u64), (u64, u64)>,
    /// What each client has waiting, against its quotas.
    quotas: BTreeMap<usize, Quota>,
    /// Requests refused with `Busy` for that quota.
    refused: u64,
    arrivals: u64,
    /// The TSC at which the PIT fires, while a shot is pending.
    programmed: Option<u64>,
    programmings: u64,
    irqs: u64,
    wakeups: u64,
    requests: u64,
}

impl Timer {
    fn now_ns(&self) -> u64 {
        proto::tsc_to_ns(rdtsc(), self.hz)
    }

    /// Queue `w` unless its client already has [`MAX_WAITERS`] waiting:
    /// then the answer is `Busy`, now (one client's demand must not take
    /// the heap every client's sleeps live in).
    fn admit(&mut self, deadline: u64, w: Waiter) -> Option<Completion> {
        let rate = self.tick_rate(w.period);
        let quota = self.quotas.entry(w.client).or_default();
        if quota.waiting >= MAX_WAITERS || quota.tick_rate + rate > MAX_TICK_RATE {
            self.refused += 1;
            return Some(Completion::err(w.cookie, Error::Busy));
        }
        quota.waiting += 1;
        quota.tick_rate += rate;
        self.insert(deadline, w);
        None
    }

    /// Ticks a second a series of `period` TSC ticks asks for (0: a sleep).
    fn tick_rate(&self, period: u64) -> u64 {
        self.hz.checked_div(period).map_or(0, |rate| rate.max(1))
    }

    fn insert(&mut self, deadline: u64, w: Waiter) {
        let key = (deadline, self.arrivals);
        self.arrivals += 1;
        // A cookie reused while its first sleep waits replaces the index
        // entry; the first sleep still ends, it just cannot be cancelled.
        self.by_cookie.insert((w.client, w.cookie), key);
        self.queue.insert(key, w);
    }

    /// One of `client`'s waiters (of `period`) left the queue for good.
    fn ended(&mut self, client: usize, period: u64) {
        let rate = self.tick_rate(period);
        if let Some(quota) = self.quotas.get_mut(&client) {
            quota.waiting = quota.waiting.saturating_sub(1);
            quota.tick_rate = quota.tick_rate.saturating_sub(rate);
        }
    }

    fn remove_client(&mut self, client: usize) {
        self.quotas.remove(&client);
        self.queue.retain(|_, w| w.client != client);
        self.by_cookie.retain(|(c, _), _| *c != client);
    }

    /// Handle one request of `client`; answers due now go to `out`.
    fn handle(&mut self, client: usize, d: &Descriptor, out: &mut Vec<(usize, Completion)>) {
        self.requests += 1;
        let cookie = d.cookie();
        let now = rdtsc();
        let waiter = |period, count| Waiter {
            client,
            cookie,
            period,
            ticks: 0,
            count,
        };
        let answer = match d.opcode() {
            OP_HANGUP => {
                self.remove_client(client);
                return;
            }
            proto::OP_NOW => Completion::ok(cookie, proto::tsc_to_ns(now, self.hz)),
            proto::OP_SLEEP_UNTIL => {
                match self.admit(proto::ns_to_tsc(d.arg(0), self.hz), waiter(0, 1)) {
                    Some(refused) => refused,
                    None => return,
                }
            }
            proto::OP_SLEEP_FOR => {
                let deadline = now.saturating_add(proto::ns_to_tsc(d.arg(0), self.hz));
                match self.admit(deadline, waiter(0, 1)) {
                    Some(refused) => refused,
                    None => return,
                }
            }
            proto::OP_PERIODIC => {
                let period = proto::ns_to_tsc(d.arg(0).max(proto::MIN_PERIOD_NS), self.hz).max(1);
                match self.admit(now.saturating_add(period), waiter(period, d.arg(1))) {
                    Some(refused) => refused,
                    None => return,
                }
            }
            proto::OP_CANCEL => {
                let key = self.by_cookie.remove(&(client, d.arg(0)));
                match key.and_then(|key| self.queue.remove(&key)) {
                    Some(w) => {
                        self.ended(w.client, w.period);
                        let ended =
                            Completion::ok(w.cookie, self.now_ns()).with_aux(proto::AUX_CANCELLED);
                        out.push((client, ended));
                        Completion::ok(cookie, 1)
                    }
                    None => Completion::ok(cookie, 0),
                }
            }
            proto::OP_STATS => match d.arg(0) {
                proto::STAT_PROGRAMMINGS => Completion::ok(cookie, self.programmings),
                proto::STAT_IRQS => Completion::ok(cookie, self.irqs),
                proto::STAT_WAKEUPS => Completion::ok(cookie, self.wakeups),
                proto::STAT_REQUESTS => Completion::ok(cookie, self.requests),
                proto::STAT_PORT_WRITES => Completion::ok(cookie, self.pit.writes),
                _ => Completion::err(cookie, Error::InvalidArgument),
            },
            _ => unknown(d),
        };
        if d.wants_completion() {
            out.push((client, answer));
        }
    }

    /// Answer every waiter whose deadline the TSC has reached, in deadline
    /// order; periodic series go back into the queue.
    fn expire(&mut self, out: &mut Vec<(usize, Completion)>) {
        // One `now` for the whole pass: a series goes back in the queue
        // after it (next deadline past `now`), so each waiter is answered
        // at most once per pass and a pass ends however far behind the
        // timer is (200 series of 100 us once kept a pass going until the
        // answers took the whole heap).
        let now = rdtsc();
        loop {
            let Some((&key, _)) = self.queue.first_key_value() else {
                return;
            };
            if key.0 > now {
                return;
            }
            let Some(mut w) = self.queue.remove(&key) else {
                return;
            };
            let now_ns = proto::tsc_to_ns(now, self.hz);
            let seq = self.wakeups;
            self.wakeups += 1;
            if w.period == 0 {
                self.by_cookie.remove(&(w.client, w.cookie));
                self.ended(w.client, 0);
                out.push((w.client, Completion::ok(w.cookie, now_ns).with_aux(seq)));
                continue;
            }
            w.ticks += 1;
            let last = w.count != 0 && w.ticks >= w.count;
            let aux = if last {
                w.ticks | proto::AUX_LAST_TICK
            } else {
                w.ticks
            };
            out.push((w.client, Completion::ok(w.cookie, now_ns).with_aux(aux)));
            if last {
                self.by_cookie.remove(&(w.client, w.cookie));
                self.ended(w.client, w.period);
            } else {
                // The next tick keeps the series' phase: no drift.
                let next = key.0.saturating_add(w.period).max(now.saturating_add(1));
                self.insert(next, w);
            }
        }
    }

    /// Program the PIT for the earliest deadline (plus the slack). With
    /// `always` (batching off) it is programmed even if a shot at that time
    /// is already pending.
    fn program(&mut self, always: bool) {
        let Some((&(first, _), _)) = self.queue.first_key_value() else {
            return;
        };
        let target = first.saturating_add(self.slack);
        if !always
            && let Some(at) = self.programmed
            && at <= target
        {
            // A shot is pending no later than needed: its interrupt
            // reprograms for what is left.
            return;
        }
        let now = rdtsc();
        let ticks = (u128::from(target.saturating_sub(now)) * u128::from(PIT_HZ))
            .div_ceil(u128::from(self.hz))
            .clamp(1, u128::from(pit::MAX_TICKS)) as u64;
        self.pit.one_shot(ticks);
        self.programmed =
            Some(now + (u128::from(ticks) * u128::from(self.hz) / u128::from(PIT_HZ)) as u64);
        self.programmings += 1;
    }
}

async fn run() -> i32 {
    let hz = tsc_hz();
    if hz == 0 {
        println!("timer: FAIL the kernel gave no TSC rate");
        return 1;
    }
    let pit = match Pit::open() {
        Ok(p) => p,
        Err(e) => {
            println!("timer: FAIL cannot open the PIT's ports: {e}");
            return 1;
        }
    };
    let irq = match IrqLine::bind(IRQ_LINE) {
        Ok(irq) => irq,
        Err(e) => {
            println!("timer: FAIL cannot bind IRQ {IRQ_LINE}: {e}");
            return 1;
        }
    };
    let mut apic = match Apic::open() {
        Ok(a) => a,
        Err(e) => {
            println!("timer: FAIL cannot open the apic service: {e}");
            return 1;
        }
    };
    let gsi = match apic.route(IRQ_LINE).await {
        Ok(gsi) => gsi,
        Err(e) => {
            println!("timer: FAIL the apic server did not route IRQ {IRQ_LINE}: {e}");
            return 1;
        }
    };
    let mut mux = match Mux::new(proto::SERVICE) {
        Ok(m) => m.with_irq(irq),
        Err(e) => {
            println!("timer: FAIL cannot attach the timer channels: {e}");
            return 1;
        }
    };
    let batching = sys::batching();
    let slack_us: u64 = sys::boot_info_cached()
        .and_then(|b| b.arg("slack_us").and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    let mut timer = Timer {
        hz,
        pit,
        batching,
        slack: proto::ns_to_tsc(slack_us.saturating_mul(1000), hz),
        queue: BTreeMap::new(),
        by_cookie: BTreeMap::new(),
        quotas: BTreeMap::new(),
        refused: 0,
        arrivals: 0,
        programmed: None,
        programmings: 0,
        irqs: 0,
        wakeups: 0,
        requests: 0,
    };
    if userland::first_run() {
        println!(
            "timer: PIT one-shot on IRQ {IRQ_LINE} (GSI {gsi}), TSC {} MHz, batching {:?}, slack {slack_us} us; serving {} client(s)",
            hz / 1_000_000,
            batching,
            mux.clients()
        );
    }
    let mut batch = Vec::new();
    let mut out = Vec::new();
    loop {
        if let Some(irq) = mux.irq()
            && irq.take()
        {
            let _ = irq.ack();
            timer.irqs += 1;
            timer.programmed = None;
        }
        batch.clear();
        mux.take_batch(&mut batch);
        for (i, d) in batch.iter() {
            timer.handle(*i, d, &mut out);
            if timer.batching == Batching::Off && d.opcode() != OP_HANGUP {
                timer.program(true);
            }
        }
        timer.expire(&mut out);
        if timer.batching == Batching::Off && timer.programmed.is_none() {
            timer.program(true);
        } else {
            timer.program(false);
        }
        for (i, c) in out.drain(..) {
            mux.reply(i, c);
        }
        if mux.alive() == 0 && timer.queue.is_empty() {
            mux.flush();
            break;
        }
        if batch.is_empty() {
            mux.wait().await;
        }
    }
    println!(
        "timer: done: {} requests, {} wake-ups, {} hardware programmings ({} port writes), {} interrupts",
        timer.requests, timer.wakeups, timer.programmings, timer.pit.writes, timer.irqs
    );
    if let Err(e) = apic.close().await {
        println!("timer: hanging up on apic: {e}");
    }
    0
}
