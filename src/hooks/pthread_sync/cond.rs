//! `pthread_cond_*`: condition variables whose waiters park or futex-wait on
//! a sequence word; process-shared ones stay glibc's.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use libc::{ECANCELED, ETIMEDOUT, c_int, clockid_t, pthread_cond_t, pthread_mutex_t, timespec};

use super::mutex::{pthread_mutex_lock, pthread_mutex_unlock};
use super::overlay;
use super::wait::{Deadline, WAITER_COUNT, WAITER_NATIVE, WaitBy, let_others_run};
use crate::hooks::cancel;
use crate::runtime::{Family, Label, parking};
use crate::sys::futex;

/// Waiters wait for `seq` to move; signal and broadcast move it. A waiter
/// counts itself in `waiters` before it reads `seq`, and leaves after its wait,
/// before it relocks the mutex: destroy waits for it to leave.
#[repr(C)]
struct Cond {
    seq: AtomicU32,
    /// Count, plus WAITER_NATIVE while a futex waiter may be among them.
    waiters: AtomicU32,
    _glibc: [u32; 7],
    flags: AtomicU32,
    _rest: [u32; 2],
}

const COND_SHARED: u32 = 1;
const COND_MONOTONIC: u32 = 2;

impl Cond {
    #[inline]
    fn ours<'a>(c: *mut pthread_cond_t) -> Option<&'a Cond> {
        overlay(c, |x: &Cond| x.flags.load(Relaxed) & COND_SHARED == 0)
    }

    fn clock(&self) -> clockid_t {
        if self.flags.load(Relaxed) & COND_MONOTONIC != 0 {
            libc::CLOCK_MONOTONIC
        } else {
            libc::CLOCK_REALTIME
        }
    }

    fn wait(&self, m: *mut pthread_mutex_t, deadline: Option<Deadline>) -> c_int {
        let waiter = WaitBy::new(&const { Label::new("cond", Family::Lock) });
        let native = if waiter.native() { WAITER_NATIVE } else { 0 };
        let _ = self
            .waiters
            .fetch_update(SeqCst, SeqCst, |w| Some((w + 1) | native));
        let seq = self.seq.load(SeqCst);
        // SAFETY: the caller's mutex, through our own (dispatching) unlock.
        let r = unsafe { pthread_mutex_unlock(m) };
        if r != 0 {
            self.leave();
            return r;
        }
        // A cancellation point: one already due acts without waiting.
        let waited = if cancel::cancel_due() {
            Err(ECANCELED)
        } else {
            waiter.wait_word(&self.seq, seq, deadline.as_ref())
        };
        // A signal that came with the timeout is taken, not lost.
        let timed_out = waited == Err(ETIMEDOUT) && self.seq.load(SeqCst) == seq;
        self.leave();
        // Our guard must be gone before the relock, which may have to wait.
        drop(waiter);
        // SAFETY: as above.
        let r = unsafe { pthread_mutex_lock(m) };
        if waited == Err(ECANCELED) && r == 0 {
            // As glibc: the cleanup handlers run with the mutex held again.
            // Deferred (disabled) or not a green thread, it is a spurious wake-up.
            // SAFETY: no guard is held, and these frames own nothing to drop.
            unsafe { cancel::act_on_cancel() };
        }
        match r {
            0 if timed_out => ETIMEDOUT,
            r => r,
        }
    }

    /// The waiter's last touch of the condvar.
    fn leave(&self) {
        let _ = self.waiters.fetch_update(SeqCst, SeqCst, |w| {
            let w = w - 1;
            Some(if w & WAITER_COUNT == 0 { 0 } else { w })
        });
    }

    /// Moves the sequence if anyone waits; returns the waiters word it saw.
    fn bump(&self) -> Option<u32> {
        let w = self.waiters.load(SeqCst);
        if w & WAITER_COUNT == 0 {
            return None;
        }
        self.seq.fetch_add(1, SeqCst);
        Some(w)
    }

    fn signal(&self) {
        if let Some(w) = self.bump() {
            let addr = self.seq.as_ptr() as usize;
            parking::unpark_one(addr);
            if w & WAITER_NATIVE != 0 {
                futex::wake(addr, 1);
            }
        }
    }

    fn broadcast(&self) {
        if let Some(w) = self.bump() {
            let addr = self.seq.as_ptr() as usize;
            parking::unpark_all(addr);
            if w & WAITER_NATIVE != 0 {
                futex::wake(addr, i32::MAX);
            }
        }
    }
}

fn cond_timed(c: &Cond, m: *mut pthread_mutex_t, clock: clockid_t, abs: *const timespec) -> c_int {
    match Deadline::new(clock, abs) {
        Ok(d) => c.wait(m, Some(d)),
        Err(e) => e,
    }
}

hook! {
    /// `pthread_cond_wait(3)`: releases the mutex, parks, reacquires it.
    fn pthread_cond_wait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t) -> c_int as real {
        match Cond::ours(c) {
            Some(cv) => cv.wait(m, None),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(c, m) },
        }
    }
}

hook! {
    /// `pthread_cond_timedwait(3)`: `abstime` on the condvar's clock
    /// (`pthread_condattr_setclock`); ETIMEDOUT with the mutex reacquired.
    fn pthread_cond_timedwait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t, abstime: *const timespec) -> c_int as real {
        match Cond::ours(c) {
            Some(cv) => cond_timed(cv, m, cv.clock(), abstime),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(c, m, abstime) },
        }
    }
}

hook! {
    /// `pthread_cond_clockwait(3)`.
    fn pthread_cond_clockwait(c: *mut pthread_cond_t, m: *mut pthread_mutex_t, clock: clockid_t, abstime: *const timespec) -> c_int as real {
        match Cond::ours(c) {
            Some(cv) => cond_timed(cv, m, clock, abstime),
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(c, m, clock, abstime) },
        }
    }
}

hook! {
    /// `pthread_cond_signal(3)`: wakes at least one waiter.
    fn pthread_cond_signal(c: *mut pthread_cond_t) -> c_int as real {
        match Cond::ours(c) {
            Some(cv) => {
                cv.signal();
                0
            }
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(c) },
        }
    }
}

hook! {
    /// `pthread_cond_broadcast(3)`: wakes every waiter.
    fn pthread_cond_broadcast(c: *mut pthread_cond_t) -> c_int as real {
        match Cond::ours(c) {
            Some(cv) => {
                cv.broadcast();
                0
            }
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(c) },
        }
    }
}

hook! {
    /// `pthread_cond_destroy(3)`: waits for woken waiters to leave, as glibc.
    fn pthread_cond_destroy(c: *mut pthread_cond_t) -> c_int as real {
        match Cond::ours(c) {
            Some(cv) => {
                while cv.waiters.load(SeqCst) & WAITER_COUNT != 0 {
                    let_others_run();
                }
                0
            }
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(c) },
        }
    }
}
