//! A reader-writer lock, FIFO between readers and writers; poisoning as std's.

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LockResult, Mutex, TryLockError, TryLockResult};

use super::waiter::{WaitQueue, block, lock};
use crate::runtime::{self, Breaks, Family, Label};

/// `std::sync::RwLock`'s interface for coroutines: many readers or one writer.
/// Waiters are served in arrival order: a reader arriving after a waiting
/// writer waits behind it, so writers do not starve; consecutive waiting
/// readers enter together.
///
/// A writer that panics poisons the lock. Not interrupted by `kill` or
/// `timeout`.
///
/// ```
/// use std::sync::Arc;
/// use patchall::sync::RwLock;
///
/// let config = Arc::new(RwLock::new(String::from("v1")));
/// let c = config.clone();
/// let reader = patchall::spawn(move || c.read().unwrap().clone()).unwrap();
/// config.write().unwrap().push_str("+patch");
/// assert_eq!(reader.join().unwrap(), "v1+patch"); // it started after the write
/// ```
pub struct RwLock<T: ?Sized> {
    state: Mutex<State>,
    poisoned: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: one writer or many readers at a time, from any thread: like std's,
// writers need T: Send and readers share &T across threads, so T: Sync.
unsafe impl<T: ?Sized + Send> Send for RwLock<T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

struct State {
    readers: usize,
    writer: bool,
    /// Each waiter's slot says what it waits for.
    queue: WaitQueue<Access>,
}

impl State {
    fn free_for(&self, access: Access) -> bool {
        !self.writer && self.queue.is_empty() && (access == Access::Read || self.readers == 0)
    }

    fn enter(&mut self, access: Access) {
        match access {
            Access::Read => self.readers += 1,
            Access::Write => self.writer = true,
        }
    }

    /// Hands the lock to waiters at the front: one writer, or every reader up
    /// to the next writer.
    fn grant(&mut self) {
        while let Some(w) = self.queue.front() {
            let access = w.peek().expect("a queued waiter says what it waits for");
            let fits = !self.writer && (access == Access::Read || self.readers == 0);
            if !fits {
                return;
            }
            self.enter(access);
            self.queue.pop().expect("just seen").wake();
            if access == Access::Write {
                return;
            }
        }
    }
}

/// Shared access to an [`RwLock`]'s value; released when dropped.
///
/// ```
/// let l = patchall::sync::RwLock::new(1);
/// let g: patchall::sync::RwLockReadGuard<'_, i32> = l.read().unwrap();
/// assert_eq!(*g, 1);
/// ```
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    _not_send: PhantomData<*const ()>,
}

/// Exclusive access to an [`RwLock`]'s value; released when dropped.
///
/// ```
/// let l = patchall::sync::RwLock::new(1);
/// let mut g: patchall::sync::RwLockWriteGuard<'_, i32> = l.write().unwrap();
/// *g = 2;
/// drop(g);
/// assert_eq!(*l.read().unwrap(), 2);
/// ```
#[must_use = "the lock is released at once if the guard is not kept"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    lock: &'a RwLock<T>,
    panicking: bool,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a shared guard gives out only `&T`.
unsafe impl<T: ?Sized + Sync> Sync for RwLockReadGuard<'_, T> {}
// SAFETY: as above.
unsafe impl<T: ?Sized + Sync> Sync for RwLockWriteGuard<'_, T> {}

impl<T> RwLock<T> {
    /// An unlocked lock holding `value`; `const`, so it can be a `static`.
    ///
    /// ```
    /// static TABLE: patchall::sync::RwLock<Vec<u8>> = patchall::sync::RwLock::new(Vec::new());
    /// TABLE.write().unwrap().push(1);
    /// assert_eq!(TABLE.read().unwrap().len(), 1);
    /// ```
    pub const fn new(value: T) -> RwLock<T> {
        RwLock {
            state: Mutex::new(State {
                readers: 0,
                writer: false,
                queue: WaitQueue::new(),
            }),
            poisoned: AtomicBool::new(false),
            data: UnsafeCell::new(value),
        }
    }

    /// The value, consuming the lock; `Err` carries it if poisoned.
    ///
    /// ```
    /// assert_eq!(patchall::sync::RwLock::new(3).into_inner().unwrap(), 3);
    /// ```
    pub fn into_inner(self) -> LockResult<T> {
        let poisoned = self.is_poisoned();
        super::poison_result(poisoned, self.data.into_inner())
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Waits for shared access.
    ///
    /// ```
    /// let l = patchall::sync::RwLock::new(1);
    /// let (a, b) = (l.read().unwrap(), l.read().unwrap());
    /// assert_eq!(*a + *b, 2);
    /// ```
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        self.acquire(Access::Read);
        self.poison_check(RwLockReadGuard {
            lock: self,
            _not_send: PhantomData,
        })
    }

    /// Waits for exclusive access.
    ///
    /// ```
    /// let l = patchall::sync::RwLock::new(1);
    /// *l.write().unwrap() = 2;
    /// assert_eq!(*l.read().unwrap(), 2);
    /// ```
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        self.acquire(Access::Write);
        self.poison_check(self.write_guard())
    }

    /// Shared access if it needs no wait.
    ///
    /// ```
    /// let l = patchall::sync::RwLock::new(());
    /// let w = l.write().unwrap();
    /// assert!(l.try_read().is_err());
    /// drop(w);
    /// assert!(l.try_read().is_ok());
    /// ```
    pub fn try_read(&self) -> TryLockResult<RwLockReadGuard<'_, T>> {
        if !self.try_enter(Access::Read) {
            return Err(TryLockError::WouldBlock);
        }
        Ok(self.poison_check(RwLockReadGuard {
            lock: self,
            _not_send: PhantomData,
        })?)
    }

    /// Exclusive access if it needs no wait.
    ///
    /// ```
    /// let l = patchall::sync::RwLock::new(());
    /// let r = l.read().unwrap();
    /// assert!(l.try_write().is_err());
    /// drop(r);
    /// assert!(l.try_write().is_ok());
    /// ```
    pub fn try_write(&self) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        if !self.try_enter(Access::Write) {
            return Err(TryLockError::WouldBlock);
        }
        Ok(self.poison_check(self.write_guard())?)
    }

    /// True if a writer panicked.
    ///
    /// ```
    /// assert!(!patchall::sync::RwLock::new(0).is_poisoned());
    /// ```
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Relaxed)
    }

    /// Forgets a past panic.
    ///
    /// ```
    /// let l = patchall::sync::RwLock::new(0);
    /// l.clear_poison();
    /// assert!(!l.is_poisoned());
    /// ```
    pub fn clear_poison(&self) {
        self.poisoned.store(false, Ordering::Relaxed);
    }

    /// The value, through exclusive access: no locking needed.
    ///
    /// ```
    /// let mut l = patchall::sync::RwLock::new(1);
    /// *l.get_mut().unwrap() += 1;
    /// assert_eq!(*l.read().unwrap(), 2);
    /// ```
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        let poisoned = self.is_poisoned();
        super::poison_result(poisoned, self.data.get_mut())
    }

    fn write_guard(&self) -> RwLockWriteGuard<'_, T> {
        RwLockWriteGuard {
            lock: self,
            panicking: std::thread::panicking(),
            _not_send: PhantomData,
        }
    }

    fn poison_check<G>(&self, guard: G) -> LockResult<G> {
        super::poison_result(self.is_poisoned(), guard)
    }

    fn try_enter(&self, access: Access) -> bool {
        let mut st = lock(&self.state);
        let free = st.free_for(access);
        if free {
            st.enter(access);
        }
        free
    }

    fn acquire(&self, access: Access) {
        loop {
            runtime::label(&const { Label::new("rwlock", Family::Lock) });
            let (waiter, _) = block(None, Breaks::Never, |w| {
                let mut st = lock(&self.state);
                if st.free_for(access) {
                    st.enter(access);
                    return false;
                }
                w.put(access);
                st.queue.push(w);
                true
            });
            let Some(w) = waiter else { return };
            let mut st = lock(&self.state);
            if w.is_woken() {
                return;
            }
            st.queue.remove(&w);
            // The one who left may have been what held the others back.
            st.grant();
        }
    }

    fn release(&self, access: Access) {
        let mut st = lock(&self.state);
        match access {
            Access::Read => st.readers -= 1,
            Access::Write => st.writer = false,
        }
        st.grant();
    }
}

impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: readers hold shared access: no writer exists meanwhile.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the writer holds exclusive access.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the writer holds exclusive access, and `&mut self` is unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.release(Access::Read);
    }
}

impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
    fn drop(&mut self) {
        if !self.panicking && std::thread::panicking() {
            self.lock.poisoned.store(true, Ordering::Relaxed);
        }
        self.lock.release(Access::Write);
    }
}

impl<T: Default> Default for RwLock<T> {
    fn default() -> RwLock<T> {
        RwLock::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RwLock");
        match self.try_read() {
            Ok(g) => d.field("data", &&*g),
            Err(TryLockError::Poisoned(e)) => d.field("data", &&*e.into_inner()),
            Err(TryLockError::WouldBlock) => d.field("data", &format_args!("<locked>")),
        };
        d.field("poisoned", &self.is_poisoned())
            .finish_non_exhaustive()
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}
