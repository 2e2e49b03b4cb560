//! Supervision: what happens when a server ends. Its manifest entry says
//! whether it is started again (`restart = "never" | "on-fault" |
//! "always"`) and how often (`restart_limit` within `restart_period_ms`,
//! [`microkernel::intensity`]). A restarted server is loaded afresh from
//! its image into a new address space, with the same index, grants and
//! channel handles; each of its channels moves to a new generation
//! (`channels`), and the peer learns it through its status page and a
//! notification. A server left down is reported once, and its peers' status
//! pages say `PEER_DEAD`.
//!
//! Why in the kernel and not in a supervisor server: the kernel already
//! holds the images (the initrd), the grants and the channel table, and a
//! restart is a few kernel-internal steps (load, map the new rings, tell
//! the peers). A user-space supervisor would need system calls to create
//! address spaces, map other servers' rings and hand out grants: a far
//! larger and more dangerous interface, to carry out the same policy,
//! which the manifest states either way. (Hubris makes the same choice
//! the other way round for its policy, with the restart itself still a
//! kernel operation; here the policy is data, so the kernel applies it.)
//!
//! Context: trap context, interrupts masked, on the kernel stack of the
//! server that ended (the replaced instance is freed at the next trap).

use abi::{Error, PEER_ALIVE, PEER_DEAD};
use manifest::Restart;

use crate::channels::{self, Region};
use crate::process::{ChannelEnd, Server};
use crate::system::System;
use crate::{exit, hv, kprintln};
use microkernel::scheduler::State;

/// Server `index` (the current one) ended in `state`: release what it
/// held, then restart it if its policy and intensity allow, or leave it
/// down and tell its peers.
pub fn end_server(system: &mut System, index: usize, state: State) {
    system.retire(index, state);
    if restart(system, index, state) {
        return;
    }
    // Down for good: the kernel log goes back to COM1, with what the
    // console left unprinted (a restarted console gets it instead).
    let log_dropped = crate::klog::detach_if(index, crate::serial::write_direct);
    if let Some(dropped) = log_dropped {
        kprintln!(
            "kernel: the console server ended; the kernel log is back on COM1 \
             ({dropped} chunks were dropped while its ring was full)"
        );
    }
    leave_down(system, index);
    if system.bury(index) {
        kprintln!("kernel: all servers have ended");
        let counters = system.counters_snapshot();
        kprintln!("kernel: counters: {counters}");
        if system.config.test.is_some() {
            exit::success();
        }
    }
}

/// The handle `server` holds for `channel`.
fn handle_of(server: &Server, channel: usize) -> Option<usize> {
    server.channels.iter().position(|e| e.channel == channel)
}

/// Tell the live peer at the other end of `end` that the channel is now
/// at `generation` with its peer `peer_state`, and wake it.
fn tell_peer(system: &mut System, end: &ChannelEnd, generation: u32, peer_state: u32) {
    let Some(peer) = end.peer else { return };
    if !system.is_alive(peer) {
        return;
    }
    let Some(handle) = handle_of(&system.servers[peer], end.channel) else {
        return;
    };
    system.servers[peer].set_channel_status(handle, generation, peer_state);
    let bit = system.servers[peer].channels[handle].own_bit;
    system.raise(peer, 1 << bit);
}

/// Restart server `index`, which ended in `state`, if its policy and
/// intensity allow; `true` when it was.
fn restart(system: &mut System, index: usize, state: State) -> bool {
    let cpu = system.cpu_of(index);
    let Some(spec) = system.specs.get_mut(index) else {
        return false;
    };
    let wanted = match spec.restart {
        Restart::Never => false,
        // An abnormal end: a fault, or an exit with an error code (a
        // server whose start-up failed, say for a peer that was itself
        // restarting), as OTP's "transient".
        Restart::OnFault => match state {
            State::Faulted => true,
            State::Exited(code) => code != 0,
            _ => false,
        },
        Restart::Always => true,
    };
    if !wanted {
        return false;
    }
    let name = system.servers[index].name.clone();
    let started = hv::rdtsc();
    if !spec.intensity.allow(started) {
        kprintln!(
            "kernel: server {name} stays down: it was restarted {} times within its period \
             (restart_limit {})",
            spec.intensity.recent(),
            spec.intensity.limit()
        );
        return false;
    }
    let mut new = match Server::load(index, &name, spec.image, cpu) {
        Ok(server) => server,
        Err(e) => {
            kprintln!("kernel: server {name} stays down: cannot restart it: {e}");
            return false;
        }
    };
    spec.grant(&mut new);
    let old = &system.servers[index];
    new.channels = old.channels.clone();
    new.bits_used = old
        .channels
        .iter()
        .map(|e| e.own_bit + 1)
        .max()
        .unwrap_or(0);
    new.set_restarts(old.restarts.saturating_add(1));
    // The log rate follows the server, not the instance: a crash loop
    // must not get a fresh burst each time.
    new.log_limit = old.log_limit;
    for handle in 0..new.channels.len() {
        if let Err(why) = renew_channel(system, &mut new, handle) {
            kprintln!("kernel: server {name} stays down: cannot renew its channels: {why}");
            // The channels renewed so far drop the new instance's mapping
            // with it; `leave_down` tells every peer.
            for end in &new.channels[..handle] {
                channels::set_mapped(&mut system.channels[end.channel], end.provider, None);
            }
            return false;
        }
    }
    // A restart runs on the server's own CPU (it ended there); nothing of
    // the old instance is saved or resumed.
    system.replace(index, new);
    let micros = u128::from(hv::rdtsc().saturating_sub(started)) * 1_000_000
        / u128::from(system.config.tsc_hz);
    kprintln!(
        "kernel: server {name} restarted (restart {}) in {micros} us",
        system.servers[index].restarts
    );
    true
}

/// Move channel `handle` of the restarting server `new` to a fresh
/// generation mapped in its new space; tell the peer.
fn renew_channel(system: &mut System, new: &mut Server, handle: usize) -> Result<(), &'static str> {
    let end = new.channels[handle];
    let channel = &mut system.channels[end.channel];
    let generation = channel.generation.wrapping_add(1);
    let (region, duplex) = channels::new_region(channel.ring_slots, generation)?;
    channel.push_generation(region);
    channels::map_region(&mut new.space, channel.base, &region)?;
    channels::set_mapped(channel, end.provider, Some(generation));
    let peer_alive = match end.peer {
        Some(peer) => system.is_alive(peer),
        None => {
            // The kernel's log: the kernel is the client, and moves to the
            // new ring at once, carrying over what the old one held (`klog::attach`).
            let (slots, console) = (channel.ring_slots, channel.provider);
            crate::startup::attach_log_ring(duplex, &region, slots, console, end.own_bit)?;
            channels::set_mapped(&mut system.channels[end.channel], false, Some(generation));
            true
        }
    };
    let state = if peer_alive { PEER_ALIVE } else { PEER_DEAD };
    new.set_channel_status(handle, generation, state);
    tell_peer(system, &end, generation, PEER_ALIVE);
    Ok(())
}

/// Server `index` ended and stays down: its ends of every channel are
/// gone, and its peers are told (`PEER_DEAD`).
fn leave_down(system: &mut System, index: usize) {
    for end in system.servers[index].channels.clone() {
        let channel = &mut system.channels[end.channel];
        channels::set_mapped(channel, end.provider, None);
        if end.peer.is_none() {
            // The kernel's log end: detached already (`klog::detach_if`).
            channels::set_mapped(channel, false, None);
        }
        let generation = channel.generation;
        tell_peer(system, &end, generation, PEER_DEAD);
    }
}

/// `channel_reconnect`: map channel `handle`'s current generation for
/// server `index` in place of the one it has. Returns the generation.
pub fn reconnect(system: &mut System, index: usize, handle: u64) -> Result<u32, Error> {
    let end = system.servers[index].channel_end(handle)?;
    if let Some(peer) = end.peer
        && !system.is_alive(peer)
    {
        return Err(Error::PeerDead);
    }
    let channel = &system.channels[end.channel];
    let generation = channel.generation;
    if channel.mapped(end.provider) != Some(generation) {
        let region: Region = *channel.current().ok_or(Error::PeerDead)?;
        let base = channel.base;
        channels::map_region(&mut system.servers[index].space, base, &region)
            .map_err(|_| Error::OutOfMemory)?;
        channels::set_mapped(
            &mut system.channels[end.channel],
            end.provider,
            Some(generation),
        );
    }
    Ok(generation)
}

/// `inject_fault`: aim server `target` at address 0, so that its next
/// instruction takes a real page fault and goes through the same path as
/// any fault (report, policy, restart). A blocked target is woken for it.
pub fn inject_fault(system: &mut System, caller: usize, target: u64) -> Result<u64, Error> {
    if !system.specs.get(caller).is_some_and(|s| s.inject_faults) {
        return Err(Error::Denied);
    }
    let target = usize::try_from(target).map_err(|_| Error::BadHandle)?;
    if target >= system.servers.len() || !system.is_alive(target) {
        return Err(Error::BadHandle);
    }
    system.servers[target].aim_at_fault(target == caller);
    if target == caller {
        return Ok(0);
    }
    let cpu = system.cpu_of(target);
    match system.state(target) {
        State::Blocked => system.wake(target, 0),
        State::Running if cpu != system.here() => hv::smp::kick(cpu),
        _ => {}
    }
    Ok(0)
}
