//! System calls: one safe wrapper per call of [`abi::Syscall`],
//! and the raw [`syscall6`] underneath (for the fuzzer).
//!
//! Context: a server's only thread. The wrappers never allocate. On the host
//! (tests, `cargo check` of the workspace) there is no kernel: every call
//! returns [`Error::NoSuchSyscall`] and [`exit`] ends the process.

use core::mem::size_of;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use zerocopy::{FromZeros, IntoBytes};

use abi::{
    BootInfo, ChannelInfo, ChannelStats, ChannelStatus, Error, KernelCounters, ServerInfo, Syscall,
    SyscallEntry,
};

/// Make a raw system call: number `nr`, up to six arguments; returns `rax`
/// as the kernel left it (non-negative = success, negative = `-(Error)`).
///
/// # Safety
/// The kernel checks every argument, but it may write through pointer
/// arguments into this server's memory, change its mappings (`mmio_map`) or
/// end it (`exit`): the caller must make sure that what a call with these
/// arguments may do cannot break the program's own memory (pass only
/// pointers to memory the call may overwrite, or addresses that are not
/// this program's writable memory).
#[cfg(target_os = "none")]
#[inline]
pub unsafe fn syscall6(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    if BY_INTERRUPT.load(Ordering::Relaxed) {
        // SAFETY: as below; the kernel's gate 0x80 is the same system call.
        return unsafe { int80(nr, a0, a1, a2, a3, a4, a5) };
    }
    let ret: i64;
    // SAFETY: `syscall` enters the kernel, which preserves every register
    // except rax (result), rcx and r11 (clobbered by the instruction), and
    // returns to the next instruction. Memory it writes is the caller's
    // responsibility (see above); the asm is not `nomem`, so the compiler
    // assumes any memory may change.
    //
    // R12 also carries the return address: on KVM's PVM hosts SYSCALL
    // loses RCX before the kernel sees it, and the kernel then returns to
    // R12 instead (see the kernel's `hv::context::syscall_arrived_as_fault`).
    unsafe {
        core::arch::asm!(
            "lea r12, [rip + 2f]",
            "syscall",
            "2:",
            out("r12") _,
            inlateout("rax") nr as i64 => ret,
            in("rdi") a0,
            in("rsi") a1,
            in("rdx") a2,
            in("r10") a3,
            in("r8") a4,
            in("r9") a5,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// The system call through the kernel's interrupt gate ([`SyscallEntry::Int80`]).
///
/// # Safety
/// As for [`syscall6`].
#[cfg(target_os = "none")]
#[inline]
unsafe fn int80(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let ret: i64;
    // SAFETY: the gate returns to the next instruction with every register
    // but rax preserved (rcx and r11 are declared clobbered, as for
    // SYSCALL, so that one contract serves both); see `syscall6` for memory.
    unsafe {
        core::arch::asm!(
            "int 0x80",
            inlateout("rax") nr as i64 => ret,
            in("rdi") a0,
            in("rsi") a1,
            in("rdx") a2,
            in("r10") a3,
            in("r8") a4,
            in("r9") a5,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Whether system calls go through `int 0x80` (the kernel says at start).
static BY_INTERRUPT: AtomicBool = AtomicBool::new(false);

/// Record how this server enters the kernel; `_start` calls it before any
/// system call.
pub fn set_entry(entry: SyscallEntry) {
    BY_INTERRUPT.store(entry == SyscallEntry::Int80, Ordering::Relaxed);
}

/// Host stand-in: there is no kernel, every call fails with
/// `NoSuchSyscall` (and `exit` ends the process).
///
/// # Safety
/// None needed on the host; `unsafe` to match the bare-metal signature.
#[cfg(not(target_os = "none"))]
pub unsafe fn syscall6(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let _ = (a1, a2, a3, a4, a5);
    if nr == Syscall::Exit as u64 {
        extern crate std;
        std::process::exit(a0 as i32);
    }
    Error::NoSuchSyscall.to_return()
}

#[inline]
fn call(nr: Syscall, a0: u64, a1: u64, a2: u64) -> Result<u64, Error> {
    // SAFETY: only used by the wrappers below for calls whose pointer
    // arguments are valid, writable (where written) and sized for what the
    // kernel writes; none of them can unmap or change this program's memory.
    Error::decode(unsafe { syscall6(nr as u64, a0, a1, a2, 0, 0, 0) })
}

/// End this server with `code`. Never returns.
pub fn exit(code: i32) -> ! {
    ring_owed_doorbells();
    loop {
        // SAFETY: `exit` takes no pointer and does not return; if it ever
        // did, the loop asks again.
        unsafe { syscall6(Syscall::Exit as u64, code as i64 as u64, 0, 0, 0, 0, 0) };
    }
}

/// Give up the rest of the time slice.
pub fn yield_now() -> Result<(), Error> {
    ring_owed_doorbells();
    call(Syscall::Yield, 0, 0, 0).map(drop)
}

/// Block until a notification bit in `mask` is pending, or `timeout_ns`
/// passes (0 = forever). Returns the pending bits of `mask` (and clears
/// them in the kernel); `Err(TimedOut)` when the timeout passed,
/// `Err(InvalidArgument)` for an empty mask.
///
/// Doorbells owed ([`owe_doorbell`]) are rung by the same kernel entry,
/// before the wait.
pub fn wait(mask: u64, timeout_ns: u64) -> Result<u64, Error> {
    call(Syscall::Wait, mask, timeout_ns, take_owed_doorbells())
}

/// Whether doorbells may wait for this server's next `wait` (batching on,
/// inside the executor): then ringing and sleeping are one kernel entry,
/// which halves the crossings of a request and its answer.
static DEFER_DOORBELLS: AtomicBool = AtomicBool::new(false);
/// Channel handles (below 64) whose doorbell is owed.
static OWED_DOORBELLS: AtomicU64 = AtomicU64::new(0);

/// Let doorbells wait for the next [`wait`] (or not: then [`owe_doorbell`]
/// rings at once).
pub fn defer_doorbells(on: bool) {
    DEFER_DOORBELLS.store(on, Ordering::Relaxed);
    if !on {
        ring_owed_doorbells();
    }
}

/// Ring the doorbell of channel `handle`, now or with the next kernel
/// entry that blocks, yields or ends this server: never later than the
/// moment this server stops running.
pub fn owe_doorbell(handle: u32) {
    if handle < 64 && DEFER_DOORBELLS.load(Ordering::Relaxed) {
        OWED_DOORBELLS.fetch_or(1 << handle, Ordering::Relaxed);
    } else {
        // A failing notify means the handle is wrong, which the caller
        // already ruled out; there is nobody to report it to here.
        let _ = notify(handle);
    }
}

fn take_owed_doorbells() -> u64 {
    OWED_DOORBELLS.swap(0, Ordering::Relaxed)
}

/// Ring every owed doorbell now (before a yield or an exit).
fn ring_owed_doorbells() {
    let mut owed = take_owed_doorbells();
    while owed != 0 {
        let _ = notify(owed.trailing_zeros());
        owed &= owed - 1;
    }
}

/// Ring the doorbell of the peer on channel `handle`.
pub fn notify(handle: u32) -> Result<(), Error> {
    call(Syscall::Notify, u64::from(handle), 0, 0).map(drop)
}

/// Describe channel `handle`: `Err(BadHandle)` past the last one.
pub fn channel_info(handle: u32) -> Result<ChannelInfo, Error> {
    describe(Syscall::ChannelInfo, handle)
}

/// After the peer of channel `handle` was restarted, map the channel's
/// new ring in place of the old one; its description, as `channel_info`.
/// `PeerDead` when the peer stays down.
pub fn channel_reconnect(handle: u32) -> Result<ChannelInfo, Error> {
    describe(Syscall::ChannelReconnect, handle)
}

/// What the kernel's status page says of channel `handle` now: its
/// generation and whether the peer is alive. Read once per call, from
/// the page only the kernel writes.
pub fn channel_status(handle: u32) -> ChannelStatus {
    #[cfg(target_os = "none")]
    {
        use abi::{MAX_HANDLES, StatusPage, layout};
        if (handle as usize) < MAX_HANDLES {
            let page = layout::STATUS_PAGE as *const StatusPage;
            // SAFETY: the kernel maps the status page read-only at
            // `STATUS_PAGE` in every server before it starts; the entry
            // is in bounds; a volatile read because the kernel changes it
            // behind the program's back.
            return unsafe {
                core::ptr::read_volatile(&raw const (*page).channels[handle as usize])
            };
        }
    }
    let _ = handle;
    ChannelStatus::default()
}

/// How many times this server was restarted (0 on its first run).
#[cfg(target_os = "none")]
pub fn restarts() -> u32 {
    use abi::{StatusPage, layout};
    let page = layout::STATUS_PAGE as *const StatusPage;
    // SAFETY: as in `channel_status`.
    unsafe { core::ptr::read_volatile(&raw const (*page).restarts) }
}

/// How many times this server was restarted: on the host, never.
#[cfg(not(target_os = "none"))]
pub fn restarts() -> u32 {
    0
}

/// Make server `index` fault at its next instruction (a test and soak
/// tool; `Denied` unless the manifest grants `inject_faults`).
pub fn inject_fault(index: u32) -> Result<(), Error> {
    call(Syscall::InjectFault, u64::from(index), 0, 0).map(drop)
}

/// Describe server `index` (any server may ask); `BadHandle` past the last,
/// which is how to count them.
pub fn server_info(index: u32) -> Result<ServerInfo, Error> {
    describe(Syscall::ServerInfo, index)
}

/// Every server, with its index, in index order: `server_info` from 0
/// until it says `BadHandle`.
pub fn servers() -> impl Iterator<Item = (u32, ServerInfo)> {
    (0u32..).map_while(|i| server_info(i).ok().map(|info| (i, info)))
}

/// Traffic on channel `index` (system-wide); `BadHandle` past the last.
pub fn channel_stats(index: u32) -> Result<ChannelStats, Error> {
    describe(Syscall::ChannelStats, index)
}

/// The calls that take a handle or an index and a pointer to the record
/// the kernel fills in for it: they differ only in the call and the record.
/// `T` must be the record `nr` writes (what [`call`] relies on), which each
/// caller's return type names.
fn describe<T: Default>(nr: Syscall, index: u32) -> Result<T, Error> {
    let mut record = T::default();
    call(nr, u64::from(index), (&raw mut record) as u64, 0)?;
    Ok(record)
}

/// Take delivery of IRQ `line`: returns the notification bit it raises.
pub fn irq_bind(line: u32) -> Result<u32, Error> {
    call(Syscall::IrqBind, u64::from(line), 0, 0).map(|bit| bit as u32)
}

/// The handler of IRQ `line` is done; the line may fire again.
pub fn irq_ack(line: u32) -> Result<(), Error> {
    call(Syscall::IrqAck, u64::from(line), 0, 0).map(drop)
}

/// Open `count` I/O ports from `first` (as granted by the manifest) in this
/// server's I/O permission bitmap.
pub fn ioport_enable(first: u16, count: u32) -> Result<(), Error> {
    call(Syscall::IoPortEnable, u64::from(first), u64::from(count), 0).map(drop)
}

/// Write `bytes` to granted port `port` in one kernel entry, waiting before
/// every `chunk` bytes until `in8(status_port) & ready_mask` is non-zero (a
/// transmit FIFO with room). Returns how many were written: fewer when the
/// device stayed busy. At most 4096 bytes a call. For output bursts where
/// ring-3 port I/O is emulated ([`ports_direct`] is false).
pub fn ioport_write_paced(
    port: u16,
    bytes: &[u8],
    status_port: u16,
    ready_mask: u8,
    chunk: usize,
) -> Result<usize, Error> {
    // SAFETY: the kernel only reads `bytes`, within its length.
    let ret = unsafe {
        syscall6(
            Syscall::IoPortWritePaced as u64,
            u64::from(port),
            bytes.as_ptr() as u64,
            bytes.len() as u64,
            u64::from(status_port),
            u64::from(ready_mask),
            chunk as u64,
        )
    };
    Error::decode(ret).map(|n| n as usize)
}

/// Whether IN/OUT on a granted port runs at the hardware's cost in ring 3
/// (`false` where the kernel's backend emulates each one: batch through
/// [`ioport_write_paced`] instead). `true` when the kernel cannot tell.
pub fn ports_direct() -> bool {
    boot_info_cached().is_none_or(|b| b.ports_direct != 0)
}

/// Map the granted MMIO region `[phys, phys + len)`; returns its user
/// address. Accessing it is up to the caller's device module.
pub fn mmio_map(phys: u64, len: u64) -> Result<u64, Error> {
    call(Syscall::MmioMap, phys, len, 0)
}

/// A copy of the kernel's counters.
pub fn counters() -> Result<KernelCounters, Error> {
    let mut out = KernelCounters::new_zeroed();
    let len = size_of::<KernelCounters>() as u64;
    let written = call(
        Syscall::Counters,
        out.as_mut_bytes().as_mut_ptr() as u64,
        len,
        0,
    )?;
    if written > len {
        return Err(Error::BadSize);
    }
    Ok(out)
}

/// Write `line` to the kernel console as one record, prefixed with this
/// server's name, control characters escaped. `Busy` when the line was
/// dropped: over this server's rate, or the console's ring was full (a
/// note with the count comes out with the next line let through).
pub fn log(line: &[u8]) -> Result<(), Error> {
    call(Syscall::Log, line.as_ptr() as u64, line.len() as u64, 0).map(drop)
}

/// The boot configuration.
pub fn boot_info() -> Result<BootInfo, Error> {
    let mut info = BootInfo::default();
    let len = size_of::<BootInfo>() as u64;
    call(Syscall::BootInfo, (&raw mut info) as u64, len, 0)?;
    Ok(info)
}

/// The boot configuration, asked once and then cached (`None` when the call
/// fails, e.g. on the host).
pub fn boot_info_cached() -> Option<&'static BootInfo> {
    static BOOT: conquer_once::spin::OnceCell<Option<BootInfo>> =
        conquer_once::spin::OnceCell::uninit();
    BOOT.get_or_init(|| boot_info().ok()).as_ref()
}

/// The batching policy chosen at boot (`batching=on|off`); `On` when the
/// kernel cannot tell.
pub fn batching() -> pvchannel::Batching {
    boot_info_cached()
        .map(|b| pvchannel::Batching::from_flag(b.batching))
        .unwrap_or_default()
}

/// The `test=NAME` option, empty when not testing.
pub fn test_name() -> &'static str {
    boot_info_cached()
        .map(|b| abi::name_str(&b.test_name))
        .unwrap_or("")
}

/// The time-stamp counter (no system call: RDTSC is allowed in ring 3,
/// the kernel leaves CR4.TSD clear). Ticks at `BootInfo::tsc_hz`.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter and has no other effect.
    unsafe { core::arch::x86_64::_rdtsc() }
}
