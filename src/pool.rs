//! `Pool`: at most n coroutines at a time (gevent's `gevent.pool.Pool`).

use std::io;
use std::panic;
use std::sync::Arc;

use crate::coroutine::{JoinHandle, spawn};
use crate::sync::Semaphore;

/// Bounded concurrency: at most `size` of the pool's coroutines run at once;
/// [`spawn`](Pool::spawn) waits for a free slot first. Clones share the slots.
///
/// ```
/// use std::time::Duration;
/// let pool = patchall::Pool::new(3);
/// let squares = pool.map(1..=5u64, |i| {
///     patchall::sleep(Duration::from_millis(5));
///     i * i
/// }).unwrap();
/// assert_eq!(squares, [1, 4, 9, 16, 25]);
/// ```
#[derive(Clone, Debug)]
pub struct Pool {
    slots: Arc<Semaphore>,
    size: usize,
}

/// A slot taken by one coroutine; freed when the coroutine's body ends (or is
/// dropped unrun: killed before it started, or never spawned).
struct Slot(Arc<Semaphore>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Pool {
    /// A pool of `size` slots.
    ///
    /// # Panics
    /// If `size` is 0: nothing could ever run.
    ///
    /// ```
    /// let pool = patchall::Pool::new(8);
    /// assert_eq!(pool.free_count(), 8);
    /// ```
    pub fn new(size: usize) -> Pool {
        assert!(size > 0, "a Pool needs at least one slot");
        Pool {
            slots: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// Waits for a free slot (parking the coroutine, or driving this plain
    /// thread's scheduler, so running coroutines finish and free theirs), then
    /// spawns `f` as [`spawn`](crate::spawn()) does. Slots are given in the order
    /// callers asked. The wait is not interrupted by `kill` or `timeout`.
    ///
    /// ```
    /// let pool = patchall::Pool::new(1);
    /// let a = pool.spawn(|| 1).unwrap();
    /// let b = pool.spawn(|| 2).unwrap(); // waited until `a` finished
    /// assert!(a.is_finished());
    /// assert_eq!(a.join().unwrap() + b.join().unwrap(), 3);
    /// ```
    pub fn spawn<F, T>(&self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.slots.acquire().forget();
        let slot = Slot(self.slots.clone());
        spawn(move || {
            let _slot = slot;
            f()
        })
    }

    /// Runs `f` on every item, at most `size` at a time, and returns the
    /// results in the items' order. A panic in `f` resumes in the caller once
    /// every item has finished. `Err` if a coroutine could not be spawned (those
    /// already spawned are waited for first).
    ///
    /// ```
    /// let pool = patchall::Pool::new(2);
    /// let lens = pool.map(["a", "bb", "ccc"], str::len).unwrap();
    /// assert_eq!(lens, [1, 2, 3]);
    /// ```
    pub fn map<I, F, T>(&self, items: I, f: F) -> io::Result<Vec<T>>
    where
        I: IntoIterator,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> T + Send + Sync + 'static,
        T: Send + 'static,
    {
        let f = Arc::new(f);
        let mut handles = Vec::new();
        let mut failed = None;
        for item in items {
            let f = f.clone();
            match self.spawn(move || f(item)) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let results = crate::join_all(handles);
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|payload| panic::resume_unwind(payload)))
            .collect())
    }

    /// Waits until every coroutine the pool is running (and every one queued
    /// for a slot before this call) has finished.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    /// let done = Arc::new(AtomicUsize::new(0));
    /// let pool = patchall::Pool::new(2);
    /// for _ in 0..5 {
    ///     let done = done.clone();
    ///     pool.spawn(move || { patchall::yield_now(); done.fetch_add(1, SeqCst); }).unwrap();
    /// }
    /// pool.join();
    /// assert_eq!(done.load(SeqCst), 5);
    /// ```
    pub fn join(&self) {
        // Holding every slot at once means nothing of ours runs.
        let all: Vec<_> = (0..self.size).map(|_| self.slots.acquire()).collect();
        drop(all);
    }

    /// The number of slots.
    ///
    /// ```
    /// assert_eq!(patchall::Pool::new(4).size(), 4);
    /// ```
    pub fn size(&self) -> usize {
        self.size
    }

    /// Slots free now.
    ///
    /// ```
    /// let pool = patchall::Pool::new(2);
    /// let h = pool.spawn(|| ()).unwrap();
    /// assert_eq!(pool.free_count(), 1);
    /// h.join().unwrap();
    /// assert_eq!(pool.free_count(), 2);
    /// ```
    pub fn free_count(&self) -> usize {
        self.slots.available_permits()
    }
}
