//! Context-switching family, the CPU's tables: GDT, TSS (kernel stack for
//! ring-3 traps, IST stacks, I/O permission bitmap), IDT, and the control
//! register and MSR settings the kernel runs with.
//!
//! Context: [`init`] runs once at boot with interrupts masked; the setters
//! run with interrupts masked during a context switch.

use core::arch::asm;
use core::mem::size_of;
use core::ptr::addr_of_mut;

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, FS, GS, SS, Segment};
use x86_64::instructions::tables::{lidt, load_tss};
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::DescriptorTablePointer;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

use abi::HvOp;

use super::exits::count;
use super::smp::{BOOT_CPU, MAX_CPUS, this_cpu};
use super::trap::STUB_SIZE;

/// Segment selectors. The order (kernel code, kernel data, user data, user
/// code) is the one SYSCALL/SYSRET require.
pub const KERNEL_CODE: u16 = 0x08;
pub const KERNEL_DATA: u16 = 0x10;
pub const USER_DATA: u16 = 0x18 | 3;
pub const USER_CODE: u16 = 0x20 | 3;
const TSS_SELECTOR: u16 = 0x28;

/// IST slots (1-based in the IDT gate, 0-based in the TSS).
pub const IST_DOUBLE_FAULT: u8 = 1;
pub const IST_NMI: u8 = 2;
pub const IST_MACHINE_CHECK: u8 = 3;

/// Ports 0..=0xFFFF, one bit each; a set bit denies the port.
pub const IO_BITMAP_BYTES: usize = 8192;

/// The TSS followed by its I/O permission bitmap, as the CPU requires (the
/// byte after the bitmap must be 0xFF).
#[repr(C, align(4096))]
struct TssBlock {
    tss: TaskStateSegment,
    io_bitmap: [u8; IO_BITMAP_BYTES + 1],
}

/// One per CPU: each has its own kernel stack and I/O permissions.
static mut TSS_BLOCKS: [TssBlock; MAX_CPUS] = [const {
    TssBlock {
        tss: TaskStateSegment::new(),
        io_bitmap: [0xFF; IO_BITMAP_BYTES + 1],
    }
}; MAX_CPUS];

/// One per CPU, since each holds its CPU's TSS descriptor.
static mut GDTS: [GlobalDescriptorTable<8>; MAX_CPUS] =
    [const { GlobalDescriptorTable::new() }; MAX_CPUS];

/// One IDT gate.
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const MISSING: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attr: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// A present 64-bit interrupt gate (IF cleared on entry); `user` makes
    /// it callable from ring 3 (DPL 3), as the system-call gate is.
    fn interrupt(handler: u64, ist: u8, user: bool) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: KERNEL_CODE,
            ist,
            type_attr: if user { 0xEE } else { 0x8E },
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static mut IDT: Idt = Idt([Gate::MISSING; 256]);

/// The stacks the TSS points at.
#[derive(Clone, Copy)]
pub struct TrapStacks {
    pub double_fault_top: u64,
    pub nmi_top: u64,
    pub machine_check_top: u64,
    pub kernel_top: u64,
}

fn tss_descriptor(block: *const TssBlock) -> Descriptor {
    let base = block as u64;
    // The limit covers the TSS and the whole bitmap with its closing byte.
    let limit = (size_of::<TssBlock>() - 1) as u64;
    let mut low = 0u64;
    low |= limit & 0xFFFF;
    low |= (base & 0xFF_FFFF) << 16;
    low |= 0x89 << 40; // present, available 64-bit TSS
    low |= ((limit >> 16) & 0xF) << 48;
    low |= ((base >> 24) & 0xFF) << 56;
    Descriptor::SystemSegment(low, base >> 32)
}

/// Protection bits of CR4: what the kernel asks for, and what the CPU keeps
/// once CR4 is written (a hypervisor may drop bits CPUID advertised).
#[derive(Clone, Copy, Debug, Default)]
pub struct Protection {
    /// Supervisor-mode execution prevention.
    pub smep: bool,
    /// Supervisor-mode access prevention (STAC/CLAC around user copies).
    pub smap: bool,
    /// User-mode instruction prevention: SGDT, SIDT, SLDT, SMSW and STR
    /// fault in ring 3.
    pub umip: bool,
}

/// Load CPU `cpu`'s GDT and TSS and the shared IDT; the boot CPU first
/// fills the IDT's early gates (`EARLY_GATES`) at `stubs + 16 n`. Once per
/// CPU, at its start; [`install_stubs`] and [`set_control_registers`]
/// follow once the backend is known.
pub fn init(cpu: usize, stacks: &TrapStacks, stubs: u64) {
    count(HvOp::Other);
    // SAFETY: each CPU's start, interrupts masked: the tables of `cpu` are
    // touched by `cpu` alone, the IDT is written only by the boot CPU
    // before any other CPU starts, and they are statics that live forever.
    unsafe {
        let block = &mut (*addr_of_mut!(TSS_BLOCKS))[cpu];
        block.tss.interrupt_stack_table[usize::from(IST_DOUBLE_FAULT - 1)] =
            VirtAddr::new(stacks.double_fault_top);
        block.tss.interrupt_stack_table[usize::from(IST_NMI - 1)] = VirtAddr::new(stacks.nmi_top);
        block.tss.interrupt_stack_table[usize::from(IST_MACHINE_CHECK - 1)] =
            VirtAddr::new(stacks.machine_check_top);
        block.tss.privilege_stack_table[0] = VirtAddr::new(stacks.kernel_top);
        block.tss.iomap_base = size_of::<TaskStateSegment>() as u16;

        let gdt = &mut (*addr_of_mut!(GDTS))[cpu];
        let kc = gdt.append(Descriptor::kernel_code_segment());
        let kd = gdt.append(Descriptor::kernel_data_segment());
        let ud = gdt.append(Descriptor::user_data_segment());
        let uc = gdt.append(Descriptor::user_code_segment());
        let ts = gdt.append(tss_descriptor(block));
        debug_assert_eq!(
            (kc.0, kd.0, ud.0, uc.0, ts.0),
            (KERNEL_CODE, KERNEL_DATA, USER_DATA, USER_CODE, TSS_SELECTOR)
        );
        gdt.load_unsafe();
        CS::set_reg(SegmentSelector(KERNEL_CODE));
        SS::set_reg(SegmentSelector(KERNEL_DATA));
        DS::set_reg(SegmentSelector(0));
        ES::set_reg(SegmentSelector(0));
        FS::set_reg(SegmentSelector(0));
        GS::set_reg(SegmentSelector(0));
        load_tss(SegmentSelector(TSS_SELECTOR));

        // The IDT is shared: the boot CPU fills it, the others load it.
        for vectors in EARLY_GATES.iter().filter(|_| cpu == BOOT_CPU) {
            install_gates(stubs, vectors.clone());
        }
        let idt = &*addr_of_mut!(IDT);
        lidt(&DescriptorTablePointer {
            limit: (size_of::<Idt>() - 1) as u16,
            base: VirtAddr::new(idt as *const Idt as u64),
        });
    }
}

/// Point every IDT gate at the stub table starting at `stubs`.
pub fn install_stubs(stubs: u64) {
    install_gates(stubs, 0..=255);
}

/// The gates [`init`] fills before the backend is chosen: the exceptions
/// (a probe's #GP is recovered, a fault is reported) and the kernel's timer
/// and spurious vectors (the pvm self-test). The other 220 come with the
/// backend's stubs: where PVM interprets the kernel each gate costs tens of
/// microseconds, and on pvm they are filled in native mode instead.
const EARLY_GATES: [core::ops::RangeInclusive<u8>; 2] = [
    0..=31,
    super::lapic::TIMER_VECTOR..=super::lapic::SPURIOUS_VECTOR,
];

/// Point the gates of `vectors` at their stubs in the table at `stubs`.
fn install_gates(stubs: u64, vectors: core::ops::RangeInclusive<u8>) {
    // SAFETY: boot, interrupts masked: no trap reads a gate while it
    // changes, and every stub of a table is a valid entry for its vector.
    let idt = unsafe { &mut *addr_of_mut!(IDT) };
    for vector in vectors {
        let ist = match vector {
            2 => IST_NMI,
            8 => IST_DOUBLE_FAULT,
            18 => IST_MACHINE_CHECK,
            _ => 0,
        };
        let handler = stubs + u64::from(vector) * STUB_SIZE;
        let user = vector == abi::SYSCALL_INT_VECTOR;
        idt.0[usize::from(vector)] = Gate::interrupt(handler, ist, user);
    }
}

/// Set CR0 and CR4: write protection, SSE, global pages, and the protection
/// bits of `want`; features ring 3 could use to keep state the kernel does
/// not switch (XSAVE's AVX state, FS/GS base writes) stay off. Returns what
/// the CPU kept.
pub fn set_control_registers(want: Protection) -> Protection {
    const CR0_MP: u64 = 1 << 1;
    const CR0_EM: u64 = 1 << 2;
    const CR0_NE: u64 = 1 << 5;
    const CR0_WP: u64 = 1 << 16;
    const CR4_PGE: u64 = 1 << 7;
    const CR4_OSFXSR: u64 = 1 << 9;
    const CR4_OSXMMEXCPT: u64 = 1 << 10;
    const CR4_UMIP: u64 = 1 << 11;
    const CR4_FSGSBASE: u64 = 1 << 16;
    const CR4_OSXSAVE: u64 = 1 << 18;
    const CR4_SMEP: u64 = 1 << 20;
    const CR4_SMAP: u64 = 1 << 21;
    count(HvOp::Other);
    // SAFETY: these bits only tighten protection (WP, SMEP, SMAP), enable
    // global pages (the kernel's tables mark only kernel pages global) and
    // let FXSAVE/SSE work; none changes a mapping the kernel relies on.
    unsafe {
        let mut cr0: u64;
        asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags));
        cr0 = (cr0 | CR0_MP | CR0_NE | CR0_WP) & !CR0_EM;
        asm!("mov cr0, {}", in(reg) cr0, options(nostack, preserves_flags));
        let mut cr4: u64;
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
        cr4 |= CR4_PGE | CR4_OSFXSR | CR4_OSXMMEXCPT;
        cr4 &= !(CR4_FSGSBASE | CR4_OSXSAVE | CR4_SMEP | CR4_SMAP | CR4_UMIP);
        if want.smep {
            cr4 |= CR4_SMEP;
        }
        if want.smap {
            cr4 |= CR4_SMAP;
        }
        if want.umip {
            cr4 |= CR4_UMIP;
        }
        asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags));
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
        Protection {
            smep: cr4 & CR4_SMEP != 0,
            smap: cr4 & CR4_SMAP != 0,
            umip: cr4 & CR4_UMIP != 0,
        }
    }
}

/// Set the stack the CPU switches to when a trap arrives from ring 3.
pub fn set_kernel_stack(top: u64) {
    // SAFETY: the TSS is a static the CPU reads only on a ring change; this
    // runs with interrupts masked, so no trap sees a torn value.
    unsafe {
        (*addr_of_mut!(TSS_BLOCKS))[this_cpu()]
            .tss
            .privilege_stack_table[0] = VirtAddr::new(top)
    };
}

/// Replace the I/O permission bitmap (a set bit denies that port).
pub fn set_io_bitmap(bitmap: &[u8; IO_BITMAP_BYTES]) {
    // SAFETY: as for `set_kernel_stack`; the CPU reads the bitmap only while
    // ring-3 code executes IN/OUT, never during this copy.
    unsafe {
        (&mut (*addr_of_mut!(TSS_BLOCKS))[this_cpu()].io_bitmap)[..IO_BITMAP_BYTES]
            .copy_from_slice(bitmap)
    };
}
