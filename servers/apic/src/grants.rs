//! What each client of the apic server may touch: the decisions behind
//! its per-client grants, apart from the device so that `cargo test -p
//! apic` checks them on the host.
//!
//! The rules (stated for clients in the server's module doc):
//!
//! * **Lines.** A client may route, mask and unmask only the lines the
//!   manifest grants it in its own `irqs = [...]` (the kernel hands them to
//!   the provider as `ChannelInfo::peer_irqs`). Anything else is `Denied`.
//! * **Owners.** A routed line belongs to the client that routed it until
//!   that client hangs up (or is dropped, or dies): no other client may
//!   route, mask or unmask it (`Denied`). The manifest already grants a
//!   line to one server at most; this keeps the rule when it does not.
//! * **Pins.** A route may not take an I/O APIC pin another routed line
//!   uses, nor the pin an interrupt source override wires to another ISA
//!   line (QEMU puts ISA IRQ 0 on GSI 2: a client granted line 2 must not
//!   take the timer's pin): `Busy`.
//! * **IPIs.** Only vector `IRQ_BASE_VECTOR + line` of a line the client
//!   is granted, and only to the sending CPU (`DEST_SELF`): with one CPU
//!   that is the only destination there is, and other shorthands or
//!   explicit ids are refused until SMP comes. Anything else is `Denied`
//!   (the kernel's own vectors, such as its timer's 0xF0, above all).
//! * **Hang-up.** The lines a client routed are masked and forgotten when
//!   it goes, so that no line without a live owner can interrupt; the same
//!   client slot may come back (a restarted client) and starts with none.
//!
//! Malformed arguments (a line past 23, a vector outside 0x20..=0xFE, an
//! unknown shorthand) are `InvalidArgument`, whatever the grant.
//!
//! Context: the apic server's only thread (and the host tests).

use alloc::vec::Vec;

use ::proto::apic as proto;
use userland::abi::Error;
use userland::abi::MAX_IRQ;

use crate::madt::Topology;

/// The lines the server routes: ISA/GSI 0..=23, as the manifest grants
/// them.
pub const LINES: usize = MAX_IRQ as usize + 1;

/// A client, as the server's multiplexer numbers them.
pub type ClientId = usize;

/// `line` as an index, if the client whose grant is `grant` (bit n = line
/// n) may touch it.
pub fn granted_line(grant: u32, line: u64) -> Result<usize, Error> {
    if line >= LINES as u64 {
        return Err(Error::InvalidArgument);
    }
    if grant & (1 << line) == 0 {
        return Err(Error::Denied);
    }
    Ok(line as usize)
}

/// Check an IPI request (vector, destination id, shorthand) from a client
/// granted `grant`; the vector to send.
pub fn check_ipi(grant: u32, vector: u64, dest: u64, shorthand: u64) -> Result<u8, Error> {
    if !(0x20..=0xFE).contains(&vector) || shorthand > proto::DEST_OTHERS || dest > 0xFF {
        return Err(Error::InvalidArgument);
    }
    if shorthand != proto::DEST_SELF {
        return Err(Error::Denied);
    }
    // A vector past the lines' (0x38 and up) is no line at all: refused
    // like an ungranted one, not malformed.
    match granted_line(grant, vector - proto::IRQ_BASE_VECTOR) {
        Ok(_) => Ok(vector as u8),
        Err(_) => Err(Error::Denied),
    }
}

/// Whether an interrupt source override wires GSI `gsi` to an ISA line
/// other than `line`: that pin is the other line's, whoever routes first.
pub fn pin_of_another_line(topo: &Topology, line: usize, gsi: u32) -> bool {
    topo.overrides
        .iter()
        .enumerate()
        .any(|(isa, o)| isa != line && o.is_some_and(|(g, _)| g == gsi))
}

/// A routed line: who routed it and to which I/O APIC pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub client: ClientId,
    pub pin: usize,
}

/// The routed lines and their owners.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    lines: [Option<Route>; LINES],
}

impl Routes {
    pub const fn new() -> Self {
        Self {
            lines: [None; LINES],
        }
    }

    /// The route of `line`, if it is routed.
    pub fn get(&self, line: usize) -> Option<Route> {
        self.lines.get(line).copied().flatten()
    }

    /// May `client` route `line` (granted to it) onto `pin`? Re-routing
    /// its own line is allowed; a line another client routed is not, nor
    /// a pin that another routed line uses.
    pub fn check_route(&self, client: ClientId, line: usize, pin: usize) -> Result<(), Error> {
        if self.get(line).is_some_and(|r| r.client != client) {
            return Err(Error::Denied);
        }
        let shared = self
            .lines
            .iter()
            .enumerate()
            .any(|(l, r)| l != line && r.is_some_and(|r| r.pin == pin));
        if shared {
            return Err(Error::Busy);
        }
        Ok(())
    }

    /// Record that `client` routed `line` to `pin` (after
    /// [`check_route`](Self::check_route)).
    pub fn insert(&mut self, client: ClientId, line: usize, pin: usize) {
        if let Some(slot) = self.lines.get_mut(line) {
            *slot = Some(Route { client, pin });
        }
    }

    /// The pin of `line` (granted to `client`) for a mask or unmask:
    /// `BadHandle` if nobody routed it, `Denied` if another client did.
    pub fn pin_for(&self, client: ClientId, line: usize) -> Result<usize, Error> {
        match self.get(line) {
            None => Err(Error::BadHandle),
            Some(r) if r.client != client => Err(Error::Denied),
            Some(r) => Ok(r.pin),
        }
    }

    /// Forget every route of `client` (it hung up): the (line, pin) of
    /// each, for the caller to mask.
    pub fn release(&mut self, client: ClientId) -> Vec<(usize, usize)> {
        let mut released = Vec::new();
        for (line, slot) in self.lines.iter_mut().enumerate() {
            if let Some(r) = *slot
                && r.client == client
            {
                released.push((line, r.pin));
                *slot = None;
            }
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMER: ClientId = 0;
    const CONSOLE: ClientId = 1;
    const INTRUDER: ClientId = 2;
    const LINE_0: u32 = 1 << 0;
    const LINE_4: u32 = 1 << 4;
    const LINE_5: u32 = 1 << 5;

    #[test]
    fn only_granted_lines_are_touched() {
        assert_eq!(granted_line(LINE_0, 0), Ok(0));
        assert_eq!(granted_line(LINE_0 | LINE_4, 4), Ok(4));
        assert_eq!(granted_line(LINE_5, 0), Err(Error::Denied));
        assert_eq!(granted_line(LINE_5, 4), Err(Error::Denied));
        assert_eq!(granted_line(0, 23), Err(Error::Denied));
        // Malformed whatever the grant.
        assert_eq!(granted_line(u32::MAX, 24), Err(Error::InvalidArgument));
        assert_eq!(
            granted_line(u32::MAX, u64::MAX),
            Err(Error::InvalidArgument)
        );
        // A grant with every bit set still reaches only real lines.
        assert_eq!(granted_line(u32::MAX, 23), Ok(23));
    }

    #[test]
    fn ipis_only_to_self_on_a_granted_lines_vector() {
        let v = |line: u64| proto::IRQ_BASE_VECTOR + line;
        assert_eq!(check_ipi(LINE_5, v(5), 0, proto::DEST_SELF), Ok(0x25));
        // Another line's vector, the kernel's timer vector, a vector past
        // the lines.
        assert_eq!(
            check_ipi(LINE_5, v(0), 0, proto::DEST_SELF),
            Err(Error::Denied)
        );
        assert_eq!(
            check_ipi(LINE_5, v(4), 0, proto::DEST_SELF),
            Err(Error::Denied)
        );
        assert_eq!(
            check_ipi(LINE_5, 0xF0, 0, proto::DEST_SELF),
            Err(Error::Denied)
        );
        assert_eq!(
            check_ipi(u32::MAX, 0x38, 0, proto::DEST_SELF),
            Err(Error::Denied)
        );
        assert_eq!(check_ipi(0, v(5), 0, proto::DEST_SELF), Err(Error::Denied));
        // Its own vector, but not to itself.
        for shorthand in [proto::DEST_ID, proto::DEST_ALL, proto::DEST_OTHERS] {
            assert_eq!(check_ipi(LINE_5, v(5), 0, shorthand), Err(Error::Denied));
        }
        // Malformed whatever the grant.
        assert_eq!(
            check_ipi(u32::MAX, 0x1F, 0, proto::DEST_SELF),
            Err(Error::InvalidArgument)
        );
        assert_eq!(
            check_ipi(u32::MAX, 0xFF, 0, proto::DEST_SELF),
            Err(Error::InvalidArgument)
        );
        assert_eq!(check_ipi(LINE_5, v(5), 0, 4), Err(Error::InvalidArgument));
        assert_eq!(
            check_ipi(LINE_5, v(5), 0x100, proto::DEST_SELF),
            Err(Error::InvalidArgument)
        );
    }

    #[test]
    fn a_routed_line_is_its_clients_alone() {
        let mut routes = Routes::new();
        assert_eq!(routes.pin_for(TIMER, 0), Err(Error::BadHandle));
        assert_eq!(routes.check_route(TIMER, 0, 2), Ok(()));
        routes.insert(TIMER, 0, 2);
        assert_eq!(
            routes.get(0),
            Some(Route {
                client: TIMER,
                pin: 2
            })
        );
        assert_eq!(routes.pin_for(TIMER, 0), Ok(2));
        // Another client (were it granted the line) may neither re-route
        // nor mask it; the owner may re-route it.
        assert_eq!(routes.check_route(INTRUDER, 0, 2), Err(Error::Denied));
        assert_eq!(routes.pin_for(INTRUDER, 0), Err(Error::Denied));
        assert_eq!(routes.check_route(TIMER, 0, 2), Ok(()));
        // Another line may not take its pin.
        assert_eq!(routes.check_route(INTRUDER, 2, 2), Err(Error::Busy));
        assert_eq!(routes.check_route(CONSOLE, 4, 4), Ok(()));
    }

    #[test]
    fn a_client_that_goes_leaves_its_lines_to_be_masked_and_no_owner() {
        let mut routes = Routes::new();
        routes.insert(TIMER, 0, 2);
        routes.insert(CONSOLE, 4, 4);
        routes.insert(CONSOLE, 3, 3);
        assert_eq!(routes.release(CONSOLE), [(3, 3), (4, 4)]);
        assert_eq!(routes.get(4), None);
        assert_eq!(routes.get(3), None);
        assert_eq!(
            routes.get(0),
            Some(Route {
                client: TIMER,
                pin: 2
            })
        );
        assert!(routes.release(CONSOLE).is_empty());
        // The slot comes back (a restarted console) with no routes, and
        // may route its line again; so may whoever the manifest grants it.
        assert_eq!(routes.pin_for(CONSOLE, 4), Err(Error::BadHandle));
        assert_eq!(routes.check_route(CONSOLE, 4, 4), Ok(()));
        assert_eq!(routes.check_route(INTRUDER, 4, 4), Ok(()));
    }

    #[test]
    fn the_pin_an_override_gives_one_line_is_not_anothers() {
        let topo = Topology::standard();
        // ISA IRQ 0 is on GSI 2: line 2 may not take it, line 0 may.
        assert!(pin_of_another_line(&topo, 2, 2));
        assert!(!pin_of_another_line(&topo, 0, 2));
        assert!(!pin_of_another_line(&topo, 4, 4));
        assert!(!pin_of_another_line(&topo, 19, 19));
    }
}
