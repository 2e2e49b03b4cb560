//! The runtime around `main`: the ELF entry point, the heap and the panic
//! handler. Bare metal only.
//!
//! Context: `_start` runs first, on the stack the kernel set up
//! (`rsp = layout::STACK_TOP`, `rdi` = the server's manifest index).

use core::panic::PanicInfo;

use linked_list_allocator::LockedHeap;

use crate::{println, sys};

/// Bytes of heap, a static region in `.bss`.
pub const HEAP_SIZE: usize = 1 << 20;

#[repr(C, align(4096))]
struct HeapMem([u8; HEAP_SIZE]);

static mut HEAP: HeapMem = HeapMem([0; HEAP_SIZE]);

#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

unsafe extern "Rust" {
    /// The server's main, defined by [`entry!`](crate::entry).
    fn __userland_main() -> i32;
}

/// The ELF entry point: align the stack as the C ABI wants it at a call,
/// clear the frame pointer (end of backtraces) and call [`start`], keeping
/// `rdi` (the server index) as its argument.
#[unsafe(naked)]
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text._start")]
pub extern "C" fn _start() -> ! {
    core::arch::naked_asm!(
        "xor ebp, ebp",
        "and rsp, -16",
        "call {start}",
        "ud2",
        start = sym start,
    )
}

extern "C" fn start(server_index: u64, syscall_entry: u64) -> ! {
    crate::SERVER_INDEX.store(server_index as u32, core::sync::atomic::Ordering::Relaxed);
    crate::sys::set_entry(abi::SyscallEntry::from_raw(syscall_entry));
    // SAFETY: runs once, before anything allocates; the region is a static
    // used by nothing else, taken through a raw pointer (no reference to the
    // `static mut` is ever made).
    unsafe {
        ALLOCATOR
            .lock()
            .init((&raw mut HEAP).cast::<u8>(), HEAP_SIZE);
    }
    // SAFETY: `entry!` defines `__userland_main` with exactly this
    // signature; a server that forgets `entry!` fails to link.
    let code = unsafe { __userland_main() };
    sys::exit(code)
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    match info.location() {
        Some(at) => println!(
            "panicked at {}:{}: {}",
            at.file(),
            at.line(),
            info.message()
        ),
        None => println!("panicked: {}", info.message()),
    }
    sys::exit(101)
}
