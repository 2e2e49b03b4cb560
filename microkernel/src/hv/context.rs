//! Family 3, context switching: what the kernel swaps when it moves the CPU
//! from one thread to another (FPU/SSE state, the kernel stack a ring-3 trap
//! lands on, the I/O permission bitmap), the SYSCALL entries (one per
//! [`EntryFlavour`]), and the copies between kernel and user memory that
//! SMAP guards.
//!
//! Context: trap context (interrupts masked), except `init`, run at boot.

use core::arch::{asm, global_asm};
use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use abi::HvOp;

use super::cpu::{self, KERNEL_CODE, USER_DATA};
use super::exits::count;
use super::fixup::{fixup_entry_2_to_3, read_edx_eax_guarded};
use super::msr;
use super::smp::{MAX_CPUS, this_cpu};
use super::trap::{EntryFlavour, TrapFrame};

/// The `vector` a SYSCALL entry stores in its frame (no IDT vector has it).
pub const SYSCALL_VECTOR: u64 = 0x100;

/// What the SYSCALL entry reads through GS: the current thread's kernel
/// stack top, and a scratch slot for the user stack pointer.
#[repr(C)]
struct PerCpu {
    kernel_rsp: u64,
    user_rsp: u64,
}

/// One block per CPU; each CPU's kernel GS base points at its own.
static mut PER_CPU: [PerCpu; MAX_CPUS] = [const {
    PerCpu {
        kernel_rsp: 0,
        user_rsp: 0,
    }
}; MAX_CPUS];

/// Set up system-call entry for `flavour`. Swapgs: SYSCALL/SYSRET enabled,
/// the kernel's GS base the per-CPU block and the user's 0. Plain: SYSCALL
/// disabled (a server's `syscall` raises #UD), both GS bases 0 (the
/// hypervisor's swap on the way out then changes nothing); servers enter
/// through the `int 0x80` gate. Once per CPU, at its start (`cpu` is it).
pub fn init(cpu: usize, flavour: EntryFlavour) {
    const EFER_SCE: u64 = 1;
    // RFLAGS bits cleared on SYSCALL: TF, IF, DF, AC.
    const SFMASK_BITS: u64 = (1 << 8) | (1 << 9) | (1 << 10) | (1 << 18);
    // SAFETY: the MSR values follow the GDT layout in `cpu` (SYSRET/SYSCALL
    // selector arithmetic); the entry point is the stub below; GS points at
    // a static that lives forever, or is 0 where the kernel never reads it.
    unsafe {
        let efer = msr::read(msr::EFER);
        match flavour {
            EntryFlavour::Swapgs => {
                msr::write(msr::EFER, efer | EFER_SCE);
                let sysret_base = u64::from(USER_DATA & !3) - 8;
                msr::write(
                    msr::STAR,
                    (sysret_base << 48) | (u64::from(KERNEL_CODE) << 32),
                );
                msr::write(msr::LSTAR, syscall_entry_swapgs as *const () as u64);
                msr::write(msr::SFMASK, SFMASK_BITS);
                msr::write(msr::GS_BASE, addr_of_mut!(PER_CPU[cpu]) as u64);
            }
            EntryFlavour::Plain => {
                msr::write(msr::EFER, efer & !EFER_SCE);
                msr::write(msr::GS_BASE, 0);
            }
        }
        msr::write(msr::KERNEL_GS_BASE, 0);
    }
}

/// Make `top` the stack that traps and system calls from ring 3 land on.
pub fn set_kernel_stack(top: u64) {
    cpu::set_kernel_stack(top);
    // SAFETY: trap context, interrupts masked: the SYSCALL entry cannot read
    // this while it changes.
    unsafe { (*addr_of_mut!(PER_CPU))[this_cpu()].kernel_rsp = top };
}

/// The largest extended-state area the kernel keeps per thread.
const XSTATE_MAX: usize = 4096;

/// Which extended-state components the context switch saves and restores
/// (XCR0 as the hardware has it), or 0: FXSAVE, x87 and SSE only.
///
/// Under KVM ring 3 runs on the hardware with the host's XCR0, whatever
/// the guest's CR4.OSXSAVE says: a server can use AVX (and PKRU) there
/// although this kernel never turned them on (measured: an `avx-reader`
/// read the `avx-writer`'s ymm0 before this). So the kernel switches every
/// component the hardware lets ring 3 use, found by asking XGETBV with a
/// guard: where it raises #UD, ring 3 cannot use XSAVE features either.
/// Per CPU: a CPU the hypervisor interprets may have no XSAVE while the
/// others run it on the hardware (servers never change CPU).
static XSAVE_MASK: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Find the extended state ring 3 can use, and the area it needs. Once, at
/// boot (after the IDT: the probe may raise #UD). Returns the mask and the
/// size of its standard-format area, or `None` for FXSAVE only.
pub fn init_extended_state() -> Option<(u64, usize)> {
    let xcr0 = xgetbv_guarded()?;
    let mut mask = xcr0;
    let mut size = 576; // legacy region and XSAVE header
    for component in 2..63 {
        if xcr0 & (1 << component) == 0 {
            continue;
        }
        let leaf = core::arch::x86_64::__cpuid_count(0xD, component);
        let end = leaf.ebx as usize + leaf.eax as usize;
        if end > XSTATE_MAX {
            // Not kept: `describe` reports it, and the mask leaves it out
            // rather than overrun the area.
            mask &= !(1 << component);
            continue;
        }
        size = size.max(end);
    }
    XSAVE_MASK[this_cpu()].store(mask, Ordering::Relaxed);
    Some((mask, size))
}

/// XCR0, or `None` where XGETBV raises #UD (CR4.OSXSAVE off for this code).
fn xgetbv_guarded() -> Option<u64> {
    // SAFETY: XGETBV(0) reads XCR0 or raises #UD, which the fixup entry the
    // macro emits beside it turns into `None`.
    unsafe { read_edx_eax_guarded!("xgetbv", 0u32) }
}

/// A thread's FPU, SSE and extended state: an XSAVE area (standard format)
/// where the hardware lets ring 3 use XSAVE features, else an FXSAVE area
/// (its first 512 bytes).
#[repr(C, align(64))]
#[derive(Clone)]
pub struct FpuState([u8; XSTATE_MAX]);

impl FpuState {
    /// The state a fresh thread starts with: every component in its initial
    /// state (XSTATE_BV 0), x87 exceptions masked, MXCSR 0x1F80.
    pub fn initial() -> Self {
        let mut state = FpuState([0; XSTATE_MAX]);
        state.0[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
        state.0[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        state
    }

    pub fn save(&mut self) {
        let mask = XSAVE_MASK[this_cpu()].load(Ordering::Relaxed);
        let area = self.0.as_mut_ptr();
        // SAFETY: the area is 4 KiB, 64-byte aligned, larger than every
        // component the mask names (`init_extended_state`); FXSAVE needs 512
        // bytes, 16-aligned, and CR4.OSFXSR is set at boot. XSAVE runs only
        // where XGETBV worked, i.e. XSAVE is enabled for this code.
        unsafe {
            if mask != 0 {
                asm!("xsave64 [{}]", in(reg) area, in("eax") mask as u32, in("edx") (mask >> 32) as u32,
                     options(nostack, preserves_flags));
            } else {
                asm!("fxsave64 [{}]", in(reg) area, options(nostack, preserves_flags));
            }
        }
    }

    pub fn restore(&self) {
        let mask = XSAVE_MASK[this_cpu()].load(Ordering::Relaxed);
        let area = self.0.as_ptr();
        // SAFETY: as for `save`; the area holds `initial()` (a valid header:
        // XSTATE_BV 0, MXCSR valid) or what XSAVE/FXSAVE wrote.
        unsafe {
            if mask != 0 {
                asm!("xrstor64 [{}]", in(reg) area, in("eax") mask as u32, in("edx") (mask >> 32) as u32,
                     options(nostack, preserves_flags));
            } else {
                asm!("fxrstor64 [{}]", in(reg) area, options(nostack, preserves_flags));
            }
        }
    }
}

/// A user copy hit a page it could not touch (the fixup table ended it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyFault;

/// Copy `len` bytes from `src` to `dst`, one of which is user memory; a
/// fault on the way ends the copy through the fixup table instead of the
/// machine. Returns how many bytes were not copied (0: all were).
///
/// # Safety
/// The kernel side of the copy is valid for `len` bytes; the user side was
/// checked by `usermem` (the fixup only covers what a check cannot rule
/// out, such as a hypervisor that refuses a page).
unsafe fn copy_guarded(dst: *mut u8, src: *const u8, len: usize) -> usize {
    let left: usize;
    // SAFETY: the caller's guarantee for both ranges; a fault inside
    // `rep movsb` resumes at label 3 with RCX = the bytes not copied.
    unsafe {
        user_access(true);
        asm!(
            "2: rep movsb",
            "3:",
            fixup_entry_2_to_3!(),
            inout("rdi") dst => _,
            inout("rsi") src => _,
            inout("rcx") len => left,
            options(nostack, preserves_flags),
        );
        user_access(false);
    }
    left
}

/// Copy `dst.len()` bytes from user address `src`.
///
/// # Safety
/// The whole source range must be mapped user memory in the current address
/// space (checked by `usermem` before calling).
pub unsafe fn copy_from_user(dst: &mut [u8], src: u64) -> Result<(), CopyFault> {
    // SAFETY: the caller checked the range; `dst` is ours.
    match unsafe { copy_guarded(dst.as_mut_ptr(), src as *const u8, dst.len()) } {
        0 => Ok(()),
        _ => Err(CopyFault),
    }
}

/// Copy `src` to user address `dst`.
///
/// # Safety
/// The whole destination range must be mapped, writable user memory in the
/// current address space.
pub unsafe fn copy_to_user(dst: u64, src: &[u8]) -> Result<(), CopyFault> {
    // SAFETY: as for `copy_from_user`.
    match unsafe { copy_guarded(dst as *mut u8, src.as_ptr(), src.len()) } {
        0 => Ok(()),
        _ => Err(CopyFault),
    }
}

static SMAP_ACTIVE: AtomicBool = AtomicBool::new(false);

/// Tell the copy routines whether CR4.SMAP is in force (set from what the
/// CPU kept of CR4 at boot).
pub fn set_smap_active(active: bool) {
    SMAP_ACTIVE.store(active, Ordering::Relaxed);
}

unsafe fn user_access(open: bool) {
    if !SMAP_ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    // SAFETY: STAC/CLAC only toggle RFLAGS.AC, and CR4.SMAP is set, so the
    // CPU has them.
    // Not `nomem`: the copy must stay inside the window these open.
    unsafe {
        if open {
            asm!("stac", options(nostack));
        } else {
            asm!("clac", options(nostack));
        }
    }
}

/// SYSCALL under KVM's PVM hypervisor for a kernel it interprets (the native
/// backend on these machines, `hv=native`): the hypervisor loads RIP and RCX
/// with LSTAR but leaves the CPU in user mode, so the first fetch at the
/// entry faults from ring 3. Every argument register is intact, but RCX (the
/// return address) is gone; the runtime's system-call stub therefore also
/// keeps its return address in R12, which SYSCALL never touches. Recognise
/// exactly that fault (a user instruction fetch of a present page at LSTAR,
/// CR2 = LSTAR) and turn the frame into the system call it is, returning to
/// R12. A server that jumps to LSTAR on purpose gains nothing: it is a
/// system call from where it chose to return, which it could make anyway.
/// The pvm backend never needs this: its SYSCALL arrives in supervisor mode.
pub fn syscall_arrived_as_fault(frame: &mut TrapFrame) -> bool {
    const FETCH_FROM_USER_PRESENT: u64 = 0x1 | 0x4 | 0x10;
    let lstar = syscall_entry_swapgs as *const () as u64;
    if frame.vector != 14
        || !frame.came_from_user()
        || frame.rip != lstar
        || frame.error_code & FETCH_FROM_USER_PRESENT != FETCH_FROM_USER_PRESENT
        || frame.r12 >= abi::layout::USER_END
        || super::paging::fault_address() != lstar
    {
        return false;
    }
    frame.rip = frame.r12;
    frame.rcx = frame.r12;
    frame.rflags = 0x202;
    true
}

/// Count what a crossing between ring 3 and the kernel costs beyond itself:
/// the SWAPGS of the native flavour, on the way in or out.
pub(super) fn count_swapgs(flavour: EntryFlavour) {
    if flavour == EntryFlavour::Swapgs {
        count(HvOp::Swapgs);
    }
}

unsafe extern "C" {
    fn syscall_entry_swapgs();
}

// SYSCALL leaves the user RIP in RCX and RFLAGS in R11, does not switch
// stacks, and masks IF. The stub switches to the thread's kernel stack and
// builds the same TrapFrame an interrupt from ring 3 would, then joins the
// common trap path, so that blocking, preemption and return are one code.
// Only the swapgs flavour has one: it finds the kernel stack through GS,
// which pvm does not swap on entry, and its first two instructions run on
// the caller's stack.
global_asm!(
    concat!(
        super::trap::save_registers_and_dispatch!(),
        r#"
    .section .text.trap, "ax"
    .global syscall_entry_swapgs
    .balign 16
syscall_entry_swapgs:
    swapgs
    mov gs:[8], rsp                     /* user RSP */
    mov rsp, gs:[0]                     /* this thread's kernel stack top */
    push {user_ss}                      /* SS */
    push qword ptr gs:[8]               /* RSP */
    push r11                            /* RFLAGS */
    push {user_cs}                      /* CS */
    push rcx                            /* RIP */
    push 0                              /* error code */
    push {vector}                       /* vector */
    save_registers_and_dispatch
    mov rsp, rax
    jmp trap_return_swapgs
    .purgem save_registers_and_dispatch
"#
    ),
    user_ss = const USER_DATA as u64,
    user_cs = const cpu::USER_CODE as u64,
    vector = const SYSCALL_VECTOR,
);
