//! A counting semaphore with FIFO hand-off of permits.

use std::fmt;
use std::sync::Mutex;

use super::waiter::{WaitQueue, block, lock};
use crate::runtime::{self, Breaks, Family, Label};

/// A count of permits. [`acquire`](Semaphore::acquire) waits for one; a
/// released permit goes straight to the longest waiter, so none starves.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
/// use std::time::Duration;
/// use patchall::sync::Semaphore;
///
/// let sem = Arc::new(Semaphore::new(2));
/// let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
/// let hs: Vec<_> = (0..6).map(|_| {
///     let (sem, now, max) = (sem.clone(), now.clone(), max.clone());
///     patchall::spawn(move || {
///         let _permit = sem.acquire();
///         max.fetch_max(now.fetch_add(1, SeqCst) + 1, SeqCst);
///         patchall::sleep(Duration::from_millis(2));
///         now.fetch_sub(1, SeqCst);
///     }).unwrap()
/// }).collect();
/// patchall::join_all(hs);
/// assert_eq!(max.load(SeqCst), 2);
/// ```
pub struct Semaphore {
    state: Mutex<State>,
}

struct State {
    permits: usize,
    waiters: WaitQueue,
}

/// One permit, given back when dropped.
///
/// ```
/// let sem = patchall::sync::Semaphore::new(1);
/// {
///     let _p: patchall::sync::Permit<'_> = sem.acquire();
///     assert_eq!(sem.available_permits(), 0);
/// }
/// assert_eq!(sem.available_permits(), 1);
/// ```
#[must_use = "the permit is released at once if not kept"]
pub struct Permit<'a> {
    sem: &'a Semaphore,
}

impl Semaphore {
    /// A semaphore with `permits` permits; `const`, so it can be a `static`.
    ///
    /// ```
    /// static SLOTS: patchall::sync::Semaphore = patchall::sync::Semaphore::new(2);
    /// let (_a, _b) = (SLOTS.acquire(), SLOTS.acquire());
    /// assert!(SLOTS.try_acquire().is_none());
    /// ```
    pub const fn new(permits: usize) -> Semaphore {
        Semaphore {
            state: Mutex::new(State {
                permits,
                waiters: WaitQueue::new(),
            }),
        }
    }

    /// Waits for a permit (parking the coroutine; a plain thread runs its
    /// coroutines meanwhile). Not interrupted by `kill` or `timeout`: it can
    /// only return a permit.
    ///
    /// ```
    /// let sem = patchall::sync::Semaphore::new(1);
    /// let p = sem.acquire();
    /// assert_eq!(sem.available_permits(), 0);
    /// drop(p);
    /// assert_eq!(sem.available_permits(), 1);
    /// ```
    pub fn acquire(&self) -> Permit<'_> {
        loop {
            runtime::label(&const { Label::new("semaphore", Family::Lock) });
            let (waiter, _) = block(None, Breaks::Never, |w| {
                let mut st = lock(&self.state);
                // Behind queued waiters, a newcomer waits its turn.
                if st.permits > 0 && st.waiters.is_empty() {
                    st.permits -= 1;
                    return false;
                }
                st.waiters.push(w);
                true
            });
            let Some(w) = waiter else {
                return Permit { sem: self };
            };
            let mut st = lock(&self.state);
            if w.is_woken() {
                return Permit { sem: self };
            }
            st.waiters.remove(&w);
        }
    }

    /// A permit if one is free and nobody waits for it.
    ///
    /// ```
    /// let sem = patchall::sync::Semaphore::new(1);
    /// let p = sem.try_acquire().unwrap();
    /// assert!(sem.try_acquire().is_none());
    /// drop(p);
    /// assert!(sem.try_acquire().is_some());
    /// ```
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let mut st = lock(&self.state);
        if st.permits > 0 && st.waiters.is_empty() {
            st.permits -= 1;
            return Some(Permit { sem: self });
        }
        None
    }

    /// Adds a permit: to the longest waiter if any, else to the count. Pairs
    /// with [`Permit::forget`], or grows the semaphore.
    ///
    /// ```
    /// let sem = patchall::sync::Semaphore::new(0);
    /// sem.release();
    /// assert_eq!(sem.available_permits(), 1);
    /// ```
    pub fn release(&self) {
        let mut st = lock(&self.state);
        match st.waiters.pop() {
            Some(w) => w.wake(),
            None => st.permits += 1,
        }
    }

    /// Permits free now.
    ///
    /// ```
    /// assert_eq!(patchall::sync::Semaphore::new(3).available_permits(), 3);
    /// ```
    pub fn available_permits(&self) -> usize {
        lock(&self.state).permits
    }
}

impl Permit<'_> {
    /// Keeps the permit taken: nothing is released on drop (give it back later
    /// with [`Semaphore::release`]).
    ///
    /// ```
    /// let sem = patchall::sync::Semaphore::new(1);
    /// sem.acquire().forget();
    /// assert!(sem.try_acquire().is_none());
    /// sem.release();
    /// assert!(sem.try_acquire().is_some());
    /// ```
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.sem.release();
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("available_permits", &self.available_permits())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}
