//! System calls: decode the number and arguments from the caller's frame
//! (numbers and errors from `abi`), check every argument (the checks are
//! `microkernel::syscall_args`, host-tested), act.
//! Nothing a server passes can crash the kernel: every path returns a value
//! or an `abi::Error`.
//!
//! Context: trap context, interrupts masked, in the caller's address space.

use core::mem::size_of;

use core::sync::atomic::{AtomicU32, Ordering};

use abi::{
    BootInfo, ChannelInfo, ChannelStats, Error, KernelCounters, ServerInfo, Syscall, name_bytes,
};
use pvchannel::layout::PRODUCER_INDEX_OFFSET;

use crate::hv;
use crate::hv::trap::TrapFrame;
use crate::system::System;
use crate::usermem::UserRange;
use microkernel::scheduler::State;
use microkernel::syscall_args as check;
use zerocopy::IntoBytes;

/// Handle the system call in `frame` (made by the current server).
pub fn handle(system: &mut System, frame: &mut TrapFrame) {
    let number = Syscall::from_raw(frame.rax);
    let Some(index) = system.count_syscall(number) else {
        return;
    };
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
            exit(system, index, a[0] as i64);
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
            let generation = crate::supervisor::reconnect(system, index, a[0])?;
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
    let mask = check::wait_mask(mask)?;
    let got = system.take_pending(index, mask);
    if got != 0 {
        return Ok(Some(got));
    }
    let deadline = (timeout_ns != 0)
        .then(|| microkernel::time::deadline_after(hv::rdtsc(), timeout_ns, system.config.tsc_hz));
    system.block_current(mask, deadline);
    Ok(None)
}

/// `exit`: the caller ends with `code`.
fn exit(system: &mut System, index: usize, code: i64) {
    crate::kprintln!(
        "kernel: server {} exited with code {code}",
        system.servers[index].name
    );
    crate::supervisor::end_server(system, index, State::Exited(code));
}

/// Ring every channel handle set in `handles` (`wait`'s doorbells), after
/// checking that the caller holds them all.
fn ring_all(system: &mut System, index: usize, handles: u64) -> Result<(), Error> {
    if handles == 0 {
        return Ok(());
    }
    let held = system.servers[index].channels.len();
    for handle in check::doorbell_handles(handles, held)? {
        notify(system, index, handle as u64)?;
    }
    Ok(())
}

fn notify(system: &mut System, index: usize, handle: u64) -> Result<u64, Error> {
    let end = system.servers[index].channel_end(handle)?;
    system.ring(&end);
    Ok(0)
}

fn channel_info(system: &mut System, index: usize, handle: u64, out: u64) -> Result<u64, Error> {
    let end = system.servers[index].channel_end(handle)?;
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
        peer_cpu: end.peer.map_or(abi::NO_CPU, |p| system.cpu_of(p) as u32),
        reserved: 0,
    };
    let server = &mut system.servers[index];
    UserRange::new(out, size_of::<ChannelInfo>() as u64).write(server, info.as_bytes())?;
    Ok(0)
}

fn irq_bind(system: &mut System, index: usize, line: u64) -> Result<u64, Error> {
    let line = check::irq_line(line)?;
    if system.servers[index].irq_grants & (1 << line) == 0 {
        return Err(Error::Denied);
    }
    if system.irqs.owner(line).is_some() {
        return Err(Error::Busy);
    }
    let bit = system.servers[index]
        .irq_bit(line)
        .ok_or(Error::OutOfMemory)?;
    system.irqs.bind(line, index).map_err(|_| Error::Busy)?;
    Ok(u64::from(bit))
}

fn irq_ack(system: &mut System, index: usize, line: u64) -> Result<u64, Error> {
    let line = check::irq_line(line)?;
    let eois = system
        .irqs
        .acknowledge(line, index)
        .map_err(|_| Error::BadHandle)?;
    system.end_interrupts(eois);
    Ok(0)
}

fn ioport_enable(system: &mut System, index: usize, first: u64, count: u64) -> Result<u64, Error> {
    let server = &mut system.servers[index];
    let (first, last) = check::granted_ports(first, count, &server.port_grants)?;
    server.allow_ports(first, last);
    system.reload_io_bitmap();
    Ok(0)
}

fn mmio_map(system: &mut System, index: usize, phys: u64, len: u64) -> Result<u64, Error> {
    let end = check::mmio_request(phys, len)?;
    let server = &mut system.servers[index];
    let grant = check::mmio_grant(server.mmio.iter().map(|g| (g.phys, g.len)), phys, end)?;
    let base = server.map_mmio(grant).map_err(|_| Error::OutOfMemory)?;
    Ok(base + (phys - server.mmio[grant].phys))
}

fn counters(system: &mut System, index: usize, out: u64, len: u64) -> Result<u64, Error> {
    let n = check::copy_out_len(len, size_of::<KernelCounters>())?;
    let mut snapshot: KernelCounters = system.counters_snapshot();
    snapshot.tsc = hv::rdtsc();
    let server = &mut system.servers[index];
    Ok(UserRange::new(out, n as u64).write(server, snapshot.as_bytes())? as u64)
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

    let len = check::log_len(len)?;
    let mut buf = [0u8; check::MAX_LOG];
    let text = &mut buf[..len];
    let tsc_hz = system.config.tsc_hz;
    let server = &mut system.servers[index];
    UserRange::new(ptr, len as u64).read(server, text)?;
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
    Ok(len as u64)
}

fn boot_info(system: &mut System, index: usize, out: u64, len: u64) -> Result<u64, Error> {
    let n = check::copy_out_len(len, size_of::<BootInfo>())?;
    let mut info = BootInfo {
        batching: u32::from(system.config.batching),
        server_index: index as u32,
        tsc_hz: system.config.tsc_hz,
        test_name: system.config.test.unwrap_or([0; 32]),
        rsdp: system.config.rsdp,
        ports_direct: u32::from(hv::backend().ports_direct()),
        backend: {
            let mut name = [0u8; 12];
            let b = hv::backend().name().as_bytes();
            name[..b.len()].copy_from_slice(b);
            name
        },
        cpus: system.cpu_count() as u32,
        cpu: system.cpu_of(index) as u32,
        ..BootInfo::default()
    };
    let name = &system.servers[index].name;
    check::pack_args(
        microkernel::cmdline::server_args(&system.config.cmdline, name),
        &mut info.args,
    );
    let server = &mut system.servers[index];
    Ok(UserRange::new(out, n as u64).write(server, info.as_bytes())? as u64)
}

fn server_info(system: &mut System, index: usize, which: u64, out: u64) -> Result<u64, Error> {
    let which = check::handle(which, system.servers.len())?;
    let server = &system.servers[which];
    let (state, exit_code) = check::server_state(system.state(which));
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
    let channel = &system.channels[check::handle(which, system.channels.len())?];
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
        doorbells_from_client: channel.doorbells(false),
        doorbells_from_provider: channel.doorbells(true),
    };
    let server = &mut system.servers[index];
    UserRange::new(out, size_of::<ChannelStats>() as u64).write(server, stats.as_bytes())?;
    Ok(0)
}

/// How the kernel names itself as a channel peer.
pub const KERNEL_NAME: &str = "kernel";
