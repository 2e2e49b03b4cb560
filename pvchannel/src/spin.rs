//! How long a ring end polls before it sleeps: an adaptive budget, for
//! peers that run at the same time on another CPU.
//!
//! A waiting end that sleeps costs a kernel entry (`wait`) and its peer
//! another (`notify`, the doorbell); across CPUs, with steady traffic, the
//! next item is usually microseconds away. So the end polls the ring for up
//! to its budget first, and its event index stays unset meanwhile, so the
//! peer rings no doorbell (virtio's event index does the rest).
//!
//! The budget adapts as KVM's halt polling does: when an end that polled in
//! vain and slept is woken within the longest budget, a longer poll would
//! have spared the sleep, so the budget doubles; when it slept longer, the
//! peer was idle and polling only burned the CPU, so it halves, but not
//! below an eighth of the longest: where a wake-up itself takes longer
//! than the longest budget (a kernel the hypervisor interprets: about a
//! millisecond), every sleep looks long, and a budget halved to nothing
//! would make every wait a sleep. A peer that shares the CPU (and cannot
//! run while this end spins) gets no budget at all ([`SpinBudget::off`]).

/// The shortest budget, in clock ticks, once polling is on (see also
/// [`SpinBudget::floor`]).
pub const MIN_TICKS: u64 = 256;

/// The polling budget of one ring end, in ticks of the clock it is given
/// (the TSC in servers).
#[derive(Clone, Copy, Debug)]
pub struct SpinBudget {
    ticks: u64,
    max: u64,
    clock: fn() -> u64,
    /// When the last poll gave up (the end then slept).
    gave_up_at: Option<u64>,
    hits: u64,
    misses: u64,
}

impl Default for SpinBudget {
    fn default() -> Self {
        Self::off()
    }
}

fn no_clock() -> u64 {
    0
}

impl SpinBudget {
    /// Never poll.
    pub const fn off() -> Self {
        Self {
            ticks: 0,
            max: 0,
            clock: no_clock,
            gave_up_at: None,
            hits: 0,
            misses: 0,
        }
    }

    /// Poll for up to `max` ticks of `clock` a wait, starting from the most.
    pub fn up_to(max: u64, clock: fn() -> u64) -> Self {
        Self {
            ticks: max,
            max,
            clock,
            gave_up_at: None,
            hits: 0,
            misses: 0,
        }
    }

    /// The least the budget shrinks to: an eighth of the longest.
    pub const fn floor(&self) -> u64 {
        let eighth = self.max / 8;
        if eighth > MIN_TICKS {
            eighth
        } else {
            MIN_TICKS
        }
    }

    /// The ticks the next wait polls.
    pub const fn ticks(&self) -> u64 {
        self.ticks
    }

    /// Polls that found work, and polls that ended in a sleep.
    pub const fn outcomes(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// The end runs again after a wait: if the last poll gave up, adapt
    /// the budget to how long the sleep was. Call when woken (harmless
    /// at any other time).
    pub fn resumed(&mut self) {
        let Some(gave_up) = self.gave_up_at.take() else {
            return;
        };
        let slept = (self.clock)().wrapping_sub(gave_up);
        let floor = self.floor().min(self.max);
        self.ticks = if slept <= self.max {
            self.ticks.saturating_mul(2).clamp(floor, self.max)
        } else {
            (self.ticks / 2).max(floor)
        };
    }

    /// Poll `ready` until it says so or the budget is spent, with a pause
    /// between looks. `true` when `ready` said so.
    pub fn poll(&mut self, mut ready: impl FnMut() -> bool) -> bool {
        if self.max == 0 {
            return false;
        }
        let start = (self.clock)();
        loop {
            if ready() {
                self.hits += 1;
                return true;
            }
            let now = (self.clock)();
            if now.wrapping_sub(start) >= self.ticks {
                self.misses += 1;
                self.gave_up_at = Some(now);
                return false;
            }
            core::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    std::thread_local! {
        static NOW: Cell<u64> = const { Cell::new(0) };
    }

    /// A clock that moves 100 ticks each time it is read.
    fn ticking() -> u64 {
        NOW.with(|n| {
            n.set(n.get() + 100);
            n.get()
        })
    }

    fn sleep(ticks: u64) {
        NOW.with(|n| n.set(n.get() + ticks));
    }

    #[test]
    fn off_never_polls() {
        let mut budget = SpinBudget::off();
        let mut polled = 0;
        assert!(!budget.poll(|| {
            polled += 1;
            true
        }));
        assert_eq!(polled, 0);
    }

    #[test]
    fn polls_until_the_budget_is_spent() {
        let mut budget = SpinBudget::up_to(1000, ticking);
        let mut looks = 0;
        assert!(!budget.poll(|| {
            looks += 1;
            false
        }));
        assert!((9..=11).contains(&looks), "{looks} looks of 100 ticks each");
        assert!(budget.poll(|| true));
        assert_eq!(budget.outcomes(), (1, 1));
    }

    #[test]
    fn a_short_sleep_grows_the_budget_and_a_long_one_shrinks_it() {
        let mut budget = SpinBudget::up_to(8000, ticking);
        // Long sleeps: the peer was idle; the budget halves down to the floor.
        for _ in 0..10 {
            budget.poll(|| false);
            sleep(1_000_000);
            budget.resumed();
        }
        assert_eq!(budget.ticks(), 1000);
        // Short sleeps: polling a little longer would have caught the work.
        for _ in 0..10 {
            budget.poll(|| false);
            sleep(500);
            budget.resumed();
        }
        assert_eq!(budget.ticks(), 8000);
        // Resuming without a sleep before changes nothing.
        budget.resumed();
        assert_eq!(budget.ticks(), 8000);
    }
}
