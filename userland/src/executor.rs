//! A single-threaded async executor that sleeps in `sys::wait`.
//!
//! Context: a server's only thread. Tasks are boxed futures; a task's waker
//! pushes its id into the ready queue (a `crossbeam_queue::ArrayQueue`, at
//! most once until the task is polled again). When nothing is ready, the
//! executor asks the [`Notifications`] which bits its tasks wait on, blocks
//! in `wait(mask, 0)` and wakes the tasks registered on the bits that came
//! back. The wait is a parameter ([`Executor::block_on`]) so host tests can
//! drive the executor with a fake one; servers use [`block_on`] and
//! [`spawn`], which use the real one.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use core::future::Future;
use core::pin::{Pin, pin};
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};

use crossbeam_queue::{ArrayQueue, SegQueue};
use futures_util::task::{ArcWake, waker};

use crate::notify::Notifications;

/// Most tasks (spawned ones plus the main future) alive at once.
pub const MAX_TASKS: usize = 256;

type BoxedTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The id of the future given to `block_on`.
const MAIN: usize = 0;

struct Shared {
    ready: ArrayQueue<usize>,
    spawned: SegQueue<BoxedTask>,
}

struct TaskWaker {
    id: usize,
    queued: AtomicBool,
    shared: Arc<Shared>,
}

impl TaskWaker {
    fn schedule(&self) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            // Each live task is queued at most once and there are at most
            // MAX_TASKS of them, so the queue has room.
            let pushed = self.shared.ready.push(self.id);
            debug_assert!(pushed.is_ok(), "ready queue overflow");
        }
    }
}

impl ArcWake for TaskWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.schedule();
    }
}

struct Task {
    future: BoxedTask,
    waker: Arc<TaskWaker>,
}

/// Why [`Executor::block_on`] gave up before the main future finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// No task is ready and none waits on a notification bit: nothing can
    /// ever wake them (a task waits on something that is not a [`Lane`](crate::notify::Lane)).
    Deadlock {
        /// Tasks still alive, the main future included.
        tasks: usize,
    },
    /// The wait itself failed.
    Wait(abi::Error),
}

impl core::fmt::Display for Stall {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Deadlock { tasks } => {
                write!(f, "{tasks} tasks blocked with nothing to wait on")
            }
            Self::Wait(e) => write!(f, "wait failed: {e}"),
        }
    }
}

/// Spawns tasks onto an [`Executor`] (from inside its tasks, too).
#[derive(Clone)]
pub struct Spawner {
    shared: Arc<Shared>,
}

impl Spawner {
    /// Run `future` as a new task; it starts at the executor's next turn.
    pub fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.shared.spawned.push(Box::pin(future));
    }
}

/// The executor: its tasks and the notifications its wakers hang on.
pub struct Executor<'n> {
    shared: Arc<Shared>,
    tasks: BTreeMap<usize, Task>,
    next_id: usize,
    notifications: &'n Notifications,
    polls: u64,
    waits: u64,
}

impl<'n> Executor<'n> {
    /// An executor whose idle wait is driven by `notifications`.
    pub fn new(notifications: &'n Notifications) -> Self {
        Self {
            shared: Arc::new(Shared {
                ready: ArrayQueue::new(MAX_TASKS),
                spawned: SegQueue::new(),
            }),
            tasks: BTreeMap::new(),
            next_id: MAIN + 1,
            notifications,
            polls: 0,
            waits: 0,
        }
    }

    /// A handle that spawns onto this executor.
    pub fn spawner(&self) -> Spawner {
        Spawner {
            shared: self.shared.clone(),
        }
    }

    /// Run `future` as a new task.
    pub fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) {
        self.spawner().spawn(future);
    }

    /// Polls done so far (all tasks).
    pub fn polls(&self) -> u64 {
        self.polls
    }

    /// Times the executor went to sleep in the wait.
    pub fn waits(&self) -> u64 {
        self.waits
    }

    /// Spawned tasks still alive (not counting the main future).
    pub fn tasks(&self) -> usize {
        self.tasks.len()
    }

    fn adopt_spawned(&mut self) {
        while let Some(future) = self.shared.spawned.pop() {
            assert!(
                self.tasks.len() + 1 < MAX_TASKS,
                "more than {MAX_TASKS} tasks"
            );
            let id = self.next_id;
            // Ids never repeat in practice (2^64), so a stale waker of a
            // finished task never polls a new one.
            self.next_id += 1;
            let waker = Arc::new(TaskWaker {
                id,
                queued: AtomicBool::new(false),
                shared: self.shared.clone(),
            });
            waker.schedule();
            self.tasks.insert(id, Task { future, waker });
        }
    }

    fn poll_task(&mut self, id: usize) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return; // a stale wake of a finished task
        };
        task.waker.queued.store(false, Ordering::Release);
        let w = waker(task.waker.clone());
        let mut cx = Context::from_waker(&w);
        self.polls += 1;
        if task.future.as_mut().poll(&mut cx).is_ready() {
            self.tasks.remove(&id);
        }
    }

    /// Run `main` and every spawned task until `main` finishes; tasks still
    /// pending then are dropped. When nothing is ready, calls
    /// `wait(mask)` with the armed notification bits and wakes the tasks on
    /// the bits it returns (`Err(TimedOut)` counts as "nothing pending").
    pub fn block_on<F: Future>(
        &mut self,
        main: F,
        mut wait: impl FnMut(u64) -> Result<u64, abi::Error>,
    ) -> Result<F::Output, Stall> {
        let mut main = pin!(main);
        let main_waker = Arc::new(TaskWaker {
            id: MAIN,
            queued: AtomicBool::new(false),
            shared: self.shared.clone(),
        });
        main_waker.schedule();
        loop {
            self.adopt_spawned();
            while let Some(id) = self.shared.ready.pop() {
                if id == MAIN {
                    main_waker.queued.store(false, Ordering::Release);
                    let w: Waker = waker(main_waker.clone());
                    let mut cx = Context::from_waker(&w);
                    self.polls += 1;
                    if let Poll::Ready(out) = main.as_mut().poll(&mut cx) {
                        return Ok(out);
                    }
                } else {
                    self.poll_task(id);
                }
                self.adopt_spawned();
            }
            let mask = self.notifications.armed();
            if mask == 0 {
                return Err(Stall::Deadlock {
                    tasks: self.tasks.len() + 1,
                });
            }
            self.waits += 1;
            match wait(mask) {
                Ok(pending) => {
                    self.notifications.wake(pending);
                }
                Err(abi::Error::TimedOut) => {}
                Err(e) => return Err(Stall::Wait(e)),
            }
        }
    }
}

/// The spawner of the running [`block_on`], for [`spawn`].
static SPAWNER: conquer_once::spin::OnceCell<Spawner> = conquer_once::spin::OnceCell::uninit();

/// Run `main` on this server's executor until it finishes, sleeping in
/// `sys::wait` whenever no task is ready. On a stall (every task blocked on
/// something no notification bit can wake) logs why and exits with 102.
/// Call it once per server (the `entry!` macro does, for an async main).
pub fn block_on<F: Future>(main: F) -> F::Output {
    let mut executor = Executor::new(&crate::notify::NOTIFICATIONS);
    SPAWNER.init_once(|| executor.spawner());
    // With batching on, doorbells rung by tasks go out with the next wait.
    crate::sys::defer_doorbells(crate::sys::batching() == pvchannel::Batching::On);
    let result = executor.block_on(main, |mask| crate::sys::wait(mask, 0));
    // Whatever is still owed goes out now.
    crate::sys::defer_doorbells(false);
    match result {
        Ok(out) => out,
        Err(stall) => {
            crate::println!("executor stalled: {stall}");
            crate::sys::exit(102)
        }
    }
}

/// Spawn a task onto the executor of the running [`block_on`].
///
/// # Panics
/// If no `block_on` has started (spawn from inside a task, or after
/// `block_on` began).
pub fn spawn(future: impl Future<Output = ()> + Send + 'static) {
    SPAWNER
        .get()
        .expect("userland::spawn outside block_on")
        .spawn(future);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Lane;
    use alloc::vec::Vec;
    use core::sync::atomic::AtomicU32;
    use core::task::Poll;
    use std::sync::Mutex;

    /// A future that completes after `bit` has been reported `times` times.
    struct OnBit {
        lane: Lane<'static>,
        left: u32,
    }

    impl Future for OnBit {
        type Output = u32;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u32> {
            if self.left == 0 {
                return Poll::Ready(self.lane.bit());
            }
            self.left -= 1;
            self.lane.register(cx.waker());
            Poll::Pending
        }
    }

    fn leaked() -> &'static Notifications {
        Box::leak(Box::new(Notifications::new()))
    }

    #[test]
    fn ready_future_needs_no_wait() {
        let n = leaked();
        let mut ex = Executor::new(n);
        let out = ex.block_on(async { 7 }, |_| panic!("no wait expected"));
        assert_eq!(out, Ok(7));
        assert_eq!(ex.waits(), 0);
    }

    #[test]
    fn waits_on_armed_bits_and_wakes_their_tasks() {
        let n = leaked();
        let mut ex = Executor::new(n);
        let done = Arc::new(AtomicU32::new(0));
        for bit in [2u32, 9] {
            let lane = n.lane(bit).unwrap();
            let done = done.clone();
            ex.spawn(async move {
                let b = OnBit { lane, left: 3 }.await;
                done.fetch_or(1 << b, Ordering::SeqCst);
            });
        }
        let main_lane = n.lane(20).unwrap();
        let masks = Mutex::new(Vec::new());
        // The fake kernel: every wait reports the lowest armed bit.
        let out = ex.block_on(
            OnBit {
                lane: main_lane,
                left: 1,
            },
            |mask| {
                masks.lock().unwrap().push(mask);
                // Keep the main future last: report a task bit while any is armed.
                let task_bits = mask & !(1 << 20);
                let pick = if task_bits != 0 { task_bits } else { mask };
                Ok(1 << pick.trailing_zeros())
            },
        );
        assert_eq!(out, Ok(20));
        assert_eq!(done.load(Ordering::SeqCst), (1 << 2) | (1 << 9));
        let masks = masks.into_inner().unwrap();
        // The first wait covers all three waiters.
        assert_eq!(masks[0], (1 << 2) | (1 << 9) | (1 << 20));
        // Bit 2 three times, bit 9 three times, then bit 20 once.
        assert_eq!(masks.len(), 7);
        assert_eq!(ex.tasks(), 0);
    }

    #[test]
    fn timeouts_and_spurious_bits_are_harmless() {
        let n = leaked();
        let mut ex = Executor::new(n);
        let lane = n.lane(4).unwrap();
        let mut calls = 0;
        let out = ex.block_on(OnBit { lane, left: 1 }, |_| {
            calls += 1;
            match calls {
                1 => Err(abi::Error::TimedOut),
                2 => Ok(1 << 33), // a bit nobody waits on
                _ => Ok(1 << 4),
            }
        });
        assert_eq!(out, Ok(4));
        assert_eq!(calls, 3);
    }

    #[test]
    fn tasks_spawned_by_tasks_run() {
        let n = leaked();
        let mut ex = Executor::new(n);
        let spawner = ex.spawner();
        let hits = Arc::new(AtomicU32::new(0));
        let h = hits.clone();
        ex.spawn(async move {
            for _ in 0..3 {
                let h = h.clone();
                spawner.spawn(async move {
                    h.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        // Main yields until the grandchildren ran.
        let h = hits.clone();
        let out = ex.block_on(
            core::future::poll_fn(move |cx| {
                if h.load(Ordering::SeqCst) == 3 {
                    Poll::Ready(())
                } else {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }),
            |_| panic!("nothing waits on a bit"),
        );
        assert_eq!(out, Ok(()));
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn deadlock_is_reported_not_hung() {
        let n = leaked();
        let mut ex = Executor::new(n);
        ex.spawn(core::future::pending());
        let out = ex.block_on(core::future::pending::<()>(), |_| unreachable!());
        assert_eq!(out, Err(Stall::Deadlock { tasks: 2 }));
    }

    #[test]
    fn wait_errors_stop_the_executor() {
        let n = leaked();
        let mut ex = Executor::new(n);
        let lane = n.lane(0).unwrap();
        let out = ex.block_on(OnBit { lane, left: 1 }, |_| {
            Err(abi::Error::InvalidArgument)
        });
        assert_eq!(out, Err(Stall::Wait(abi::Error::InvalidArgument)));
    }

    #[test]
    fn a_task_is_queued_once_however_often_it_is_woken() {
        let n = leaked();
        let mut ex = Executor::new(n);
        let polls = Arc::new(AtomicU32::new(0));
        let p = polls.clone();
        ex.spawn(core::future::poll_fn(move |cx| {
            if p.fetch_add(1, Ordering::SeqCst) == 0 {
                for _ in 0..10 * MAX_TASKS {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }));
        let out = ex.block_on(async {}, |_| unreachable!());
        assert_eq!(out, Ok(()));
        // Main finished first; run again to let the task finish.
        let out = ex.block_on(
            core::future::poll_fn(|cx| {
                if polls.load(Ordering::SeqCst) >= 2 {
                    Poll::Ready(())
                } else {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }),
            |_| unreachable!(),
        );
        assert_eq!(out, Ok(()));
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }
}
