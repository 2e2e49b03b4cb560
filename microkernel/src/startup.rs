//! Starting the system: find the manifest in the initrd (the default one,
//! or `manifests/NAME` under `test=NAME`), load each server it names into
//! its own address space, and set up the channels between them with the
//! grants the manifest gives. A server whose image is missing or corrupt,
//! or whose grants break the grant rules of `manifest` (an MMIO
//! region over RAM of the real memory map, the kernel image or the initrd;
//! a port range too wide or holding ports no server may have), is reported
//! by name and left out; the rest boot.
//!
//! Context: boot, interrupts masked.

use alloc::vec::Vec;

use boot::MemoryKind;
use manifest::{
    self, Grant, GrantError, GrantRefusal, Manifest, MmioRegion, RamKind, RamRange, Role,
};
use microkernel::initrd;
use microkernel::physmem::PhysRange;
use pvchannel::{Completion, Descriptor};

use crate::channels::{self, Channel, Region};
use crate::kprintln;
use crate::memory::phys_to_virt;
use crate::process::Spec;
use crate::process::{ChannelEnd, MmioGrant, Server};
use crate::system::System;
use microkernel::intensity::Intensity;

/// The initrd's bytes, through the direct map.
pub fn initrd(info: &boot::BootInfo) -> Option<&'static [u8]> {
    let module = info.modules().first()?;
    // SAFETY: the frame allocator never hands out the initrd's frames, the
    // direct map covers RAM, and nothing writes to it.
    Some(unsafe { core::slice::from_raw_parts(phys_to_virt(module.start), module.len as usize) })
}

/// The physical RAM no server may be granted as MMIO, for [`start`]: the
/// kernel image, the boot modules (the initrd), then every usable range of
/// the boot memory map (the frames the kernel hands out). The kernel's own
/// ranges come first so that a refusal names them rather than the RAM
/// around them. Firmware memory (ACPI tables and NVS, the BIOS area) is not
/// in the list: reading the ACPI tables there is the apic server's job.
pub fn ram_ranges(info: &boot::BootInfo, kernel_image: PhysRange) -> Vec<RamRange> {
    let image = RamRange::new(kernel_image.start, kernel_image.end, RamKind::KernelImage);
    let modules = info
        .modules()
        .iter()
        .map(|m| RamRange::new(m.start, m.start.saturating_add(m.len), RamKind::Initrd));
    let map = info
        .memory_map()
        .iter()
        .filter(|r| r.kind == MemoryKind::Usable)
        .map(|r| RamRange::new(r.start, r.end(), RamKind::Usable));
    core::iter::once(image).chain(modules).chain(map).collect()
}

/// The ports and MMIO regions a server may touch, as the kernel keeps them.
struct Grants {
    /// `(first, count)` (`process::Server::port_grants`).
    ports: Vec<(u16, u16)>,
    mmio: Vec<MmioGrant>,
}

/// Server `spec`'s grants, if every one passes the grant rules against
/// `ram` ([`manifest::Server::check_grants`]).
fn grants(spec: &manifest::Server, ram: &[RamRange]) -> Result<Grants, GrantRefusal> {
    spec.check_grants(ram)?;
    let ports = spec
        .ports()
        .iter()
        .map(|&r| port_grant(r.first, r.count))
        .collect::<Result<_, _>>()?;
    let mmio = spec.mmio().iter().map(mmio_grant).collect();
    Ok(Grants { ports, mmio })
}

/// One port grant as `(first, count)`. A checked grant holds at most
/// [`manifest::MAX_PORT_GRANT`] ports, so its count fits a `u16`; one
/// that does not (65,536 ports would wrap to 0) is refused, not cut.
fn port_grant(first: u16, count: u32) -> Result<(u16, u16), GrantRefusal> {
    match u16::try_from(count) {
        Ok(n) if n != 0 => Ok((first, n)),
        _ => Err(GrantRefusal {
            grant: Grant::Ports(manifest::PortRange { first, count }),
            error: GrantError::TooManyPorts { count },
        }),
    }
}

/// One MMIO grant, not mapped until the server asks (`mmio_map`).
fn mmio_grant(r: &MmioRegion) -> MmioGrant {
    MmioGrant {
        phys: r.base,
        len: r.size,
        mapped_at: None,
    }
}

/// The initrd's files by name (`microkernel::initrd`), walked once and
/// only as far as needed: where PVM interprets the kernel, each header
/// read costs about 1.5 ms (a page first touched), and xtask puts the
/// manifests and the default system's servers first. A corrupt header is
/// reported once, when the walk reaches it; what came before it is used.
struct Files<'a> {
    walk: initrd::Files<'a>,
    seen: Vec<initrd::File<'a>>,
}

impl<'a> Files<'a> {
    fn new(archive: &'a [u8]) -> Self {
        Self {
            walk: initrd::files(archive),
            seen: Vec::new(),
        }
    }

    fn find(&mut self, name: &str) -> Option<&'a [u8]> {
        if let Some(file) = self.seen.iter().find(|f| f.name == name.as_bytes()) {
            return Some(file.data);
        }
        for file in self.walk.by_ref() {
            match file {
                Ok(file) => {
                    self.seen.push(file);
                    if file.name == name.as_bytes() {
                        return Some(file.data);
                    }
                }
                Err(e) => log::error!("the initrd is corrupt ({e}); nothing past it is used"),
            }
        }
        None
    }
}

/// Load the servers and channels of the manifest into `system`. `ram` is
/// the physical memory no MMIO grant may reach ([`ram_ranges`]).
pub fn start(
    system: &mut System,
    initrd: Option<&'static [u8]>,
    test: Option<&str>,
    ram: &[RamRange],
) {
    let Some(initrd) = initrd else {
        log::warn!("no initrd: no servers to start");
        return;
    };
    let mut files = Files::new(initrd);
    let manifest_name = match test {
        Some(name) => alloc::format!("manifests/{name}"),
        None => "manifest".into(),
    };
    let manifest_name = match (test, files.find(&manifest_name)) {
        (Some(_), None) => "manifest".into(),
        _ => manifest_name,
    };
    let Some(bytes) = files.find(&manifest_name) else {
        log::error!("the initrd has no {manifest_name}: no servers start");
        return;
    };
    let manifest = match Manifest::decode(bytes) {
        Ok(manifest) => manifest,
        Err(e) => {
            log::error!("{manifest_name} is corrupt: {e}; no servers start");
            return;
        }
    };
    log::info!(
        "starting {} servers from {manifest_name}",
        manifest.server_count()
    );
    crate::bootmarks::mark("manifest decoded");

    // Manifest index -> system index, for the servers that loaded.
    let mut loaded: Vec<Option<usize>> = Vec::new();
    for spec in manifest.servers() {
        let name = spec.name.as_str();
        let grants = match grants(&spec, ram) {
            Ok(grants) => grants,
            Err(refused) => {
                kprintln!("kernel: server {name} not started: {refused}");
                loaded.push(None);
                continue;
            }
        };
        let path = alloc::format!("servers/{}", spec.bin.as_str());
        let Some(image) = files.find(&path) else {
            kprintln!("kernel: server {name} not started: the initrd has no {path}");
            loaded.push(None);
            continue;
        };
        let index = system.servers.len();
        let cpu = system.place(spec.cpus(), !spec.irqs.is_empty());
        let loaded_server = Server::load(index, name, image, cpu);
        crate::bootmarks::mark("a server loaded");
        match loaded_server {
            Ok(mut server) => {
                let spec = Spec {
                    image,
                    restart: spec.restart,
                    intensity: Intensity::new(
                        spec.restart_limit,
                        system.ns_to_tsc(u64::from(spec.restart_period_ms) * 1_000_000),
                    ),
                    inject_faults: spec.may_inject_faults(),
                    ports: grants.ports,
                    irq_grants: spec.irqs.iter().fold(0, |mask, line| mask | (1 << line)),
                    mmio: grants.mmio,
                };
                spec.grant(&mut server);
                let admitted = system.admit(server, spec, cpu);
                debug_assert_eq!(admitted, index);
                loaded.push(Some(index));
            }
            Err(e) => {
                kprintln!("kernel: server {name} not started: {e}");
                loaded.push(None);
            }
        }
    }

    // Channels whose two ends loaded: one shared region each, formatted here
    // so that neither side has to trust the other's initialisation.
    let mut created: Vec<Option<usize>> = Vec::new();
    for (i, spec) in manifest.channels().enumerate() {
        let (Some(provider), Some(client)) = (loaded[spec.provider], loaded[spec.client]) else {
            created.push(None);
            continue;
        };
        match make_channel(
            system,
            i,
            spec.ring_slots,
            provider,
            Some(client),
            spec.service.as_bytes(),
        ) {
            Ok((index, _)) => created.push(Some(index)),
            Err(why) => {
                kprintln!(
                    "kernel: channel {} not created: {why}",
                    spec.service.as_str()
                );
                created.push(None);
            }
        }
    }
    // Each server's ends, in the manifest's handle order.
    for (manifest_index, system_index) in loaded.iter().enumerate() {
        let Some(index) = *system_index else { continue };
        for handle in manifest.handles(manifest_index) {
            let Some(channel) = created[handle.channel] else {
                continue;
            };
            let Some(peer) = loaded[handle.peer] else {
                continue;
            };
            let server = &mut system.servers[index];
            let Some(own_bit) = server.allocate_bit() else {
                kprintln!(
                    "kernel: server {} has more channels than notification bits",
                    server.name
                );
                break;
            };
            server.channels.push(ChannelEnd {
                channel,
                peer: Some(peer),
                own_bit,
                peer_bit: 0,
                provider: handle.role == Role::Provider,
                service: *handle.service.as_bytes(),
            });
        }
    }
    crate::bootmarks::mark("channels made");
    // Now that every end has its bit, tell each end its peer's.
    for index in 0..system.servers.len() {
        for e in 0..system.servers[index].channels.len() {
            let end = system.servers[index].channels[e];
            let Some(peer) = end.peer else { continue };
            let peer_bit = system.servers[peer]
                .channels
                .iter()
                .find(|p| p.channel == end.channel)
                .map(|p| p.own_bit);
            system.servers[index].channels[e].peer_bit = peer_bit.unwrap_or(0);
        }
    }
    // The kernel's log joins the console service as one more client.
    let console = manifest
        .channels()
        .find(|c| c.service.as_str() == abi::klog::SERVICE)
        .and_then(|c| loaded[c.provider].map(|p| (p, c.ring_slots)));
    if let Some((console, slots)) = console {
        attach_kernel_log(system, console, slots, manifest.channel_count());
    }
    for index in 0..system.servers.len() {
        system.add_ready(index);
    }
}

fn attach_kernel_log(system: &mut System, console: usize, slots: u32, channel_slot: usize) {
    let service = abi::name_bytes(abi::klog::SERVICE);
    let (channel, duplex) = match make_channel(system, channel_slot, slots, console, None, &service)
    {
        Ok(made) => made,
        Err(why) => {
            kprintln!("kernel: the kernel log stays on COM1: {why}");
            return;
        }
    };
    let server = &mut system.servers[console];
    let Some(own_bit) = server.allocate_bit() else {
        kprintln!(
            "kernel: the kernel log stays on COM1: the console server has no notification bit left"
        );
        return;
    };
    server.channels.push(ChannelEnd {
        channel,
        peer: None,
        own_bit,
        peer_bit: 0,
        provider: true,
        service,
    });
    let Some(&region) = system.channels[channel].current() else {
        return;
    };
    if let Err(why) = attach_log_ring(duplex, &region, slots, console, own_bit) {
        kprintln!("kernel: the kernel log stays on COM1: {why}");
    }
}

/// Send the kernel log into the request ring of `duplex` (the kernel's
/// channel to `console`, whose doorbell bit is `bit`), formatted in
/// `region`: at boot, and again when the console server was restarted.
pub fn attach_log_ring(
    duplex: pvchannel::Duplex<Descriptor, Completion>,
    region: &Region,
    slots: u32,
    console: usize,
    bit: u32,
) -> Result<(), &'static str> {
    let (requests, _completions) = duplex.client().map_err(|_| "the ring is unusable")?;
    let ring_len = pvchannel::ring_bytes::<Descriptor>(slots).ok_or("bad ring size")?;
    crate::klog::attach(requests, phys_to_virt(region.phys), ring_len, console, bit);
    Ok(())
}

fn make_channel(
    system: &mut System,
    manifest_index: usize,
    slots: u32,
    provider: usize,
    client: Option<usize>,
    service: &[u8; abi::NAME_LEN],
) -> Result<(usize, pvchannel::Duplex<Descriptor, Completion>), &'static str> {
    let (region, duplex) = channels::new_region(slots, 0)?;
    let base = channels::channel_base(manifest_index);
    for server in core::iter::once(provider).chain(client) {
        channels::map_region(&mut system.servers[server].space, base, &region)?;
    }
    let index = system.channels.len();
    system.channels.push(Channel::new(
        manifest_index,
        region,
        provider,
        client,
        *service,
        slots,
    ));
    Ok((index, duplex))
}
