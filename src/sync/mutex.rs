//! A mutual-exclusion lock whose waiters park (coroutines) instead of blocking
//! the thread; poisoning as std's.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LockResult, TryLockError, TryLockResult};

use super::semaphore::Semaphore;

/// `std::sync::Mutex`'s interface; a coroutine waiting for the lock parks, and
/// the lock passes to waiters in arrival order (a release hands it to the
/// longest waiter), so none starves. A guard may be held across blocking
/// calls and other coroutines' turns, which would deadlock a thread on
/// `std::sync::Mutex` with two coroutines on one thread.
///
/// Poisoning: a guard dropped while its holder panics marks the mutex
/// poisoned; later `lock`s return `Err(PoisonError)` still carrying the guard.
/// `lock` is not interrupted by `kill` or `timeout`.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use patchall::sync::Mutex;
///
/// let log = Arc::new(Mutex::new(Vec::new()));
/// let hs: Vec<_> = (0..3).map(|i| {
///     let log = log.clone();
///     patchall::spawn(move || {
///         let mut g = log.lock().unwrap();
///         g.push(i);
///         patchall::sleep(Duration::from_millis(1)); // others wait, parked
///         g.push(i);
///     }).unwrap()
/// }).collect();
/// patchall::join_all(hs);
/// assert_eq!(*log.lock().unwrap(), [0, 0, 1, 1, 2, 2]);
/// ```
pub struct Mutex<T: ?Sized> {
    /// One permit: the lock.
    raw: Semaphore,
    poisoned: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: the lock gives one holder at a time access to `data`, from whichever
// thread holds it: T must be Send, as for std's Mutex.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

/// Access to a [`Mutex`]'s value; unlocks when dropped.
///
/// ```
/// let m = patchall::sync::Mutex::new(String::new());
/// let mut g: patchall::sync::MutexGuard<'_, String> = m.lock().unwrap();
/// g.push_str("held");
/// drop(g);
/// assert_eq!(*m.lock().unwrap(), "held");
/// ```
#[must_use = "the mutex unlocks at once if the guard is not kept"]
pub struct MutexGuard<'a, T: ?Sized> {
    mutex: &'a Mutex<T>,
    /// Whether the thread was already panicking at lock time (then a drop
    /// during that panic does not poison).
    panicking: bool,
    /// Not Send, as std's guard: it stands for a lock taken by this caller.
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a shared guard gives out only `&T`.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<T> Mutex<T> {
    /// An unlocked mutex holding `value`; `const`, so it can be a `static`.
    ///
    /// ```
    /// static COUNT: patchall::sync::Mutex<u32> = patchall::sync::Mutex::new(0);
    /// *COUNT.lock().unwrap() += 1;
    /// assert_eq!(*COUNT.lock().unwrap(), 1);
    /// ```
    pub const fn new(value: T) -> Mutex<T> {
        Mutex {
            raw: Semaphore::new(1),
            poisoned: AtomicBool::new(false),
            data: UnsafeCell::new(value),
        }
    }

    /// The value, consuming the mutex; `Err` carries it if poisoned.
    ///
    /// ```
    /// let m = patchall::sync::Mutex::new(5);
    /// assert_eq!(m.into_inner().unwrap(), 5);
    /// ```
    pub fn into_inner(self) -> LockResult<T> {
        let poisoned = self.is_poisoned();
        super::poison_result(poisoned, self.data.into_inner())
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Waits for the lock (parking the coroutine; a plain thread runs its
    /// coroutines meanwhile).
    ///
    /// ```
    /// let m = patchall::sync::Mutex::new(1);
    /// *m.lock().unwrap() += 1;
    /// assert_eq!(*m.lock().unwrap(), 2);
    /// ```
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        self.raw.acquire().forget();
        self.guard()
    }

    /// The lock if it is free and nobody waits for it.
    ///
    /// ```
    /// use std::sync::TryLockError;
    /// let m = patchall::sync::Mutex::new(());
    /// let g = m.try_lock().unwrap();
    /// assert!(matches!(m.try_lock(), Err(TryLockError::WouldBlock)));
    /// drop(g);
    /// assert!(m.try_lock().is_ok());
    /// ```
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        match self.raw.try_acquire() {
            Some(permit) => permit.forget(),
            None => return Err(TryLockError::WouldBlock),
        }
        Ok(self.guard()?)
    }

    fn guard(&self) -> LockResult<MutexGuard<'_, T>> {
        let guard = MutexGuard {
            mutex: self,
            panicking: std::thread::panicking(),
            _not_send: PhantomData,
        };
        super::poison_result(self.is_poisoned(), guard)
    }

    /// True if a holder panicked.
    ///
    /// ```
    /// use std::sync::Arc;
    /// let m = Arc::new(patchall::sync::Mutex::new(0));
    /// let m2 = m.clone();
    /// let h = patchall::spawn(move || { let _g = m2.lock().unwrap(); panic!("oops") }).unwrap();
    /// assert!(h.join().is_err());
    /// assert!(m.is_poisoned());
    /// assert_eq!(*m.lock().unwrap_err().into_inner(), 0);
    /// ```
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Relaxed)
    }

    /// Forgets a past panic.
    ///
    /// ```
    /// let m = patchall::sync::Mutex::new(0);
    /// m.clear_poison();
    /// assert!(!m.is_poisoned());
    /// ```
    pub fn clear_poison(&self) {
        self.poisoned.store(false, Ordering::Relaxed);
    }

    /// The value, through exclusive access: no locking needed.
    ///
    /// ```
    /// let mut m = patchall::sync::Mutex::new(1);
    /// *m.get_mut().unwrap() = 2;
    /// assert_eq!(*m.lock().unwrap(), 2);
    /// ```
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        let poisoned = self.is_poisoned();
        super::poison_result(poisoned, self.data.get_mut())
    }
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    /// The mutex this guard locks, for [`Condvar`](super::Condvar) to unlock
    /// and relock around its wait.
    pub(super) fn mutex(guard: &Self) -> &'a Mutex<T> {
        guard.mutex
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock: no other access to `data` exists.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this access unique.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        if !self.panicking && std::thread::panicking() {
            self.mutex.poisoned.store(true, Ordering::Relaxed);
        }
        self.mutex.raw.release();
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Mutex<T> {
        Mutex::new(T::default())
    }
}

impl<T> From<T> for Mutex<T> {
    fn from(value: T) -> Mutex<T> {
        Mutex::new(value)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        match self.try_lock() {
            Ok(g) => d.field("data", &&*g),
            Err(TryLockError::Poisoned(e)) => d.field("data", &&*e.into_inner()),
            Err(TryLockError::WouldBlock) => d.field("data", &format_args!("<locked>")),
        };
        d.field("poisoned", &self.is_poisoned())
            .finish_non_exhaustive()
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}
