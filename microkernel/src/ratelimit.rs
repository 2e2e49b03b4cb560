//! Rate limits for what the kernel prints on others' behalf or in a loop:
//! a token bucket per server for its `log` lines, and a table of buckets
//! keyed by call site for the kernel's own warnings, so that neither a
//! server logging in a loop nor a warning that causes its own interrupt
//! (one written to COM1 raises the UART's IRQ again) can flood the console
//! or livelock the machine. What is refused is counted, so that the next
//! line admitted can say how much was lost.
//!
//! Pure arithmetic on TSC readings the caller passes in; no locks, no
//! allocation, tested on the host. Context: any (the callers hold their own
//! lock with interrupts masked).

/// How fast a bucket lets lines through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Lines admitted at once after a quiet period (the bucket's size).
    pub burst: u64,
    /// Lines per second admitted in the long run (the refill rate).
    pub per_second: u64,
}

/// Servers' `log` lines: a burst big enough for the longest report a
/// server prints at once (a sleepers report is about 35 lines), then 50
/// lines a second, so that a server printing in a loop gets about 12 KiB/s
/// onto the console instead of all of it.
pub const SERVER_LOG: Rate = Rate {
    burst: 64,
    per_second: 50,
};

/// The kernel's warnings and errors, per call site: a few repeats, then one
/// a second with the count of those suppressed in between.
pub const KERNEL_WARNINGS: Rate = Rate {
    burst: 10,
    per_second: 1,
};

/// A token bucket measured in TSC cycles: each line costs `hz / per_second`
/// cycles of credit, and credit grows with the TSC up to `burst` lines'
/// worth. Keeping credit in cycles rather than in whole tokens makes the
/// refill exact (no rounding away of partial tokens between calls) and needs
/// no division on the hot path beyond the cost of one line.
///
/// The bucket starts full. It does not store its rate: the caller passes
/// the same [`Rate`] every time, so the state stays a plain value the
/// kernel can keep in each server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Unspent credit, in TSC cycles.
    credit: u64,
    /// The TSC at the last refill; `None` until first use (full then).
    last: Option<u64>,
    /// Lines refused or lost since the last [`take_dropped`](Self::take_dropped).
    dropped: u64,
}

impl TokenBucket {
    /// A full bucket with nothing dropped.
    pub const fn new() -> Self {
        Self {
            credit: 0,
            last: None,
            dropped: 0,
        }
    }

    /// Whether one more line may go out at TSC `now` on a `hz` clock; a
    /// refused line is counted as dropped. With `hz` 0 (the TSC rate not
    /// known yet, early in boot) every line is admitted: nothing runs then
    /// that could flood.
    pub fn admit(&mut self, now: u64, hz: u64, rate: Rate) -> bool {
        let cost = hz / rate.per_second.max(1);
        let size = cost.saturating_mul(rate.burst.max(1));
        self.credit = match self.last {
            None => size,
            // A TSC read before the last one (it never should, on one
            // CPU) adds nothing rather than wrapping into a huge credit.
            Some(last) => self
                .credit
                .saturating_add(now.saturating_sub(last))
                .min(size),
        };
        self.last = Some(now.max(self.last.unwrap_or(0)));
        if self.credit >= cost {
            self.credit -= cost;
            true
        } else {
            self.dropped = self.dropped.saturating_add(1);
            false
        }
    }

    /// Count `lines` that were admitted but could not be delivered, so that
    /// the next note includes them.
    pub fn count_dropped(&mut self, lines: u64) {
        self.dropped = self.dropped.saturating_add(lines);
    }

    /// Lines dropped since the last call, and start counting afresh.
    pub fn take_dropped(&mut self) -> u64 {
        core::mem::take(&mut self.dropped)
    }

    /// Lines dropped so far, without resetting.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// What a message that [`SiteLimiter::admit`] lets through should say about
/// those that were not.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Suppressed {
    /// Messages from the same site suppressed since its last one went out.
    pub similar: u64,
    /// Messages from sites whose count was lost from the table (evicted to
    /// make room for another site) since any message last went out.
    pub other: u64,
}

/// One bucket per message site (a key the caller derives from, say, the
/// source file and line), `N` sites at most. A new site takes a free slot,
/// else the least recently seen site's; the evicted site's pending count is
/// not lost but reported as [`Suppressed::other`] by the next message let
/// through.
#[derive(Clone, Copy, Debug)]
pub struct SiteLimiter<const N: usize> {
    sites: [Option<Site>; N],
    /// Count of evicted sites' suppressed messages not reported yet.
    orphaned: u64,
}

#[derive(Clone, Copy, Debug)]
struct Site {
    key: u64,
    bucket: TokenBucket,
    /// TSC of the site's last message, for eviction.
    seen: u64,
}

impl<const N: usize> Default for SiteLimiter<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> SiteLimiter<N> {
    pub const fn new() -> Self {
        Self {
            sites: [None; N],
            orphaned: 0,
        }
    }

    /// Whether a message from site `key` may go out at TSC `now`: `Some`
    /// with what was suppressed before it (and those counts start afresh),
    /// `None` when it is suppressed itself (and counted).
    pub fn admit(&mut self, key: u64, now: u64, hz: u64, rate: Rate) -> Option<Suppressed> {
        let slot = self.slot_for(key, now);
        let site = self.sites[slot].get_or_insert(Site {
            key,
            bucket: TokenBucket::new(),
            seen: now,
        });
        site.seen = now;
        if !site.bucket.admit(now, hz, rate) {
            return None;
        }
        Some(Suppressed {
            similar: site.bucket.take_dropped(),
            other: core::mem::take(&mut self.orphaned),
        })
    }

    /// The slot of `key`, or one emptied for it.
    fn slot_for(&mut self, key: u64, now: u64) -> usize {
        if let Some(i) = self
            .sites
            .iter()
            .position(|s| s.is_some_and(|s| s.key == key))
        {
            return i;
        }
        if let Some(i) = self.sites.iter().position(Option::is_none) {
            return i;
        }
        // Every slot is taken: the site seen longest ago makes room. `now`
        // minus `seen` rather than the smallest `seen`, so that a TSC that
        // never went backwards is all this assumes.
        let oldest = (0..N)
            .max_by_key(|&i| self.sites[i].map_or(0, |s| now.saturating_sub(s.seen)))
            .unwrap_or(0);
        if let Some(evicted) = self.sites[oldest].take() {
            self.orphaned = self.orphaned.saturating_add(evicted.bucket.dropped());
        }
        oldest
    }
}

/// A site key from a source file and line: FNV-1a over the file name, then
/// the line. Equal sites always give equal keys; different ones almost
/// never collide (a collision only shares one bucket between two sites).
pub fn site_key(file: &str, line: u32) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for &b in file.as_bytes().iter().chain(&line.to_le_bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(PRIME);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 GHz TSC: one cycle is one nanosecond.
    const HZ: u64 = 1_000_000_000;
    const MS: u64 = HZ / 1000;
    const RATE: Rate = Rate {
        burst: 4,
        per_second: 10,
    };

    fn admitted(bucket: &mut TokenBucket, now: u64, tries: usize) -> usize {
        (0..tries).filter(|_| bucket.admit(now, HZ, RATE)).count()
    }

    #[test]
    fn a_fresh_bucket_admits_exactly_its_burst() {
        let mut b = TokenBucket::new();
        assert_eq!(admitted(&mut b, 5 * HZ, 100), 4);
        assert_eq!(b.take_dropped(), 96);
        assert_eq!(b.take_dropped(), 0, "taking the count resets it");
    }

    #[test]
    fn credit_refills_with_time_at_the_rate() {
        let mut b = TokenBucket::new();
        let t0 = 7 * HZ;
        assert_eq!(admitted(&mut b, t0, 4), 4);
        // 10 lines a second: one line's credit takes 100 ms.
        assert!(!b.admit(t0 + 99 * MS, HZ, RATE));
        assert!(b.admit(t0 + 100 * MS, HZ, RATE));
        assert!(!b.admit(t0 + 100 * MS, HZ, RATE));
        // Partial credit is kept between calls: 150 ms then 50 ms more.
        assert!(!b.admit(t0 + 150 * MS, HZ, RATE));
        assert!(b.admit(t0 + 200 * MS, HZ, RATE));
        // Over 10 s of steady trying at 1 kHz, about 10 a second get out.
        let mut out = 0;
        for ms in 1..=10_000 {
            out += usize::from(b.admit(t0 + 200 * MS + ms * MS, HZ, RATE));
        }
        assert_eq!(out, 100);
    }

    #[test]
    fn a_long_quiet_period_refills_only_up_to_the_burst() {
        let mut b = TokenBucket::new();
        assert_eq!(admitted(&mut b, 0, 4), 4);
        assert_eq!(admitted(&mut b, 3600 * HZ, 100), 4);
    }

    #[test]
    fn a_tsc_going_backwards_gives_no_credit() {
        let mut b = TokenBucket::new();
        assert_eq!(admitted(&mut b, 10 * HZ, 4), 4);
        assert_eq!(admitted(&mut b, HZ, 10), 0);
        // Nor does the earlier reading become the new reference.
        assert_eq!(admitted(&mut b, 10 * HZ + 50 * MS, 10), 0);
        assert_eq!(admitted(&mut b, 10 * HZ + 100 * MS, 10), 1);
    }

    #[test]
    fn an_unknown_tsc_rate_limits_nothing() {
        let mut b = TokenBucket::new();
        assert_eq!((0..1000).filter(|_| b.admit(0, 0, RATE)).count(), 1000);
        assert_eq!(b.dropped(), 0);
    }

    #[test]
    fn lost_lines_join_the_dropped_count() {
        let mut b = TokenBucket::new();
        assert_eq!(admitted(&mut b, 0, 6), 4);
        b.count_dropped(3);
        assert_eq!(b.take_dropped(), 5);
    }

    #[test]
    fn the_server_rate_passes_a_long_report_and_stops_a_flood() {
        let hz = 2_445_402_000;
        let mut b = TokenBucket::new();
        // A report of 40 lines at once goes out whole.
        assert!((0..40).all(|_| b.admit(hz, hz, SERVER_LOG)));
        // A flood of a million lines over 10 s gets about 50 a second.
        let mut out = 0u64;
        for i in 0..1_000_000u64 {
            out += u64::from(b.admit(hz + i * 10 * hz / 1_000_000, hz, SERVER_LOG));
        }
        assert!((24 + 499..=24 + 501).contains(&out), "{out}");
    }

    #[test]
    fn sites_are_limited_separately_and_report_what_they_suppressed() {
        let mut l = SiteLimiter::<4>::new();
        let (a, b) = (site_key("sched.rs", 305), site_key("sched.rs", 220));
        for _ in 0..4 {
            assert_eq!(l.admit(a, 0, HZ, RATE), Some(Suppressed::default()));
        }
        for _ in 0..1000 {
            assert_eq!(l.admit(a, 0, HZ, RATE), None);
        }
        // Another site is not held back by the first.
        assert_eq!(l.admit(b, 0, HZ, RATE), Some(Suppressed::default()));
        // The first, once refilled, says how many it held back, once.
        let later = 100 * MS;
        assert_eq!(
            l.admit(a, later, HZ, RATE),
            Some(Suppressed {
                similar: 1000,
                other: 0
            })
        );
        assert_eq!(l.admit(a, later, HZ, RATE), None);
        assert_eq!(
            l.admit(a, 2 * later, HZ, RATE),
            Some(Suppressed {
                similar: 1,
                other: 0
            })
        );
    }

    #[test]
    fn an_evicted_sites_count_is_reported_not_lost() {
        let mut l = SiteLimiter::<2>::new();
        let storm = site_key("a.rs", 1);
        for _ in 0..14 {
            l.admit(storm, 0, HZ, RATE);
        }
        // Two newer sites push the storm's slot out.
        assert!(l.admit(site_key("b.rs", 1), MS, HZ, RATE).is_some());
        assert_eq!(
            l.admit(site_key("c.rs", 1), 2 * MS, HZ, RATE),
            Some(Suppressed {
                similar: 0,
                other: 10
            })
        );
        // Reported once.
        assert_eq!(
            l.admit(site_key("c.rs", 1), 2 * MS, HZ, RATE),
            Some(Suppressed::default())
        );
        // The storm's site comes back with a fresh bucket.
        assert_eq!(
            l.admit(storm, 3 * MS, HZ, RATE),
            Some(Suppressed::default())
        );
    }

    #[test]
    fn site_keys_tell_file_and_line_apart() {
        assert_eq!(site_key("sched.rs", 305), site_key("sched.rs", 305));
        assert_ne!(site_key("sched.rs", 305), site_key("sched.rs", 306));
        assert_ne!(site_key("sched.rs", 305), site_key("syscall.rs", 305));
    }
}
