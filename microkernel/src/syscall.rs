//! System calls: decode the number and arguments from the caller's frame
//! (numbers and errors from `abi`), check every argument, act.
//! Nothing a server passes can crash the kernel: every path returns a value
//! or an `abi::Error`.
//!
//! Context: trap context, interrupts masked, in the caller's address space.

use core::mem::size_of;

use core::sync::atomic::{AtomicU32, Ordering};

use abi::{
    BootInfo, ChannelInfo, ChannelStats, Error, KernelCounters, ServerInfo, ServerState, Syscall,
    name_bytes,
};
use pvchannel::layout::PRODUCER_INDEX_OFFSET;
use x86_64::structures::paging::PageTableFlags as Flags;

use crate::hv;
use crate::hv::cpu::IO_BITMAP_BYTES;
use crate::hv::trap::TrapFrame;
use crate::memory::PAGE_SIZE;
use crate::process::State;
use crate::sched::System;
use crate::usermem::UserRange;
use zerocopy::IntoBytes;

/// The longest line `log` accepts.
pub const MAX_LOG: u64 = 1024;

/// Handle the system call in `frame` (made by the current server).
pub fn handle(system: &mut System, frame: &mut TrapFrame) {
    let number = Syscall::from_raw(frame.rax);
    system.count_syscall(number);
    let Some(index) = system.current() else {
        return;
    };
    system.servers[index].syscalls += 1;
    let args = [
        frame.rdi, frame.rsi, frame.rdx, frame.r10, frame.r8, frame.r9,
    ];
    let result = match number {
        None => Err(Error::NoSuchSyscall),
        Some(call) => dispatch(system, index, call, args),
    };
    match result {
        Ok(Some(value)) => frame.rax = value,
        Ok(None) => {} // blocked or ended: the result comes later or never
        Err(e) => frame.rax = e.to_return() as u64,
    }
}

/// `Ok(None)` means the caller blocked or ended.
fn dispatch(
    system: &mut System,
    index: usize,
    call: Syscall,
    a: [u64; 6],
) -> Result<Option<u64>, Error> {
    match call {
        Syscall::Exit => {
            system.exit_current(a[0] as i64);
            Ok(None)
        }
        Syscall::Yield => {
            system.yield_current();
            Ok(Some(0))
        }
        Syscall::Wait => {
            ring_all(system, index, a[2])?;
            wait(system, index, a[0], a[1])
        }
        Syscall::Notify => notify(system, index, a[0]).map(Some),
        Syscall::ChannelInfo => channel_info(system, index, a[0], a[1]).map(Some),
        Syscall::IrqBind => irq_bind(system, index, a[0]).map(Some),
        Syscall::IrqAck => irq_ack(system, index, a[0]).map(Some),
        Syscall::IoPortEnable => ioport_enable(system, index, a[0], a[1]).map(Some),
        Syscall::MmioMap => mmio_map(system, index, a[0], a[1]).map(Some),
        Syscall::Counters => counters(system, index, a[0], a[1]).map(Some),
        Syscall::Log => log(system, index, a[0], a[1]).map(Some),
        Syscall::BootInfo => boot_info(system, index, a[0], a[1]).map(Some),
        Syscall::ServerInfo => server_info(system, index, a[0], a[1]).map(Some),
        Syscall::ChannelStats => channel_stats(system, index, a[0], a[1]).map(Some),
        Syscall::IoPortWritePaced => crate::ports::write_paced(system, index, a).map(Some),
        Syscall::ChannelReconnect => {
            let generation = crate::supervisor::reconnect(system, index, a[0] as usize)?;
            channel_info(system, index, a[0], a[1])?;
            Ok(Some(u64::from(generation)))
        }
        Syscall::InjectFault => crate::supervisor::inject_fault(system, index, a[0]).map(Some),
    }
}

fn wait(
    system: &mut System,
    index: usize,
    mask: u64,
    timeout_ns: u64,
) -> Result<Option<u64>, Error> {
    if mask == 0 {
        return Err(Error::InvalidArgument);
    }
    let server = &mut system.servers[index];
    let got = server.pending & mask;
    if got != 0 {
        server.pending &= !got;
        return Ok(Some(got));
    }
    let deadline = (timeout_ns != 0)
        .then(|| microkernel::time::deadline_after(hv::rdtsc(), timeout_ns, system.tsc_hz));
    system.block_current(mask, deadline);
    Ok(None)
}

/// Ring every channel handle set in `handles` (`wait`'s doorbells), after
/// checking that the caller holds them all.
fn ring_all(system: &mut System, index: usize, handles: u64) -> Result<(), Error> {
    if handles == 0 {
        return Ok(());
    }
    let held = system.servers[index].channels.len();
    if held < 64 && handles >> held != 0 {
        return Err(Error::BadHandle);
    }
    let mut rest = handles;
    while rest != 0 {
        let handle = u64::from(rest.trailing_zeros());
        rest &= rest - 1;
        notify(system, index, handle)?;
    }
    Ok(())
}

fn notify(system: &mut System, index: usize, handle: u64) -> Result<u64, Error> {
    let end = *system.servers[index]
        .channels
        .get(handle as usize)
        .ok_or(Error::BadHandle)?;
    system.counters.doorbells += 1;
    system.channels[end.channel].doorbells[usize::from(end.provider)] += 1;
    // A doorbell towards the kernel's own log channel needs no wakeup: the
    // kernel never waits on it.
    if let Some(peer) = end.peer
        && system.raise(peer, 1 << end.peer_bit)
    {
        system.counters.wakeups += 1;
    }
    Ok(0)
}

fn channel_info(system: &mut System, index: usize, handle: u64, out: u64) -> Result<u64, Error> {
    let end = *system.servers[index]
        .channels
        .get(handle as usize)
        .ok_or(Error::BadHandle)?;
    let channel = &system.channels[end.channel];
    let peer = name_bytes(end.peer.map_or(KERNEL_NAME, |p| &system.servers[p].name));
    let info = ChannelInfo {
        base: channel.base,
        len: channel.len,
        notify_bit: end.own_bit,
        is_provider: u32::from(end.provider),
        service: end.service,
        peer,
        generation: channel.mapped(end.provider).unwrap_or(channel.generation),
        peer_irqs: end.peer.map_or(0, |p| system.servers[p].irq_grants),
        peer_cpu: end
            .peer
            .map_or(abi::NO_CPU, |p| system.servers[p].cpu as u32),
        reserved: 0,
    };
    let server = &mut system.servers[index];
    UserRange::new(out, size_of::<ChannelInfo>() as u64).write(server, info.as_bytes())?;
    Ok(0)
}

fn irq_line(line: u64) -> Result<usize, Error> {
    if line >= crate::sched::IRQ_LINES {
        return Err(Error::InvalidArgument);
    }
    Ok(line as usize)
}

fn irq_bind(system: &mut System, index: usize, line: u64) -> Result<u64, Error> {
    let line = irq_line(line)?;
    if system.servers[index].irq_grants & (1 << line) == 0 {
        return Err(Error::Denied);
    }
    if system.irqs.owner(line).is_some() {
        return Err(Error::Busy);
    }
    let server = &mut system.servers[index];
    let bit = match server.irq_bits[line] {
        Some(bit) => bit,
        None => server.allocate_bit().ok_or(Error::OutOfMemory)?,
    };
    server.irq_bits[line] = Some(bit);
    system.irqs.bind(line, index).map_err(|_| Error::Busy)?;
    Ok(u64::from(bit))
}

fn irq_ack(system: &mut System, index: usize, line: u64) -> Result<u64, Error> {
    let line = irq_line(line)?;
    let eois = system
        .irqs
        .acknowledge(line, index)
        .map_err(|_| Error::BadHandle)?;
    system.end_interrupts(eois);
    Ok(0)
}

fn ioport_enable(system: &mut System, index: usize, first: u64, count: u64) -> Result<u64, Error> {
    let (first, last) = microkernel::portinsn::port_range(first, count).ok_or(Error::BadSize)?;
    let (first, last) = (u32::from(first), u32::from(last));
    let server = &mut system.servers[index];
    let granted = server
        .port_grants
        .iter()
        .any(|&(start, n)| first >= u32::from(start) && last < u32::from(start) + u32::from(n));
    if !granted {
        return Err(Error::Denied);
    }
    let bitmap = server
        .io_bitmap
        .get_or_insert_with(|| alloc::boxed::Box::new([0xFF; IO_BITMAP_BYTES]));
    for port in first..=last {
        bitmap[(port / 8) as usize] &= !(1 << (port % 8));
    }
    system.reload_io_bitmap();
    Ok(0)
}

fn mmio_map(system: &mut System, index: usize, phys: u64, len: u64) -> Result<u64, Error> {
    if len == 0 || !phys.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
        return Err(Error::BadSize);
    }
    let end = phys.checked_add(len).ok_or(Error::BadSize)?;
    let server = &mut system.servers[index];
    let grant = server
        .mmio
        .iter()
        .position(|g| phys >= g.phys && end <= g.phys + g.len)
        .ok_or(Error::Denied)?;
    // A region is mapped once, whole; later calls get the same place.
    let base = match server.mmio[grant].mapped_at {
        Some(base) => base,
        None => {
            let base = server.mmio_next;
            let g = server.mmio[grant];
            let flags = Flags::USER_ACCESSIBLE
                | Flags::WRITABLE
                | Flags::NO_EXECUTE
                | Flags::NO_CACHE
                | Flags::WRITE_THROUGH;
            let mut offset = 0;
            while offset < g.len {
                server
                    .space
                    .map(base + offset, g.phys + offset, flags)
                    .map_err(|_| Error::OutOfMemory)?;
                offset += PAGE_SIZE;
            }
            server.mmio_next = base + g.len + PAGE_SIZE;
            server.mmio[grant].mapped_at = Some(base);
            base
        }
    };
    Ok(base + (phys - server.mmio[grant].phys))
}

fn counters(system: &mut System, index: usize, out: u64, len: u64) -> Result<u64, Error> {
    if len == 0 {
        return Err(Error::BadSize);
    }
    let mut snapshot: KernelCounters = system.counters_snapshot();
    snapshot.tsc = hv::rdtsc();
    let n = len.min(size_of::<KernelCounters>() as u64);
    let server = &mut system.servers[index];
    Ok(UserRange::new(out, n).write(server, snapshot.as_bytes())? as u64)
}

/// One record on the console, `[name] text`, with the text escaped so that
/// it stays one line and cannot act on the terminal (`logline`), at most
/// `ratelimit::SERVER_LOG` records a second per server. A record over that
/// rate, or one the console's ring has no room for, is dropped: the call
/// fails with `Busy` (the arguments are checked first, so a bad one is
/// still reported as such), and the server's next record is preceded by
/// `[name] (N lines dropped)`.
fn log(system: &mut System, index: usize, ptr: u64, len: u64) -> Result<u64, Error> {
    use microkernel::logline::{RECORD_MAX, dropped_note, server_record};

    if len > MAX_LOG {
        return Err(Error::BadSize);
    }
    let mut buf = [0u8; MAX_LOG as usize];
    let text = &mut buf[..len as usize];
    let tsc_hz = system.tsc_hz;
    let server = &mut system.servers[index];
    UserRange::new(ptr, len).read(server, text)?;
    let limit = &mut server.log_limit;
    if !limit.admit(hv::rdtsc(), tsc_hz, microkernel::ratelimit::SERVER_LOG) {
        return Err(Error::Busy);
    }
    let mut record = [0u8; RECORD_MAX];
    let dropped = limit.take_dropped();
    if dropped > 0 {
        let n = dropped_note(&server.name, dropped, &mut record);
        if !crate::console::print_server(&record[..n]) {
            limit.count_dropped(dropped + 1);
            return Err(Error::Busy);
        }
    }
    let n = server_record(&server.name, text, &mut record);
    if !crate::console::print_server(&record[..n]) {
        limit.count_dropped(1);
        return Err(Error::Busy);
    }
    Ok(len)
}

fn boot_info(system: &mut System, index: usize, out: u64, len: u64) -> Result<u64, Error> {
    if len == 0 {
        return Err(Error::BadSize);
    }
    let mut info = BootInfo {
        batching: u32::from(system.batching),
        server_index: index as u32,
        tsc_hz: system.tsc_hz,
        test_name: system.test.unwrap_or([0; 32]),
        rsdp: system.rsdp,
        ports_direct: u32::from(hv::backend().ports_direct()),
        backend: {
            let mut name = [0u8; 12];
            let b = hv::backend().name().as_bytes();
            name[..b.len()].copy_from_slice(b);
            name
        },
        cpus: system.cpu_count() as u32,
        cpu: system.servers[index].cpu as u32,
        ..BootInfo::default()
    };
    let mut at = 0;
    for arg in microkernel::cmdline::server_args(&system.cmdline, &system.servers[index].name) {
        let end = at + arg.len() + usize::from(at > 0);
        if end > info.args.len() {
            break;
        }
        if at > 0 {
            info.args[at] = b' ';
            at += 1;
        }
        info.args[at..end].copy_from_slice(arg.as_bytes());
        at = end;
    }
    let n = len.min(size_of::<BootInfo>() as u64);
    let server = &mut system.servers[index];
    Ok(UserRange::new(out, n).write(server, info.as_bytes())? as u64)
}

fn server_info(system: &mut System, index: usize, which: u64, out: u64) -> Result<u64, Error> {
    let server = system.servers.get(which as usize).ok_or(Error::BadHandle)?;
    let (state, exit_code) = match server.state {
        State::Ready => (ServerState::Ready, 0),
        State::Running => (ServerState::Running, 0),
        State::Blocked => (ServerState::Blocked, 0),
        State::Exited(code) => (ServerState::Exited, code as i32),
        State::Faulted => (ServerState::Faulted, 0),
    };
    let info = ServerInfo {
        name: name_bytes(&server.name),
        state: state as u32,
        exit_code,
        restarts: server.restarts,
        channels: server.channels.len() as u32,
        syscalls: server.syscalls,
    };
    let server = &mut system.servers[index];
    UserRange::new(out, size_of::<ServerInfo>() as u64).write(server, info.as_bytes())?;
    Ok(0)
}

fn channel_stats(system: &mut System, index: usize, which: u64, out: u64) -> Result<u64, Error> {
    let channel = system
        .channels
        .get(which as usize)
        .ok_or(Error::BadHandle)?;
    // The producer indices live in shared memory: read each once, as the
    // number the producer claims, and only report it.
    let read_index = |offset: usize| -> u64 {
        match channel.current() {
            Some(region) if offset + 4 <= channel.len as usize => {
                let phys = region.phys;
                // SAFETY: the channel's frames are contiguous, mapped in the
                // direct map, and live while the channel has frames.
                let word = unsafe {
                    &*crate::memory::phys_to_virt(phys)
                        .add(offset)
                        .cast::<AtomicU32>()
                };
                u64::from(word.load(Ordering::Acquire))
            }
            _ => 0,
        }
    };
    let completions_ring =
        pvchannel::ring_bytes::<pvchannel::Descriptor>(channel.ring_slots).unwrap_or(0);
    let stats = ChannelStats {
        service: channel.service,
        provider: name_bytes(&system.servers[channel.provider].name),
        client: name_bytes(
            channel
                .client
                .map_or(KERNEL_NAME, |c| &system.servers[c].name),
        ),
        ring_slots: channel.ring_slots,
        reserved: 0,
        requests: read_index(PRODUCER_INDEX_OFFSET),
        completions: read_index(completions_ring + PRODUCER_INDEX_OFFSET),
        doorbells_from_client: channel.doorbells[0],
        doorbells_from_provider: channel.doorbells[1],
    };
    let server = &mut system.servers[index];
    UserRange::new(out, size_of::<ChannelStats>() as u64).write(server, stats.as_bytes())?;
    Ok(0)
}

/// How the kernel names itself as a channel peer.
pub const KERNEL_NAME: &str = "kernel";
