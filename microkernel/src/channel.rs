//! A channel's bookkeeping: its two ends, its generations, and which
//! generation's region each end has mapped; from that, which regions can
//! be freed. The kernel's `channels` module makes, maps and frees the
//! regions themselves; this decides which, and is host-tested.
//!
//! A channel is mapped at the same address in both of its servers. When
//! one end is restarted the channel moves to a new generation (a fresh
//! region), while the surviving end keeps the old one until it
//! reconnects. A region is freed when no end maps it any more and it is
//! not the current generation of a channel that still has a live end.
//!
//! Context: any; allocates.

use alloc::vec::Vec;

use abi::layout::{self, PAGE_SIZE};

/// Where channel `index` (a system-wide index) is mapped.
pub fn channel_base(index: usize) -> u64 {
    layout::CHANNELS_BASE + index as u64 * layout::CHANNEL_STRIDE
}

/// One generation's ring memory: `pages` contiguous frames from `phys`.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub generation: u32,
    pub phys: u64,
    pub pages: u64,
}

/// Index of an end in [`Channel::mapped`].
fn side(provider: bool) -> usize {
    usize::from(provider)
}

/// A channel between a provider and a client (`None`: the kernel's log).
pub struct Channel {
    pub base: u64,
    pub len: u64,
    pub service: [u8; abi::NAME_LEN],
    pub provider: usize,
    /// `None` for the kernel's own log channel.
    pub client: Option<usize>,
    pub ring_slots: u32,
    /// `notify` calls from the client, and from the provider.
    doorbells: [u64; 2],
    /// The current generation: 0 at boot, one more per restart of an end.
    pub generation: u32,
    /// Regions still mapped by an end, the current one among them.
    regions: Vec<Region>,
    /// The generation each end has mapped (client, provider); `None` once
    /// that end's server has ended.
    mapped: [Option<u32>; 2],
}

impl Channel {
    /// A channel whose generation-0 region is `region`, mapped by both
    /// ends (the kernel's log channel: by the provider and the kernel).
    pub fn new(
        index: usize,
        region: Region,
        provider: usize,
        client: Option<usize>,
        service: [u8; abi::NAME_LEN],
        ring_slots: u32,
    ) -> Self {
        Self {
            base: channel_base(index),
            len: region.pages * PAGE_SIZE,
            service,
            provider,
            client,
            ring_slots,
            doorbells: [0; 2],
            generation: region.generation,
            regions: alloc::vec![region],
            mapped: [Some(region.generation); 2],
        }
    }

    /// A `notify` from the `provider` (or client) end.
    #[inline]
    pub fn count_doorbell(&mut self, provider: bool) {
        self.doorbells[side(provider)] += 1;
    }

    /// `notify` calls from the `provider` (or client) end so far.
    #[inline]
    pub fn doorbells(&self, provider: bool) -> u64 {
        self.doorbells[side(provider)]
    }

    /// The current generation's region.
    #[inline]
    pub fn current(&self) -> Option<&Region> {
        self.regions
            .iter()
            .find(|r| r.generation == self.generation)
    }

    /// The generation the `provider` (or client) end has mapped.
    #[inline]
    pub fn mapped(&self, provider: bool) -> Option<u32> {
        self.mapped[side(provider)]
    }

    /// Start a new generation with `region` (made by the kernel's `channels::new_region` with
    /// `self.generation + 1`); no end has it mapped yet.
    pub fn push_generation(&mut self, region: Region) {
        self.generation = region.generation;
        self.regions.push(region);
    }

    /// Record that the `provider` (or client) end now maps `generation`,
    /// or nothing (its server ended); `free` gets each region left unused,
    /// which the channel forgets.
    pub fn set_mapped(
        &mut self,
        provider: bool,
        generation: Option<u32>,
        mut free: impl FnMut(&Region),
    ) {
        self.mapped[side(provider)] = generation;
        let any_end = self.mapped.iter().any(Option::is_some);
        let (current, mapped) = (self.generation, self.mapped);
        self.regions.retain(|r| {
            let keep = mapped.contains(&Some(r.generation)) || (any_end && r.generation == current);
            if !keep {
                free(r);
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn region(generation: u32) -> Region {
        Region {
            generation,
            phys: 0x10_0000 * u64::from(generation + 1),
            pages: 2,
        }
    }

    fn channel() -> Channel {
        Channel::new(3, region(0), 1, Some(2), [0; abi::NAME_LEN], 64)
    }

    /// `set_mapped`, returning the generations it freed.
    fn set(channel: &mut Channel, provider: bool, generation: Option<u32>) -> Vec<u32> {
        let mut freed = Vec::new();
        channel.set_mapped(provider, generation, |r| freed.push(r.generation));
        freed
    }

    #[test]
    fn a_channel_sits_at_its_slot() {
        let c = channel();
        assert_eq!(c.base, layout::CHANNELS_BASE + 3 * layout::CHANNEL_STRIDE);
        assert_eq!(c.len, 2 * PAGE_SIZE);
        assert_eq!(c.mapped(true), Some(0));
        assert_eq!(c.mapped(false), Some(0));
    }

    #[test]
    fn the_survivor_keeps_the_old_region_until_it_reconnects() {
        let mut c = channel();
        // The provider restarts: generation 1, mapped by its new instance.
        c.push_generation(region(1));
        assert_eq!(set(&mut c, true, Some(1)), vec![]);
        assert_eq!(c.current().map(|r| r.generation), Some(1));
        // The client still maps 0: nothing is freed until it moves.
        assert_eq!(set(&mut c, false, Some(1)), vec![0]);
        assert_eq!(c.mapped(false), Some(1));
    }

    #[test]
    fn the_current_region_outlives_a_dead_end_while_the_other_lives() {
        let mut c = channel();
        c.push_generation(region(1));
        // The restart failed: the provider maps nothing. The client's
        // generation 0 stays, and so does 1, which it may reconnect to.
        assert_eq!(set(&mut c, true, None), vec![]);
        assert!(c.current().is_some());
        // The client goes too: everything is freed.
        let mut freed = set(&mut c, false, None);
        freed.sort_unstable();
        assert_eq!(freed, vec![0, 1]);
        assert!(c.current().is_none());
    }

    #[test]
    fn nothing_is_freed_twice() {
        let mut c = channel();
        assert_eq!(set(&mut c, true, None), vec![]);
        assert_eq!(set(&mut c, false, None), vec![0]);
        assert_eq!(set(&mut c, false, None), vec![]);
    }
}
