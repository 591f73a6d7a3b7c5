//! A condition variable for [`patchall::sync::Mutex`](super::Mutex).

use std::fmt;
use std::sync::{LockResult, Mutex as StdMutex, PoisonError};
use std::time::{Duration, Instant};

use super::mutex::MutexGuard;
use super::waiter::{WaitQueue, block, lock};
use crate::runtime::{self, Breaks, Family, Label};
use crate::sys::deadline_after;

/// `std::sync::Condvar`'s interface, for guards of [`patchall::sync::Mutex`](super::Mutex):
/// waiting parks the coroutine. Notifications wake waiters in the order they
/// began to wait. Use one mutex with a given condition variable.
///
/// A waiter is queued before its mutex is released, so a notification made
/// after the release (by whoever takes the mutex next) always finds it.
/// Waits are not interrupted by `kill` or `timeout`. The condition may change
/// again before a notified waiter runs: check it in a loop, or use
/// [`wait_while`](Condvar::wait_while).
///
/// ```
/// use std::sync::Arc;
/// use patchall::sync::{Condvar, Mutex};
///
/// let pair = Arc::new((Mutex::new(false), Condvar::new()));
/// let p = pair.clone();
/// let waiter = patchall::spawn(move || {
///     let (ready, cv) = &*p;
///     let g = cv.wait_while(ready.lock().unwrap(), |ready| !*ready).unwrap();
///     *g
/// }).unwrap();
/// let (ready, cv) = &*pair;
/// *ready.lock().unwrap() = true;
/// cv.notify_one();
/// assert!(waiter.join().unwrap());
/// ```
pub struct Condvar {
    waiters: StdMutex<WaitQueue>,
}

/// Whether [`Condvar::wait_timeout`] returned because its time ran out.
///
/// ```
/// use std::time::Duration;
/// use patchall::sync::{Condvar, Mutex};
/// let (m, cv) = (Mutex::new(()), Condvar::new());
/// let (_g, r) = cv.wait_timeout(m.lock().unwrap(), Duration::ZERO).unwrap();
/// assert!(r.timed_out());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the wait ended at its deadline, not by a notification.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use patchall::sync::{Condvar, Mutex};
    /// let pair = Arc::new((Mutex::new(()), Condvar::new()));
    /// let p = pair.clone();
    /// let h = patchall::spawn(move || {
    ///     let (_g, r) = p.1.wait_timeout(p.0.lock().unwrap(), Duration::from_secs(60)).unwrap();
    ///     r.timed_out()
    /// }).unwrap();
    /// patchall::yield_now();
    /// pair.1.notify_one();
    /// assert!(!h.join().unwrap());
    /// ```
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl Condvar {
    /// A condition variable nobody waits on; `const`, so it can be a `static`.
    ///
    /// ```
    /// static READY: patchall::sync::Condvar = patchall::sync::Condvar::new();
    /// READY.notify_all();
    /// ```
    pub const fn new() -> Condvar {
        Condvar {
            waiters: StdMutex::new(WaitQueue::new()),
        }
    }

    /// Releases `guard`'s mutex, waits for a notification, then locks the mutex
    /// again. `Err` if the mutex is poisoned when relocked.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use patchall::sync::{Condvar, Mutex};
    /// let pair = Arc::new((Mutex::new(0), Condvar::new()));
    /// let p = pair.clone();
    /// let h = patchall::spawn(move || {
    ///     let mut g = p.0.lock().unwrap();
    ///     while *g == 0 {
    ///         g = p.1.wait(g).unwrap();
    ///     }
    ///     *g
    /// }).unwrap();
    /// patchall::yield_now(); // it waits
    /// *pair.0.lock().unwrap() = 9;
    /// pair.1.notify_all();
    /// assert_eq!(h.join().unwrap(), 9);
    /// ```
    pub fn wait<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        self.wait_until(guard, None)
            .map(|(g, _)| g)
            .map_err(relabel)
    }

    /// Waits while `condition` holds, re-checking it at each notification.
    ///
    /// ```
    /// use patchall::sync::{Condvar, Mutex};
    /// let (m, cv) = (Mutex::new(3), Condvar::new());
    /// // Already false: returns at once with the lock held.
    /// let g = cv.wait_while(m.lock().unwrap(), |n| *n == 0).unwrap();
    /// assert_eq!(*g, 3);
    /// ```
    pub fn wait_while<'a, T: ?Sized>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> LockResult<MutexGuard<'a, T>> {
        while condition(&mut *guard) {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// `wait`, at most `dur`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use patchall::sync::{Condvar, Mutex};
    /// let (m, cv) = (Mutex::new(()), Condvar::new());
    /// let (_g, r) = cv.wait_timeout(m.lock().unwrap(), Duration::from_millis(5)).unwrap();
    /// assert!(r.timed_out());
    /// ```
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        dur: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        self.wait_until(guard, Some(deadline_after(dur)))
    }

    fn wait_until<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        let mutex = MutexGuard::mutex(&guard);
        runtime::label(&const { Label::new("condvar", Family::Lock) });
        let (waiter, _) = block(deadline, Breaks::Never, |w| {
            lock(&self.waiters).push(w);
            drop(guard);
            true
        });
        let w = waiter.expect("a condition variable wait always queues");
        let notified = {
            let mut q = lock(&self.waiters);
            if !w.is_woken() {
                q.remove(&w);
            }
            w.is_woken()
        };
        let result = WaitTimeoutResult(!notified);
        match mutex.lock() {
            Ok(g) => Ok((g, result)),
            Err(e) => Err(PoisonError::new((e.into_inner(), result))),
        }
    }

    /// Wakes the longest waiter, if any.
    ///
    /// ```
    /// patchall::sync::Condvar::new().notify_one(); // nobody waits: nothing happens
    /// ```
    pub fn notify_one(&self) {
        if let Some(w) = lock(&self.waiters).pop() {
            w.wake();
        }
    }

    /// Wakes every waiter.
    ///
    /// ```
    /// patchall::sync::Condvar::new().notify_all();
    /// ```
    pub fn notify_all(&self) {
        lock(&self.waiters).wake_all();
    }
}

impl Default for Condvar {
    fn default() -> Condvar {
        Condvar::new()
    }
}

fn relabel<G>(e: PoisonError<(G, WaitTimeoutResult)>) -> PoisonError<G> {
    PoisonError::new(e.into_inner().0)
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}
