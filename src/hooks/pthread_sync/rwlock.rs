//! `pthread_rwlock_*`: the futex rwlock of Rust's std with glibc's kinds,
//! timeouts and the three kinds of waiter; process-shared ones stay glibc's.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64};

use libc::{
    EAGAIN, EBUSY, EDEADLK, EPERM, ETIMEDOUT, c_int, clockid_t, pthread_rwlock_t, timespec,
};

use super::wait::{Deadline, WaitBy, let_others_run};
use super::{me, overlay};
use crate::runtime::{Family, Label, parking};
use crate::sys::futex;

/// The futex rwlock of Rust's std (writer-preferring), with timeouts and the
/// three kinds of waiter. An unlock that must wake someone counts itself in
/// `busy` first, so that destroy can wait until it no longer touches the lock.
#[repr(C)]
struct PthreadRwLock {
    state: AtomicU32,
    writer_notify: AtomicU32,
    native_readers: AtomicU32,
    native_writers: AtomicU32,
    busy: AtomicU32,
    _pad: [u32; 2],
    shared: AtomicI32,
    _elision: u64,
    /// `me()` of the write holder, for EDEADLK.
    writer: AtomicU64,
    /// glibc's `__flags`: the kind set by `pthread_rwlockattr_setkind_np`.
    kind: AtomicU32,
    _pad2: u32,
}

/// glibc's `PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP`; the other kinds
/// (the default `PREFER_READER_NP`, and `PREFER_WRITER_NP`, which glibc treats
/// as reader-preferring) let a reader in while writers wait.
const PREFER_WRITER_NONRECURSIVE: u32 = 2;

/// glibc's `PTHREAD_RWLOCK_WRPHASE` bit of `__readers`, our `state`. glibc
/// leaves an idle lock that was last write-locked in its write phase: this bit
/// set, no reader, no writer. Locks used before green threads were turned on
/// (by other libraries' constructors: OpenSSL's, run by bind9's libisc, before
/// `__libc_start_main`) come to us in that state, so the bit is never ours and
/// means nothing here: were it one reader, the first write lock would wait for
/// a reader that does not exist. Readers count from the next bit. (glibc's
/// `__wrphase_futex`, our `native_readers`, stays 1 there too: it costs one
/// futex wake-up more whenever readers are woken.)
const GLIBC_WRPHASE: u32 = 1;
const READ_LOCKED: u32 = 2;
const RW_MASK: u32 = ((1 << 30) - 1) & !GLIBC_WRPHASE;
const WRITE_LOCKED: u32 = RW_MASK;
const MAX_READERS: u32 = RW_MASK - READ_LOCKED;
const READERS_WAITING: u32 = 1 << 30;
const WRITERS_WAITING: u32 = 1 << 31;

fn is_unlocked(s: u32) -> bool {
    s & RW_MASK == 0
}

fn is_write_locked(s: u32) -> bool {
    s & RW_MASK == WRITE_LOCKED
}

impl PthreadRwLock {
    #[inline]
    fn ours<'a>(rw: *mut pthread_rwlock_t) -> Option<&'a PthreadRwLock> {
        overlay(rw, |x: &PthreadRwLock| x.shared.load(Relaxed) == 0)
    }

    /// Whether a reader may take the lock in state `s`. Readers queued behind a
    /// writer's hold always block newcomers (their wake-up clears the bit
    /// before anyone reads again); waiting writers block them only for the
    /// writer-preferring kind: glibc's default lets a thread that holds a read
    /// lock take it again while a writer waits, as POSIX requires.
    #[inline]
    fn read_lockable(&self, s: u32) -> bool {
        let blockers = if self.kind.load(Relaxed) == PREFER_WRITER_NONRECURSIVE {
            READERS_WAITING | WRITERS_WAITING
        } else {
            READERS_WAITING
        };
        s & RW_MASK < MAX_READERS && s & blockers == 0
    }

    #[inline]
    fn try_read(&self) -> c_int {
        let mut s = self.state.load(Relaxed);
        loop {
            if !self.read_lockable(s) {
                return if s & RW_MASK >= MAX_READERS && !is_write_locked(s) {
                    EAGAIN
                } else {
                    EBUSY
                };
            }
            match self
                .state
                .compare_exchange_weak(s, s + READ_LOCKED, Acquire, Relaxed)
            {
                Ok(_) => return 0,
                Err(x) => s = x,
            }
        }
    }

    #[inline]
    fn read(&self, deadline: Option<Deadline>) -> c_int {
        match self.try_read() {
            EBUSY => self.read_contended(deadline.as_ref()),
            r => r,
        }
    }

    #[cold]
    fn read_contended(&self, deadline: Option<&Deadline>) -> c_int {
        if is_write_locked(self.state.load(Relaxed)) && self.writer.load(Relaxed) == me() {
            return EDEADLK;
        }
        let waiter = WaitBy::new(&const { Label::new("rwlock", Family::Lock) });
        let mut s = self.state.load(Relaxed);
        loop {
            if self.read_lockable(s) {
                match self
                    .state
                    .compare_exchange_weak(s, s + READ_LOCKED, Acquire, Relaxed)
                {
                    Ok(_) => return 0,
                    Err(x) => s = x,
                }
                continue;
            }
            if s & RW_MASK == MAX_READERS {
                return EAGAIN;
            }
            if s & READERS_WAITING == 0 {
                if let Err(x) =
                    self.state
                        .compare_exchange(s, s | READERS_WAITING, Relaxed, Relaxed)
                {
                    s = x;
                    continue;
                }
            }
            let r = self.counted(&waiter, &self.native_readers, || {
                waiter.wait_word(&self.state, s | READERS_WAITING, deadline)
            });
            s = self.state.load(Relaxed);
            if r == Err(ETIMEDOUT) {
                // Readers are woken all at once: a timeout consumes nothing.
                return if self.read_lockable(s)
                    && self
                        .state
                        .compare_exchange(s, s + READ_LOCKED, Acquire, Relaxed)
                        .is_ok()
                {
                    0
                } else {
                    ETIMEDOUT
                };
            }
        }
    }

    /// Runs a wait, counted in `natives` if it is a futex wait.
    fn counted<R>(&self, waiter: &WaitBy, natives: &AtomicU32, f: impl FnOnce() -> R) -> R {
        if !waiter.native() {
            return f();
        }
        natives.fetch_add(1, SeqCst);
        let r = f();
        natives.fetch_sub(1, SeqCst);
        r
    }

    #[inline]
    fn try_write(&self) -> bool {
        let mut s = self.state.load(Relaxed);
        while is_unlocked(s) {
            match self
                .state
                .compare_exchange_weak(s, s + WRITE_LOCKED, Acquire, Relaxed)
            {
                Ok(_) => return true,
                Err(x) => s = x,
            }
        }
        false
    }

    #[inline]
    fn write(&self, deadline: Option<Deadline>) -> c_int {
        let me = me();
        if !self.try_write() {
            if let Err(e) = self.write_contended(me, deadline.as_ref()) {
                return e;
            }
        }
        self.writer.store(me, Relaxed);
        0
    }

    #[cold]
    fn write_contended(&self, me: u64, deadline: Option<&Deadline>) -> Result<(), c_int> {
        if is_write_locked(self.state.load(Relaxed)) && self.writer.load(Relaxed) == me {
            return Err(EDEADLK);
        }
        let waiter = WaitBy::new(&const { Label::new("rwlock", Family::Lock) });
        let mut other_writers_waiting = 0;
        let mut s = self.state.load(Relaxed);
        loop {
            if is_unlocked(s) {
                match self.state.compare_exchange_weak(
                    s,
                    s | WRITE_LOCKED | other_writers_waiting,
                    Acquire,
                    Relaxed,
                ) {
                    Ok(_) => return Ok(()),
                    Err(x) => s = x,
                }
                continue;
            }
            if s & WRITERS_WAITING == 0 {
                if let Err(x) =
                    self.state
                        .compare_exchange(s, s | WRITERS_WAITING, Relaxed, Relaxed)
                {
                    s = x;
                    continue;
                }
            }
            // Keep the bit once we hold the lock: other writers may wait too.
            other_writers_waiting = WRITERS_WAITING;
            let seq = self.writer_notify.load(Acquire);
            s = self.state.load(Relaxed);
            if is_unlocked(s) || s & WRITERS_WAITING == 0 {
                continue;
            }
            let r = self.counted(&waiter, &self.native_writers, || {
                waiter.wait_word(&self.writer_notify, seq, deadline)
            });
            s = self.state.load(Relaxed);
            if r == Err(ETIMEDOUT) {
                return self.give_up_write(s);
            }
        }
    }

    /// A timed-out writer may have been sent the one writer wake-up of an
    /// unlock: it takes the lock if free, or else leaves WRITERS_WAITING set so
    /// the holder's unlock wakes the next writer.
    fn give_up_write(&self, mut s: u32) -> Result<(), c_int> {
        loop {
            let (new, got) = if is_unlocked(s) {
                (s | WRITE_LOCKED | WRITERS_WAITING, true)
            } else {
                (s | WRITERS_WAITING, false)
            };
            match self.state.compare_exchange(s, new, Acquire, Relaxed) {
                Ok(_) if got => return Ok(()),
                Ok(_) => return Err(ETIMEDOUT),
                Err(x) => s = x,
            }
        }
    }

    fn unlock(&self) -> c_int {
        let mut s = self.state.load(Relaxed);
        let release = if is_write_locked(s) {
            self.writer.store(0, Relaxed);
            WRITE_LOCKED
        } else if s & RW_MASK == 0 {
            return EPERM;
        } else {
            READ_LOCKED
        };
        while s & (READERS_WAITING | WRITERS_WAITING) == 0 {
            match self
                .state
                .compare_exchange_weak(s, s - release, Release, Relaxed)
            {
                Ok(_) => return 0,
                Err(x) => s = x,
            }
        }
        self.unlock_and_wake(release);
        0
    }

    #[cold]
    fn unlock_and_wake(&self, release: u32) {
        self.busy.fetch_add(1, SeqCst);
        let s = self.state.fetch_sub(release, Release) - release;
        let wake = if release == WRITE_LOCKED {
            s & (READERS_WAITING | WRITERS_WAITING) != 0
        } else {
            // Readers never wait on a read-locked lock: they wait only while
            // it is write-locked, or queued behind readers who did.
            is_unlocked(s) && s & WRITERS_WAITING != 0
        };
        if wake {
            self.wake_writer_or_readers(s);
        }
        self.busy.fetch_sub(1, SeqCst);
    }

    fn wake_writer_or_readers(&self, mut s: u32) {
        // The states below are exact but for glibc's leftover bit, which the
        // exchanges clear.
        if s & !GLIBC_WRPHASE == WRITERS_WAITING {
            match self.state.compare_exchange(s, 0, Relaxed, Relaxed) {
                Ok(_) => {
                    self.wake_writer();
                    return;
                }
                Err(x) => s = x,
            }
        }
        if s & !GLIBC_WRPHASE == READERS_WAITING + WRITERS_WAITING {
            if self
                .state
                .compare_exchange(s, READERS_WAITING, Relaxed, Relaxed)
                .is_err()
            {
                // Someone took the lock meanwhile; their unlock wakes.
                return;
            }
            if self.wake_writer() {
                return;
            }
            // No writer was asleep to take the wake-up: wake the readers instead.
            s = READERS_WAITING;
        }
        if s & !GLIBC_WRPHASE == READERS_WAITING
            && self.state.compare_exchange(s, 0, Relaxed, Relaxed).is_ok()
        {
            let addr = self.state.as_ptr() as usize;
            parking::unpark_all(addr);
            if self.native_readers.load(SeqCst) > 0 {
                futex::wake(addr, i32::MAX);
            }
        }
    }

    /// True if a waiting writer was woken.
    fn wake_writer(&self) -> bool {
        self.writer_notify.fetch_add(1, SeqCst);
        let addr = self.writer_notify.as_ptr() as usize;
        parking::unpark_one(addr) || (self.native_writers.load(SeqCst) > 0 && futex::wake(addr, 1))
    }
}

/// `rwlock` with an optional deadline, validated first as glibc does.
fn rw_timed(
    rw: &PthreadRwLock,
    clock: clockid_t,
    abs: *const timespec,
    op: fn(&PthreadRwLock, Option<Deadline>) -> c_int,
) -> c_int {
    match Deadline::new(clock, abs) {
        Ok(d) => op(rw, Some(d)),
        Err(e) => e,
    }
}

hook! {
    /// `pthread_rwlock_rdlock(3)`.
    fn pthread_rwlock_rdlock(rw: *mut pthread_rwlock_t) -> c_int as real {
        match PthreadRwLock::ours(rw) {
            Some(l) => l.read(None),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(rw) },
        }
    }
}

hook! {
    /// `pthread_rwlock_tryrdlock(3)`.
    fn pthread_rwlock_tryrdlock(rw: *mut pthread_rwlock_t) -> c_int as real {
        match PthreadRwLock::ours(rw) {
            Some(l) => l.try_read(),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(rw) },
        }
    }
}

hook! {
    /// `pthread_rwlock_timedrdlock(3)`: `abstime` on CLOCK_REALTIME.
    fn pthread_rwlock_timedrdlock(rw: *mut pthread_rwlock_t, abstime: *const timespec) -> c_int as real {
        match PthreadRwLock::ours(rw) {
            Some(l) => rw_timed(l, libc::CLOCK_REALTIME, abstime, PthreadRwLock::read),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(rw, abstime) },
        }
    }
}

hook! {
    /// `pthread_rwlock_clockrdlock(3)`.
    fn pthread_rwlock_clockrdlock(rw: *mut pthread_rwlock_t, clock: clockid_t, abstime: *const timespec) -> c_int as real {
        match PthreadRwLock::ours(rw) {
            Some(l) => rw_timed(l, clock, abstime, PthreadRwLock::read),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(rw, clock, abstime) },
        }
    }
}

hook! {
    /// `pthread_rwlock_wrlock(3)`.
    fn pthread_rwlock_wrlock(rw: *mut pthread_rwlock_t) -> c_int as real {
        match PthreadRwLock::ours(rw) {
            Some(l) => l.write(None),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(rw) },
        }
    }
}

hook! {
    /// `pthread_rwlock_trywrlock(3)`.
    fn pthread_rwlock_trywrlock(rw: *mut pthread_rwlock_t) -> c_int as real {
        match PthreadRwLock::ours(rw) {
            Some(l) if l.try_write() => {
                l.writer.store(me(), Relaxed);
                0
            }
            Some(_) => EBUSY,
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(rw) },
        }
    }
}

hook! {
    /// `pthread_rwlock_timedwrlock(3)`: `abstime` on CLOCK_REALTIME.
    fn pthread_rwlock_timedwrlock(rw: *mut pthread_rwlock_t, abstime: *const timespec) -> c_int as real {
        match PthreadRwLock::ours(rw) {
            Some(l) => rw_timed(l, libc::CLOCK_REALTIME, abstime, PthreadRwLock::write),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(rw, abstime) },
        }
    }
}

hook! {
    /// `pthread_rwlock_clockwrlock(3)`.
    fn pthread_rwlock_clockwrlock(rw: *mut pthread_rwlock_t, clock: clockid_t, abstime: *const timespec) -> c_int as real {
        match PthreadRwLock::ours(rw) {
            Some(l) => rw_timed(l, clock, abstime, PthreadRwLock::write),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(rw, clock, abstime) },
        }
    }
}

hook! {
    /// `pthread_rwlock_unlock(3)`: EPERM if not locked at all.
    fn pthread_rwlock_unlock(rw: *mut pthread_rwlock_t) -> c_int as real {
        match PthreadRwLock::ours(rw) {
            Some(l) => l.unlock(),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(rw) },
        }
    }
}

hook! {
    /// `pthread_rwlock_destroy(3)`: waits for a waking unlock to finish.
    fn pthread_rwlock_destroy(rw: *mut pthread_rwlock_t) -> c_int as real {
        match PthreadRwLock::ours(rw) {
            Some(l) => {
                while l.busy.load(SeqCst) != 0 {
                    let_others_run();
                }
                0
            }
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(rw) },
        }
    }
}

alias! {
    /// glibc's exported alias of `pthread_rwlock_rdlock`.
    fn __pthread_rwlock_rdlock(rw: *mut pthread_rwlock_t) -> c_int = pthread_rwlock_rdlock
}

alias! {
    /// glibc's exported alias of `pthread_rwlock_tryrdlock`.
    fn __pthread_rwlock_tryrdlock(rw: *mut pthread_rwlock_t) -> c_int = pthread_rwlock_tryrdlock
}

alias! {
    /// glibc's exported alias of `pthread_rwlock_wrlock`.
    fn __pthread_rwlock_wrlock(rw: *mut pthread_rwlock_t) -> c_int = pthread_rwlock_wrlock
}

alias! {
    /// glibc's exported alias of `pthread_rwlock_trywrlock`.
    fn __pthread_rwlock_trywrlock(rw: *mut pthread_rwlock_t) -> c_int = pthread_rwlock_trywrlock
}

alias! {
    /// glibc's exported alias of `pthread_rwlock_unlock`.
    fn __pthread_rwlock_unlock(rw: *mut pthread_rwlock_t) -> c_int = pthread_rwlock_unlock
}

alias! {
    /// glibc's exported alias of `pthread_rwlock_destroy`.
    fn __pthread_rwlock_destroy(rw: *mut pthread_rwlock_t) -> c_int = pthread_rwlock_destroy
}
