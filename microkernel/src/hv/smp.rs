//! Several CPUs: which one is running this code, starting the others
//! (INIT and STARTUP IPIs through the local APIC, a real-mode trampoline in
//! the low megabyte), and the per-CPU mailboxes other CPUs write to: a TLB
//! shootdown to take part in, ends of interrupt owed.
//!
//! Which CPU this is comes from the stack pointer, not from GS or an APIC
//! read: every kernel stack but the boot CPU's is a `KernelStack` slot, and
//! each slot is registered with the CPU it serves ([`register_stack`]);
//! servers never move between CPUs, so a server's stack always serves one.
//! GS cannot be trusted on the pvm backend (no SWAPGS on entry, and a
//! server may load its own GS), and reading the APIC ID is an exit there.
//!
//! Context: any; nothing here blocks except [`start_cpus`] (boot) and
//! [`shootdown`] (which spins until every CPU asked has flushed).

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use x86_64::structures::paging::PageTableFlags as Flags;

use super::{lapic, rdtsc};

/// The most CPUs the kernel runs on; more are left halted, with a warning.
pub const MAX_CPUS: usize = 16;
/// The CPU that boots, takes the device interrupts and owns their ends of
/// interrupt.
pub const BOOT_CPU: usize = 0;

/// The vector of the kernel's inter-processor interrupt: "look at your
/// mailbox" (a wake-up, a TLB shootdown, ends of interrupt owed). Above
/// every device vector, so that an owed EOI is never stuck behind the
/// device interrupt it ends; below the timer's, so that an IPI in service
/// never holds the timer back (the pvm backend relies on the timer to
/// bring in what it deferred).
pub const IPI_VECTOR: u8 = 0xE1;

/// Kernel stack slots this table can register ([`register_stack`]).
pub const MAX_STACK_SLOTS: usize = 4096;

static ONLINE: AtomicUsize = AtomicUsize::new(1);
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static STACK_CPU: [AtomicU8; MAX_STACK_SLOTS] = [const { AtomicU8::new(0) }; MAX_STACK_SLOTS];
static STACKS_BASE: AtomicU64 = AtomicU64::new(0);
static STACK_SLOT_SIZE: AtomicU64 = AtomicU64::new(u64::MAX);

/// Tell [`this_cpu`] where the kernel stack slots are.
pub fn set_stack_region(base: u64, slot_size: u64) {
    STACKS_BASE.store(base, Ordering::Relaxed);
    STACK_SLOT_SIZE.store(slot_size, Ordering::Relaxed);
}

/// Record that stack slot `slot` serves `cpu`.
pub fn register_stack(slot: usize, cpu: usize) {
    STACK_CPU[slot].store(cpu as u8, Ordering::Relaxed);
}

/// The CPU running this code.
#[inline]
pub fn this_cpu() -> usize {
    let rsp: u64;
    // SAFETY: reads the stack pointer; no memory, no side effects.
    unsafe { asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    let offset = rsp.wrapping_sub(STACKS_BASE.load(Ordering::Relaxed));
    let slot = offset / STACK_SLOT_SIZE.load(Ordering::Relaxed);
    match STACK_CPU.get(slot as usize) {
        Some(cpu) => usize::from(cpu.load(Ordering::Relaxed)),
        // The boot CPU's stacks are in the kernel image.
        None => BOOT_CPU,
    }
}

/// How many CPUs run the kernel.
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// CPU `cpu`'s local APIC ID.
pub fn apic_id(cpu: usize) -> u32 {
    APIC_IDS[cpu].load(Ordering::Relaxed)
}

/// Interrupt `cpu` with [`IPI_VECTOR`] (through the backend: a hypervisor
/// may offer a cheaper way than the ICR).
pub fn kick(cpu: usize) {
    IPIS_SENT.fetch_add(1, Ordering::Relaxed);
    super::backend().send_ipi(apic_id(cpu), IPI_VECTOR);
}

static IPIS_SENT: AtomicU64 = AtomicU64::new(0);

/// How many IPIs [`kick`] sent.
pub fn ipis_sent() -> u64 {
    IPIS_SENT.load(Ordering::Relaxed)
}

// ----- Mailboxes -----

/// Ends of interrupt other CPUs owe the boot CPU's local APIC (a device
/// interrupt is ended by its owner's `irq_ack`, which may run elsewhere).
static OWED_EOIS: AtomicU32 = AtomicU32::new(0);

/// Have the boot CPU issue `count` ends of interrupt.
pub fn owe_eois(count: u32) {
    OWED_EOIS.fetch_add(count, Ordering::AcqRel);
    kick(BOOT_CPU);
}

/// On the boot CPU: the ends of interrupt other CPUs asked for.
pub fn take_owed_eois() -> u32 {
    OWED_EOIS.swap(0, Ordering::AcqRel)
}

/// Pages a shootdown flushes; more than this flushes the whole TLB.
const SHOOTDOWN_PAGES: usize = 16;
const FLUSH_ALL: usize = usize::MAX;

struct Shootdown {
    /// Taken by the CPU that shoots, for the whole shootdown.
    busy: AtomicBool,
    count: AtomicUsize,
    pages: [AtomicU64; SHOOTDOWN_PAGES],
    /// Bit n: CPU n has not flushed yet.
    waiting: AtomicU64,
}

static SHOOTDOWN: Shootdown = Shootdown {
    busy: AtomicBool::new(false),
    count: AtomicUsize::new(0),
    pages: [const { AtomicU64::new(0) }; SHOOTDOWN_PAGES],
    waiting: AtomicU64::new(0),
};

/// Make every CPU in `cpus` (a bit per CPU; this one is left out) drop its
/// translations of `pages`, and wait until each has. The caller flushed its
/// own TLB. The CPUs asked serve it from their trap path, whatever they
/// hold: [`serve_shootdown`] runs before the system lock is taken and
/// while waiting for it.
pub fn shootdown(cpus: u64, pages: &[u64]) {
    let me = this_cpu();
    let cpus = cpus & !(1 << me) & ((1u64 << online()) - 1);
    // A preempted CPU is flushed by KVM before it runs again (PV TLB
    // flush): no IPI, and no wait for it.
    let cpus = cpus & !super::kvm::flushed_by_kvm(cpus);
    if cpus == 0 {
        return;
    }
    while SHOOTDOWN
        .busy
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        // Another CPU shoots: take part, so that neither waits for the other.
        serve_shootdown();
        core::hint::spin_loop();
    }
    if pages.len() > SHOOTDOWN_PAGES {
        SHOOTDOWN.count.store(FLUSH_ALL, Ordering::Relaxed);
    } else {
        for (slot, &page) in SHOOTDOWN.pages.iter().zip(pages) {
            slot.store(page, Ordering::Relaxed);
        }
        SHOOTDOWN.count.store(pages.len(), Ordering::Relaxed);
    }
    SHOOTDOWN.waiting.store(cpus, Ordering::Release);
    for cpu in 0..online() {
        if cpus & (1 << cpu) != 0 {
            kick(cpu);
        }
    }
    super::exits::count(abi::HvOp::Other);
    while SHOOTDOWN.waiting.load(Ordering::Acquire) != 0 {
        core::hint::spin_loop();
    }
    SHOOTDOWN.busy.store(false, Ordering::Release);
}

/// Flush what a shootdown asks of this CPU, if one does.
#[inline]
pub fn serve_shootdown() {
    let me = 1u64 << this_cpu();
    if SHOOTDOWN.waiting.load(Ordering::Acquire) & me == 0 {
        return;
    }
    match SHOOTDOWN.count.load(Ordering::Relaxed) {
        FLUSH_ALL => super::paging::flush_all(),
        count => {
            for page in &SHOOTDOWN.pages[..count] {
                super::paging::flush_page(page.load(Ordering::Relaxed));
            }
        }
    }
    SHOOTDOWN.waiting.fetch_and(!me, Ordering::AcqRel);
}

// ----- Starting the other CPUs -----

/// Where the trampoline is copied: page 8 of the low megabyte, which the
/// frame allocator never hands out.
const TRAMPOLINE: u64 = 0x8000;

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
    static ap_trampoline_data: u8;
}

/// What the trampoline reads, at `ap_trampoline_data` in its copy.
#[repr(C)]
struct TrampolineData {
    /// A top-level table below 4 GiB that maps the trampoline's page at
    /// its own address and the kernel half as every address space does.
    cr3: u64,
    stack_top: u64,
    entry: u64,
    cpu: u64,
    /// Set by the CPU once it runs on its own stack: the trampoline may
    /// be reused.
    left: AtomicU64,
}

/// What a started CPU needs to bring itself up, given by the kernel.
pub struct ApStart {
    pub cpu: usize,
    pub apic_id: u32,
    /// Its idle stack (a registered `KernelStack` slot).
    pub stack_top: u64,
}

/// The kernel's Rust entry for a started CPU.
pub type ApEntry = extern "C" fn(cpu: u64) -> !;

/// Build the trampoline's tables: a copy of `kernel_root`'s kernel half,
/// and the first 2 MiB identity-mapped. Returns the table's physical
/// address (`alloc` gives zeroed frames below 4 GiB, or `None`).
fn trampoline_tables(
    kernel_root: u64,
    phys_to_virt: &dyn Fn(u64) -> *mut u8,
    alloc: &mut dyn FnMut() -> Option<u64>,
) -> Option<u64> {
    let pml4 = alloc()?;
    let pdpt = alloc()?;
    let pd = alloc()?;
    let table = Flags::PRESENT | Flags::WRITABLE | super::paging::kernel_flags();
    // SAFETY: the three frames are fresh and reached through the direct
    // map; the kernel's root is a live table, only read.
    unsafe {
        let pml4_v = phys_to_virt(pml4) as *mut u64;
        let kernel_v = phys_to_virt(kernel_root) as *const u64;
        for slot in 256..512 {
            *pml4_v.add(slot) = *kernel_v.add(slot);
        }
        *pml4_v = pdpt | table.bits();
        *(phys_to_virt(pdpt) as *mut u64) = pd | table.bits();
        *(phys_to_virt(pd) as *mut u64) = (table | Flags::HUGE_PAGE).bits();
    }
    Some(pml4)
}

/// Start each CPU of `cpus` in turn through the trampoline, waiting for
/// each to reach `entry` on its own stack; `entry` then brings the CPU up
/// and calls [`cpu_online`]. Returns how many started. Boot CPU, boot only.
pub fn start_cpus(
    cpus: &[ApStart],
    entry: ApEntry,
    kernel_root: u64,
    phys_to_virt: &dyn Fn(u64) -> *mut u8,
    alloc: &mut dyn FnMut() -> Option<u64>,
) -> usize {
    APIC_IDS[BOOT_CPU].store(lapic::local_apic_id(), Ordering::Relaxed);
    if cpus.is_empty() {
        return 0;
    }
    let Some(cr3) = trampoline_tables(kernel_root, phys_to_virt, alloc) else {
        log::warn!("no memory below 4 GiB for the other CPUs' start; running on one");
        return 0;
    };
    // SAFETY: linker symbols around the trampoline's code; only addresses.
    let (start, end, data) = unsafe {
        (
            &ap_trampoline_start as *const u8,
            &ap_trampoline_end as *const u8,
            &ap_trampoline_data as *const u8,
        )
    };
    let len = end as usize - start as usize;
    let target = phys_to_virt(TRAMPOLINE);
    // SAFETY: the low megabyte's page 8 is the kernel's (kept from the frame
    // allocator) and reached through the direct map; the code is position
    // independent within its page (every address is computed from 0x8000).
    unsafe { core::ptr::copy_nonoverlapping(start, target, len) };
    // SAFETY: the data block lies inside the copy, 8-byte aligned.
    let shared = unsafe { &*(target.add(data as usize - start as usize) as *const TrampolineData) };
    let hz = lapic::tsc_hz().max(1);
    let mut started = 0;
    for ap in cpus {
        APIC_IDS[ap.cpu].store(ap.apic_id, Ordering::Relaxed);
        let block = shared as *const TrampolineData as *mut TrampolineData;
        // SAFETY: no CPU runs the trampoline now (each waits to be told).
        unsafe {
            (*block).cr3 = cr3;
            (*block).stack_top = ap.stack_top;
            (*block).entry = entry as usize as u64;
            (*block).cpu = ap.cpu as u64;
        }
        shared.left.store(0, Ordering::SeqCst);
        lapic::send_init(ap.apic_id);
        let mut went = false;
        // Two STARTUPs, as the MP specification asks; a CPU that started
        // on the first ignores the second.
        for _ in 0..2 {
            lapic::send_startup(ap.apic_id, (TRAMPOLINE >> 12) as u8);
            let t0 = rdtsc();
            // Interpreted by PVM, the trampoline and the CPU's first steps
            // take a few milliseconds.
            while rdtsc().wrapping_sub(t0) < hz / 10 {
                if shared.left.load(Ordering::Acquire) != 0 {
                    went = true;
                    break;
                }
                core::hint::spin_loop();
            }
            if went {
                break;
            }
        }
        if !went {
            log::warn!(
                "CPU {} (APIC ID {}) did not start; running without it",
                ap.cpu,
                ap.apic_id
            );
            break;
        }
        // Wait until it is up, so that CPUs come online in order.
        let t0 = rdtsc();
        while ONLINE.load(Ordering::Acquire) <= ap.cpu {
            if rdtsc().wrapping_sub(t0) > hz * 5 {
                log::warn!("CPU {} started but never came online", ap.cpu);
                return started;
            }
            core::hint::spin_loop();
        }
        started += 1;
    }
    started
}

/// Called by a started CPU once it can take interrupts and traps.
pub fn cpu_online(cpu: usize) {
    ONLINE.store(cpu + 1, Ordering::Release);
}

// The trampoline: real mode at 0x8000 (CS 0x800), to protected mode, to
// long mode on the tables of `trampoline_tables`, then the kernel's entry
// on the CPU's own stack. Every address is 0x8000 + its offset in the copy.
global_asm!(
    r#"
    .section .rodata.trampoline, "a"
    .balign 16
    .global ap_trampoline_start
    .global ap_trampoline_end
    .global ap_trampoline_data
ap_trampoline_start:
    .code16
    jmp ap_tr_real
    .balign 8
ap_trampoline_data:
    .quad 0, 0, 0, 0, 0
ap_tr_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
ap_tr_gdt_pointer:
    .word 4 * 8 - 1
    .long 0x8000 + (ap_tr_gdt - ap_trampoline_start)
    .equ AP_TR_DATA, 0x8000 + (ap_trampoline_data - ap_trampoline_start)
    .equ AP_TR_GDTP, 0x8000 + (ap_tr_gdt_pointer - ap_trampoline_start)
    .equ AP_TR_CR3, AP_TR_DATA
    .equ AP_TR_STACK, AP_TR_DATA + 8
    .equ AP_TR_ENTRY, AP_TR_DATA + 16
    .equ AP_TR_CPU, AP_TR_DATA + 24
    .equ AP_TR_LEFT, AP_TR_DATA + 32
ap_tr_real:
    cli
    cld
    xor ax, ax
    mov ds, ax
    lgdt [AP_TR_GDTP]
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    .byte 0x66, 0xea
    .long 0x8000 + (ap_tr_protected - ap_trampoline_start)
    .word 0x08
    .code32
ap_tr_protected:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov eax, [AP_TR_CR3]
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x900
    wrmsr
    mov eax, cr0
    or eax, 0x80010001
    mov cr0, eax
    .byte 0xea
    .long 0x8000 + (ap_tr_long - ap_trampoline_start)
    .word 0x18
    .code64
ap_tr_long:
    xor eax, eax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov rsp, [AP_TR_STACK]
    mov rdi, [AP_TR_CPU]
    mov rax, [AP_TR_ENTRY]
    lock or qword ptr [AP_TR_LEFT], 1
    push 0
    jmp rax
ap_trampoline_end:
    .text
"#
);
