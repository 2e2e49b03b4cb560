//! Unit and property tests of the layout, the descriptors and the ring ends
//! (single-threaded; the threaded tests are in `tests/`, the model checks in
//! `loom_tests.rs`).

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;

use crate::layout::*;
use crate::owned::HeapRegion;
use crate::*;

/// A heap region and the ring formatted in it.
fn fresh<T: Slot>(capacity: u32) -> (HeapRegion, RingMem<T>) {
    let region = HeapRegion::new(ring_bytes::<T>(capacity).unwrap());
    // SAFETY: the region outlives the ring in every test (declared first,
    // dropped last) and nothing else touches it.
    let mem = unsafe { init::<T>(region.as_ptr(), region.len(), capacity) }.unwrap();
    (region, mem)
}

/// The index word at `offset` in `region`, as a peer would see it.
fn word(region: &HeapRegion, offset: usize) -> &AtomicU32 {
    // SAFETY: `offset` is one of the 64-aligned index offsets, inside the
    // region; the word is an `AtomicU32` laid there by `init`.
    unsafe { &*(region.as_ptr().add(offset) as *const AtomicU32) }
}

#[test]
fn sizes_are_whole_pages() {
    assert_eq!(ring_bytes::<u64>(1), Some(4096));
    assert_eq!(ring_bytes::<u64>(256), Some(4096)); // 640 + 2048
    assert_eq!(ring_bytes::<u64>(512), Some(8192)); // 640 + 4096
    assert_eq!(ring_bytes::<Descriptor>(64), Some(8192));
    assert_eq!(ring_bytes::<Descriptor>(0), None);
    assert_eq!(ring_bytes::<Descriptor>(3), None);
    assert_eq!(ring_bytes::<u8>(MAX_CAPACITY * 2), None);
    assert_eq!(
        duplex_bytes::<Descriptor, Completion>(64, 64),
        Some(8192 + 4096)
    );
    assert_eq!(core::mem::size_of::<Descriptor>(), 64);
    assert_eq!(core::mem::size_of::<Completion>(), 32);
}

#[test]
fn header_is_written_and_validated() {
    let (region, _mem) = fresh::<Descriptor>(64);
    // SAFETY: the region holds a header at offset 0.
    let h = unsafe { *(region.as_ptr() as *const RingHeader) };
    assert_eq!(h.magic, MAGIC);
    assert_eq!(h.version, VERSION);
    assert_eq!(h.capacity, 64);
    assert_eq!(h.slot_size, 64);
    assert_eq!(h.slots_offset, SLOTS_OFFSET as u32);
    // SAFETY: the region is valid for its length.
    let again = unsafe { attach::<Descriptor>(region.as_ptr(), region.len()) }.unwrap();
    assert_eq!(again.capacity(), 64);
    assert_eq!(
        // SAFETY: as above.
        unsafe { attach::<u64>(region.as_ptr(), region.len()) }.err(),
        Some(LayoutError::SlotSizeMismatch {
            expected: 8,
            found: 64
        })
    );
    assert!(matches!(
        // SAFETY: as above (a shorter length of the same region).
        unsafe { attach::<Descriptor>(region.as_ptr(), 4096) },
        Err(LayoutError::TooSmall { .. })
    ));
    assert_eq!(
        // SAFETY: 8 bytes in, 4000 long: still inside the region.
        unsafe { attach::<Descriptor>(region.as_ptr().add(8), 4000) }.err(),
        Some(LayoutError::Misaligned)
    );
    let hw = |i: usize, v: u32| word(&region, i * 4).store(v, Ordering::Relaxed);
    // SAFETY: as above.
    let try_attach = || unsafe { attach::<Descriptor>(region.as_ptr(), region.len()) }.err();
    hw(3, 48);
    assert_eq!(try_attach(), Some(LayoutError::BadCapacity(48)));
    hw(3, 1 << 20);
    assert!(matches!(try_attach(), Some(LayoutError::TooSmall { .. })));
    hw(3, 64);
    hw(2, 0x80);
    assert_eq!(try_attach(), Some(LayoutError::UnknownFeatures(0x80)));
    hw(2, KNOWN_FEATURES);
    hw(1, 9);
    assert_eq!(try_attach(), Some(LayoutError::BadVersion(9)));
    // A ring formatted by the previous layout (indices on consecutive
    // lines, slots at 320) is refused by its version, not misread.
    hw(1, 1);
    assert_eq!(try_attach(), Some(LayoutError::BadVersion(1)));
    hw(1, VERSION);
    hw(0, 0);
    assert_eq!(try_attach(), Some(LayoutError::BadMagic(0)));
    hw(0, MAGIC);
    assert_eq!(try_attach(), None);
}

#[test]
fn init_rejects_bad_regions() {
    let region = HeapRegion::new(4096);
    // SAFETY: region valid for its length.
    unsafe {
        assert_eq!(
            init::<u64>(region.as_ptr(), 4096, 1000).err(),
            Some(LayoutError::BadCapacity(1000))
        );
        assert!(matches!(
            init::<u64>(region.as_ptr(), 4096, 1024),
            Err(LayoutError::TooSmall { .. })
        ));
        assert_eq!(
            init::<u64>(core::ptr::null_mut(), 4096, 16).err(),
            Some(LayoutError::Misaligned)
        );
    }
}

#[test]
fn descriptors_round_trip() {
    let d = Descriptor::new(7, 0xdead_beef)
        .with_flags(Descriptor::FLAG_NO_COMPLETION)
        .with_args([1, 2, 3])
        .with_arg(5, 99);
    assert_eq!(d.opcode(), 7);
    assert_eq!(d.cookie(), 0xdead_beef);
    assert!(!d.wants_completion());
    assert_eq!(d.args(), [1, 2, 3, 0, 0, 99]);
    assert_eq!(d.arg(6), 0);
    assert_eq!(Descriptor::from_bytes(&d.to_bytes()), d);
    assert_eq!(&d.to_bytes()[0..4], &7u32.to_le_bytes());

    let c = Completion::ok(5, 42).with_aux(3);
    assert_eq!((c.cookie(), c.result(), c.aux()), (5, Ok(42), 3));
    for e in abi::Error::ALL {
        assert_eq!(Completion::err(1, e).result(), Err(e));
        assert_eq!(Completion::from_result(1, Err(e)).status(), e.to_return());
    }
}

proptest! {
    #[test]
    fn descriptor_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 64)) {
        let b: [u8; 64] = bytes.try_into().unwrap();
        let d = Descriptor::from_bytes(&b);
        prop_assert_eq!(d.to_bytes(), b);
    }

    #[test]
    fn completion_status_never_panics(status in any::<i64>(), value in any::<u64>()) {
        // A peer can put anything in a slot; build one from raw words.
        let raw: [u64; 4] = [1, status as u64, value, 0];
        // SAFETY: `Completion` is four u64s, repr(C), any bit pattern valid.
        let c: Completion = unsafe { core::mem::transmute(raw) };
        let r = c.result();
        prop_assert_eq!(r.is_ok(), status == 0);
    }
}

#[test]
fn single_items_fill_and_drain() {
    let (_region, mem) = fresh::<u64>(4);
    let (mut p, mut c) = mem.split().unwrap();
    assert_eq!(c.pop(), Err(RingError::Empty));
    for round in 0..10u64 {
        for i in 0..4 {
            p.push(round * 10 + i).unwrap();
        }
        assert_eq!(p.push(0), Err(RingError::Full));
        for i in 0..4 {
            assert_eq!(c.pop(), Ok(round * 10 + i));
        }
        assert_eq!(c.pop(), Err(RingError::Empty));
    }
}

#[test]
fn unconsumed_items_are_what_the_consumer_never_took() {
    let (region, mem) = fresh::<u64>(8);
    let (mut p, mut c) = mem.split().unwrap();
    // Wrap the indices first, so the copy crosses the end of the slots.
    for i in 0..6 {
        p.push(i).unwrap();
        assert_eq!(c.pop(), Ok(i));
    }
    for i in 10..15 {
        p.push(i).unwrap();
    }
    p.stage(99).unwrap(); // staged, never published: not the consumer's
    assert_eq!(c.pop(), Ok(10));
    let mut out = [0u64; 8];
    assert_eq!(p.unconsumed(&mut out), Ok(4));
    assert_eq!(out[..4], [11, 12, 13, 14]);
    let mut short = [0u64; 2];
    assert_eq!(p.unconsumed(&mut short), Ok(2));
    assert_eq!(short, [11, 12]);
    // A consumer index past what was published is refused, not believed.
    word(&region, CONSUMER_INDEX_OFFSET).store(1000, core::sync::atomic::Ordering::Release);
    assert!(p.unconsumed(&mut out).unwrap_err().is_corrupt());
}

#[test]
fn staged_items_are_invisible_until_published() {
    let (_region, mem) = fresh::<u64>(8);
    let (mut p, mut c) = mem.split().unwrap();
    p.stage(1).unwrap();
    p.stage(2).unwrap();
    assert_eq!(p.staged(), 2);
    assert_eq!(c.pop(), Err(RingError::Empty));
    p.publish();
    assert_eq!(c.pop(), Ok(1));
    assert_eq!(c.pop(), Ok(2));
}

#[test]
fn batches_wrap_around() {
    let (_region, mem) = fresh::<u32>(8);
    let (mut p, mut c) = mem.split().unwrap();
    let mut next = 0u32;
    let mut expect = 0u32;
    for _ in 0..50 {
        let items: Vec<u32> = (next..next + 5).collect();
        assert_eq!(p.push_slice(&items), Ok(5));
        next += 5;
        let mut out = [0u32; 8];
        assert_eq!(c.pop_slice(&mut out), Ok(5));
        for v in &out[..5] {
            assert_eq!(*v, expect);
            expect += 1;
        }
        // reserve / peek across the boundary as well
        let mut w = p.reserve(3).unwrap();
        assert_eq!(w.len(), 3);
        for i in 0..3 {
            w.write(i, next + i as u32);
        }
        w.publish(3);
        next += 3;
        let r = c.peek(8).unwrap();
        assert_eq!(r.len(), 3);
        let got: Vec<u32> = r.iter().collect();
        assert_eq!(got, [expect, expect + 1, expect + 2]);
        assert_eq!(r.get(3), None);
        r.release(3);
        expect += 3;
    }
    assert!(matches!(c.peek(1), Err(RingError::Empty)));
    assert_eq!(p.push_slice(&[0; 20]), Ok(8));
    assert!(matches!(p.reserve(1), Err(RingError::Full)));
}

#[test]
fn doorbell_only_when_the_consumer_waits() {
    let (_region, mem) = fresh::<u64>(4);
    let (mut p, mut c) = mem.split().unwrap();
    // A busy consumer: the first publication is announced (event 0 is in
    // [0, 1)), later ones are not until the consumer sleeps again.
    p.push(1).unwrap();
    assert!(p.needs_doorbell());
    p.push(2).unwrap();
    assert!(!p.needs_doorbell());
    assert_eq!(c.pop(), Ok(1));
    assert_eq!(c.prepare_wait(), Ok(false), "an item is still there");
    assert_eq!(c.pop(), Ok(2));
    assert_eq!(c.prepare_wait(), Ok(true));
    p.stage(3).unwrap();
    p.stage(4).unwrap();
    assert!(p.flush(), "the consumer sleeps: ring once for the batch");
    assert!(!p.flush(), "nothing new: no second doorbell");
    // Producer waiting for space.
    p.push(5).unwrap();
    p.push(6).unwrap();
    assert_eq!(p.prepare_wait(), Ok(true), "full: safe to sleep");
    assert!(!c.flush(), "nothing released yet");
    assert_eq!(c.take(), Ok(3));
    assert!(c.flush(), "a slot freed for a waiting producer");
    assert_eq!(c.pop(), Ok(4));
    assert!(!c.needs_doorbell(), "the producer was told already");
}

#[test]
fn duplex_rings_are_separate_and_attachable() {
    let len = duplex_bytes::<Descriptor, Completion>(16, 32).unwrap();
    let region = HeapRegion::new(len);
    // SAFETY: region valid for `len`, outlives the ends.
    let d = unsafe { init_duplex::<Descriptor, Completion>(region.as_ptr(), len, 16, 32) }.unwrap();
    let (mut req_tx, mut comp_rx) = d.client().unwrap();
    // SAFETY: as above; the server attaches to the same region.
    let d2 = unsafe { attach_duplex::<Descriptor, Completion>(region.as_ptr(), len) }.unwrap();
    assert_eq!(d2.requests.capacity(), 16);
    assert_eq!(d2.completions.capacity(), 32);
    let (mut req_rx, mut comp_tx) = d2.server().unwrap();
    req_tx.push(Descriptor::new(1, 77).with_args([5])).unwrap();
    let req = req_rx.pop().unwrap();
    comp_tx
        .push(Completion::ok(req.cookie(), req.arg(0) * 2))
        .unwrap();
    let comp = comp_rx.pop().unwrap();
    assert_eq!((comp.cookie(), comp.result()), (77, Ok(10)));
}

#[test]
fn owned_duplex_works() {
    let ((mut tx, mut rx), (mut srx, mut stx)) =
        owned::duplex::<Descriptor, Completion>(8, 8).unwrap();
    tx.push(Descriptor::new(3, 1)).unwrap();
    let d = srx.pop().unwrap();
    stx.push(Completion::ok(d.cookie(), 0)).unwrap();
    assert_eq!(rx.pop().unwrap().cookie(), 1);
}

#[test]
fn corrupt_consumer_index_poisons_the_producer() {
    let (region, mem) = fresh::<u64>(8);
    let (mut p, _c) = mem.split().unwrap();
    for i in 0..8 {
        p.push(i).unwrap();
    }
    // The consumer index claims it consumed more than was published.
    word(&region, CONSUMER_INDEX_OFFSET).store(9, Ordering::Release);
    let err = p.push(8).unwrap_err();
    assert_eq!(
        err,
        RingError::Corrupt {
            index: PeerIndex::Consumer,
            seen: 9,
            low: 0,
            high: 8
        }
    );
    // Sticky, even after the peer "repairs" the index.
    word(&region, CONSUMER_INDEX_OFFSET).store(0, Ordering::Release);
    assert_eq!(p.push(8), Err(err));
    assert_eq!(p.push_slice(&[1, 2]), Err(err));
    assert_eq!(p.prepare_wait(), Err(err));
}

#[test]
fn consumer_index_going_backwards_is_corrupt() {
    let (region, mem) = fresh::<u64>(4);
    let (mut p, mut c) = mem.split().unwrap();
    for i in 0..4 {
        p.push(i).unwrap();
    }
    for _ in 0..4 {
        c.pop().unwrap();
    }
    assert_eq!(p.push(4), Ok(())); // producer now caches head = 4
    word(&region, CONSUMER_INDEX_OFFSET).store(2, Ordering::Release);
    for i in 5..8 {
        p.push(i).unwrap();
    }
    assert!(p.push(8).unwrap_err().is_corrupt());
}

#[test]
fn corrupt_producer_index_poisons_the_consumer() {
    let (region, mem) = fresh::<u64>(8);
    let (mut p, mut c) = mem.split().unwrap();
    p.push(1).unwrap();
    assert_eq!(c.pop(), Ok(1));
    // Producer index more than capacity ahead of the released slots.
    word(&region, PRODUCER_INDEX_OFFSET).store(1 + 8 + 1, Ordering::Release);
    let err = c.pop().unwrap_err();
    assert_eq!(
        err,
        RingError::Corrupt {
            index: PeerIndex::Producer,
            seen: 10,
            low: 1,
            high: 9
        }
    );
    let mut out = [0u64; 4];
    assert_eq!(c.pop_slice(&mut out), Err(err));
    assert_eq!(c.prepare_wait(), Err(err));
    // Backwards.
    let (region, mem) = fresh::<u64>(8);
    let (mut p2, mut c2) = mem.split().unwrap();
    p2.push_slice(&[1, 2, 3]).unwrap();
    assert_eq!(c2.available(), Ok(3));
    word(&region, PRODUCER_INDEX_OFFSET).store(u32::MAX, Ordering::Release);
    assert!(c2.available().unwrap_err().is_corrupt());
    drop(p);
}

#[test]
fn claiming_an_inconsistent_ring_fails() {
    let (region, mem) = fresh::<u64>(8);
    drop(mem);
    word(&region, PRODUCER_INDEX_OFFSET).store(100, Ordering::Relaxed);
    // SAFETY: region valid for its length.
    let mem = unsafe { attach::<u64>(region.as_ptr(), region.len()) }.unwrap();
    assert!(mem.into_consumer().unwrap_err().is_corrupt());
}

#[test]
fn need_event_wraps() {
    assert!(need_event(5, 6, 5));
    assert!(!need_event(6, 6, 5));
    assert!(need_event(u32::MAX, 1, u32::MAX - 1));
    assert!(!need_event(3, 10, 4));
}

/// One step of the model test.
#[derive(Clone, Debug)]
enum Op {
    Stage(u8),
    Publish,
    Push,
    PushSlice(u8),
    Reserve(u8, u8),
    Take,
    Release,
    Pop,
    PopSlice(u8),
    Peek(u8, u8, bool),
    ConsumerWait,
    ProducerWait,
    ProducerFlush,
    ConsumerFlush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u8>().prop_map(|n| Op::Stage(n % 4)),
        Just(Op::Publish),
        Just(Op::Push),
        any::<u8>().prop_map(|n| Op::PushSlice(n % 12)),
        (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Reserve(a % 12, b % 12)),
        Just(Op::Take),
        Just(Op::Release),
        Just(Op::Pop),
        any::<u8>().prop_map(|n| Op::PopSlice(n % 12)),
        (any::<u8>(), any::<u8>(), any::<bool>()).prop_map(|(a, b, r)| Op::Peek(a % 12, b % 12, r)),
        Just(Op::ConsumerWait),
        Just(Op::ProducerWait),
        Just(Op::ProducerFlush),
        Just(Op::ConsumerFlush),
    ]
}

/// The model: what the ring must behave like.
#[derive(Default)]
struct Model {
    cap: usize,
    /// Published, not yet taken.
    visible: VecDeque<u64>,
    /// Written, not yet published.
    staged: VecDeque<u64>,
    /// Taken but not released (still occupies slots for the producer).
    held: usize,
    next: u64,
    consumer_sleeps: bool,
    producer_sleeps: bool,
    /// Asked for a doorbell (prepare_wait) since the last one it got.
    consumer_asked: bool,
    producer_asked: bool,
}

impl Model {
    fn free(&self) -> usize {
        self.cap - self.visible.len() - self.staged.len() - self.held
    }
    fn stage(&mut self) -> u64 {
        let v = self.next;
        self.next += 1;
        self.staged.push_back(v);
        v
    }
    /// Publish; returns whether a sleeping consumer must be woken.
    fn publish(&mut self) -> bool {
        let any = !self.staged.is_empty();
        self.visible.extend(self.staged.drain(..));
        any && self.consumer_sleeps
    }
    fn release(&mut self) -> bool {
        let any = self.held > 0;
        self.held = 0;
        any && self.producer_sleeps
    }
}

fn run_model(cap: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (_region, mem) = fresh::<u64>(cap);
    let (mut p, mut c) = mem.split().unwrap();
    let mut m = Model {
        cap: cap as usize,
        ..Model::default()
    };
    // The first publication always announces itself (event index 0).
    m.consumer_sleeps = true;
    m.consumer_asked = true;
    let mut consumer_owed = false; // a doorbell the model says is due
    let mut producer_owed = false;
    for op in ops {
        match op {
            Op::Stage(n) => {
                for _ in 0..n {
                    let r = p.stage(m.next);
                    if m.free() == 0 {
                        prop_assert_eq!(r, Err(RingError::Full));
                    } else {
                        prop_assert_eq!(r, Ok(()));
                        m.stage();
                    }
                }
            }
            Op::Publish => {
                p.publish();
                consumer_owed |= m.publish();
            }
            Op::Push => {
                let r = p.push(m.next);
                if m.free() == 0 {
                    prop_assert_eq!(r, Err(RingError::Full));
                } else {
                    prop_assert_eq!(r, Ok(()));
                    m.stage();
                    consumer_owed |= m.publish();
                }
            }
            Op::PushSlice(n) => {
                let items: Vec<u64> = (m.next..m.next + n as u64).collect();
                let k = (n as usize).min(m.free());
                prop_assert_eq!(p.push_slice(&items), Ok(k));
                for _ in 0..k {
                    m.stage();
                }
                consumer_owed |= m.publish();
            }
            Op::Reserve(n, fill) => match p.reserve(n as usize) {
                Ok(mut w) => {
                    let k = (n as usize).min(m.free());
                    prop_assert!(n > 0 && k > 0);
                    prop_assert_eq!(w.len(), k);
                    let fill = (fill as usize).min(k);
                    for i in 0..fill {
                        w.write(i, m.next + i as u64);
                    }
                    w.publish(fill);
                    for _ in 0..fill {
                        m.stage();
                    }
                    consumer_owed |= m.publish();
                }
                Err(e) => {
                    prop_assert_eq!(e, RingError::Full);
                    prop_assert!(n == 0 || m.free() == 0);
                }
            },
            Op::Take => match c.take() {
                Ok(v) => {
                    prop_assert_eq!(Some(v), m.visible.pop_front());
                    m.held += 1;
                }
                Err(e) => {
                    prop_assert_eq!(e, RingError::Empty);
                    prop_assert!(m.visible.is_empty());
                }
            },
            Op::Release => {
                c.release();
                producer_owed |= m.release();
            }
            Op::Pop => match c.pop() {
                Ok(v) => {
                    prop_assert_eq!(Some(v), m.visible.pop_front());
                    m.held += 1;
                    producer_owed |= m.release();
                }
                Err(e) => {
                    prop_assert_eq!(e, RingError::Empty);
                    prop_assert!(m.visible.is_empty());
                }
            },
            Op::PopSlice(n) => {
                let mut out = [0u64; 12];
                let k = (n as usize).min(m.visible.len());
                prop_assert_eq!(c.pop_slice(&mut out[..n as usize]), Ok(k));
                for v in &out[..k] {
                    prop_assert_eq!(Some(*v), m.visible.pop_front());
                }
                m.held += k;
                producer_owed |= m.release();
            }
            Op::Peek(n, used, release) => match c.peek(n as usize) {
                Ok(r) => {
                    let k = (n as usize).min(m.visible.len());
                    prop_assert_eq!(r.len(), k);
                    for (i, v) in r.iter().enumerate() {
                        prop_assert_eq!(Some(&v), m.visible.get(i));
                    }
                    let used = (used as usize).min(k);
                    if release {
                        r.release(used);
                    } else {
                        r.consume(used);
                    }
                    for _ in 0..used {
                        m.visible.pop_front();
                    }
                    m.held += used;
                    if release {
                        producer_owed |= m.release();
                    }
                }
                Err(e) => {
                    prop_assert_eq!(e, RingError::Empty);
                    prop_assert!(n == 0 || m.visible.is_empty());
                }
            },
            Op::ConsumerWait => {
                let empty = c.prepare_wait().unwrap();
                prop_assert_eq!(empty, m.visible.is_empty());
                m.consumer_sleeps = empty;
                m.consumer_asked = true;
                consumer_owed = false;
            }
            Op::ProducerWait => {
                let full = p.prepare_wait().unwrap();
                prop_assert_eq!(full, m.free() == 0);
                m.producer_sleeps = full;
                m.producer_asked = true;
                producer_owed = false;
            }
            Op::ProducerFlush => {
                consumer_owed |= m.publish();
                let rang = p.flush();
                // A doorbell a sleeping consumer is owed must come; a busy
                // consumer (that did not ask since its last doorbell) gets
                // none. One that asked but did not sleep may get one.
                prop_assert!(rang || !consumer_owed);
                prop_assert!(!rang || m.consumer_asked);
                if rang {
                    m.consumer_sleeps = false;
                    m.consumer_asked = false;
                }
                consumer_owed = false;
            }
            Op::ConsumerFlush => {
                producer_owed |= m.release();
                let rang = c.flush();
                prop_assert!(rang || !producer_owed);
                prop_assert!(!rang || m.producer_asked);
                if rang {
                    m.producer_sleeps = false;
                    m.producer_asked = false;
                }
                producer_owed = false;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn ring_matches_a_queue(cap_log in 0u32..4, ops in proptest::collection::vec(op(), 1..200)) {
        run_model(1 << cap_log, ops)?;
    }
}
