//! Channels: the shared ring regions between two servers (or between the
//! console server and the kernel's log), and their generations.
//!
//! A channel is mapped at the same address in both of its servers. When
//! one end is restarted, the channel gets a new *generation*: a freshly
//! formatted region, mapped into the new instance at once. The surviving
//! end keeps the old region until it calls `channel_reconnect`, so that
//! what the dead peer published (completions, consumer indices) can still
//! be read, and so that a write it makes before it notices lands in a ring
//! nobody serves rather than in the new one. A region is freed when no end
//! maps it any more and it is not the current generation of a channel
//! that still has a live end.
//!
//! Context: trap context or boot, interrupts masked; allocates.

use alloc::vec::Vec;

use abi::layout;
use pvchannel::{Completion, Descriptor};
use x86_64::structures::paging::PageTableFlags as Flags;

use crate::memory::paging::AddressSpace;
use crate::memory::{PAGE_SIZE, frames, phys_to_virt};

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
    pub doorbells: [u64; 2],
    /// The current generation: 0 at boot, one more per restart of an end.
    pub generation: u32,
    /// Regions still mapped by an end, the current one among them.
    regions: Vec<Region>,
    /// The generation each end has mapped (client, provider); `None` once
    /// that end's server has ended.
    mapped: [Option<u32>; 2],
}

/// A region of `slots`-slot rings, zeroed and formatted as a duplex, and
/// the duplex itself (the kernel uses it for its own log channel).
pub fn new_region(
    slots: u32,
    generation: u32,
) -> Result<(Region, pvchannel::Duplex<Descriptor, Completion>), &'static str> {
    let bytes =
        pvchannel::duplex_bytes::<Descriptor, Completion>(slots, slots).ok_or("bad ring size")?;
    let len = (bytes as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    if len > layout::CHANNEL_STRIDE {
        return Err("ring too large");
    }
    let pages = len / PAGE_SIZE;
    let phys = frames::alloc_contiguous(pages).ok_or("out of memory")?;
    let mem = phys_to_virt(phys);
    // SAFETY: the frames are fresh and contiguous, reached through the
    // direct map; nobody else sees them until they are mapped. Zeroed a
    // page at a time by quadwords (`zero_page`): where PVM interprets the
    // kernel, `write_bytes` here cost about 30 ms a channel.
    let formatted = unsafe {
        for page in 0..pages {
            crate::memory::zero_page(mem.add((page * PAGE_SIZE) as usize));
        }
        pvchannel::init_duplex::<Descriptor, Completion>(mem, len as usize, slots, slots)
    };
    let region = Region {
        generation,
        phys,
        pages,
    };
    match formatted {
        Ok(duplex) => Ok((region, duplex)),
        Err(_) => {
            free_region(&region);
            Err("ring layout refused")
        }
    }
}

fn free_region(region: &Region) {
    for page in 0..region.pages {
        frames::free(region.phys + page * PAGE_SIZE);
    }
}

/// Map `region` at `base` in `space`, replacing what was there (a
/// previous generation), and flush those pages if `space` is live.
pub fn map_region(
    space: &mut AddressSpace,
    base: u64,
    region: &Region,
) -> Result<(), &'static str> {
    for page in 0..region.pages {
        let virt = base + page * PAGE_SIZE;
        space.unmap(virt);
        space
            .map(
                virt,
                region.phys + page * PAGE_SIZE,
                Flags::USER_ACCESSIBLE | Flags::WRITABLE | Flags::NO_EXECUTE,
            )
            .map_err(|_| "cannot map the ring")?;
    }
    Ok(())
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

    /// The current generation's region.
    pub fn current(&self) -> Option<&Region> {
        self.regions
            .iter()
            .find(|r| r.generation == self.generation)
    }

    /// The generation the `provider` (or client) end has mapped.
    pub fn mapped(&self, provider: bool) -> Option<u32> {
        self.mapped[side(provider)]
    }

    /// Start a new generation with `region` (made by [`new_region`] with
    /// `self.generation + 1`); no end has it mapped yet.
    pub fn push_generation(&mut self, region: Region) {
        self.generation = region.generation;
        self.regions.push(region);
    }

    /// Record that the `provider` (or client) end now maps `generation`,
    /// or nothing (its server ended); free the regions left unused.
    pub fn set_mapped(&mut self, provider: bool, generation: Option<u32>) {
        self.mapped[side(provider)] = generation;
        let any_end = self.mapped.iter().any(Option::is_some);
        let (current, mapped) = (self.generation, self.mapped);
        self.regions.retain(|r| {
            let keep = mapped.contains(&Some(r.generation)) || (any_end && r.generation == current);
            if !keep {
                free_region(r);
            }
            keep
        });
    }
}
