//! The waiting side shared by every primitive: a queued `Waiter`, FIFO queues of
//! them, and `block`, which parks a coroutine or, on a plain thread, drives that
//! thread's scheduler until a `Waiter` is woken from any thread.
//!
//! The protocol, the same in every primitive: the state lives under a
//! `std::sync::Mutex` held only briefly, never across a wait. A waker serves a
//! waiter under that lock (hands it the lock, the permit, the value) and marks it
//! woken; after waking, the waiter takes the lock and trusts only `is_woken()`.
//! A waiter that was not served (deadline, kill) removes itself under the lock,
//! so a wake-up is either delivered or never made: none is lost.
//!
//! One of two ways to wait, with `runtime::parking`: the objects here are ours,
//! so each keeps its own queue inside its state, and a waker hands a waiter
//! what it waited for (the lock, a permit, a channel value) under the same
//! lock that guards that state. The parking lot, for objects in the caller's
//! memory, has no state to hand over and finds waiters by address in a shared
//! table: serving these primitives through it would add a table lookup to
//! every wait and wake, and a second lock to every hand-over.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::runtime::{self, Breaks, Unparker, Wake};

/// Locks `m`, ignoring std poisoning: our state is consistent at every unlock
/// (no user code runs under these locks), so a panic elsewhere changes nothing.
pub(crate) fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One blocked caller, and what it is handed (a channel value), if anything.
pub(crate) struct Waiter<T = ()> {
    /// None when no scheduler could be made on the waiting plain thread: it polls.
    who: Option<Unparker>,
    woken: AtomicBool,
    slot: Mutex<Option<T>>,
}

impl<T> Waiter<T> {
    /// Marks the waiter served and wakes it. Called with the primitive's lock held.
    pub(crate) fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        if let Some(who) = &self.who {
            who.clone().unpark(Wake::Ready);
        }
    }

    pub(crate) fn is_woken(&self) -> bool {
        self.woken.load(Ordering::Acquire)
    }

    pub(crate) fn put(&self, value: T) {
        *lock(&self.slot) = Some(value);
    }

    pub(crate) fn take(&self) -> Option<T> {
        lock(&self.slot).take()
    }

    pub(crate) fn peek(&self) -> Option<T>
    where
        T: Copy,
    {
        *lock(&self.slot)
    }
}

/// Waiters in arrival order.
pub(crate) struct WaitQueue<T = ()>(VecDeque<Arc<Waiter<T>>>);

impl<T> Default for WaitQueue<T> {
    fn default() -> Self {
        WaitQueue::new()
    }
}

impl<T> WaitQueue<T> {
    pub(crate) const fn new() -> Self {
        WaitQueue(VecDeque::new())
    }

    pub(crate) fn push(&mut self, w: Arc<Waiter<T>>) {
        self.0.push_back(w);
    }

    /// The longest-waiting waiter, removed.
    pub(crate) fn pop(&mut self) -> Option<Arc<Waiter<T>>> {
        self.0.pop_front()
    }

    pub(crate) fn front(&self) -> Option<&Arc<Waiter<T>>> {
        self.0.front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Takes `w` out of the queue (it gave up waiting).
    pub(crate) fn remove(&mut self, w: &Arc<Waiter<T>>) {
        if let Some(i) = self.0.iter().position(|x| Arc::ptr_eq(x, w)) {
            self.0.remove(i);
        }
    }

    /// Wakes every waiter, oldest first.
    pub(crate) fn wake_all(&mut self) {
        for w in self.0.drain(..) {
            w.wake();
        }
    }
}

/// Blocks the caller until its `Waiter` is woken, `deadline` passes, or (in a
/// coroutine) what `breaks` names happens.
///
/// `enqueue` receives the new waiter with nothing locked; it locks the state,
/// and either completes the operation there (returns false: nothing waits) or
/// queues the waiter (returns true). Returns the waiter if it was queued, with
/// why the wait ended (`Ready` when woken, `TimedOut`, `Cancelled`, `Expired`,
/// or, rarely, a spurious `Ready` before `is_woken`: the caller re-checks).
/// Returns `(None, wake)` if nothing waited: `Ready` if `enqueue` returned
/// false; `Cancelled` or `Expired` if a stoppable wait was refused at once,
/// without calling `enqueue`.
pub(crate) fn block<T>(
    deadline: Option<Instant>,
    breaks: Breaks,
    enqueue: impl FnOnce(Arc<Waiter<T>>) -> bool,
) -> (Option<Arc<Waiter<T>>>, Wake) {
    let waiter = |who| {
        Arc::new(Waiter {
            who,
            woken: AtomicBool::new(false),
            slot: Mutex::new(None),
        })
    };
    if runtime::in_coroutine() {
        let mut queued = None;
        let wake = runtime::park_as(deadline, breaks, |who| {
            let w = waiter(Some(who));
            let waits = enqueue(w.clone());
            queued = waits.then_some(w);
            waits
        });
        return (queued, wake);
    }
    // A plain thread runs its own coroutines while it waits, as `join` does; a
    // wake from another thread reaches it through its scheduler's waker.
    let root = runtime::root_unparker().ok();
    let has_scheduler = root.is_some();
    let w = waiter(root);
    if !enqueue(w.clone()) {
        return (None, Wake::Ready);
    }
    let mut woken = || w.is_woken();
    if has_scheduler {
        let _ = runtime::with_scheduler(|s| s.run_until(deadline, &mut woken));
    } else {
        // No scheduler can be made here: nothing of ours runs on this thread.
        while !woken() && deadline.is_none_or(|d| Instant::now() < d) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let wake = if w.is_woken() {
        Wake::Ready
    } else {
        Wake::TimedOut
    };
    (Some(w), wake)
}
