//! The physical frame allocator: 4 KiB frames from the free ranges computed
//! by `physmem` (which never include the kernel image, the boot structures
//! or the initrd). One bit per frame of every range (`framemap::FrameMap`,
//! host-tested), set while the frame is allocated; the bitmap lives in the
//! first frames of the first free range large enough, reached through the
//! current physical access window. A freed frame can be handed out at once,
//! alone or as part of a contiguous run (channel rings, the heap).
//!
//! Context: any; callers hold the lock with interrupts masked.

use spin::Mutex;

use super::{PAGE_SIZE, phys_to_virt};
use crate::hv;
use microkernel::framemap::{self, FrameMap};
use microkernel::physmem::FreeRanges;

/// The first 4 GiB, which the boot tables map one to one
/// (`boot/src/entry.rs`): until the kernel's own tables are live, the
/// bitmap is reached there.
const BOOT_IDENTITY_END: u64 = 1 << 32;

/// The bitmap's words: `len` of them at physical address `phys`, reached
/// through [`phys_to_virt`] on every access, so that they stay reachable
/// when the kernel's direct map replaces the boot identity map.
struct Bitmap {
    phys: u64,
    len: usize,
}

impl AsRef<[u64]> for Bitmap {
    fn as_ref(&self) -> &[u64] {
        // SAFETY: `init` reserved these frames for the bitmap for good (in
        // the map they describe), they are 8-byte aligned, and both the boot
        // identity map and the direct map cover them; only the allocator,
        // under its lock, touches them.
        unsafe { core::slice::from_raw_parts(phys_to_virt(self.phys).cast(), self.len) }
    }
}

impl AsMut<[u64]> for Bitmap {
    fn as_mut(&mut self) -> &mut [u64] {
        // SAFETY: as for `as_ref`; `&mut self` is the only way to them.
        unsafe { core::slice::from_raw_parts_mut(phys_to_virt(self.phys).cast(), self.len) }
    }
}

static FRAMES: Mutex<Option<FrameMap<Bitmap>>> = Mutex::new(None);

/// Hand the allocator its free ranges. Once, at boot, while the boot tables
/// map the first 4 GiB. Without room for the bitmap, nothing is ever
/// allocated (the heap's allocation then stops the boot).
pub fn init(ranges: FreeRanges) {
    let ranges = ranges.as_slice();
    let words = framemap::words_needed(ranges);
    let frames = (words as u64 * 8).div_ceil(PAGE_SIZE);
    let Some(home) = ranges.iter().find(|r| {
        r.len() >= frames * PAGE_SIZE && r.start + frames * PAGE_SIZE <= BOOT_IDENTITY_END
    }) else {
        log::error!("no free range holds the frame bitmap ({frames} frames)");
        return;
    };
    let bitmap = Bitmap {
        phys: home.start,
        len: words,
    };
    let mut map = match FrameMap::new(ranges, bitmap) {
        Ok(map) => map,
        Err(e) => {
            log::error!("the frame bitmap does not fit: {e:?}");
            return;
        }
    };
    if let Err(e) = map.reserve(home.start, frames) {
        log::error!("cannot keep the frame bitmap's own frames: {e}");
        return;
    }
    *FRAMES.lock() = Some(map);
}

fn with<R>(f: impl FnOnce(&mut FrameMap<Bitmap>) -> R) -> Option<R> {
    hv::interrupts::without(|| FRAMES.lock().as_mut().map(f))
}

/// One zeroed frame.
pub fn alloc_zeroed() -> Option<u64> {
    let frame = with(FrameMap::alloc).flatten()?;
    // SAFETY: the frame is ours and reachable through the current physical
    // access window.
    unsafe { super::zero_page(phys_to_virt(frame)) };
    Some(frame)
}

/// `count` physically contiguous frames, not zeroed (channel rings, the
/// heap). None for `count == 0`.
pub fn alloc_contiguous(count: u64) -> Option<u64> {
    with(|map| map.alloc_contiguous(count)).flatten()
}

/// Give a frame back. A frame that is not allocated (a double free) or not
/// the allocator's is refused with an error in the log; the allocator's
/// state does not change.
pub fn free(frame: u64) {
    if let Some(Err(e)) = with(|map| map.free(frame)) {
        log::error!("frame allocator: free refused: {e}");
    }
}

/// (total, in use) frames; the bitmap's own frames count as in use.
pub fn usage() -> (u64, u64) {
    with(|map| (map.total(), map.in_use())).unwrap_or((0, 0))
}
