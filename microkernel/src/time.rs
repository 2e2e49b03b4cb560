//! Time conversions the kernel makes on servers' behalf (timeouts in
//! nanoseconds to TSC deadlines). Pure arithmetic, tested on the host.

/// `ns` nanoseconds in cycles of a `tsc_hz` clock, saturating: a timeout of
/// centuries is "never", not a wrapped few milliseconds.
pub fn ns_to_tsc(ns: u64, tsc_hz: u64) -> u64 {
    u64::try_from(u128::from(ns) * u128::from(tsc_hz) / 1_000_000_000).unwrap_or(u64::MAX)
}

/// The TSC value `timeout_ns` after `now` (saturating), for a `wait`.
pub fn deadline_after(now: u64, timeout_ns: u64, tsc_hz: u64) -> u64 {
    now.saturating_add(ns_to_tsc(timeout_ns, tsc_hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HZ: u64 = 2_445_402_000;

    #[test]
    fn ordinary_timeouts_convert_exactly() {
        assert_eq!(ns_to_tsc(1_000_000_000, HZ), HZ);
        assert_eq!(ns_to_tsc(10_000_000, 1_000_000_000), 10_000_000);
        assert_eq!(ns_to_tsc(0, HZ), 0);
    }

    #[test]
    fn a_timeout_of_centuries_never_wraps_into_a_short_one() {
        // 276 years: the product no longer fits 64 bits of cycles.
        let centuries = 8_730_274_334_733_017_267;
        assert_eq!(ns_to_tsc(centuries, HZ), u64::MAX);
        assert_eq!(ns_to_tsc(u64::MAX, HZ), u64::MAX);
        let now = 5_000_000_000_000;
        assert_eq!(deadline_after(now, centuries, HZ), u64::MAX);
        assert!(deadline_after(now, 1_000, HZ) > now);
    }
}
