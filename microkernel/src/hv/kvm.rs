//! KVM's paravirtual interfaces beyond PV EOI (`lapic`), where the
//! hypervisor offers them in CPUID 0x4000_0001:
//! * the PV send-IPI hypercall (VMCALL, KVM's numbers), which hands the
//!   hypervisor the target and vector in one exit where an xAPIC ICR
//!   write costs two (the destination, then the command);
//! * the PV TLB flush: each CPU shares a steal-time record with KVM, which
//!   marks it while the vCPU is preempted. A shootdown does not interrupt
//!   (and wait for) a preempted CPU: it asks KVM, in that record, to flush
//!   the CPU's TLB before it runs again, as Linux's `kvm_flush_tlb_multi`.
//!
//! A hypervisor may advertise a hypercall it does not take from this
//! kernel (one that interprets the kernel may not decode VMCALL at all),
//! so the first one is guarded: a #UD is recovered through the fixup
//! table, an error from KVM is taken at its word, and either turns the PV
//! path off for good, back to the plain ICR.
//!
//! Context: any; no locks.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use super::exits::count;
use super::fixup::fixup_entry_2_to_3;
use super::smp::MAX_CPUS;
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
            fixup_entry_2_to_3!(),
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

/// MSR_KVM_STEAL_TIME: the steal-time record's physical address, 64-byte
/// aligned, with bit 0 set to enable it.
const MSR_KVM_STEAL_TIME: u32 = 0x4b56_4d03;
/// `preempted` bits: KVM set it when it put the vCPU aside; the guest
/// adds the flush, which KVM honours before the vCPU runs again.
const PREEMPTED: u8 = 1;
const FLUSH_TLB: u8 = 2;

/// KVM's `struct kvm_steal_time`, one per CPU, written by KVM.
#[repr(C, align(64))]
struct StealTime {
    steal: AtomicU64,
    version: AtomicU32,
    flags: AtomicU32,
    preempted: AtomicU8,
    _pad: [u8; 47],
}

static STEAL_TIME: [StealTime; MAX_CPUS] = [const {
    StealTime {
        steal: AtomicU64::new(0),
        version: AtomicU32::new(0),
        flags: AtomicU32::new(0),
        preempted: AtomicU8::new(0),
        _pad: [0; 47],
    }
}; MAX_CPUS];
/// Where [`STEAL_TIME`] is in physical memory; 0 while PV TLB flush is off.
static STEAL_TIME_PHYS: AtomicU64 = AtomicU64::new(0);
/// Said once, the first time a shootdown left a CPU to KVM.
static PV_FLUSH_SEEN: AtomicBool = AtomicBool::new(false);

/// On the boot CPU, when KVM offers PV TLB flush (and steal time, which
/// carries it): share CPU 0's record. `image_phys` turns a kernel image
/// address into a physical one.
pub fn init_pv_tlb_flush(image_phys: impl Fn(u64) -> u64) {
    let records = image_phys(STEAL_TIME.as_ptr() as u64);
    STEAL_TIME_PHYS.store(records, Ordering::Relaxed);
    init_this_cpu(0);
}

/// Whether shootdowns leave preempted CPUs to KVM.
pub fn pv_tlb_flush_enabled() -> bool {
    STEAL_TIME_PHYS.load(Ordering::Relaxed) != 0
}

/// Share CPU `cpu`'s record with KVM, if PV TLB flush is on.
pub fn init_this_cpu(cpu: usize) {
    let records = STEAL_TIME_PHYS.load(Ordering::Relaxed);
    if records == 0 {
        return;
    }
    let record = records + (cpu * core::mem::size_of::<StealTime>()) as u64;
    // SAFETY: KVM offers steal time (checked by the caller of
    // `init_pv_tlb_flush`); the record is this CPU's, 64-byte aligned, in
    // the kernel image, and nothing else writes it.
    unsafe { super::msr::write(MSR_KVM_STEAL_TIME, record | 1) };
}

/// Of `cpus` (a bit per CPU), those KVM has preempted and will flush
/// before they run again, now asked to: a shootdown need not interrupt
/// them.
pub fn flushed_by_kvm(cpus: u64) -> u64 {
    if STEAL_TIME_PHYS.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    let mut left = 0;
    for (cpu, record) in STEAL_TIME.iter().enumerate().take(64) {
        if cpus & (1 << cpu) == 0 {
            continue;
        }
        let state = record.preempted.load(Ordering::Acquire);
        if state & PREEMPTED != 0
            && record
                .preempted
                .compare_exchange(
                    state,
                    state | FLUSH_TLB,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            left |= 1 << cpu;
        }
    }
    if left != 0 && !PV_FLUSH_SEEN.swap(true, Ordering::Relaxed) {
        log::info!("a TLB shootdown left a preempted CPU to KVM's PV TLB flush");
    }
    left
}
