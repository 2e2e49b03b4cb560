//! Restart intensity: the rule that decides whether a server that ended is
//! started again. As an OTP supervisor counts restarts within a period and
//! gives up past its limit, a server may be restarted at most `limit`
//! times within any window of `period` (in TSC cycles); the next end
//! within that window leaves it down, so a server that faults at every
//! start cannot keep the machine busy reloading it.
//!
//! Context: any; allocates only when a restart is recorded.

use alloc::collections::VecDeque;

/// The restart times of one server within its window.
#[derive(Clone, Debug)]
pub struct Intensity {
    limit: u32,
    period: u64,
    /// TSC values of the restarts still inside the window, oldest first.
    recent: VecDeque<u64>,
}

impl Intensity {
    /// At most `limit` restarts within any `period` cycles.
    pub fn new(limit: u32, period: u64) -> Self {
        Self {
            limit,
            period: period.max(1),
            recent: VecDeque::new(),
        }
    }

    /// May the server be restarted at time `now`? If so the restart is
    /// recorded. Restarts older than the window are forgotten first.
    pub fn allow(&mut self, now: u64) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= self.period)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.limit as usize {
            return false;
        }
        if self.recent.try_reserve(1).is_err() {
            return false;
        }
        self.recent.push_back(now);
        true
    }

    /// Restarts within the window as of the last [`allow`](Self::allow).
    pub fn recent(&self) -> usize {
        self.recent.len()
    }

    /// The limit.
    pub fn limit(&self) -> u32 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_limit_within_a_window_then_refuses() {
        let mut i = Intensity::new(3, 100);
        assert!(i.allow(0));
        assert!(i.allow(10));
        assert!(i.allow(20));
        assert!(!i.allow(30), "a fourth restart within 100 cycles");
        assert!(!i.allow(99));
        assert_eq!(i.recent(), 3);
    }

    #[test]
    fn restarts_leave_the_window_as_time_passes() {
        let mut i = Intensity::new(2, 100);
        assert!(i.allow(0));
        assert!(i.allow(50));
        assert!(!i.allow(99));
        // The restart at 0 is 100 cycles old: out of the window.
        assert!(i.allow(100));
        assert!(!i.allow(149));
        assert!(i.allow(150));
    }

    #[test]
    fn a_zero_limit_never_restarts() {
        let mut i = Intensity::new(0, 100);
        assert!(!i.allow(0));
        assert!(!i.allow(1_000_000));
    }

    #[test]
    fn time_going_backwards_does_not_underflow() {
        let mut i = Intensity::new(1, 100);
        assert!(i.allow(500));
        assert!(!i.allow(400));
    }
}
