//! The PVH entry: the Xen ELF note, 32-bit protected mode to long mode, and the
//! jump to the higher half. The only code in the system that runs with paging
//! off. Its data (early page tables, GDT) lives in `.boot.*` sections, linked
//! at their physical addresses; everything else is linked at `KERNEL_BASE + phys`.

use core::arch::global_asm;

// Early page tables (each one 4 KiB page, in .boot.bss):
//   PML4[0]   -> PDPT_LOW : [0..4] identity map of 0..4 GiB
//   PML4[511] -> PDPT_HIGH: [510], [511]: -2 GiB maps 0..2 GiB
// with 1 GiB pages in the PDPTs where the CPU has them, else through
//   PDPT_LOW[0..4] -> PD0..PD3, PDPT_HIGH[510] -> PD0, [511] -> PD1,
//   PDn[i] = (n * 1 GiB + i * 2 MiB) | PRESENT | WRITABLE | USER | HUGE
// Every entry is user-accessible: the kernel may enter the pvm backend's
// native mode (microkernel/src/hv/pvm.rs) on these tables, where a
// supervisor-only page stops the vCPU. Nothing runs in ring 3 while they are
// live, and SMEP is off until the kernel's own tables replace them, so on
// other backends the bit changes nothing. The kernel replaces all of this
// with its own W^X tables as soon as it can.
global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4              /* name size */
    .long 4              /* descriptor size */
    .long 18             /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_start32

    .section .boot.text, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    mov esi, ebx                        /* hvm_start_info, kept for Rust */
    mov esp, offset boot_stack32_top

    /* Zero the seven early table pages. */
    mov edi, offset early_pml4
    xor eax, eax
    mov ecx, 7 * 1024
    rep stosd

    /* 1 GiB pages where the CPU has them (CPUID 0x80000001 EDX bit 26):
       six entries instead of 2048, and where PVM interprets this code each
       instruction costs about a microsecond. */
    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb 5f
    mov eax, 0x80000001
    cpuid
    test edx, 1 << 26
    jz 5f
    mov dword ptr [offset early_pdpt_low], 0x00000087       /* present | writable | user | 1 GiB */
    mov dword ptr [offset early_pdpt_low + 8], 0x40000087
    mov dword ptr [offset early_pdpt_low + 16], 0x80000087
    mov dword ptr [offset early_pdpt_low + 24], 0xC0000087
    mov dword ptr [offset early_pdpt_high + 510 * 8], 0x00000087
    mov dword ptr [offset early_pdpt_high + 511 * 8], 0x40000087
    jmp 6f
5:
    /* PD0..PD3: 2048 huge pages of 2 MiB, 0..4 GiB. */
    mov edi, offset early_pd
    mov eax, 0x87                       /* present | writable | user | huge */
    xor edx, edx
    mov ecx, 2048
1:
    mov [edi], eax
    mov [edi + 4], edx
    add eax, 0x200000
    adc edx, 0
    add edi, 8
    dec ecx
    jnz 1b

    /* PDPT_LOW[0..4] -> PD0..PD3 */
    mov edi, offset early_pdpt_low
    mov eax, offset early_pd
    or eax, 7
    mov ecx, 4
2:
    mov [edi], eax
    add eax, 4096
    add edi, 8
    dec ecx
    jnz 2b

    /* PDPT_HIGH[510] -> PD0, [511] -> PD1 */
    mov eax, offset early_pd
    or eax, 7
    mov [offset early_pdpt_high + 510 * 8], eax
    add eax, 4096
    mov [offset early_pdpt_high + 511 * 8], eax

6:
    /* PML4[0] -> PDPT_LOW, PML4[511] -> PDPT_HIGH */
    mov eax, offset early_pdpt_low
    or eax, 7
    mov [offset early_pml4], eax
    mov eax, offset early_pdpt_high
    or eax, 7
    mov [offset early_pml4 + 511 * 8], eax

    /* CR4.PAE */
    mov eax, cr4
    or eax, 1 << 5
    mov cr4, eax
    mov eax, offset early_pml4
    mov cr3, eax
    /* EFER.LME | EFER.NXE */
    mov ecx, 0xC0000080
    rdmsr
    or eax, (1 << 8) | (1 << 11)
    wrmsr
    /* CR0.PG | CR0.WP | CR0.PE */
    mov eax, cr0
    or eax, (1 << 31) | (1 << 16) | 1
    mov cr0, eax

    lgdt [early_gdt_pointer]
    /* far jump to 0x08:long_mode_entry, as raw bytes (see PLATFORM.md) */
    .byte 0xEA
    .long long_mode_entry
    .word 0x08

    .code64
long_mode_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    movabs rax, offset higher_half_entry
    jmp rax

    .section .boot.data, "aw"
    .balign 8
early_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF            /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF            /* 0x10: data */
early_gdt_end:
early_gdt_pointer:
    .word early_gdt_end - early_gdt - 1
    .long early_gdt

    .section .boot.bss, "aw", @nobits
    .balign 4096
early_pml4:      .skip 4096
early_pdpt_low:  .skip 4096
early_pdpt_high: .skip 4096
early_pd:        .skip 4 * 4096
boot_stack32:    .skip 256
boot_stack32_top:

    .section .text.boot_high, "ax"
    .code64
higher_half_entry:
    movabs rsp, offset __boot_stack_top
    xor ebp, ebp
    mov edi, esi                        /* hvm_start_info physical address */
    movabs rax, offset boot_rust_entry
    call rax
    ud2
"#
);
