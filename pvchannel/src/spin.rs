//! How long a ring end polls before it sleeps: an adaptive budget, for
//! peers that run at the same time on another CPU.
//!
//! A waiting end that sleeps costs a kernel entry (`wait`) and its peer
//! another (`notify`, the doorbell); across CPUs, with steady traffic, the
//! next item is usually microseconds away. So the end polls the ring for up
//! to `budget` rounds first, and its event index stays unset meanwhile, so
//! the peer rings no doorbell (virtio's event index does the rest). The
//! budget adapts as KVM's halt polling does: it doubles (up to `max`) when
//! polling found work, and halves when the end had to sleep anyway, so a
//! peer that shares the CPU (and cannot run while this end spins) costs
//! little more than `MIN` rounds a sleep. With `max` 0 (one CPU, or a
//! policy that forbids it) an end never spins.

/// The fewest rounds a spinning end polls before sleeping.
pub const MIN_ROUNDS: u32 = 16;

/// The polling budget of one ring end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpinBudget {
    rounds: u32,
    max: u32,
    /// Polls that found work, and those that ended in a sleep.
    hits: u64,
    misses: u64,
}

impl Default for SpinBudget {
    fn default() -> Self {
        Self::off()
    }
}

impl SpinBudget {
    /// Never spin.
    pub const fn off() -> Self {
        Self::up_to(0)
    }

    /// Spin up to `max` rounds a wait, starting from the least.
    pub const fn up_to(max: u32) -> Self {
        Self {
            rounds: if max < MIN_ROUNDS { max } else { MIN_ROUNDS },
            max,
            hits: 0,
            misses: 0,
        }
    }

    /// The rounds the next wait polls.
    pub const fn rounds(&self) -> u32 {
        self.rounds
    }

    /// Polls that found work, and polls that ended in a sleep.
    pub const fn outcomes(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Poll `ready` up to the budget, with a pause between rounds; adapt
    /// the budget to the outcome. `true` when `ready` said so.
    pub fn poll(&mut self, mut ready: impl FnMut() -> bool) -> bool {
        if self.max == 0 {
            return false;
        }
        for _ in 0..self.rounds {
            core::hint::spin_loop();
            if ready() {
                self.hits += 1;
                self.rounds = self.rounds.saturating_mul(2).min(self.max);
                return true;
            }
        }
        self.misses += 1;
        self.rounds = (self.rounds / 2).max(MIN_ROUNDS.min(self.max));
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn success_doubles_up_to_the_cap_and_misses_halve_to_the_floor() {
        let mut budget = SpinBudget::up_to(100);
        assert_eq!(budget.rounds(), MIN_ROUNDS);
        assert!(budget.poll(|| true));
        assert_eq!(budget.rounds(), 32);
        assert!(budget.poll(|| true));
        assert!(budget.poll(|| true));
        assert_eq!(budget.rounds(), 100);
        assert!(!budget.poll(|| false));
        assert_eq!(budget.rounds(), 50);
        for _ in 0..10 {
            budget.poll(|| false);
        }
        assert_eq!(budget.rounds(), MIN_ROUNDS);
        assert_eq!(budget.outcomes(), (3, 11));
    }

    #[test]
    fn work_found_late_in_the_budget_counts() {
        let mut budget = SpinBudget::up_to(64);
        let mut rounds = 0;
        assert!(budget.poll(|| {
            rounds += 1;
            rounds == MIN_ROUNDS
        }));
        // One round short of the budget is a miss.
        let mut rounds = 0;
        let budget_now = budget.rounds();
        assert!(!budget.poll(|| {
            rounds += 1;
            rounds > budget_now
        }));
    }
}
