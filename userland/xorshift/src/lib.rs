//! The workspace's one pseudo-random generator (xorshift64*): the servers
//! that scatter their work (`sleepers`, `testing`'s fuzzers, through
//! `userland::rand`), and the randomized host tests of the kernel's frame
//! map and of the rings (as a dev-dependency). Deterministic for a seed, so
//! that a failing run can be repeated with the seed it printed. Not for
//! anything that must be unpredictable.
//!
//! A crate of its own, with no dependencies, so that the kernel's and
//! pvchannel's tests can use it without depending on the server runtime,
//! and so that there is one copy to trust.
#![no_std]

/// xorshift64*: small, fast, deterministic for a given seed.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator; a zero seed is replaced (xorshift would stay at zero).
    pub const fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// A random element of `items` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_is_deterministic_and_spreads() {
        let mut a = XorShift::new(42);
        let mut b = XorShift::new(42);
        let xs: [u64; 1000] = core::array::from_fn(|_| a.next_u64());
        let ys: [u64; 1000] = core::array::from_fn(|_| b.next_u64());
        assert_eq!(xs, ys);
        // Pinned: the fuzzers' and the servers' runs are repeatable from a
        // seed only while the sequence of each seed stays the same.
        assert_eq!(
            xs[..3],
            [
                0x56ce_4ab7_719b_a3a0,
                0xc841_eb53_ebbb_2dda,
                0xca46_6be0_c998_0276
            ]
        );
        let mut seen = [0u32; 8];
        let mut r = XorShift::new(0);
        for _ in 0..8000 {
            seen[r.below(8) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }
}
