//! Context-switching family, the trap path: one entry stub per vector, the
//! common save/restore code, and the frame layout they share.
//!
//! Every trap (exception, interrupt) enters through a common path that
//! saves the general registers on the current kernel stack, swaps GS when
//! the trap came from ring 3 and the backend wants it ([`EntryFlavour`]),
//! and calls the kernel's `trap_dispatch`. The
//! dispatcher returns the frame to resume, which may belong to another thread:
//! that is how a context switch happens. The return path restores that
//! frame and leaves with IRETQ.

use core::arch::global_asm;

/// The registers saved on a trap, lowest address first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    pub fn came_from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// Each stub is padded to 16 bytes, so stub `n` is at `base + 16 n`.
pub const STUB_SIZE: u64 = 16;

/// The two sets of entry stubs and return paths. They differ in one thing:
/// whether a crossing from or to ring 3 runs SWAPGS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryFlavour {
    /// The native backend: the kernel's GS base (the per-CPU block) is
    /// swapped in on entry from ring 3 and out on the way back.
    Swapgs,
    /// The pvm backend: the hypervisor swaps GS on its emulated IRETQ and
    /// SYSRETQ but not on entry, so the kernel leaves GS alone and finds its
    /// per-CPU block without it.
    Plain,
}

unsafe extern "C" {
    static trap_stubs_swapgs: u8;
    static trap_stubs_plain: u8;
}

/// The first stub of `flavour`'s table; the IDT points gate `n` at
/// `stubs(flavour) + 16 n`.
pub fn stubs(flavour: EntryFlavour) -> u64 {
    // SAFETY: only the symbols' addresses are taken.
    unsafe {
        match flavour {
            EntryFlavour::Swapgs => &trap_stubs_swapgs as *const u8 as u64,
            EntryFlavour::Plain => &trap_stubs_plain as *const u8 as u64,
        }
    }
}

/// The general registers pushed in `TrapFrame` order (r15 ends lowest),
/// then the call of `trap_dispatch` with the frame: one text for the trap
/// stubs and the SYSCALL entries, so that all build the same frame.
macro_rules! save_registers_and_dispatch {
    () => {
        r#"
    .macro save_registers_and_dispatch
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    cld
    call trap_dispatch
    .endm
"#
    };
}
pub(super) use save_registers_and_dispatch;

/// One table of 256 stubs, its common entry and its return path. `$swapgs`
/// is the text run where a crossing from or to ring 3 swaps GS: "swapgs"
/// for the native flavour, a comment for the plain one. `$to_sysret` and
/// `$sysret` are the SYSRET return of frames made by a SYSCALL entry (the
/// plain flavour has none: its servers enter through `int 0x80`).
///
/// Vectors 8, 10-14, 17, 21, 29 and 30 push an error code; the others get
/// a zero so that every frame has the same layout.
macro_rules! trap_path {
    ($stubs:literal, $common:literal, $ret:literal, $swapgs:literal, $to_sysret:literal, $sysret:literal) => {
        concat!(
            r#"
    .section .text.trap, "ax"
    .balign 16
    .global "#, $stubs, r#"
"#, $stubs, r#":
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    push 0
    .endif
    push vec
    jmp "#, $common, r#"
    .set vec, vec + 1
    .endr

    .balign 16
"#, $common, r#":
    test qword ptr [rsp + 24], 3        /* CS of the interrupted code */
    jz 1f
    "#, $swapgs, r#"
1:
    save_registers_and_dispatch
    mov rsp, rax                        /* the frame to resume */
    .global "#, $ret, r#"
"#, $ret, r#":
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    "#, $to_sysret, r#"
    test qword ptr [rsp + 24], 3
    jz 2f
    "#, $swapgs, r#"
2:
    add rsp, 16                         /* vector and error code */
    iretq
"#, $sysret, r#"
"#
        )
    };
}

global_asm!(
    concat!(
        save_registers_and_dispatch!(),
        trap_path!(
            "trap_stubs_swapgs",
            "trap_common_swapgs",
            "trap_return_swapgs",
            "swapgs",
            "cmp qword ptr [rsp], {syscall_vector}\n    je 3f",
            r#"
3:
    /* A frame made by the SYSCALL entry goes back the way it came: RIP and
       RFLAGS through RCX and R11 (which the ABI clobbers), then the user
       stack. Its RIP is the instruction after a SYSCALL in mapped user
       memory, so it is canonical (the last user page is never mapped). */
    mov rcx, [rsp + 16]
    mov r11, [rsp + 32]
    mov rsp, [rsp + 40]
    swapgs
    sysretq
"#
        ),
        trap_path!(
            "trap_stubs_plain",
            "trap_common_plain",
            "trap_return_plain",
            "/* GS stays */",
            "",
            ""
        ),
        "    .purgem save_registers_and_dispatch\n",
    ),
    syscall_vector = const super::context::SYSCALL_VECTOR,
);
