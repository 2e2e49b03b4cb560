//! apic: provides the service `apic` (protocol: `proto::apic`).
//!
//! Owns the I/O APIC and the parts of the local APIC that the kernel does
//! not (the kernel keeps its deadline timer and the end of interrupt):
//!
//! * **Finding the I/O APIC.** The RSDP from `BootInfo::rsdp`, then the
//!   RSDT/XSDT and the MADT, parsed by the `acpi` crate (`src/madt.rs`,
//!   this package's library) and read through the MMIO regions the
//!   manifest grants. The firmware puts its tables in RAM below the top
//!   of memory, at an address that depends on the memory size, which a
//!   static manifest cannot grant; when a table is outside the grants (or
//!   there is no RSDP) the server uses the standard PC layout instead: one
//!   I/O APIC at 0xFEC00000 from GSI 0, ISA IRQ 0 on pin 2, LINT1 = NMI,
//!   which is what QEMU's q35 and microvm machines have. It says which it used.
//!   ISA IRQ 0 goes to pin 2 even when the MADT has no override for it:
//!   QEMU's microvm wires the PIT there but its MADT does not say so
//!   (`apic.irq0_gsi=N` on the kernel command line overrides this).
//! * **Routing.** `OP_ROUTE(line)` programs the pin of ISA line `line` (the
//!   MADT's override, else the same number) to deliver vector
//!   `0x20 + line` to the boot CPU (local APIC id 0), fixed delivery,
//!   physical destination; edge and active high for ISA lines unless the
//!   override says otherwise; level and active low for lines 16..=23.
//!   `OP_MASK` / `OP_UNMASK` flip the mask.
//! * **Batching.** With batching on, a whole batch of requests changes a
//!   shadow of the redirection table, and only then are the entries that
//!   changed written, each word only if it changed, and IOREGSEL only when
//!   it must move: two requests for one entry cost one write. With
//!   batching off every request writes its entry (both words, IOREGSEL
//!   each time) before the next is read.
//! * **IPIs and LVTs** through the xAPIC page, when the local APIC is in
//!   xAPIC mode (see `lapic.rs`). With one CPU the IPI that can be tested
//!   is one to self: at start the server sends vector `0x20 + 23` to
//!   itself, which the kernel delivers as IRQ line 23 to this server.
//! * **Grants, per client** (`src/grants.rs`, host-tested). A client may
//!   route, mask and unmask only the lines its own manifest entry grants
//!   it (`irqs = [...]`, the lines it may `irq_bind`), and only while no
//!   other client holds them routed; it may send an IPI only with the
//!   vector `0x20 + line` of such a line, and only to itself (`DEST_SELF`;
//!   other destinations wait for SMP). Anything else is answered `Denied`
//!   and counted (`STAT_DENIED`); the first refusal of each client is
//!   logged, the rest only counted, so that a hostile client cannot flood
//!   the log. Without this, any client could mask line 0 and stop every
//!   timer sleep, or line 4 and stop console input.
//! * **Lines with no live owner are masked.** When a client hangs up, is
//!   dropped by the multiplexer, or dies, every line it routed is masked
//!   and forgotten (logged); a client that comes back in the same slot
//!   starts with no routes. An unmasked line whose server is gone would
//!   otherwise interrupt for no one, forever.
//!
//! Prints `apic: serving N client(s)`; exits 0 when every client has hung
//! up.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

mod device;
mod ioapic;
mod lapic;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use ::proto::apic as proto;
use apic::grants::{self, ClientId, Routes};
use apic::madt::{self, Topology};
use devkit::Mux;
use devkit::mux::unknown;
use ioapic::{ACTIVE_LOW, Entry, IoApic, LEVEL};
use lapic::LocalApic;
use userland::abi::Error;
use userland::{Batching, Completion, Descriptor, OP_HANGUP, println, sys};

userland::entry!(async run);

/// The line the start-up self-IPI arrives on (never routed at the I/O
/// APIC, so only an IPI can raise its vector).
const SELF_TEST_LINE: u32 = 23;

fn find_topology() -> Topology {
    let rsdp = sys::boot_info_cached().map(|b| b.rsdp).unwrap_or(0);
    if rsdp == 0 {
        println!("apic: no RSDP from the loader; using the standard PC layout");
        return Topology::standard();
    }
    match madt::discover(rsdp, |phys, buf| device::read_phys(phys, buf).is_ok()) {
        Ok(mut t) => {
            let overrides = t.overrides.iter().flatten().count();
            if userland::first_run() {
                println!(
                    "apic: MADT found through the RSDP at {rsdp:#x}: {overrides} ISA interrupt source override(s)"
                );
            }
            if t.overrides[0].is_none() {
                // Every PC chipset with an I/O APIC wires the PIT (ISA IRQ
                // 0) to pin 2. QEMU's microvm does too, but its MADT omits
                // the override that says so.
                t.overrides[0] = Some((t.gsi_base + 2, 0));
            }
            t
        }
        Err(e) => {
            println!(
                "apic: ACPI tables not usable ({e}; RSDP at {rsdp:#x}); using the standard PC layout"
            );
            Topology::standard()
        }
    }
}

/// Where ISA/GSI line `line` goes and how: (pin, low word without mask).
fn route_of(topo: &Topology, line: u32) -> (u32, u32) {
    let vector = proto::IRQ_BASE_VECTOR as u32 + line;
    let (gsi, flags) = match topo.overrides.get(line as usize).copied().flatten() {
        Some((gsi, flags)) => (gsi, flags),
        None => (line, 0),
    };
    let isa = line < 16;
    // MPS INTI flags: polarity bits 0-1 (1 high, 3 low), trigger bits 2-3
    // (1 edge, 3 level); 0 = the bus's default (ISA: edge high; PCI: level
    // low).
    let low_active = match flags & 3 {
        1 => false,
        3 => true,
        _ => !isa,
    };
    let level = match (flags >> 2) & 3 {
        1 => false,
        3 => true,
        _ => !isa,
    };
    let mut low = vector;
    if low_active {
        low |= ACTIVE_LOW;
    }
    if level {
        low |= LEVEL;
    }
    (gsi.saturating_sub(topo.gsi_base), low)
}

struct Apic {
    topo: Topology,
    io: IoApic,
    local: Option<LocalApic>,
    /// The routed lines, their pins and the clients that routed them.
    routes: Routes,
    /// Per client: whether a refusal of it was logged since it came.
    refusal_logged: Vec<bool>,
    /// Entries changed by the batch being handled, not written yet.
    dirty: Vec<Option<Entry>>,
    batching: Batching,
    requests: u64,
    batches: u64,
    ipis: u64,
    denied: u64,
}

impl Apic {
    fn accesses(&self) -> u64 {
        self.io.accesses + self.local.as_ref().map(|l| l.accesses).unwrap_or(0)
    }

    /// After a restart: keep each route a previous instance made for a
    /// client that is granted its line (the pin holds exactly what `route`
    /// writes for that line, masked or not), owned by that client again;
    /// mask every other pin. Returns how many routes were kept.
    fn adopt_routes(&mut self, mux: &Mux) -> usize {
        let mut kept = alloc::vec![false; self.io.pins()];
        for i in 0..mux.clients() {
            let grant = mux.peer_irqs(i);
            for line in (0..grants::LINES).filter(|&l| grant & (1 << l) != 0) {
                let (pin, low) = route_of(&self.topo, line as u32);
                let pin = pin as usize;
                // Delivery status and remote IRR are the I/O APIC's to set
                // (a level line in service has IRR up): not part of a route.
                let entry = self.io.entry(pin).with_mask(false);
                let entry = Entry {
                    low: entry.low & !ioapic::READ_ONLY,
                    ..entry
                };
                if pin < kept.len()
                    && !kept[pin]
                    && entry == (Entry { low, high: 0 })
                    && self.routes.check_route(i, line, pin).is_ok()
                {
                    self.routes.insert(i, line, pin);
                    kept[pin] = true;
                }
            }
        }
        for (pin, &keep) in kept.iter().enumerate() {
            if !keep && self.io.entry(pin) != Entry::MASKED {
                self.io.commit(pin, Entry::MASKED);
            }
        }
        kept.iter().filter(|&&k| k).count()
    }

    fn current(&self, pin: usize) -> Entry {
        self.dirty
            .get(pin)
            .copied()
            .flatten()
            .unwrap_or_else(|| self.io.entry(pin))
    }

    fn set(&mut self, pin: usize, e: Entry) {
        match self.batching {
            Batching::On => self.dirty[pin] = Some(e),
            Batching::Off => self.io.commit(pin, e),
        }
    }

    /// Write every entry the batch changed.
    fn commit(&mut self) {
        for pin in 0..self.dirty.len() {
            if let Some(e) = self.dirty[pin].take() {
                self.io.commit(pin, e);
            }
        }
    }

    /// Answer request `d` of client `client`, whose manifest entry
    /// grants it the lines `grant` (bit n = line n) and is named `peer`.
    fn handle(&mut self, client: ClientId, grant: u32, peer: &str, d: &Descriptor) -> Completion {
        self.requests += 1;
        let cookie = d.cookie();
        let result = match d.opcode() {
            proto::OP_ROUTE => self.route(client, grant, d),
            proto::OP_MASK | proto::OP_UNMASK => self.set_mask(client, grant, d),
            proto::OP_IPI => self.ipi(grant, d),
            proto::OP_STATS => match d.arg(0) {
                proto::STAT_REGISTER_ACCESSES => Ok((self.accesses(), 0)),
                proto::STAT_REQUESTS => Ok((self.requests, 0)),
                proto::STAT_BATCHES => Ok((self.batches, 0)),
                proto::STAT_IPIS => Ok((self.ipis, 0)),
                proto::STAT_DENIED => Ok((self.denied, 0)),
                _ => Err(Refused::Other(Error::InvalidArgument)),
            },
            _ => return unknown(d),
        };
        match result {
            Ok((value, aux)) => Completion::ok(cookie, value).with_aux(aux),
            Err(Refused::Grant) => {
                self.refused(client, grant, peer, d);
                Completion::err(cookie, Error::Denied)
            }
            Err(Refused::Other(e)) => Completion::err(cookie, e),
        }
    }

    /// Count a request refused for reaching outside `client`'s grant, and
    /// log the first of each client.
    fn refused(&mut self, client: ClientId, grant: u32, peer: &str, d: &Descriptor) {
        self.denied += 1;
        let Some(logged) = self.refusal_logged.get_mut(client) else {
            return;
        };
        if core::mem::replace(logged, true) {
            return;
        }
        let mut what = String::new();
        let _ = match d.opcode() {
            proto::OP_ROUTE => write!(what, "route line {}", d.arg(0)),
            proto::OP_MASK => write!(what, "mask line {}", d.arg(0)),
            proto::OP_UNMASK => write!(what, "unmask line {}", d.arg(0)),
            _ => write!(what, "IPI vector {:#x} shorthand {}", d.arg(0), d.arg(2)),
        };
        println!(
            "apic: refused {peer}: {what}: not granted to it or routed by another client (its lines: {grant:#x}); \
             further refusals of {peer} are counted, not logged"
        );
    }

    fn route(
        &mut self,
        client: ClientId,
        grant: u32,
        d: &Descriptor,
    ) -> Result<(u64, u64), Refused> {
        let line = grants::granted_line(grant, d.arg(0))?;
        let (pin, low) = route_of(&self.topo, line as u32);
        let pin = pin as usize;
        if pin >= self.io.pins() {
            return Err(Error::InvalidArgument.into());
        }
        self.routes.check_route(client, line, pin)?;
        if grants::pin_of_another_line(&self.topo, line, pin as u32 + self.topo.gsi_base) {
            return Err(Error::Busy.into());
        }
        self.routes.insert(client, line, pin);
        let masked = d.arg(1) & proto::ROUTE_MASKED != 0;
        let e = Entry { low, high: 0 }.with_mask(masked);
        self.set(pin, e);
        Ok((pin as u64 + u64::from(self.topo.gsi_base), u64::from(e.low)))
    }

    fn set_mask(
        &mut self,
        client: ClientId,
        grant: u32,
        d: &Descriptor,
    ) -> Result<(u64, u64), Refused> {
        let line = grants::granted_line(grant, d.arg(0))?;
        let pin = self.routes.pin_for(client, line)?;
        let e = self.current(pin).with_mask(d.opcode() == proto::OP_MASK);
        self.set(pin, e);
        Ok((0, 0))
    }

    fn ipi(&mut self, grant: u32, d: &Descriptor) -> Result<(u64, u64), Refused> {
        let vector = grants::check_ipi(grant, d.arg(0), d.arg(1), d.arg(2))?;
        // Past the grant check: `Denied` here is the protocol's answer for
        // a local APIC that user space cannot reach, not a refusal.
        let local = self.local.as_mut().ok_or(Refused::Other(Error::Denied))?;
        local.ipi(vector, d.arg(1) as u8, d.arg(2) as u8);
        self.ipis += 1;
        Ok((0, 0))
    }

    /// Client `client` is gone (hung up, dropped or dead): mask the lines
    /// it routed and forget them. Returns the lines masked.
    fn hang_up(&mut self, client: ClientId) -> Vec<usize> {
        if let Some(logged) = self.refusal_logged.get_mut(client) {
            *logged = false;
        }
        let released = self.routes.release(client);
        for &(_, pin) in &released {
            let e = self.current(pin).with_mask(true);
            self.set(pin, e);
        }
        released.into_iter().map(|(line, _)| line).collect()
    }
}

/// Why a request failed: it reached outside the client's grant (answered
/// `Denied` and counted), or anything else.
enum Refused {
    Grant,
    Other(Error),
}

impl From<Error> for Refused {
    /// The grant checks (`apic::grants`) answer `Denied` for a refusal and
    /// nothing else.
    fn from(e: Error) -> Self {
        match e {
            Error::Denied => Self::Grant,
            e => Self::Other(e),
        }
    }
}

/// Send vector `0x20 + SELF_TEST_LINE` to this CPU and wait for the kernel
/// to deliver it as that line's notification.
fn self_test(local: &mut LocalApic) {
    let bit = match sys::irq_bind(SELF_TEST_LINE) {
        Ok(bit) => bit,
        Err(e) => {
            println!("apic: no self-IPI test (line {SELF_TEST_LINE}: {e})");
            return;
        }
    };
    let vector = proto::IRQ_BASE_VECTOR as u8 + SELF_TEST_LINE as u8;
    local.ipi(vector, 0, proto::DEST_SELF as u8);
    match sys::wait(1 << bit, 1_000_000_000) {
        Ok(_) => {
            let _ = sys::irq_ack(SELF_TEST_LINE);
            if userland::first_run() {
                println!("apic: self-IPI on vector {vector:#x} delivered");
            }
        }
        Err(e) => println!("apic: FAIL self-IPI on vector {vector:#x} not delivered: {e}"),
    }
}

async fn run() -> i32 {
    let batching = sys::batching();
    let coalesce = batching == Batching::On;
    let mut topo = find_topology();
    // `apic.irq0_gsi=N` on the kernel command line overrides where ISA
    // IRQ 0 goes, for machines that wire it otherwise.
    if let Some(gsi) = sys::boot_info_cached()
        .and_then(|b| b.arg("irq0_gsi"))
        .and_then(|v| v.parse().ok())
    {
        topo.overrides[0] = Some((gsi, 0));
    }
    // A restarted instance finds the routes its predecessor made still in
    // the I/O APIC, and keeps those its clients are granted (below).
    let restarted = sys::restarts() > 0;
    let io = match device::Mmio::map(topo.ioapic, 0x1000) {
        Ok(mmio) if restarted => IoApic::adopt(mmio, coalesce),
        Ok(mmio) => IoApic::new(mmio, coalesce),
        Err(e) => {
            println!(
                "apic: FAIL cannot map the I/O APIC at {:#x}: {e}",
                topo.ioapic
            );
            return 1;
        }
    };
    if !restarted {
        println!(
            "apic: I/O APIC at {:#x}, {} pins from GSI {}; ISA IRQ 0 on GSI {}",
            topo.ioapic,
            io.pins(),
            topo.gsi_base,
            topo.overrides[0].map(|o| o.0).unwrap_or(0)
        );
    }
    let local = match device::Mmio::map(apic_regs::xapic::PHYS, apic_regs::xapic::LEN) {
        Ok(mmio) => match LocalApic::probe(mmio, coalesce) {
            Ok(mut local) => {
                local.setup_lvts(topo.nmi_lint);
                if !restarted {
                    println!(
                        "apic: local APIC in xAPIC mode: LVTs set (LINT{} = NMI), IPIs available",
                        topo.nmi_lint.unwrap_or(1)
                    );
                }
                self_test(&mut local);
                Some(local)
            }
            Err(v) => {
                println!(
                    "apic: local APIC not reachable from user space (version reads {v:#x}: x2APIC mode); no IPIs or LVT setup"
                );
                None
            }
        },
        Err(e) => {
            println!("apic: local APIC page not granted ({e}); no IPIs or LVT setup");
            None
        }
    };
    let mut mux = match Mux::new(proto::SERVICE) {
        Ok(m) => m,
        Err(e) => {
            println!("apic: FAIL cannot attach the apic channels: {e}");
            return 1;
        }
    };
    let pins = io.pins();
    let mut apic = Apic {
        topo,
        io,
        local,
        routes: Routes::new(),
        refusal_logged: alloc::vec![false; mux.clients()],
        dirty: alloc::vec![None; pins],
        batching,
        requests: 0,
        batches: 0,
        ipis: 0,
        denied: 0,
    };
    if restarted {
        let kept = apic.adopt_routes(&mux);
        println!("apic: kept {kept} route(s)");
    } else {
        println!("apic: serving {} client(s)", mux.clients());
    }
    let mut batch = Vec::new();
    let mut answers = Vec::new();
    loop {
        batch.clear();
        if mux.take_batch(&mut batch) > 0 {
            apic.batches += 1;
        }
        let mut gone = Vec::new();
        for &(i, ref d) in batch.iter() {
            if d.opcode() == OP_HANGUP {
                let masked = apic.hang_up(i);
                if !masked.is_empty() {
                    gone.push((i, masked));
                }
                continue;
            }
            let c = apic.handle(i, mux.peer_irqs(i), mux.peer(i), d);
            if d.wants_completion() {
                answers.push((i, c));
            }
        }
        // The routes are in effect before anyone hears that they are.
        apic.commit();
        // Said once the masks are written, not before.
        for (i, masked) in gone {
            let mut lines = String::new();
            for line in masked {
                let _ = write!(lines, " {line}");
            }
            println!("apic: {} is gone: masked line(s){lines}", mux.peer(i));
        }
        for (i, c) in answers.drain(..) {
            mux.reply(i, c);
        }
        if mux.alive() == 0 {
            mux.flush();
            break;
        }
        if batch.is_empty() {
            mux.wait().await;
        }
    }
    println!(
        "apic: done: {} requests in {} batches, {} register accesses, {} refused",
        apic.requests,
        apic.batches,
        apic.accesses(),
        apic.denied
    );
    // Every client hung up, so every line it routed is masked already.
    0
}
