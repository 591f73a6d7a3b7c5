//! sched_yield and pthread_spin_lock as the Rust crate sees them: in a
//! coroutine they let the other coroutines of the thread run; outside, libc's.

use std::cell::UnsafeCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

/// A spin lock shared by coroutines and threads.
struct Spin(UnsafeCell<libc::pthread_spinlock_t>);
// SAFETY: a pthread spin lock is made to be shared between threads; the test
// only hands out a raw pointer to it.
unsafe impl Sync for Spin {}
// SAFETY: as above.
unsafe impl Send for Spin {}

impl Spin {
    fn new() -> Arc<Spin> {
        let s = Arc::new(Spin(UnsafeCell::new(0)));
        // SAFETY: a live spin lock object.
        assert_eq!(unsafe { libc::pthread_spin_init(s.0.get(), 0) }, 0);
        s
    }
    fn lock(&self) -> i32 {
        // SAFETY: initialised above.
        unsafe { libc::pthread_spin_lock(self.0.get()) }
    }
    fn trylock(&self) -> i32 {
        // SAFETY: as above.
        unsafe { libc::pthread_spin_trylock(self.0.get()) }
    }
    fn unlock(&self) -> i32 {
        // SAFETY: as above.
        unsafe { libc::pthread_spin_unlock(self.0.get()) }
    }
}

#[test]
fn sched_yield_in_a_coroutine_lets_the_others_run() {
    let flag = Arc::new(AtomicBool::new(false));
    let yields = Arc::new(AtomicUsize::new(0));
    let (f, y) = (flag.clone(), yields.clone());
    // Both on this thread's scheduler: the waiter can only see the flag if its
    // sched_yield lets the setter run.
    let waiter = patchall::spawn(move || {
        while !f.load(SeqCst) {
            // SAFETY: no arguments.
            assert_eq!(unsafe { libc::sched_yield() }, 0);
            y.fetch_add(1, SeqCst);
        }
    })
    .unwrap();
    let setter = patchall::spawn(move || flag.store(true, SeqCst)).unwrap();
    patchall::join_all([waiter, setter]);
    // One yield: the setter was queued behind the waiter.
    assert_eq!(yields.load(SeqCst), 1);
}

#[test]
fn sched_yield_outside_a_coroutine_is_libcs() {
    // SAFETY: no arguments.
    assert_eq!(unsafe { libc::sched_yield() }, 0);
    // A plain thread's yield returns at once, coroutines or not.
    // SAFETY: no arguments.
    let h = std::thread::spawn(|| unsafe { libc::sched_yield() });
    assert_eq!(h.join().unwrap(), 0);
}

#[test]
fn a_contended_spin_lock_yields_to_a_holder_of_the_same_thread() {
    let lock = Spin::new();
    let (l, done) = (lock.clone(), Arc::new(AtomicBool::new(false)));
    let d = done.clone();
    let holder = patchall::spawn(move || {
        assert_eq!(l.lock(), 0);
        // Parks: the spinner runs while the lock is held.
        patchall::sleep(Duration::from_millis(30));
        d.store(true, SeqCst);
        assert_eq!(l.unlock(), 0);
    })
    .unwrap();
    let l = lock.clone();
    let spinner = patchall::spawn(move || {
        assert_eq!(l.trylock(), libc::EBUSY);
        assert_eq!(l.lock(), 0);
        let holder_done = done.load(SeqCst);
        assert_eq!(l.unlock(), 0);
        holder_done
    })
    .unwrap();
    holder.join().unwrap();
    assert!(
        spinner.join().unwrap(),
        "the spinner got the lock before the holder let go"
    );
}

#[test]
fn a_spin_lock_outside_coroutines_is_glibcs_and_shared_with_threads() {
    let lock = Spin::new();
    assert_eq!(lock.lock(), 0);
    assert_eq!(lock.trylock(), libc::EBUSY);
    let l = lock.clone();
    let t = std::thread::spawn(move || {
        let r = l.lock();
        l.unlock();
        r
    });
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(lock.unlock(), 0);
    assert_eq!(t.join().unwrap(), 0);
    // A coroutine and a native thread contend on the same glibc lock word.
    assert_eq!(lock.lock(), 0);
    let l = lock.clone();
    let c = patchall::spawn(move || {
        let r = l.lock();
        l.unlock();
        r
    })
    .unwrap();
    let l = lock.clone();
    let unlocker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        l.unlock()
    });
    assert_eq!(c.join().unwrap(), 0);
    assert_eq!(unlocker.join().unwrap(), 0);
    // SAFETY: unlocked, no user left.
    assert_eq!(unsafe { libc::pthread_spin_destroy(lock.0.get()) }, 0);
}
