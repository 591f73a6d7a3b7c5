//! Unnamed semaphores (`sem_init(s, 0, n)`): `sem_wait`, `_trywait`,
//! `_timedwait`, `_clockwait`, `_post`, `_getvalue`. Process-shared and named
//! ones stay glibc's; a coroutine waiting on one waits on the offload pool.

use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::sync::atomic::{AtomicI32, AtomicU64};
use std::time::{Duration, Instant};

use libc::{EAGAIN, ECANCELED, EINTR, EOVERFLOW, ETIMEDOUT, c_int, clockid_t, sem_t, timespec};

use super::overlay;
use super::wait::{Deadline, WaitBy};
use crate::hooks::Guard;
use crate::hooks::{blocking, cancel, green_threads, thread};
use crate::runtime::{self, Breaks, Family, Label, parking};
use crate::sys::time::timespec_after;
use crate::sys::{errno, futex, set_errno};

/// glibc's own layout: one 64-bit word, the value in the low half (the futex
/// word), waiters above it. A post or a leaving waiter is a single atomic
/// operation on it, so neither touches the semaphore afterwards (a waiter may
/// destroy it as soon as it has its token).
#[repr(C)]
struct Sem {
    data: AtomicU64,
    shared: AtomicI32,
    _pad: [u32; 5],
}

const SEM_VALUE: u64 = 0xffff_ffff;
const SEM_WAITER: u64 = 1 << 32;
const SEM_NATIVE: u64 = 1 << 63;
const SEM_WAITERS: u64 = !SEM_VALUE & !SEM_NATIVE;
const SEM_VALUE_MAX: u64 = i32::MAX as u64;

impl Sem {
    fn ours<'a>(s: *mut sem_t) -> Option<&'a Sem> {
        overlay(s, |x: &Sem| x.shared.load(Relaxed) == 0)
    }

    #[inline]
    fn try_take(&self) -> bool {
        let mut d = self.data.load(Relaxed);
        while d & SEM_VALUE != 0 {
            match self.data.compare_exchange_weak(d, d - 1, Acquire, Relaxed) {
                Ok(_) => return true,
                Err(x) => d = x,
            }
        }
        false
    }

    fn leave(d: u64) -> u64 {
        let d = d - SEM_WAITER;
        if d & SEM_WAITERS == 0 {
            d & !SEM_NATIVE
        } else {
            d
        }
    }

    /// A cancellation point: a coroutine cancelled while it waits leaves
    /// without a token and acts on it; deferred, it waits again.
    fn wait(&self, deadline: Option<Deadline>) -> Result<(), c_int> {
        loop {
            match self.wait_until_cancelled(deadline.as_ref()) {
                // SAFETY: no guard is held (the waiter is gone) and these frames
                // own nothing to drop.
                Err(ECANCELED) => unsafe {
                    cancel::act_on_cancel();
                },
                r => return r,
            }
        }
    }

    fn wait_until_cancelled(&self, deadline: Option<&Deadline>) -> Result<(), c_int> {
        if self.try_take() {
            return Ok(());
        }
        let waiter = WaitBy::new(&const { Label::new("sem", Family::Lock) });
        let mine = SEM_WAITER | if waiter.native() { SEM_NATIVE } else { 0 };
        let mut d = self.data.load(Relaxed);
        loop {
            let (new, took) = match d & SEM_VALUE {
                0 => ((d + SEM_WAITER) | (mine & SEM_NATIVE), false),
                _ => (d - 1, true),
            };
            match self.data.compare_exchange_weak(d, new, SeqCst, Relaxed) {
                Ok(_) if took => return Ok(()),
                Ok(_) => break,
                Err(x) => d = x,
            }
        }
        let addr = self.data.as_ptr() as usize;
        loop {
            // EINTR after a handler without SA_RESTART, as glibc's futex wait
            // gives it (signal(7) says never restarted; Linux restarts it).
            let r = waiter.wait(
                addr,
                0,
                || self.data.load(SeqCst) & SEM_VALUE == 0,
                deadline,
                Breaks::Signal,
            );
            // Take a token and leave in one step; or, giving up, just leave.
            let mut d = self.data.load(Relaxed);
            loop {
                let left = Self::leave(d);
                let (new, result) = match (d & SEM_VALUE, r) {
                    (_, Err(ECANCELED)) => (left, Err(ECANCELED)),
                    (0, Ok(())) => break,
                    (0, Err(e)) => (left, Err(e)),
                    _ => (left - 1, Ok(())),
                };
                match self.data.compare_exchange_weak(d, new, Acquire, Relaxed) {
                    Ok(_) => return result,
                    Err(x) => d = x,
                }
            }
        }
    }

    fn post(&self) -> Result<(), c_int> {
        let mut d = self.data.load(Relaxed);
        loop {
            if d & SEM_VALUE >= SEM_VALUE_MAX {
                return Err(EOVERFLOW);
            }
            match self.data.compare_exchange_weak(d, d + 1, SeqCst, Relaxed) {
                Ok(_) => break,
                Err(x) => d = x,
            }
        }
        if d & SEM_WAITERS != 0 {
            let addr = self.data.as_ptr() as usize;
            parking::unpark_one(addr);
            if d & SEM_NATIVE != 0 {
                futex::wake(addr, 1);
            }
        }
        Ok(())
    }
}

/// The sem_* convention: 0, or -1 with errno.
fn sem_result(r: Result<(), c_int>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

fn sem_timed(s: &Sem, clock: clockid_t, abs: *const timespec) -> c_int {
    sem_result(Deadline::new(clock, abs).and_then(|d| s.wait(Some(d))))
}

/// glibc's `sem_wait` and `sem_timedwait` (not `sem_clockwait`) act on a due
/// cancellation before they look for a token.
fn sem_testcancel() {
    // SAFETY: called first thing in a hook: no guard held, nothing to drop.
    unsafe { thread::pthread_testcancel() }
}

/// How long one offloaded wait on a process-shared semaphore lasts: how late a
/// coroutine waiting on one sees a signal handler or a cancellation.
const SHARED_SLICE: Duration = Duration::from_millis(50);

/// A coroutine's wait on a semaphore glibc keeps (`sem_open`, `sem_init(s, 1,
/// n)`): its post may come from another process, which cannot see our parking
/// lot, so the coroutine parks while a pool thread waits in glibc's own
/// `sem_clockwait` (where any post wakes it at once), one slice at a time.
/// Each slice ends with the token or without it, never abandoned with a token
/// taken. Between slices a signal handler without SA_RESTART run on this
/// thread gives EINTR and a due cancellation is acted on, as in glibc's wait.
/// None when the caller is not a coroutine (it forwards, blocking its thread).
/// `cancel_first`: act on a due cancellation before anything, as glibc's
/// `sem_wait` and `sem_timedwait`.
fn shared_sem_wait(
    s: *mut sem_t,
    deadline: Option<(clockid_t, *const timespec)>,
    cancel_first: bool,
) -> Option<c_int> {
    if !green_threads::enabled() || !runtime::in_coroutine() {
        return None;
    }
    if cancel_first {
        sem_testcancel();
    }
    let real_trywait = original!("C" fn sem_trywait(*mut sem_t) -> c_int)?;
    let real_clockwait =
        original!("C" fn sem_clockwait(*mut sem_t, clockid_t, *const timespec) -> c_int)?;
    let at = match deadline
        .map(|(clock, abs)| Deadline::new(clock, abs))
        .transpose()
    {
        Ok(d) => d.map(|d| (d.at, d.abs.tv_sec < 0)),
        Err(e) => return Some(sem_result(Err(e))),
    };
    let saved = errno();
    // SAFETY: the caller's semaphore.
    if unsafe { real_trywait(s) } == 0 {
        return Some(0);
    }
    set_errno(saved);
    if at.is_some_and(|(_, before_epoch)| before_epoch) {
        return Some(sem_result(Err(ETIMEDOUT)));
    }
    let handlers = runtime::signal_counts().1;
    loop {
        let now = Instant::now();
        let left = at.map_or(SHARED_SLICE, |(at, _)| at.saturating_duration_since(now));
        if left.is_zero() {
            return Some(sem_result(Err(ETIMEDOUT)));
        }
        let end = timespec_after(libc::CLOCK_MONOTONIC, left.min(SHARED_SLICE));
        let guard = Guard::enter()?;
        // SAFETY: the pool thread uses only the caller's semaphore and `end`,
        // both alive until the job ends (`offloaded` returns after it).
        let (r, e) = unsafe {
            blocking::offloaded(&guard, &const { Label::new("sem", Family::Lock) }, || {
                (real_clockwait(s, libc::CLOCK_MONOTONIC, &end), errno())
            })
        };
        drop(guard);
        match (r, e) {
            (0, _) => return Some(0),
            // Pool threads block signals, so EINTR is not the program's.
            (_, ETIMEDOUT | EINTR) => {}
            (_, e) => return Some(sem_result(Err(e))),
        }
        if runtime::signal_counts().1 != handlers {
            return Some(sem_result(Err(EINTR)));
        }
        sem_testcancel();
    }
}

hook! {
    /// `sem_wait(3)`.
    fn sem_wait(s: *mut sem_t) -> c_int as real {
        match Sem::ours(s) {
            Some(sem) => {
                sem_testcancel();
                sem_result(sem.wait(None))
            }
            // SAFETY: forwarding the caller's argument.
            None => shared_sem_wait(s, None, true).unwrap_or_else(|| unsafe { real(s) }),
        }
    }
}

hook! {
    /// `sem_trywait(3)`: EAGAIN at zero.
    fn sem_trywait(s: *mut sem_t) -> c_int as real {
        match Sem::ours(s) {
            Some(sem) => sem_result(if sem.try_take() { Ok(()) } else { Err(EAGAIN) }),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(s) },
        }
    }
}

hook! {
    /// `sem_timedwait(3)`: `abstime` on CLOCK_REALTIME; EINVAL for a bad one
    /// even when a token is there, as glibc.
    fn sem_timedwait(s: *mut sem_t, abstime: *const timespec) -> c_int as real {
        match Sem::ours(s) {
            Some(sem) => {
                sem_testcancel();
                sem_timed(sem, libc::CLOCK_REALTIME, abstime)
            }
            None => shared_sem_wait(s, Some((libc::CLOCK_REALTIME, abstime)), true)
                // SAFETY: forwarding the caller's arguments.
                .unwrap_or_else(|| unsafe { real(s, abstime) }),
        }
    }
}

hook! {
    /// `sem_clockwait(3)`.
    fn sem_clockwait(s: *mut sem_t, clock: clockid_t, abstime: *const timespec) -> c_int as real {
        match Sem::ours(s) {
            Some(sem) => sem_timed(sem, clock, abstime),
            None => shared_sem_wait(s, Some((clock, abstime)), false)
                // SAFETY: forwarding the caller's arguments.
                .unwrap_or_else(|| unsafe { real(s, clock, abstime) }),
        }
    }
}

hook! {
    /// `sem_post(3)`: EOVERFLOW at SEM_VALUE_MAX.
    fn sem_post(s: *mut sem_t) -> c_int as real {
        match Sem::ours(s) {
            Some(sem) => sem_result(sem.post()),
            // SAFETY: forwarding the caller's argument.
            None => unsafe { real(s) },
        }
    }
}

hook! {
    /// `sem_getvalue(3)`.
    fn sem_getvalue(s: *mut sem_t, value: *mut c_int) -> c_int as real {
        match Sem::ours(s) {
            Some(sem) => {
                // SAFETY: the caller's out-pointer.
                unsafe { *value = (sem.data.load(Relaxed) & SEM_VALUE) as c_int };
                0
            }
            // SAFETY: forwarding the caller's arguments.
            None => unsafe { real(s, value) },
        }
    }
}
