//! apic: provides the service `apic` (protocol: `pvchannel::proto::apic`).
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
//!
//! Prints `apic: serving N client(s)`; exits 0 when every client has hung
//! up.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

mod device;
mod ioapic;
mod lapic;

use alloc::vec::Vec;

use apic::madt::{self, Topology};
use devkit::Mux;
use devkit::mux::unknown;
use ioapic::{ACTIVE_LOW, Entry, IoApic, LEVEL};
use lapic::LocalApic;
use userland::abi::Error;
use userland::pvchannel::proto::apic as proto;
use userland::{Batching, Completion, Descriptor, OP_HANGUP, println, sys};

userland::entry!(async run);

/// The line the start-up self-IPI arrives on (never routed at the I/O
/// APIC, so only an IPI can raise its vector).
const SELF_TEST_LINE: u32 = 23;
const LINES: usize = 24;

fn find_topology() -> Topology {
    let rsdp = sys::boot_info_cached().map(|b| b.rsdp).unwrap_or(0);
    if rsdp == 0 {
        println!("apic: no RSDP from the loader; using the standard PC layout");
        return Topology::standard();
    }
    match madt::discover(rsdp, |phys, buf| device::read_phys(phys, buf).is_ok()) {
        Ok(mut t) => {
            let overrides = t.overrides.iter().flatten().count();
            println!(
                "apic: MADT found through the RSDP at {rsdp:#x}: {overrides} ISA interrupt source override(s)"
            );
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
    /// Line -> pin, for routed lines.
    routes: [Option<usize>; LINES],
    /// Entries changed by the batch being handled, not written yet.
    dirty: Vec<Option<Entry>>,
    batching: Batching,
    requests: u64,
    batches: u64,
    ipis: u64,
}

impl Apic {
    fn accesses(&self) -> u64 {
        self.io.accesses + self.local.as_ref().map(|l| l.accesses).unwrap_or(0)
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

    fn line_arg(d: &Descriptor) -> Result<usize, Error> {
        let line = d.arg(0);
        if line >= LINES as u64 {
            return Err(Error::InvalidArgument);
        }
        Ok(line as usize)
    }

    fn handle(&mut self, d: &Descriptor) -> Completion {
        self.requests += 1;
        let cookie = d.cookie();
        let result = match d.opcode() {
            proto::OP_ROUTE => self.route(d),
            proto::OP_MASK | proto::OP_UNMASK => {
                let masked = d.opcode() == proto::OP_MASK;
                Self::line_arg(d).and_then(|line| {
                    let pin = self.routes[line].ok_or(Error::BadHandle)?;
                    let e = self.current(pin).with_mask(masked);
                    self.set(pin, e);
                    Ok((0, 0))
                })
            }
            proto::OP_IPI => self.ipi(d),
            proto::OP_STATS => match d.arg(0) {
                proto::STAT_REGISTER_ACCESSES => Ok((self.accesses(), 0)),
                proto::STAT_REQUESTS => Ok((self.requests, 0)),
                proto::STAT_BATCHES => Ok((self.batches, 0)),
                proto::STAT_IPIS => Ok((self.ipis, 0)),
                _ => Err(Error::InvalidArgument),
            },
            _ => return unknown(d),
        };
        match result {
            Ok((value, aux)) => Completion::ok(cookie, value).with_aux(aux),
            Err(e) => Completion::err(cookie, e),
        }
    }

    fn route(&mut self, d: &Descriptor) -> Result<(u64, u64), Error> {
        let line = Self::line_arg(d)?;
        let (pin, low) = route_of(&self.topo, line as u32);
        let pin = pin as usize;
        if pin >= self.io.pins() {
            return Err(Error::InvalidArgument);
        }
        if self
            .routes
            .iter()
            .enumerate()
            .any(|(l, p)| l != line && *p == Some(pin))
        {
            return Err(Error::Busy);
        }
        self.routes[line] = Some(pin);
        let masked = d.arg(1) & proto::ROUTE_MASKED != 0;
        let e = Entry { low, high: 0 }.with_mask(masked);
        self.set(pin, e);
        Ok((pin as u64 + u64::from(self.topo.gsi_base), u64::from(e.low)))
    }

    fn ipi(&mut self, d: &Descriptor) -> Result<(u64, u64), Error> {
        let vector = d.arg(0);
        let shorthand = d.arg(2);
        if !(0x20..=0xFE).contains(&vector) || shorthand > proto::DEST_OTHERS || d.arg(1) > 0xFF {
            return Err(Error::InvalidArgument);
        }
        let local = self.local.as_mut().ok_or(Error::Denied)?;
        local.ipi(vector as u8, d.arg(1) as u8, shorthand as u8);
        self.ipis += 1;
        Ok((0, 0))
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
            println!("apic: self-IPI on vector {vector:#x} delivered");
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
    let io = match device::Mmio::map(topo.ioapic, 0x1000) {
        Ok(mmio) => IoApic::new(mmio, coalesce),
        Err(e) => {
            println!(
                "apic: FAIL cannot map the I/O APIC at {:#x}: {e}",
                topo.ioapic
            );
            return 1;
        }
    };
    println!(
        "apic: I/O APIC at {:#x}, {} pins from GSI {}; ISA IRQ 0 on GSI {}",
        topo.ioapic,
        io.pins(),
        topo.gsi_base,
        topo.overrides[0].map(|o| o.0).unwrap_or(0)
    );
    let local = match device::Mmio::map(lapic::XAPIC_PHYS, 0x1000) {
        Ok(mmio) => match LocalApic::probe(mmio, coalesce) {
            Ok(mut local) => {
                local.setup_lvts(topo.nmi_lint);
                println!(
                    "apic: local APIC in xAPIC mode: LVTs set (LINT{} = NMI), IPIs available",
                    topo.nmi_lint.unwrap_or(1)
                );
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
        routes: [None; LINES],
        dirty: alloc::vec![None; pins],
        batching,
        requests: 0,
        batches: 0,
        ipis: 0,
    };
    println!("apic: serving {} client(s)", mux.clients());
    let mut batch = Vec::new();
    let mut answers = Vec::new();
    loop {
        batch.clear();
        if mux.take_batch(&mut batch) > 0 {
            apic.batches += 1;
        }
        for (i, d) in batch.iter() {
            if d.opcode() == OP_HANGUP {
                continue;
            }
            let c = apic.handle(d);
            if d.wants_completion() {
                answers.push((*i, c));
            }
        }
        // The routes are in effect before anyone hears that they are.
        apic.commit();
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
        "apic: done: {} requests in {} batches, {} register accesses",
        apic.requests,
        apic.batches,
        apic.accesses()
    );
    // The lines stay routed as they are: other servers may still use them.
    0
}
