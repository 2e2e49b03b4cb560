//! The ring stress workloads of `cargo xtask stress` (servers/stress), run
//! short: a stream of 10^5 messages must arrive whole, once and in order,
//! with batching on and off, and a ping-pong run must end with a sane
//! result line. Figures are printed by `cargo xtask stress`, never
//! asserted here.

use tests::{Accel, Boot, Run, on_kvm};
use xtask::stress::{Fields, parse_result_line};

fn result(run: &Run) -> Fields {
    parse_result_line(run.line("stress-result")).expect("a result line")
}

fn stream(accel: Accel, batching: &str, messages: u64, batch: u64) {
    let run = Boot::test(accel, "stress")
        .cmdline(&format!(
            "batching={batching} stress-producer.messages={messages} stress-producer.batch={batch} stress-producer.payload=48"
        ))
        .run();
    run.assert_success()
        .assert_lacks("FAIL")
        .assert_contains(&format!(
            "stress-consumer: {messages} messages in order, checksum ok"
        ));
    let r = result(&run);
    assert_eq!(r.str("kind"), Some("stream"));
    assert_eq!(r.str("batching"), Some(batching));
    assert_eq!(r.u64("messages"), Some(messages));
    assert_eq!(r.u64("received"), Some(messages), "{r:?}");
    assert_eq!(r.u64("lost"), Some(0), "{r:?}");
    assert_eq!(r.u64("duplicates"), Some(0), "{r:?}");
    assert_eq!(r.u64("reordered"), Some(0), "{r:?}");
    assert_eq!(r.str("checksum"), Some("ok"));
    assert_eq!(r.str("ok"), Some("1"));
    assert!(r.u64("cycles").is_some_and(|c| c > 0), "{r:?}");
    if batching == "off" {
        // Every message pays its own doorbell.
        assert!(r.u64("doorbells").unwrap() >= messages, "{r:?}");
    }
}

#[test]
fn stress_stream_loses_nothing_on_tcg() {
    stream(Accel::Tcg, "on", 100_000, 64);
}

#[test]
fn stress_stream_loses_nothing_with_batching_off_on_tcg() {
    stream(Accel::Tcg, "off", 20_000, 16);
}

#[test]
fn stress_stream_loses_nothing_on_kvm() {
    on_kvm("stress_stream_loses_nothing_on_kvm", || {
        stream(Accel::Kvm, "on", 100_000, 64)
    });
}

#[test]
fn stress_stream_loses_nothing_with_batching_off_on_kvm() {
    // Small: on this PVM host each doorbell costs a kernel entry of ~0.3 ms.
    on_kvm(
        "stress_stream_loses_nothing_with_batching_off_on_kvm",
        || stream(Accel::Kvm, "off", 5_000, 16),
    );
}

fn pingpong(accel: Accel) {
    let run = Boot::test(accel, "pingpong")
        .cmdline("ping.rounds=2000")
        .run();
    run.assert_success()
        .assert_lacks("FAIL")
        .assert_contains("pong: answered 3000 pings");
    let r = result(&run);
    assert_eq!(r.str("kind"), Some("pingpong"));
    assert_eq!(r.u64("rounds"), Some(2000));
    let (p50, p99) = (r.u64("p50_cycles").unwrap(), r.u64("p99_cycles").unwrap());
    let (min, max) = (r.u64("min_cycles").unwrap(), r.u64("max_cycles").unwrap());
    assert!(0 < min && min <= p50 && p50 <= p99 && p99 <= max, "{r:?}");
    assert!(r.u64("tsc_hz").unwrap() > 0, "{r:?}");
    assert!(r.u64("p50_ns").unwrap() > 0, "{r:?}");
    // A doorbell is rung only when the peer sleeps (it may still be awake,
    // so fewer is fine): at most one per message each way, 3,000 pings
    // counting the warm-up, and some, since each side waits for the other.
    let doorbells = r.u64("doorbells").unwrap();
    assert!(0 < doorbells && doorbells <= 2 * 3000, "{r:?}");
}

#[test]
fn pingpong_completes_on_tcg() {
    pingpong(Accel::Tcg);
}

#[test]
fn pingpong_completes_on_kvm() {
    on_kvm("pingpong_completes_on_kvm", || pingpong(Accel::Kvm));
}
