//! Boot marks: the TSC at named points of the boot, printed at `log=debug`
//! once every server is ready, so that where boot time goes can be read off
//! on every backend (where PVM interprets the kernel, every instruction
//! costs about a microsecond, and guessing is worse than measuring).
//!
//! Context: boot and trap context, one CPU; a mark is one RDTSC and a store.

use core::sync::atomic::{AtomicUsize, Ordering};

use spin::Mutex;

const MAX_MARKS: usize = 48;

static MARKS: Mutex<[(&str, u64); MAX_MARKS]> = Mutex::new([("", 0); MAX_MARKS]);
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// Record that boot reached `what` now (dropped past [`MAX_MARKS`]).
pub fn mark(what: &'static str) {
    let now = crate::hv::rdtsc();
    let i = COUNT.fetch_add(1, Ordering::Relaxed);
    if let Some(slot) = MARKS.lock().get_mut(i) {
        *slot = (what, now);
    }
}

/// Print every mark at debug level, in ms since `start`, with the time
/// since the mark before.
pub fn report(start: u64, tsc_hz: u64) {
    if !log::log_enabled!(log::Level::Debug) {
        return;
    }
    let ms = |cycles: u64| cycles as f64 * 1000.0 / tsc_hz.max(1) as f64;
    let n = COUNT.load(Ordering::Relaxed).min(MAX_MARKS);
    let marks = *MARKS.lock();
    let mut before = start;
    for &(what, at) in &marks[..n] {
        log::debug!(
            "boot: {:9.3} ms (+{:8.3}) {what}",
            ms(at.saturating_sub(start)),
            ms(at.saturating_sub(before))
        );
        before = at;
    }
}
