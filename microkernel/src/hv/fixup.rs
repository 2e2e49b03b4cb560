//! The kernel's fixup table: instructions allowed to fault in kernel mode,
//! each with the address to resume at. An entry is emitted beside the
//! instruction (`.pushsection .fixup_table`), so the two cannot drift apart;
//! the linker script gathers them between `__fixup_start` and
//! `__fixup_end`. Its users: the probes that may meet a missing MSR or
//! XGETBV ([`read_edx_eax_guarded`]), user copies, and KVM hypercalls.
//!
//! Context: trap context (a kernel fault, before it is reported as fatal).

use super::trap::TrapFrame;

/// The fixup entry for the instruction at local label `2:`, resuming at
/// local label `3:`: a piece of inline-assembly template, written once
/// here beside [`Entry`], whose layout (two quads) it must match.
macro_rules! fixup_entry_2_to_3 {
    () => {
        concat!(
            ".pushsection .fixup_table, \"a\"\n",
            ".balign 8\n",
            ".quad 2b, 3b\n",
            ".popsection",
        )
    };
}
pub(crate) use fixup_entry_2_to_3;

/// Run `$insn`, an instruction that takes ECX and returns EDX:EAX (RDMSR,
/// XGETBV), with a fixup entry beside it: `Some(EDX:EAX)`, or `None` if it
/// faulted and [`recover`] resumed after it. The probes that need this
/// differ only in the instruction, so the entry and the `ok` flag are
/// written once here. Expands to inline assembly: the caller wraps it in
/// `unsafe`, with its own reason why `$insn` may run (or fault) there.
macro_rules! read_edx_eax_guarded {
    ($insn:literal, $ecx:expr) => {{
        let (lo, hi): (u32, u32);
        let ok: u32;
        core::arch::asm!(
            "xor {ok:e}, {ok:e}",
            concat!("2: ", $insn),
            "mov {ok:e}, 1",
            "3:",
            $crate::hv::fixup::fixup_entry_2_to_3!(),
            ok = out(reg) ok,
            in("ecx") $ecx,
            out("eax") lo,
            out("edx") hi,
            options(nostack),
        );
        (ok == 1).then_some((u64::from(hi) << 32) | u64::from(lo))
    }};
}
pub(crate) use read_edx_eax_guarded;

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
