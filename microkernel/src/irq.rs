//! Which device lines are in service at the local APIC, and how many ends
//! of interrupt an acknowledgement may issue.
//!
//! The kernel defers a line's end of interrupt until its server calls
//! `irq_ack`, so the line stays masked while the server handles it. But an
//! EOI always ends the highest-priority vector in service, not a chosen
//! one: line `n` arrives on vector `0x20 + n`, so when several lines are in
//! service, the one with the highest number must be ended first. An
//! acknowledgement of a lower line is remembered until every higher line is
//! acknowledged too. Pure bookkeeping, tested on the host.
//!
//! [`IrqTable`] is the kernel's IRQ routing: which server owns each line
//! (`irq_bind`), with the in-service state above. The scheduler delivers
//! through it and issues the EOIs it counts; system calls bind and
//! acknowledge through it; a server that ends releases its lines.

/// The device lines the kernel routes: as many as the manifest can grant.
pub const LINES: usize = manifest::MAX_IRQ as usize + 1;

/// Why an IRQ operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqError {
    /// No such line.
    NoLine,
    /// Another server owns the line.
    Owned,
    /// The caller does not own the line.
    NotOwner,
}

/// Which server owns each line, and which lines are in service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqTable {
    owner: [Option<usize>; LINES],
    in_service: InService,
}

impl IrqTable {
    /// The line's owner.
    pub fn owner(&self, line: usize) -> Option<usize> {
        self.owner.get(line).copied().flatten()
    }

    /// Give `line` to `server` (binding again a line it owns is fine).
    pub fn bind(&mut self, line: usize, server: usize) -> Result<(), IrqError> {
        let slot = self.owner.get_mut(line).ok_or(IrqError::NoLine)?;
        match *slot {
            Some(other) if other != server => Err(IrqError::Owned),
            _ => {
                *slot = Some(server);
                Ok(())
            }
        }
    }

    /// `line` fired: its owner, whose end of interrupt now waits for
    /// [`acknowledge`](Self::acknowledge); `None` when nobody owns it (the
    /// caller ends it at once).
    pub fn deliver(&mut self, line: usize) -> Option<usize> {
        let owner = self.owner(line)?;
        self.in_service.deliver(line as u32);
        Some(owner)
    }

    /// `server` handled `line`: how many EOIs to issue now.
    pub fn acknowledge(&mut self, line: usize, server: usize) -> Result<u32, IrqError> {
        if line >= LINES {
            return Err(IrqError::NoLine);
        }
        if self.owner(line) != Some(server) {
            return Err(IrqError::NotOwner);
        }
        Ok(self.in_service.acknowledge(line as u32))
    }

    /// `server` ended: its lines have no owner any more, and those in
    /// service are acknowledged for it. How many EOIs to issue now.
    pub fn release(&mut self, server: usize) -> u32 {
        let mut eois = 0;
        for line in 0..LINES {
            if self.owner[line] == Some(server) {
                self.owner[line] = None;
                eois += self.in_service.acknowledge(line as u32);
            }
        }
        eois
    }
}

/// Lines delivered and not yet ended, and those already acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InService {
    delivered: u32,
    acknowledged: u32,
}

impl InService {
    /// `line` was delivered; its EOI now waits for an acknowledgement.
    pub fn deliver(&mut self, line: u32) {
        self.delivered |= 1 << line;
        self.acknowledged &= !(1 << line);
    }

    pub fn is_in_service(&self, line: u32) -> bool {
        self.delivered & (1 << line) != 0
    }

    /// `line` was acknowledged (or its owner is gone). Returns how many
    /// EOIs to issue now: one for each in-service line, from the highest
    /// down, as long as each has been acknowledged.
    pub fn acknowledge(&mut self, line: u32) -> u32 {
        if !self.is_in_service(line) {
            return 0;
        }
        self.acknowledged |= 1 << line;
        let mut eois = 0;
        while self.delivered != 0 {
            let top = 31 - self.delivered.leading_zeros();
            if self.acknowledged & (1 << top) == 0 {
                break;
            }
            self.delivered &= !(1 << top);
            self.acknowledged &= !(1 << top);
            eois += 1;
        }
        eois
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_one_owner_and_only_it_acknowledges() {
        let mut t = IrqTable::default();
        assert_eq!(t.bind(4, 2), Ok(()));
        assert_eq!(t.bind(4, 2), Ok(()), "binding again is fine");
        assert_eq!(t.bind(4, 3), Err(IrqError::Owned));
        assert_eq!(t.bind(LINES, 3), Err(IrqError::NoLine));
        assert_eq!(t.deliver(4), Some(2));
        assert_eq!(t.acknowledge(4, 3), Err(IrqError::NotOwner));
        assert_eq!(t.acknowledge(4, 2), Ok(1));
        assert_eq!(t.acknowledge(4, 2), Ok(0), "nothing left in service");
        assert_eq!(t.deliver(5), None, "a line nobody owns");
        assert_eq!(t.acknowledge(99, 2), Err(IrqError::NoLine));
    }

    #[test]
    fn an_ended_server_releases_its_lines_and_their_eois() {
        let mut t = IrqTable::default();
        t.bind(0, 1).unwrap();
        t.bind(4, 2).unwrap();
        t.bind(17, 2).unwrap();
        assert_eq!(t.deliver(4), Some(2));
        assert_eq!(t.deliver(0), Some(1));
        // Server 2 ends with line 4 in service: its EOI is owed now, but
        // line 4's vector is above line 0's, which stays in service.
        assert_eq!(t.release(2), 1);
        assert_eq!((t.owner(4), t.owner(17)), (None, None));
        assert_eq!(t.owner(0), Some(1));
        assert_eq!(t.acknowledge(0, 1), Ok(1));
        assert_eq!(t.release(2), 0, "releasing twice ends nothing");
    }

    #[test]
    fn one_line_is_ended_by_its_own_acknowledgement() {
        let mut s = InService::default();
        s.deliver(4);
        assert_eq!(s.acknowledge(4), 1);
        assert_eq!(s, InService::default());
        assert_eq!(s.acknowledge(4), 0, "a second ack ends nothing");
    }

    #[test]
    fn a_lower_line_waits_for_the_higher_one() {
        let mut s = InService::default();
        s.deliver(4); // vector 0x24
        s.deliver(17); // vector 0x31, a higher class: it nests above line 4
        assert_eq!(
            s.acknowledge(4),
            0,
            "an EOI now would end line 17's vector instead"
        );
        assert!(s.is_in_service(4));
        assert_eq!(s.acknowledge(17), 2, "now both end, 17 first, then 4");
        assert_eq!(s, InService::default());
    }

    #[test]
    fn acknowledging_the_higher_line_first_ends_only_it() {
        let mut s = InService::default();
        s.deliver(2);
        s.deliver(20);
        assert_eq!(s.acknowledge(20), 1);
        assert!(s.is_in_service(2));
        assert_eq!(s.acknowledge(2), 1);
    }

    #[test]
    fn lines_never_delivered_are_ignored() {
        let mut s = InService::default();
        assert_eq!(s.acknowledge(9), 0);
        s.deliver(3);
        assert_eq!(s.acknowledge(9), 0);
        assert!(s.is_in_service(3));
    }
}
