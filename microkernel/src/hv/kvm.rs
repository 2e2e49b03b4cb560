//! KVM's paravirtual hypercalls (VMCALL, with KVM's numbers), where the
//! hypervisor offers them in CPUID 0x4000_0001: today the PV send-IPI,
//! which hands the hypervisor the target and vector in one exit where an
//! xAPIC ICR write costs two (the destination, then the command).
//!
//! A hypervisor may advertise a hypercall it does not take from this
//! kernel (one that interprets the kernel may not decode VMCALL at all),
//! so the first one is guarded: a #UD is recovered through the fixup
//! table, an error from KVM is taken at its word, and either turns the PV
//! path off for good, back to the plain ICR.
//!
//! Context: any; no locks.

use core::arch::asm;
use core::sync::atomic::{AtomicU8, Ordering};

use super::exits::count;
use abi::HvOp;

/// KVM_HC_SEND_IPI: `(bitmap_low, bitmap_high, min_apic_id, icr)`; bit
/// `i` of the 128-bit bitmap is APIC ID `min_apic_id + i`. Returns how
/// many CPUs it was delivered to.
const KVM_HC_SEND_IPI: u64 = 10;

/// Whether PV IPIs are used: not tried yet, working, or refused.
const UNTRIED: u8 = 0;
const WORKS: u8 = 1;
const REFUSED: u8 = 2;
static PV_SEND_IPI: AtomicU8 = AtomicU8::new(UNTRIED);

/// One KVM hypercall with up to four arguments; `None` if the CPU raised
/// #UD (no hypervisor took it).
fn hypercall4(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> Option<i64> {
    let ret: u64;
    let ok: u32;
    count(HvOp::Other);
    // SAFETY: VMCALL exits to the hypervisor, which runs hypercall `nr`
    // on these arguments (none of them a guest address) and returns in
    // RAX; where nothing takes it the CPU raises #UD, which the fixup
    // entry beside it turns into a jump to label 3 with `ok` = 0. RBX is
    // LLVM's, so the first argument goes through a scratch register.
    unsafe {
        asm!(
            "xchg {a0}, rbx",
            "xor {ok:e}, {ok:e}",
            "2: vmcall",
            "mov {ok:e}, 1",
            "3:",
            "xchg {a0}, rbx",
            ".pushsection .fixup_table, \"a\"",
            ".balign 8",
            ".quad 2b, 3b",
            ".popsection",
            a0 = inout(reg) a0 => _,
            ok = out(reg) ok,
            inout("rax") nr => ret,
            in("rcx") a1,
            in("rdx") a2,
            in("rsi") a3,
            options(nostack),
        )
    };
    (ok != 0).then_some(ret as i64)
}

/// Send `vector` to the CPU with `apic_id` by hypercall. `false` when the
/// PV path is not available (then the caller writes the ICR): it was
/// refused once, or is refused now.
pub fn send_ipi(apic_id: u32, vector: u8) -> bool {
    if PV_SEND_IPI.load(Ordering::Relaxed) == REFUSED {
        return false;
    }
    const FIXED_PHYSICAL: u64 = 0;
    match hypercall4(
        KVM_HC_SEND_IPI,
        1,
        0,
        u64::from(apic_id),
        FIXED_PHYSICAL | u64::from(vector),
    ) {
        // Exactly the one CPU asked: a VMCALL that did nothing would leave
        // RAX as the call's number.
        Some(1) => {
            if PV_SEND_IPI.swap(WORKS, Ordering::Relaxed) == UNTRIED {
                log::info!("IPIs go by KVM's PV send-IPI hypercall");
            }
            true
        }
        refused => {
            // Only the first answer decides: one that worked before and
            // fails now (a CPU that went away) still goes by ICR this once.
            if PV_SEND_IPI
                .compare_exchange(UNTRIED, REFUSED, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                match refused {
                    None => log::info!(
                        "KVM's PV send-IPI is not taken here (VMCALL raised #UD): \
                         IPIs go by the local APIC"
                    ),
                    Some(answer) => {
                        log::info!("KVM's PV send-IPI answered {answer}: IPIs go by the local APIC")
                    }
                }
            }
            false
        }
    }
}
