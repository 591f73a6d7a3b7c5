//! Waiting on an address, for synchronisation objects that live in user memory
//! (a `pthread_mutex_t`, a `sem_t`, a `pthread_once_t`): the same idea as the
//! kernel's futex and parking_lot's parking lot, for coroutines.
//!
//! Waiters queue FIFO per address in a small sharded table. `park_on` checks the
//! caller's condition under the shard's lock after queueing, so a wake-up that
//! races with the park is never lost. Each waiter carries a 32-bit mask that
//! `unpark_matching` selects on (a futex bitset); every other waiter and waker
//! uses all bits.
//!
//! Nothing here allocates: a waiter is a node on its own stack, linked into its
//! shard's list while it waits. A coroutine may wait here from inside malloc
//! (a jemalloc lock is a hooked `pthread_mutex`, contended while jemalloc holds
//! another of its locks): a park that called malloc would need that lock again
//! (measured: `redis-benchmark --threads 2`, green on two workers, hung so one
//! run in four).
//!
//! One of two ways to wait, with `sync::waiter`: this one is for objects whose
//! memory is the caller's (a C struct of glibc's size, a futex word), with no
//! room for a queue, so waiters are found by address in a table of ours. The
//! pthread hooks wait here (or, on a thread with no coroutines, in futex(2) on
//! the same address), and so do the futex emulation and `pthread_once`.

use std::cell::Cell;
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::observe::WaitsOn;
use super::scheduler::{Breaks, current_scheduler, park_on_what, root_unparker, without_parking};
use super::signals::signal_counts;
use super::task::{Unparker, Wake};

const SHARDS: usize = 64;

const ALL: u32 = u32::MAX;

/// One waiter, on the stack of the frame that waits, which returns only once
/// the waiter is off its list. Its links and handle are read and written
/// under its shard's lock.
struct Waiter {
    addr: usize,
    mask: u32,
    who: Cell<Option<Unparker>>,
    prev: Cell<*const Waiter>,
    next: Cell<*const Waiter>,
    /// On the list. Cleared last, by whoever takes it off: once it reads
    /// false, nothing touches the node again.
    queued: AtomicBool,
}

impl Waiter {
    fn new(addr: usize, mask: u32) -> Waiter {
        Waiter {
            addr,
            mask,
            who: Cell::new(None),
            prev: Cell::new(ptr::null()),
            next: Cell::new(ptr::null()),
            queued: AtomicBool::new(false),
        }
    }

    fn is_queued(&self) -> bool {
        self.queued.load(Ordering::Acquire)
    }
}

/// A shard's waiters, oldest first.
struct List {
    head: *const Waiter,
    tail: *const Waiter,
}

// SAFETY: the nodes are reached only under the list's mutex, and each stays
// in place while it is on the list (`Waiter`).
unsafe impl Send for List {}

impl List {
    /// Appends `w`.
    fn push(&mut self, w: &Waiter) {
        w.prev.set(self.tail);
        w.next.set(ptr::null());
        match self.tail.is_null() {
            true => self.head = w,
            // SAFETY: a queued node, in place while queued (lock held).
            false => unsafe { &*self.tail }.next.set(w),
        }
        self.tail = w;
        w.queued.store(true, Ordering::Release);
    }

    /// Takes `w` (queued) off, and its handle.
    fn unlink(&mut self, w: &Waiter) -> Option<Unparker> {
        let (prev, next) = (w.prev.get(), w.next.get());
        match prev.is_null() {
            true => self.head = next,
            // SAFETY: as in `push`.
            false => unsafe { &*prev }.next.set(next),
        }
        match next.is_null() {
            true => self.tail = prev,
            // SAFETY: as in `push`.
            false => unsafe { &*next }.prev.set(prev),
        }
        let who = w.who.take();
        w.queued.store(false, Ordering::Release);
        who
    }

    /// The oldest waiter on `addr` whose mask shares a bit with `mask`.
    fn first(&self, addr: usize, mask: u32) -> Option<&Waiter> {
        let mut at = self.head;
        while !at.is_null() {
            // SAFETY: as in `push`.
            let w = unsafe { &*at };
            if w.addr == addr && w.mask & mask != 0 {
                return Some(w);
            }
            at = w.next.get();
        }
        None
    }
}

static TABLE: [Mutex<List>; SHARDS] = [const {
    Mutex::new(List {
        head: ptr::null(),
        tail: ptr::null(),
    })
}; SHARDS];

fn shard(addr: usize) -> std::sync::MutexGuard<'static, List> {
    // Objects are at least 4-byte aligned; mix the bits above that.
    let i = (addr >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58;
    TABLE[i % SHARDS].lock().unwrap_or_else(|e| e.into_inner())
}

/// Parks the running coroutine on `addr` if `still_blocked()` holds (checked with
/// the queue locked, after this coroutine is queued), until an `unpark_*` on
/// `addr`, `deadline`, or cancellation. Returns `Ready` at once if not blocked.
pub(crate) fn park_on(
    addr: usize,
    deadline: Option<Instant>,
    still_blocked: impl FnOnce() -> bool,
) -> Wake {
    park_on_as(addr, deadline, Breaks::Never, still_blocked)
}

/// `park_on`, also ended by what `breaks` names.
pub(crate) fn park_on_as(
    addr: usize,
    deadline: Option<Instant>,
    breaks: Breaks,
    still_blocked: impl FnOnce() -> bool,
) -> Wake {
    park_on_masked(addr, deadline, breaks, ALL, still_blocked)
}

/// `park_on_as` for a waiter that only an `unpark_matching` whose mask shares a
/// bit with `mask` (or an `unpark_one`/`unpark_all`) wakes.
pub(crate) fn park_on_masked(
    addr: usize,
    deadline: Option<Instant>,
    breaks: Breaks,
    mask: u32,
    still_blocked: impl FnOnce() -> bool,
) -> Wake {
    let me = Waiter::new(addr, mask);
    let mut queued = false;
    let wake = park_on_what(WaitsOn::Address(addr), deadline, breaks, |who| {
        queued = enqueue(&me, who, still_blocked);
        queued
    });
    if queued {
        // Off the queue before the frame goes. A waker that took us off
        // counted us as woken, even if the timer, a signal or cancellation
        // ended the park first (it may have taken us since, or before we
        // ran): the wake is ours; dropping it would lose it (the waker woke
        // no one else).
        let taken = !me.is_queued() || !without_parking(|| dequeue(&me));
        if taken && matches!(wake, Wake::TimedOut | Wake::Interrupted { .. }) {
            return Wake::Ready;
        }
    }
    wake
}

/// `park_on` for a plain thread whose scheduler has coroutines (one of them may
/// be the one to wake it): queues the thread and runs its coroutines until an
/// `unpark_*` on `addr` takes it off the queue, `still_blocked()` stops holding,
/// or `deadline` passes.
///
/// With `breaks` `Signal`, a signal handler without SA_RESTART run on this
/// thread ends the wait too (`Wake::Interrupted`), as it ends a futex wait.
pub(crate) fn drive_on(
    addr: usize,
    deadline: Option<Instant>,
    breaks: Breaks,
    still_blocked: impl Fn() -> bool,
) -> Wake {
    let Some(sched) = current_scheduler() else {
        return Wake::Ready;
    };
    let Ok(who) = root_unparker() else {
        return Wake::Ready;
    };
    let me = Waiter::new(addr, ALL);
    if !enqueue(&me, who, &still_blocked) {
        return Wake::Ready;
    }
    let signals = signal_counts();
    let interrupted = || breaks == Breaks::Signal && signal_counts().1 != signals.1;
    sched.run_until(deadline, &mut || {
        !still_blocked() || !me.is_queued() || interrupted()
    });
    // Still queued means nobody woke us: the condition changed, time ran out
    // or a signal came.
    if !dequeue(&me) {
        Wake::Ready
    } else if interrupted() {
        Wake::Interrupted { restart: false }
    } else if deadline.is_some_and(|d| Instant::now() >= d) {
        Wake::TimedOut
    } else {
        Wake::Ready
    }
}

/// Queues `me` with `who` if `still_blocked()`, checked under the queue's lock so
/// that an `unpark_*` racing with this is either seen by the check or sees `me`.
/// `me` must stay in place until it is off the queue again.
fn enqueue(me: &Waiter, who: Unparker, still_blocked: impl FnOnce() -> bool) -> bool {
    let mut list = shard(me.addr);
    if !still_blocked() {
        return false;
    }
    me.who.set(Some(who));
    list.push(me);
    true
}

/// Takes `me` off its queue; false if an `unpark_*` already had.
fn dequeue(me: &Waiter) -> bool {
    let who = {
        let mut list = shard(me.addr);
        if !me.is_queued() {
            return false;
        }
        list.unlink(me)
    };
    drop(who);
    true
}

/// Takes the oldest waiter on `addr` whose mask shares a bit with `mask` off
/// its queue, and returns its handle.
fn take_first(addr: usize, mask: u32) -> Option<Unparker> {
    let mut list = shard(addr);
    let w = list.first(addr, mask)?;
    // SAFETY: detaches the node's lifetime from the guard's borrow; it is
    // unlinked under the same lock.
    let w = unsafe { &*ptr::from_ref(w) };
    list.unlink(w)
}

/// Wakes the longest-waiting coroutine parked on `addr`; false if there was none.
pub(crate) fn unpark_one(addr: usize) -> bool {
    take_first(addr, ALL)
        .map(|w| w.unpark(Wake::Ready))
        .is_some()
}

/// Wakes up to `n` of the coroutines parked on `addr` whose mask shares a bit
/// with `mask`, longest-waiting first; returns how many.
pub(crate) fn unpark_matching(addr: usize, n: usize, mask: u32) -> usize {
    let mut count = 0;
    while count < n {
        let Some(w) = take_first(addr, mask) else {
            break;
        };
        w.unpark(Wake::Ready);
        count += 1;
    }
    count
}

/// How many wait on `addr`.
fn count(addr: usize) -> usize {
    let list = shard(addr);
    let mut n = 0;
    let mut at = list.head;
    while !at.is_null() {
        // SAFETY: as in `List::push`.
        let w = unsafe { &*at };
        n += usize::from(w.addr == addr);
        at = w.next.get();
    }
    n
}

/// How many wait on `addr`, for tests that must let waiters queue first.
#[cfg(test)]
pub(crate) fn waiters(addr: usize) -> usize {
    count(addr)
}

/// Wakes every coroutine parked on `addr` when this is called; returns how
/// many. (Those queued meanwhile, behind them, wait on.)
pub(crate) fn unpark_all(addr: usize) -> usize {
    let n = count(addr);
    unpark_matching(addr, n, ALL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

    fn has_waiters(addr: usize) -> bool {
        waiters(addr) > 0
    }

    #[test]
    fn waiters_wake_in_fifo_order_and_none_is_lost() {
        let word = Arc::new(AtomicU32::new(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let addr = Arc::as_ptr(&word) as usize;
        let hs: Vec<_> = (0..3)
            .map(|i| {
                let (word, order) = (word.clone(), order.clone());
                crate::spawn(move || {
                    while word.load(SeqCst) == 1 {
                        park_on(addr, None, || word.load(SeqCst) == 1);
                    }
                    order.lock().unwrap().push(i);
                })
                .unwrap()
            })
            .collect();
        crate::yield_now();
        assert!(has_waiters(addr));
        word.store(0, SeqCst);
        assert!(unpark_one(addr));
        crate::yield_now();
        assert_eq!(*order.lock().unwrap(), [0]);
        assert_eq!(unpark_all(addr), 2);
        crate::join_all(hs);
        assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
        assert!(!unpark_one(addr));
    }

    #[test]
    fn a_condition_already_false_does_not_park() {
        let h = crate::spawn(|| park_on(1234, None, || false)).unwrap();
        assert_eq!(h.join().unwrap(), Wake::Ready);
    }

    #[test]
    fn a_deadline_ends_the_wait() {
        let h = crate::spawn(|| {
            park_on(
                5678,
                Some(Instant::now() + std::time::Duration::from_millis(5)),
                || true,
            )
        })
        .unwrap();
        assert_eq!(h.join().unwrap(), Wake::TimedOut);
        assert!(!has_waiters(5678));
    }

    /// The timer ends the park, then, before the parked coroutine runs again,
    /// a waker takes it off the queue and counts it as woken: the wake is
    /// the coroutine's to report, or it is lost (the waker woke no one else).
    #[test]
    fn a_wake_that_comes_after_the_timer_but_first_is_not_lost() {
        let addr = 9012;
        let deadline = Instant::now() + std::time::Duration::from_millis(20);
        let parked = crate::spawn(move || park_on(addr, Some(deadline), || true)).unwrap();
        let waker = crate::spawn(move || {
            // Past the deadline without letting the scheduler run: its timers
            // fire only between runs. At this one's yield they do, and the
            // parked coroutine is runnable (timed out), queued behind this
            // one, and still on the lot's queue when this one runs again.
            while Instant::now() < deadline + std::time::Duration::from_millis(10) {
                std::hint::spin_loop();
            }
            crate::yield_now();
            unpark_matching(addr, 1, ALL)
        })
        .unwrap();
        assert_eq!(waker.join().unwrap(), 1, "the waker found the waiter");
        assert_eq!(parked.join().unwrap(), Wake::Ready);
        assert!(!has_waiters(addr));
    }
}
