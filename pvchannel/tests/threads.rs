//! Two-thread tests: sequence numbers through the ring ends and through the
//! async halves, on real threads.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;

use futures_util::StreamExt;
use pvchannel::owned::{doorbell_pair, ring};
use pvchannel::{Batching, Completion, Descriptor, Receiver, RingError, Sender};

/// 10^7 in release (`cargo test -p pvchannel --release`), 10^6 in debug
/// builds so that the plain `cargo test` stays quick.
const ITEMS: u64 = if cfg!(debug_assertions) {
    1_000_000
} else {
    10_000_000
};

#[test]
fn ten_million_sequence_numbers_in_order() {
    let (mut p, mut c) = ring::<u64>(1024).unwrap();
    let producer = thread::spawn(move || {
        let mut next = 0u64;
        let mut buf = [0u64; 48];
        while next < ITEMS {
            // Alternate single pushes and batches.
            if (next / 1000).is_multiple_of(2) {
                match p.push(next) {
                    Ok(()) => next += 1,
                    Err(RingError::Full) => std::hint::spin_loop(),
                    Err(e) => panic!("{e}"),
                }
            } else {
                let n = ((ITEMS - next) as usize).min(buf.len());
                for (i, b) in buf[..n].iter_mut().enumerate() {
                    *b = next + i as u64;
                }
                let sent = p.push_slice(&buf[..n]).unwrap();
                next += sent as u64;
                if sent == 0 {
                    std::hint::spin_loop();
                }
            }
        }
    });
    let mut expect = 0u64;
    let mut out = [0u64; 61];
    while expect < ITEMS {
        if (expect / 777).is_multiple_of(2) {
            match c.pop() {
                Ok(v) => {
                    assert_eq!(v, expect);
                    expect += 1;
                }
                Err(RingError::Empty) => std::hint::spin_loop(),
                Err(e) => panic!("{e}"),
            }
        } else {
            let n = c.pop_slice(&mut out).unwrap();
            for v in &out[..n] {
                assert_eq!(*v, expect);
                expect += 1;
            }
        }
    }
    producer.join().unwrap();
    assert_eq!(c.pop(), Err(RingError::Empty));
}

struct ThreadWaker(thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// A minimal executor: poll, park until woken.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => return v,
            Poll::Pending => thread::park(),
        }
    }
}

fn descriptors_through_async_halves(batching: Batching, items: u64) -> (u64, u64) {
    let (p, c) = ring::<Descriptor>(64).unwrap();
    let (bell_tx, bell_rx) = doorbell_pair();
    let mut tx = Sender::new(p, bell_tx, batching);
    let mut rx = Receiver::new(c, bell_rx, batching);
    let sender = thread::spawn(move || {
        block_on(async {
            for i in 0..items {
                let d = Descriptor::new(1, i).with_args([i * 3, !i]);
                tx.send(d).await.unwrap();
                if i % 100 == 99 {
                    tx.flush();
                }
            }
            tx.flush();
        });
        tx.doorbells()
    });
    let rx_bells = block_on(async {
        for i in 0..items {
            let d = rx.next().await.unwrap().unwrap();
            assert_eq!((d.cookie(), d.arg(0), d.arg(1)), (i, i * 3, !i));
        }
        rx.flush();
        rx.doorbells()
    });
    (sender.join().unwrap(), rx_bells)
}

#[test]
fn async_halves_batching_on() {
    let n = ITEMS / 10;
    let (tx_bells, _) = descriptors_through_async_halves(Batching::On, n);
    assert!(tx_bells <= n, "{tx_bells} doorbells for {n} descriptors");
    eprintln!("batching on: {tx_bells} doorbells for {n} descriptors");
}

#[test]
fn async_halves_batching_off() {
    let n = ITEMS / 100;
    let (tx_bells, _) = descriptors_through_async_halves(Batching::Off, n);
    assert_eq!(tx_bells, n, "one doorbell per descriptor");
}

#[test]
fn duplex_request_response() {
    let ((req_tx, comp_rx), (req_rx, comp_tx)) =
        pvchannel::owned::duplex::<Descriptor, Completion>(32, 32).unwrap();
    let (client_bell, server_bell) = doorbell_pair();
    let (client_bell2, server_bell2) = doorbell_pair();
    let n = 20_000u64;
    let server = thread::spawn(move || {
        let mut rx = Receiver::new(req_rx, server_bell, Batching::On);
        let mut tx = Sender::new(comp_tx, server_bell2, Batching::On);
        block_on(async {
            for _ in 0..n {
                let d = rx.next().await.unwrap().unwrap();
                tx.send(Completion::ok(d.cookie(), d.arg(0) + 1))
                    .await
                    .unwrap();
                tx.flush();
            }
        });
    });
    let mut tx = Sender::new(req_tx, client_bell, Batching::On);
    let mut rx = Receiver::new(comp_rx, client_bell2, Batching::On);
    block_on(async {
        let mut done = 0;
        let mut sent = 0;
        while done < n {
            // Keep up to 8 requests in flight.
            while sent < n && sent - done < 8 {
                tx.send(Descriptor::new(2, sent).with_args([sent]))
                    .await
                    .unwrap();
                sent += 1;
            }
            tx.flush();
            let c = rx.next().await.unwrap().unwrap();
            assert_eq!(c.cookie(), done);
            assert_eq!(c.result(), Ok(done + 1));
            done += 1;
        }
    });
    server.join().unwrap();
}
