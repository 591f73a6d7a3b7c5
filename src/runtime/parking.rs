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
//! One of two ways to wait, with `sync::waiter`: this one is for objects whose
//! memory is the caller's (a C struct of glibc's size, a futex word), with no
//! room for a queue, so waiters are found by address in a table of ours. The
//! pthread hooks wait here (or, on a thread with no coroutines, in futex(2) on
//! the same address), and so do the futex emulation and `pthread_once`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use super::observe::WaitsOn;
use super::scheduler::{Breaks, current_scheduler, park_on_what, root_unparker, without_parking};
use super::signals::signal_counts;
use super::task::{Unparker, Wake};

const SHARDS: usize = 64;

/// A waiter and its mask.
type Queues = HashMap<usize, VecDeque<(Unparker, u32)>>;

const ALL: u32 = u32::MAX;

static TABLE: [Mutex<Option<Queues>>; SHARDS] = [const { Mutex::new(None) }; SHARDS];

fn shard(addr: usize) -> std::sync::MutexGuard<'static, Option<Queues>> {
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
    let mut me = None;
    let wake = park_on_what(WaitsOn::Address(addr), deadline, breaks, |who| {
        me = Some(who.clone());
        enqueue(addr, who, mask, still_blocked)
    });
    if wake != Wake::Ready {
        if let Some(me) = me {
            // Not queued any more: a waker took us off and counted us as
            // woken while the timer or a signal ended the park. The wake is
            // ours; dropping it would lose it (the waker woke no one else).
            let taken = !without_parking(|| dequeue(addr, &me));
            if taken && matches!(wake, Wake::TimedOut | Wake::Interrupted { .. }) {
                return Wake::Ready;
            }
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
    let Ok(me) = root_unparker() else {
        return Wake::Ready;
    };
    if !enqueue(addr, me.clone(), ALL, &still_blocked) {
        return Wake::Ready;
    }
    let signals = signal_counts();
    let interrupted = || breaks == Breaks::Signal && signal_counts().1 != signals.1;
    sched.run_until(deadline, &mut || {
        !still_blocked() || !is_queued(addr, &me) || interrupted()
    });
    // Still queued means nobody woke us: the condition changed, time ran out
    // or a signal came.
    if !dequeue(addr, &me) {
        Wake::Ready
    } else if interrupted() {
        Wake::Interrupted { restart: false }
    } else if deadline.is_some_and(|d| Instant::now() >= d) {
        Wake::TimedOut
    } else {
        Wake::Ready
    }
}

/// Queues `who` on `addr` if `still_blocked()`, checked under the queue's lock so
/// that an `unpark_*` racing with this is either seen by the check or sees `who`.
fn enqueue(addr: usize, who: Unparker, mask: u32, still_blocked: impl FnOnce() -> bool) -> bool {
    let mut table = shard(addr);
    if !still_blocked() {
        return false;
    }
    table
        .get_or_insert_with(HashMap::new)
        .entry(addr)
        .or_default()
        .push_back((who, mask));
    true
}

/// Takes `who` off `addr`'s queue; false if an `unpark_*` already had.
fn dequeue(addr: usize, who: &Unparker) -> bool {
    let mut table = shard(addr);
    let Some(t) = table.as_mut() else {
        return false;
    };
    let Some(q) = t.get_mut(&addr) else {
        return false;
    };
    let before = q.len();
    q.retain(|(w, _)| !w.same_task(who));
    let removed = q.len() != before;
    if q.is_empty() {
        t.remove(&addr);
    }
    removed
}

fn is_queued(addr: usize, who: &Unparker) -> bool {
    shard(addr)
        .as_ref()
        .and_then(|t| t.get(&addr))
        .is_some_and(|q| q.iter().any(|(w, _)| w.same_task(who)))
}

/// Wakes the longest-waiting coroutine parked on `addr`; false if there was none.
pub(crate) fn unpark_one(addr: usize) -> bool {
    let who = {
        let mut table = shard(addr);
        let Some(t) = table.as_mut() else {
            return false;
        };
        let Some(q) = t.get_mut(&addr) else {
            return false;
        };
        let who = q.pop_front();
        if q.is_empty() {
            t.remove(&addr);
        }
        who
    };
    who.map(|(w, _)| w.unpark(Wake::Ready)).is_some()
}

/// Wakes up to `n` of the coroutines parked on `addr` whose mask shares a bit
/// with `mask`, longest-waiting first; returns how many. One at a time, so that
/// nothing is allocated (a futex wake may come from inside malloc).
pub(crate) fn unpark_matching(addr: usize, n: usize, mask: u32) -> usize {
    let mut count = 0;
    while count < n {
        let who = {
            let mut table = shard(addr);
            let Some(t) = table.as_mut() else {
                break;
            };
            let Some(q) = t.get_mut(&addr) else {
                break;
            };
            let who = q
                .iter()
                .position(|(_, m)| m & mask != 0)
                .and_then(|i| q.remove(i));
            if q.is_empty() {
                t.remove(&addr);
            }
            who
        };
        let Some((w, _)) = who else {
            break;
        };
        w.unpark(Wake::Ready);
        count += 1;
    }
    count
}

/// How many wait on `addr`, for tests that must let waiters queue first.
#[cfg(test)]
pub(crate) fn waiters(addr: usize) -> usize {
    shard(addr)
        .as_ref()
        .and_then(|t| t.get(&addr))
        .map_or(0, |q| q.len())
}

/// Wakes every coroutine parked on `addr`; returns how many.
pub(crate) fn unpark_all(addr: usize) -> usize {
    let queue = shard(addr)
        .as_mut()
        .and_then(|t| t.remove(&addr))
        .unwrap_or_default();
    let n = queue.len();
    queue.into_iter().for_each(|(w, _)| w.unpark(Wake::Ready));
    n
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
}
