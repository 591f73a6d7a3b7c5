//! `pthread_mutex_*`: normal, recursive and errorcheck mutexes on the lock
//! word; robust, priority and process-shared ones stay glibc's.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64};

use libc::{
    EAGAIN, EBUSY, EDEADLK, EINVAL, EPERM, ETIMEDOUT, c_int, clockid_t, pthread_mutex_t, timespec,
};

use super::wait::{Deadline, WaitBy};
use super::{me, overlay};
use crate::runtime::{Family, Label, parking};
use crate::sys::futex;

/// Our view of a `pthread_mutex_t` (the layout table is in `mod.rs`).
#[repr(C)]
struct PthreadMutex {
    /// LOCKED, plus which kinds of waiter may be waiting.
    word: AtomicU32,
    /// Extra holds of a recursive mutex.
    count: AtomicU32,
    _glibc_owner: [u32; 2],
    kind: AtomicI32,
    _spins: u32,
    /// `me()` of the holder, for recursive and errorcheck mutexes.
    owner: AtomicU64,
    _next: u64,
}

const LOCKED: u32 = 1;
const PARKED: u32 = 2;
const NATIVE: u32 = 4;

const KIND_MASK: i32 = 3;
const RECURSIVE: i32 = libc::PTHREAD_MUTEX_RECURSIVE;
const ERRORCHECK: i32 = libc::PTHREAD_MUTEX_ERRORCHECK;
/// Robust, priority-inheritance, priority-protection, process-shared: glibc's.
/// A destroyed mutex (kind -1) has them all: glibc then reports EINVAL.
const GLIBC_KINDS: i32 = 16 | 32 | 64 | 128;

/// A `*timedlock`'s clock and absolute time, as the caller gave them.
type AbsTimeout = Option<(clockid_t, *const timespec)>;

impl PthreadMutex {
    #[inline]
    fn ours<'a>(m: *mut pthread_mutex_t) -> Option<&'a PthreadMutex> {
        overlay(m, |x: &PthreadMutex| {
            x.kind.load(Relaxed) & GLIBC_KINDS == 0
        })
    }

    #[inline]
    fn kind(&self) -> i32 {
        self.kind.load(Relaxed) & KIND_MASK
    }

    #[inline]
    fn try_acquire(&self) -> bool {
        self.word
            .compare_exchange(0, LOCKED, Acquire, Relaxed)
            .is_ok()
    }

    #[inline]
    fn lock(&self, timeout: AbsTimeout) -> c_int {
        let kind = self.kind();
        if kind != RECURSIVE && kind != ERRORCHECK {
            if self.try_acquire() {
                return 0;
            }
            return self.lock_slow(timeout).err().unwrap_or(0);
        }
        let me = me();
        if self.owner.load(Relaxed) == me {
            return if kind == RECURSIVE {
                self.relock()
            } else {
                EDEADLK
            };
        }
        if !self.try_acquire() {
            if let Err(e) = self.lock_slow(timeout) {
                return e;
            }
        }
        self.owner.store(me, Relaxed);
        0
    }

    fn relock(&self) -> c_int {
        match self.count.load(Relaxed).checked_add(1) {
            Some(n) => {
                self.count.store(n, Relaxed);
                0
            }
            None => EAGAIN,
        }
    }

    #[cold]
    fn lock_slow(&self, timeout: AbsTimeout) -> Result<(), c_int> {
        let deadline = timeout.map(|(c, t)| Deadline::new(c, t)).transpose()?;
        let waiter = WaitBy::new(&const { Label::new("mutex", Family::Lock) });
        let mine = LOCKED | if waiter.native() { NATIVE } else { PARKED };
        loop {
            let old = self.word.fetch_or(mine, Acquire);
            if old & LOCKED == 0 {
                return Ok(());
            }
            if waiter.wait_word(&self.word, old | mine, deadline.as_ref()) == Err(ETIMEDOUT) {
                // The wake-up an unlock sent may have come with the timeout:
                // take the lock if it is free rather than lose that wake-up.
                return match self.word.fetch_or(mine, Acquire) & LOCKED {
                    0 => Ok(()),
                    _ => Err(ETIMEDOUT),
                };
            }
        }
    }

    #[inline]
    fn trylock(&self) -> c_int {
        let kind = self.kind();
        if kind == RECURSIVE || kind == ERRORCHECK {
            let me = me();
            if kind == RECURSIVE && self.owner.load(Relaxed) == me {
                return self.relock();
            }
            if !self.try_acquire() {
                return EBUSY;
            }
            self.owner.store(me, Relaxed);
            return 0;
        }
        if self.try_acquire() { 0 } else { EBUSY }
    }

    #[inline]
    fn unlock(&self) -> c_int {
        let kind = self.kind();
        if kind == RECURSIVE || kind == ERRORCHECK {
            if self.owner.load(Relaxed) != me() {
                return EPERM;
            }
            let extra = self.count.load(Relaxed);
            if extra > 0 {
                self.count.store(extra - 1, Relaxed);
                return 0;
            }
            self.owner.store(0, Relaxed);
        }
        // After this swap the mutex may be freed by its next holder: only its
        // address is used from here on.
        let old = self.word.swap(0, Release);
        if old & (PARKED | NATIVE) != 0 {
            wake_one(addr_of(self), old);
        }
        0
    }
}

fn addr_of<T>(x: &T) -> usize {
    x as *const T as usize
}

#[cold]
fn wake_one(addr: usize, old: u32) {
    if old & PARKED != 0 {
        parking::unpark_one(addr);
    }
    if old & NATIVE != 0 {
        futex::wake(addr, 1);
    }
}

hook! {
    /// `pthread_mutex_lock(3)`: contention parks the coroutine, not its thread.
    fn pthread_mutex_lock(m: *mut pthread_mutex_t) -> c_int as real {
        match PthreadMutex::ours(m) {
            Some(mx) => mx.lock(None),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(m) },
        }
    }
}

hook! {
    /// `pthread_mutex_trylock(3)`.
    fn pthread_mutex_trylock(m: *mut pthread_mutex_t) -> c_int as real {
        match PthreadMutex::ours(m) {
            Some(mx) => mx.trylock(),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(m) },
        }
    }
}

hook! {
    /// `pthread_mutex_timedlock(3)`: `abstime` on CLOCK_REALTIME.
    fn pthread_mutex_timedlock(m: *mut pthread_mutex_t, abstime: *const timespec) -> c_int as real {
        match PthreadMutex::ours(m) {
            Some(mx) => mx.lock(Some((libc::CLOCK_REALTIME, abstime))),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(m, abstime) },
        }
    }
}

hook! {
    /// `pthread_mutex_clocklock(3)`: `abstime` on `clock` (REALTIME or MONOTONIC).
    fn pthread_mutex_clocklock(m: *mut pthread_mutex_t, clock: clockid_t, abstime: *const timespec) -> c_int as real {
        match PthreadMutex::ours(m) {
            Some(_) if clock != libc::CLOCK_REALTIME && clock != libc::CLOCK_MONOTONIC => EINVAL,
            Some(mx) => mx.lock(Some((clock, abstime))),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(m, clock, abstime) },
        }
    }
}

hook! {
    /// `pthread_mutex_unlock(3)`: wakes one waiter, coroutine or thread.
    fn pthread_mutex_unlock(m: *mut pthread_mutex_t) -> c_int as real {
        match PthreadMutex::ours(m) {
            Some(mx) => mx.unlock(),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(m) },
        }
    }
}

hook! {
    /// `pthread_mutex_destroy(3)`: EBUSY while locked; glibc then marks it
    /// destroyed (later use gets EINVAL).
    fn pthread_mutex_destroy(m: *mut pthread_mutex_t) -> c_int as real {
        if PthreadMutex::ours(m).is_some_and(|mx| mx.word.load(Relaxed) != 0) {
            return EBUSY;
        }
        // SAFETY: forwarding the caller's argument.
        unsafe { real(m) }
    }
}

alias! {
    /// glibc's exported alias of `pthread_mutex_lock`.
    fn __pthread_mutex_lock(m: *mut pthread_mutex_t) -> c_int = pthread_mutex_lock
}

alias! {
    /// glibc's exported alias of `pthread_mutex_trylock`.
    fn __pthread_mutex_trylock(m: *mut pthread_mutex_t) -> c_int = pthread_mutex_trylock
}

alias! {
    /// glibc's exported alias of `pthread_mutex_unlock`.
    fn __pthread_mutex_unlock(m: *mut pthread_mutex_t) -> c_int = pthread_mutex_unlock
}

alias! {
    /// glibc's exported alias of `pthread_mutex_destroy`.
    fn __pthread_mutex_destroy(m: *mut pthread_mutex_t) -> c_int = pthread_mutex_destroy
}
