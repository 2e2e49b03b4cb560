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
