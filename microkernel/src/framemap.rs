//! The frame allocator's bookkeeping: one bit per 4 KiB frame of the free
//! ranges (`physmem::free_ranges`), set while the frame is allocated. Pure
//! logic over a word array the caller provides (the kernel's lives in
//! physical memory, `memory/frames.rs`; the tests' in a `Vec`), tested on
//! the host.
//!
//! Layout: each range has its own run of whole words, in ascending order;
//! the bits past a range's last frame in its last word are set for good,
//! so no scan ever hands them out and no run crosses from one range into
//! the next. Single frames come from a word hint (every word below it is
//! full), 64 frames a word; contiguous runs are first fit inside one
//! range. Freed frames are at once available again, singly or as part of
//! a run: a server that fails to load gives every frame back.

use crate::physmem::{MAX_RANGES, PhysRange};

/// Frame size.
pub const FRAME: u64 = abi::layout::PAGE_SIZE;
const BITS: usize = 64;

/// Why [`FrameMap::free`] or [`FrameMap::reserve`] refused a frame. The map
/// is unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The address is not the start of a frame.
    Misaligned(u64),
    /// The frame is in none of the map's ranges.
    NotInRange(u64),
    /// `free`: the frame is not allocated (a double free).
    NotAllocated(u64),
    /// `reserve`: the frame is already allocated.
    AlreadyAllocated(u64),
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Misaligned(a) => write!(f, "{a:#x} is not frame aligned"),
            Self::NotInRange(a) => write!(f, "frame {a:#x} is in no free range"),
            Self::NotAllocated(a) => write!(f, "frame {a:#x} is not allocated"),
            Self::AlreadyAllocated(a) => write!(f, "frame {a:#x} is already allocated"),
        }
    }
}

/// The storage given to [`FrameMap::new`] holds fewer words than
/// [`words_needed`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageTooSmall {
    pub needed: usize,
    pub given: usize,
}

/// The ranges a map covers: `ranges` shrunk to whole frames, sorted, with
/// overlaps cut off (a frame is never in two ranges), empty ones dropped,
/// at most [`MAX_RANGES`].
fn normalize(ranges: &[PhysRange]) -> ([PhysRange; MAX_RANGES], usize) {
    let mut sorted = [PhysRange::new(0, 0); MAX_RANGES];
    let mut n = 0;
    for r in ranges {
        let start = r.start.checked_add(FRAME - 1).map(|s| s & !(FRAME - 1));
        let end = r.end & !(FRAME - 1);
        if let Some(start) = start
            && start < end
            && n < MAX_RANGES
        {
            sorted[n] = PhysRange::new(start, end);
            n += 1;
        }
    }
    sorted[..n].sort_unstable_by_key(|r| r.start);
    let mut out = [PhysRange::new(0, 0); MAX_RANGES];
    let mut m = 0;
    for r in &sorted[..n] {
        let start = match m {
            0 => r.start,
            _ => r.start.max(out[m - 1].end),
        };
        if start < r.end {
            out[m] = PhysRange::new(start, r.end);
            m += 1;
        }
    }
    (out, m)
}

fn frames_in(range: &PhysRange) -> usize {
    (range.len() / FRAME) as usize
}

/// How many `u64` words of storage a map over `ranges` needs: each range's
/// frames rounded up to whole words.
pub fn words_needed(ranges: &[PhysRange]) -> usize {
    let (ranges, n) = normalize(ranges);
    ranges[..n]
        .iter()
        .map(|r| frames_in(r).div_ceil(BITS))
        .sum()
}

/// Which frames of the free ranges are allocated. `S` is the bitmap's
/// storage, at least [`words_needed`] words.
pub struct FrameMap<S> {
    ranges: [PhysRange; MAX_RANGES],
    count: usize,
    /// The first word of range `i`; `first_word[count]` is the words used.
    first_word: [usize; MAX_RANGES + 1],
    words: S,
    /// Every word below this one is full.
    hint: usize,
    /// The range of word `hint` or one below it (`alloc` moves it up).
    hint_range: usize,
    /// The range `free` found last: where it looks first.
    recent: usize,
    total: u64,
    in_use: u64,
}

impl<S: AsRef<[u64]> + AsMut<[u64]>> FrameMap<S> {
    /// A map of `ranges` with every frame free, kept in `words` (whose
    /// first [`words_needed`] words it overwrites).
    pub fn new(ranges: &[PhysRange], mut words: S) -> Result<Self, StorageTooSmall> {
        let (ranges, count) = normalize(ranges);
        let mut first_word = [0; MAX_RANGES + 1];
        for (i, r) in ranges[..count].iter().enumerate() {
            first_word[i + 1] = first_word[i] + frames_in(r).div_ceil(BITS);
        }
        let needed = first_word[count];
        let storage = words.as_mut();
        if storage.len() < needed {
            return Err(StorageTooSmall {
                needed,
                given: storage.len(),
            });
        }
        storage[..needed].fill(0);
        // The bits past each range's end, in its last word, are never free.
        for (i, r) in ranges[..count].iter().enumerate() {
            let tail = frames_in(r) % BITS;
            if tail != 0 {
                storage[first_word[i + 1] - 1] = !0 << tail;
            }
        }
        let total = ranges[..count].iter().map(|r| r.len() / FRAME).sum();
        Ok(Self {
            ranges,
            count,
            first_word,
            words,
            hint: 0,
            hint_range: 0,
            recent: 0,
            total,
            in_use: 0,
        })
    }

    /// The ranges the map covers, as `normalize` left them.
    pub fn ranges(&self) -> &[PhysRange] {
        &self.ranges[..self.count]
    }

    /// Frames in the map.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Frames allocated.
    pub fn in_use(&self) -> u64 {
        self.in_use
    }

    fn word_count(&self) -> usize {
        self.first_word[self.count]
    }

    /// The frame of bit `bit` of range `range`.
    fn frame_in(&self, range: usize, bit: usize) -> u64 {
        let index = bit - self.first_word[range] * BITS;
        self.ranges[range].start + index as u64 * FRAME
    }

    /// The frame of bit `bit`, a bit of a range (not padding).
    fn frame_of(&self, bit: usize) -> u64 {
        let word = bit / BITS;
        let range = self.first_word[..=self.count].partition_point(|&w| w <= word) - 1;
        self.frame_in(range, bit)
    }

    /// The range holding `frame` and its bit; range `guess` is tried first.
    fn locate(&self, frame: u64, guess: usize) -> Result<(usize, usize), FrameError> {
        if !frame.is_multiple_of(FRAME) {
            return Err(FrameError::Misaligned(frame));
        }
        let ranges = self.ranges();
        let i = match ranges.get(guess) {
            Some(r) if r.start <= frame && frame < r.end => guess,
            _ => ranges.partition_point(|r| r.end <= frame),
        };
        match ranges.get(i) {
            Some(r) if r.start <= frame => Ok((
                i,
                self.first_word[i] * BITS + ((frame - r.start) / FRAME) as usize,
            )),
            _ => Err(FrameError::NotInRange(frame)),
        }
    }

    fn is_set(&self, bit: usize) -> bool {
        self.words.as_ref()[bit / BITS] & (1 << (bit % BITS)) != 0
    }

    /// Set (`true`) or clear `len` bits from `bit`, a word at a time.
    fn fill(&mut self, mut bit: usize, mut len: usize, set: bool) {
        let words = self.words.as_mut();
        while len > 0 {
            let offset = bit % BITS;
            let n = (BITS - offset).min(len);
            let mask = (!0u64 >> (BITS - n)) << offset;
            let word = &mut words[bit / BITS];
            if set {
                *word |= mask;
            } else {
                *word &= !mask;
            }
            bit += n;
            len -= n;
        }
    }

    /// The first bit in `from..limit` equal to `set`, or `limit`.
    fn next(&self, from: usize, limit: usize, set: bool) -> usize {
        let words = self.words.as_ref();
        let mut bit = from;
        while bit < limit {
            let raw = words[bit / BITS];
            let word = (if set { raw } else { !raw }) & (!0 << (bit % BITS));
            if word != 0 {
                let found = bit / BITS * BITS + word.trailing_zeros() as usize;
                return found.min(limit);
            }
            bit = (bit / BITS + 1) * BITS;
        }
        limit
    }

    /// One frame, any.
    pub fn alloc(&mut self) -> Option<u64> {
        let end = self.word_count();
        let words = self.words.as_mut();
        while self.hint < end {
            let word = &mut words[self.hint];
            if *word != u64::MAX {
                let bit = (!*word).trailing_zeros() as usize;
                *word |= 1 << bit;
                self.in_use += 1;
                // `hint < end`: the range after `hint_range` exists.
                while self.first_word[self.hint_range + 1] <= self.hint {
                    self.hint_range += 1;
                }
                return Some(self.frame_in(self.hint_range, self.hint * BITS + bit));
            }
            self.hint += 1;
        }
        None
    }

    /// `count` contiguous frames inside one range: the lowest run that fits
    /// (first fit). None for `count == 0`.
    pub fn alloc_contiguous(&mut self, count: u64) -> Option<u64> {
        let count = usize::try_from(count).ok().filter(|&c| c > 0)?;
        for i in 0..self.count {
            let base = self.first_word[i] * BITS;
            let limit = base + frames_in(&self.ranges[i]);
            let mut from = base;
            while limit - from >= count {
                let start = self.next(from, limit, false);
                if limit - start < count {
                    break;
                }
                let end = self.next(start, start + count, true);
                if end - start == count {
                    self.fill(start, count, true);
                    self.in_use += count as u64;
                    return Some(self.ranges[i].start + (start - base) as u64 * FRAME);
                }
                from = end;
            }
        }
        None
    }

    /// Give `frame` back. A frame that is not allocated (freed twice, or
    /// never handed out) or not in the map is refused and the map is left
    /// as it was.
    pub fn free(&mut self, frame: u64) -> Result<(), FrameError> {
        let (range, bit) = self.locate(frame, self.recent)?;
        self.recent = range;
        let word = &mut self.words.as_mut()[bit / BITS];
        let mask = 1 << (bit % BITS);
        if *word & mask == 0 {
            return Err(FrameError::NotAllocated(frame));
        }
        *word &= !mask;
        self.in_use -= 1;
        if bit / BITS < self.hint {
            self.hint = bit / BITS;
            self.hint_range = range;
        }
        Ok(())
    }

    /// Mark the `count` frames from `start` allocated (the bitmap's own
    /// storage, say): all of them inside one range and free, or nothing
    /// changes.
    pub fn reserve(&mut self, start: u64, count: u64) -> Result<(), FrameError> {
        let Some(count) = usize::try_from(count).ok().filter(|&c| c > 0) else {
            return Ok(());
        };
        let (range, first) = self.locate(start, 0)?;
        let end = start.saturating_add((count as u64).saturating_mul(FRAME));
        if end > self.ranges[range].end {
            return Err(FrameError::NotInRange(self.ranges[range].end));
        }
        let used = self.next(first, first + count, true);
        if used < first + count {
            return Err(FrameError::AlreadyAllocated(self.frame_of(used)));
        }
        self.fill(first, count, true);
        self.in_use += count as u64;
        Ok(())
    }

    /// Whether `frame` is allocated; None when it is in no range.
    pub fn is_allocated(&self, frame: u64) -> Option<bool> {
        self.locate(frame, 0).ok().map(|(_, bit)| self.is_set(bit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;
    use xorshift::XorShift;

    const MIB: u64 = 1 << 20;

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange::new(start, end)
    }

    fn map(ranges: &[PhysRange]) -> FrameMap<Vec<u64>> {
        FrameMap::new(ranges, vec![0xa5a5_a5a5_a5a5_a5a5; words_needed(ranges)]).unwrap()
    }

    /// A machine like the test VM: a hole, an odd-sized range (not a
    /// whole number of words), a one-frame range, the big one.
    fn machine() -> [PhysRange; 4] {
        [
            r(0x1000, 0x9_f000),
            r(0x20_0000, 0x20_1000),
            r(0x30_0000, 0x30_0000 + 100 * FRAME),
            r(0x100_0000, 0x100_0000 + 64 * MIB),
        ]
    }

    fn inside(ranges: &[PhysRange], frame: u64, count: u64) -> bool {
        ranges
            .iter()
            .any(|r| r.start <= frame && frame + count * FRAME <= r.end)
    }

    #[test]
    fn words_cover_every_range_separately() {
        // 158 + 1 + 100 + 16384 frames: 3 + 1 + 2 + 256 words.
        assert_eq!(words_needed(&machine()), 262);
        let m = map(&machine());
        assert_eq!(m.total(), 158 + 1 + 100 + 16384);
        assert_eq!(m.in_use(), 0);
        assert!(matches!(
            FrameMap::new(&machine(), vec![0u64; 261]),
            Err(StorageTooSmall {
                needed: 262,
                given: 261
            })
        ));
    }

    #[test]
    fn free_everything_then_the_biggest_range_is_one_run_again() {
        // Issue 12: a server takes every frame and fails; once it has given
        // them back, a channel ring (or anything contiguous) must fit.
        let ranges = machine();
        let mut m = map(&ranges);
        let mut taken = Vec::new();
        while let Some(frame) = m.alloc() {
            taken.push(frame);
        }
        assert_eq!(taken.len() as u64, m.total());
        assert_eq!(m.in_use(), m.total());
        assert_eq!(m.alloc_contiguous(1), None);
        // Give them back in an order unlike the allocation's.
        let (even, odd): (Vec<_>, Vec<_>) =
            taken.iter().partition(|&&f| (f / FRAME).is_multiple_of(2));
        for frame in odd.iter().rev().chain(even.iter()) {
            m.free(*frame).unwrap();
        }
        assert_eq!(m.in_use(), 0);
        let big = ranges[3];
        assert_eq!(m.alloc_contiguous(big.len() / FRAME), Some(big.start));
        assert_eq!(m.in_use(), big.len() / FRAME);
        // And the smaller ones, each whole.
        for range in &ranges[..3] {
            assert_eq!(m.alloc_contiguous(range.len() / FRAME), Some(range.start));
        }
        assert_eq!(m.in_use(), m.total());
        assert_eq!(m.alloc(), None);
    }

    #[test]
    fn runs_never_cross_a_range_boundary() {
        // Two ranges that touch would make one run if the map joined them.
        let ranges = [r(0x10_0000, 0x10_0000 + 3 * FRAME), r(0x10_3000, 0x10_5000)];
        let mut m = map(&ranges);
        assert_eq!(m.ranges(), &ranges);
        assert_eq!(m.alloc_contiguous(4), None);
        assert_eq!(m.alloc_contiguous(5), None);
        assert_eq!(m.alloc_contiguous(3), Some(0x10_0000));
        assert_eq!(m.alloc_contiguous(2), Some(0x10_3000));
        assert_eq!(m.alloc_contiguous(1), None);

        // A run never takes the padding bits after a short range either.
        let ranges = [r(0, 10 * FRAME), r(MIB, MIB + 64 * FRAME)];
        let mut m = map(&ranges);
        assert_eq!(m.alloc_contiguous(11), Some(MIB));
        assert_eq!(m.alloc_contiguous(10), Some(0));
        assert_eq!(m.alloc_contiguous(54), None);
        assert_eq!(m.alloc_contiguous(53), Some(MIB + 11 * FRAME));
        assert_eq!(m.alloc(), None);
    }

    #[test]
    fn contiguous_runs_are_first_fit() {
        let ranges = [r(0, 8 * FRAME), r(MIB, MIB + 200 * FRAME)];
        let mut m = map(&ranges);
        let frames: Vec<u64> = (0..208).map(|_| m.alloc().unwrap()).collect();
        // Free holes of 2, 5 and 3 frames in the big range, and 5 in the small.
        let hole = |at: u64, n: u64| (0..n).map(move |i| at + i * FRAME);
        for frame in hole(MIB + 10 * FRAME, 2)
            .chain(hole(MIB + 70 * FRAME, 5))
            .chain(hole(MIB + 130 * FRAME, 3))
            .chain(hole(2 * FRAME, 5))
        {
            m.free(frame).unwrap();
        }
        assert_eq!(m.in_use(), 208 - 15);
        // The lowest hole that fits, never a later one.
        assert_eq!(m.alloc_contiguous(3), Some(2 * FRAME));
        assert_eq!(m.alloc_contiguous(3), Some(MIB + 70 * FRAME));
        assert_eq!(m.alloc_contiguous(3), Some(MIB + 130 * FRAME));
        assert_eq!(m.alloc_contiguous(3), None);
        assert_eq!(m.alloc_contiguous(2), Some(5 * FRAME));
        assert_eq!(m.alloc_contiguous(2), Some(MIB + 10 * FRAME));
        assert_eq!(m.alloc_contiguous(2), Some(MIB + 73 * FRAME));
        assert_eq!(m.in_use(), 208);
        // A run across a word boundary: frames 60..70 of the big range.
        for f in 60..70 {
            m.free(MIB + f * FRAME).unwrap();
        }
        assert_eq!(m.alloc_contiguous(10), Some(MIB + 60 * FRAME));
        assert_eq!(m.alloc_contiguous(0), None);
        assert_eq!(m.alloc_contiguous(u64::MAX), None);
        drop(frames);
    }

    #[test]
    fn double_and_foreign_frees_are_refused_and_change_nothing() {
        let ranges = machine();
        let mut m = map(&ranges);
        let a = m.alloc().unwrap();
        let b = m.alloc().unwrap();
        assert_eq!(m.free(a), Ok(()));
        assert_eq!(m.free(a), Err(FrameError::NotAllocated(a)));
        assert_eq!(m.in_use(), 1);
        // Never handed out; between ranges; beyond them; misaligned.
        let never = ranges[3].end - FRAME;
        assert_eq!(m.free(never), Err(FrameError::NotAllocated(never)));
        assert_eq!(m.free(0x10_0000), Err(FrameError::NotInRange(0x10_0000)));
        assert_eq!(m.free(0), Err(FrameError::NotInRange(0)));
        assert_eq!(
            m.free(ranges[3].end),
            Err(FrameError::NotInRange(ranges[3].end))
        );
        assert_eq!(
            m.free(!(FRAME - 1)),
            Err(FrameError::NotInRange(!(FRAME - 1)))
        );
        assert_eq!(m.free(b + 8), Err(FrameError::Misaligned(b + 8)));
        assert_eq!(m.in_use(), 1);
        assert_eq!(m.is_allocated(b), Some(true));
        assert_eq!(m.is_allocated(a), Some(false));
        // The map still works: `a` comes back once, `b` is not handed out.
        assert_eq!(m.alloc(), Some(a));
        let next = m.alloc().unwrap();
        assert_ne!(next, b);
        assert_eq!(m.in_use(), 3);
    }

    #[test]
    fn reserve_marks_a_run_inside_one_range() {
        let ranges = machine();
        let mut m = map(&ranges);
        let big = ranges[3];
        assert_eq!(m.reserve(big.start, 3), Ok(()));
        assert_eq!(m.in_use(), 3);
        assert_eq!(
            m.reserve(big.start + 2 * FRAME, 2),
            Err(FrameError::AlreadyAllocated(big.start + 2 * FRAME))
        );
        // From the end of one range into the next one: refused.
        let tail = ranges[0].end - FRAME;
        assert!(m.reserve(tail, 2).is_err());
        assert_eq!(m.is_allocated(tail), Some(false));
        assert_eq!(m.in_use(), 3);
        assert_eq!(m.alloc_contiguous(1), Some(ranges[0].start));
        assert_eq!(m.alloc_contiguous(16384 - 3), Some(big.start + 3 * FRAME));

        // Ranges that touch, the first a whole word long: their bits are
        // consecutive, but a reservation still may not span both.
        let ranges = [r(0, 64 * FRAME), r(64 * FRAME, 128 * FRAME)];
        let mut m = map(&ranges);
        assert_eq!(
            m.reserve(63 * FRAME, 2),
            Err(FrameError::NotInRange(64 * FRAME))
        );
        assert_eq!(m.in_use(), 0);
        assert_eq!(m.reserve(64 * FRAME, 64), Ok(()));
        assert_eq!(m.alloc_contiguous(65), None);
    }

    #[test]
    fn overlapping_and_unaligned_ranges_are_cut_to_whole_distinct_frames() {
        let m = map(&[r(0x5000, 0x9000), r(0x1001, 0x6000), r(0x8000, 0xa800)]);
        assert_eq!(
            m.ranges(),
            &[r(0x2000, 0x6000), r(0x6000, 0x9000), r(0x9000, 0xa000)]
        );
        assert_eq!(m.total(), 8);
        let mut m = map(&[]);
        assert_eq!(m.total(), 0);
        assert_eq!(m.alloc(), None);
        assert_eq!(m.alloc_contiguous(1), None);
        assert_eq!(m.free(0), Err(FrameError::NotInRange(0)));
    }

    #[test]
    fn random_sequences_agree_with_a_model() {
        let ranges = [
            r(0x1000, 0x1000 + 37 * FRAME),
            r(0x40_0000, 0x40_0000 + 300 * FRAME),
            r(0x80_0000, 0x80_0000 + 64 * FRAME),
            r(0x80_0000 + 64 * FRAME, 0x80_0000 + 65 * FRAME),
        ];
        for seed in 1..=20u64 {
            // Spread the small seeds over all 64 bits.
            let mut rng = XorShift::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut m = map(&ranges);
            let total = m.total() as usize;
            // The model: which frames are allocated, by frame address.
            let mut held: Vec<u64> = Vec::new();
            for _ in 0..4000 {
                match rng.below(8) {
                    0..=2 => {
                        let got = m.alloc();
                        assert_eq!(got.is_some(), held.len() < total, "seed {seed}");
                        if let Some(f) = got {
                            assert!(inside(&ranges, f, 1) && f % FRAME == 0);
                            assert!(!held.contains(&f), "{f:#x} handed out twice");
                            held.push(f);
                        }
                    }
                    3 => {
                        let n = rng.below(70) + 1;
                        if let Some(f) = m.alloc_contiguous(n) {
                            assert!(inside(&ranges, f, n) && f % FRAME == 0);
                            for i in 0..n {
                                let frame = f + i * FRAME;
                                assert!(!held.contains(&frame), "{frame:#x} handed out twice");
                                held.push(frame);
                            }
                            // First fit: no lower free run of `n` in one range.
                            for range in &ranges {
                                let mut s = range.start;
                                while s + n * FRAME <= range.end && s < f {
                                    let free = (0..n).all(|i| !held.contains(&(s + i * FRAME)));
                                    assert!(!free, "seed {seed}: {n} free at {s:#x} below {f:#x}");
                                    s += FRAME;
                                }
                            }
                        }
                    }
                    4..=6 if !held.is_empty() => {
                        let i = rng.below(held.len() as u64) as usize;
                        let f = held.swap_remove(i);
                        assert_eq!(m.free(f), Ok(()));
                    }
                    _ => {
                        // A double free or a foreign frame: refused.
                        let f = rng.below(0x90_0000 / FRAME) * FRAME;
                        if !held.contains(&f) {
                            assert!(m.free(f).is_err(), "seed {seed}: freed {f:#x}");
                        }
                    }
                }
                assert_eq!(m.in_use() as usize, held.len(), "seed {seed}");
            }
            for f in held.drain(..) {
                m.free(f).unwrap();
            }
            assert_eq!(m.in_use(), 0);
            assert_eq!(m.alloc_contiguous(300), Some(0x40_0000));
        }
    }
}
