//! Which physical memory the frame allocator may hand out: the usable regions
//! of the boot memory map minus everything already in use (the low megabyte,
//! the kernel image, the initrd). Pure range arithmetic, tested on the host.

/// A half-open physical range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    pub start: u64,
    pub end: u64,
}

impl PhysRange {
    pub const fn new(start: u64, end: u64) -> Self {
        Self { start, end }
    }
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// At most this many free ranges are kept; more fragments are dropped and
/// counted, never written out of bounds.
pub const MAX_RANGES: usize = 64;

/// A fixed-capacity list of page-aligned free ranges.
#[derive(Clone, Copy, Debug)]
pub struct FreeRanges {
    ranges: [PhysRange; MAX_RANGES],
    count: usize,
    /// Bytes lost because there were more fragments than `MAX_RANGES`.
    pub dropped_bytes: u64,
}

impl FreeRanges {
    pub fn as_slice(&self) -> &[PhysRange] {
        &self.ranges[..self.count]
    }

    pub fn total_bytes(&self) -> u64 {
        self.as_slice().iter().map(PhysRange::len).sum()
    }

    fn push(&mut self, range: PhysRange) {
        if range.is_empty() {
            return;
        }
        if self.count < MAX_RANGES {
            self.ranges[self.count] = range;
            self.count += 1;
        } else {
            self.dropped_bytes += range.len();
        }
    }
}

const PAGE: u64 = abi::layout::PAGE_SIZE;

/// The page-aligned parts of `usable` that overlap none of `reserved`, in
/// ascending order.
pub fn free_ranges(usable: impl Iterator<Item = PhysRange>, reserved: &[PhysRange]) -> FreeRanges {
    let mut out = FreeRanges {
        ranges: [PhysRange::new(0, 0); MAX_RANGES],
        count: 0,
        dropped_bytes: 0,
    };
    for region in usable {
        // Shrink to whole pages inside the region.
        let start = region.start.checked_add(PAGE - 1).map(|s| s & !(PAGE - 1));
        let end = region.end & !(PAGE - 1);
        let Some(start) = start else { continue };
        let mut work = [PhysRange::new(0, 0); MAX_RANGES];
        work[0] = PhysRange::new(start, end);
        let mut n = 1;
        // Cut every reserved span out of the pieces we have so far.
        for cut in reserved {
            let cut = PhysRange::new(
                cut.start & !(PAGE - 1),
                cut.end.saturating_add(PAGE - 1) & !(PAGE - 1),
            );
            let mut next = [PhysRange::new(0, 0); MAX_RANGES];
            let mut m = 0;
            for piece in &work[..n] {
                if !piece.overlaps(&cut) {
                    if m < MAX_RANGES {
                        next[m] = *piece;
                        m += 1;
                    }
                    continue;
                }
                for part in [
                    PhysRange::new(piece.start, cut.start),
                    PhysRange::new(cut.end, piece.end),
                ] {
                    if !part.is_empty()
                        && part.start >= piece.start
                        && part.end <= piece.end
                        && m < MAX_RANGES
                    {
                        next[m] = part;
                        m += 1;
                    }
                }
            }
            work = next;
            n = m;
        }
        for piece in &work[..n] {
            out.push(*piece);
        }
    }
    out.ranges[..out.count].sort_unstable_by_key(|r| r.start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange::new(start, end)
    }

    #[test]
    fn reserved_spans_are_never_free() {
        let usable = [r(0, 0x9fc00), r(0x10_0000, 0x800_0000)];
        let kernel = r(0x10_0000, 0x34_5678);
        let initrd = r(0x700_0000, 0x700_1001);
        let low = r(0, 0x10_0000);
        let free = free_ranges(usable.into_iter(), &[low, kernel, initrd]);
        assert_eq!(
            free.as_slice(),
            &[r(0x34_6000, 0x700_0000), r(0x700_2000, 0x800_0000)]
        );
        for range in free.as_slice() {
            for reserved in [low, kernel, initrd] {
                assert!(
                    !range.overlaps(&reserved),
                    "{range:?} overlaps {reserved:?}"
                );
            }
        }
    }

    #[test]
    fn unaligned_regions_shrink_to_whole_pages() {
        let free = free_ranges([r(0x1001, 0x5fff)].into_iter(), &[]);
        assert_eq!(free.as_slice(), &[r(0x2000, 0x5000)]);
        let free = free_ranges(
            [r(0x1001, 0x1fff), r(u64::MAX - 10, u64::MAX)].into_iter(),
            &[],
        );
        assert!(free.as_slice().is_empty());
    }

    #[test]
    fn a_reserved_span_covering_everything_leaves_nothing() {
        let free = free_ranges([r(0x1000, 0x9000)].into_iter(), &[r(0, u64::MAX)]);
        assert_eq!(free.total_bytes(), 0);
    }

    #[test]
    fn output_is_sorted() {
        let free = free_ranges([r(0x9000, 0xa000), r(0x1000, 0x2000)].into_iter(), &[]);
        assert_eq!(free.as_slice(), &[r(0x1000, 0x2000), r(0x9000, 0xa000)]);
    }
}
