//! Servers' `log` lines (issue 11, case 6): a server that logs a forged
//! kernel line with a newline and escape codes gets one escaped record, and
//! one that floods 1 KiB lines is cut to its rate, with a "lines dropped"
//! note, while another server's fault report still gets out. On TCG and
//! KVM (`tests/manifests/logflood.toml`).

use std::time::Duration;

use tests::{Accel, Boot, Run, everywhere, number_before};

/// What the kernel admits of one server's `log` lines
/// (`microkernel::ratelimit::SERVER_LOG`): a burst, then a rate.
const BURST: u64 = 64;
const PER_SECOND: u64 = 50;

/// The lines as they came out, without the `\r` of each `\r\n`.
fn lines(run: &Run) -> impl Iterator<Item = &str> {
    run.output().lines().map(|l| l.trim_end_matches('\r'))
}

fn log_flood(accel: Accel) {
    let mut boot = Boot::test(accel, "logflood").timeout(Duration::from_secs(120));
    if boot.config.cmdline.contains("hv=native") {
        // Where PVM interprets the kernel, a log call and the console's
        // work to put its 1 KiB line's 256-byte record out take about 30
        // ms: a flood of such lines cannot outrun 50 lines a second there,
        // so nothing would be refused. Short lines can, once the flood has
        // the processor to itself (the other servers take seconds to
        // start there).
        boot = boot.cmdline("log-flood.bytes=32 log-flood.ms=3000 log-flood.after_console=1");
    }
    let run = boot.run();
    run.assert_success()
        .assert_lacks("FAIL")
        .assert_lacks("panicked")
        .assert_contains("kernel: server log-flood exited with code 0");

    // The fault report of the server beside the flood got out.
    let report = run.line("kernel: server fault-divide stopped");
    assert!(report.contains("exception 0 (divide error)"), "{report}");

    // The forged report is one record, escaped: no line of its own, no
    // escape code reaching the terminal, the invalid bytes shown bytewise.
    let forged = lines(&run)
        .filter(|l| l.trim_start().starts_with("kernel: server console stopped"))
        .collect::<Vec<_>>();
    assert!(
        forged.is_empty(),
        "a server forged a kernel line: {forged:?}\n{}",
        run.output()
    );
    run.assert_contains(
        "[log-flood] forged: ok\\nkernel: server console stopped: exception 13 \
         (general protection fault) at RIP 0x0\\x1b[2J\\x1b[31m",
    )
    .assert_contains("[log-flood] not utf-8: \\xff\\xfe end")
    .assert_lacks("\x1b[2J")
    .assert_lacks("\x1b[31m");
    // The console ended normally: the only real "console stopped" there
    // could be is absent.
    run.assert_contains("console: done: ");

    // The flood: refused with Busy past the rate, and what was refused is
    // noted before the server's next line.
    let summary = run.line("log-flood: flooded ");
    let bytes = number_before(summary, "-byte lines") as usize;
    let ms = number_before(summary, "ms:");
    let sent = number_before(summary, "lines,");
    let accepted = number_before(summary, "accepted");
    let refused = number_before(summary, "refused");
    assert_eq!(accepted + refused, sent, "{summary}");
    assert!(refused > 0, "nothing was refused: {summary}");
    // The rate, with a line of slack for the clock's reading every 16
    // lines; a record the console's ring had no room for is refused too.
    let allowed = BURST + PER_SECOND * (ms + 16) / 1000 + 1;
    assert!(
        accepted <= allowed,
        "{accepted} lines admitted in {ms} ms, more than {allowed}: {summary}"
    );
    let note = run.line("[log-flood] (");
    assert!(
        note.ends_with(" lines dropped)") || note.ends_with(" line dropped)"),
        "{note}"
    );
    let dropped = number_before(note, " line");
    assert!(dropped > 0 && dropped <= refused, "{note} / {summary}");
    // Every line admitted came out on its own line, whole (or cut whole,
    // with its marker); none that was refused did. The one exception to
    // "whole": a kernel line the console's ring had no room for goes to
    // COM1 at once, on a line of its own, and may so break a line the
    // console was putting out.
    let whole = |l: &str| {
        l.ends_with(" bytes]") || (l.len() == "[log-flood] ".len() + bytes && l.ends_with('x'))
    };
    let all = lines(&run).collect::<Vec<_>>();
    let mut flood_lines = 0;
    for (i, l) in all.iter().enumerate() {
        if !l.starts_with("[log-flood] flood ") {
            continue;
        }
        flood_lines += 1;
        let broken_by_kernel = all.get(i + 1).is_some_and(|n| n.starts_with("kernel: "));
        assert!(
            whole(l) || broken_by_kernel,
            "a flood record not whole: {l:?}"
        );
    }
    assert_eq!(
        flood_lines, accepted,
        "flood lines on the console against those admitted: {summary}"
    );
}

#[test]
fn a_flooding_server_is_rate_limited_and_cannot_forge_kernel_lines() {
    everywhere(
        "a_flooding_server_is_rate_limited_and_cannot_forge_kernel_lines",
        log_flood,
    );
}
