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
//! This module makes, maps and frees the regions; which regions a channel
//! keeps is `microkernel::channel` (host-tested).
//!
//! Context: trap context or boot, interrupts masked; allocates.

use abi::layout;
use pvchannel::{Completion, Descriptor};
use x86_64::structures::paging::PageTableFlags as Flags;

use crate::memory::paging::AddressSpace;
use crate::memory::{PAGE_SIZE, frames, phys_to_virt};
pub use microkernel::channel::{Channel, Region, channel_base};

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

/// Record which generation the `provider` (or client) end of `channel`
/// now maps, or nothing ([`Channel::set_mapped`]), and give back the
/// frames of every region that leaves unused.
pub fn set_mapped(channel: &mut Channel, provider: bool, generation: Option<u32>) {
    channel.set_mapped(provider, generation, free_region);
}

/// Give `region`'s frames back (a generation no end maps any more).
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
