//! The kernel's fixup table: instructions allowed to fault in kernel mode,
//! each with the address to resume at. An entry is emitted beside the
//! instruction (`.pushsection .fixup_table`), so the two cannot drift apart;
//! the linker script gathers them between `__fixup_start` and
//! `__fixup_end`. Today one user: the guarded MSR read that probes a
//! hypervisor's interface.
//!
//! Context: trap context (a kernel fault, before it is reported as fatal).

use super::trap::TrapFrame;

#[repr(C)]
struct Entry {
    faulting: u64,
    resume: u64,
}

unsafe extern "C" {
    static __fixup_start: Entry;
    static __fixup_end: Entry;
}

fn entries() -> &'static [Entry] {
    // SAFETY: the linker script places only `Entry` pairs (two .quad each,
    // 8-byte aligned) between these symbols, in read-only data.
    unsafe {
        let start = &__fixup_start as *const Entry;
        let end = &__fixup_end as *const Entry;
        core::slice::from_raw_parts(start, end.offset_from(start) as usize)
    }
}

/// If the kernel fault in `frame` is one the table expects, point the frame
/// at its resume address and say so.
pub fn recover(frame: &mut TrapFrame) -> bool {
    match entries().iter().find(|e| e.faulting == frame.rip) {
        Some(entry) => {
            frame.rip = entry.resume;
            true
        }
        None => false,
    }
}
