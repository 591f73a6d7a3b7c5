//! `pthread_join` and its timed and non-blocking forms, and `pthread_detach`.
//! A green thread's joiner parks on the record (or, a plain thread, waits on
//! its state word); a coroutine joining a native thread polls, so that the
//! other coroutines of its OS thread keep running.

use std::ptr;
use std::sync::atomic::Ordering::{AcqRel, Acquire, SeqCst};
use std::time::{Duration, Instant};

use libc::{c_int, c_void, clockid_t, pthread_t, timespec};

use super::record::{DETACHED, FINISHED, GreenThread, JOINING, exit_thread};
use super::{CANCELED, current, green_threads, no_panic, record};
use crate::hooks::cancel::act_on_cancel;
use crate::runtime::{self, Breaks, Wake, parking};
use crate::sys::deadline_at;
use crate::sys::futex::{self, Until};

/// How long a join may wait.
#[derive(Clone, Copy)]
enum Wait {
    Try,
    Until(Option<Instant>),
}

/// What a join does after our part of it (`join`'s first step).
enum Step {
    /// Done: the result.
    Done(c_int),
    /// The joining green thread was cancelled in its wait: it ends.
    Cancelled(&'static GreenThread),
    /// A coroutine joins a native thread (`join_native`), until this deadline.
    Native(Option<Instant>),
    /// glibc's own join.
    Real,
}

/// Joins a green thread: glibc's checks and errors, then waits for FINISHED.
fn join_green(rec: &'static GreenThread, ret: *mut *mut c_void, wait: Wait) -> Step {
    let me = current();
    let mut state = rec.state.load(Acquire);
    if matches!(wait, Wait::Try) && state & FINISHED == 0 {
        return Step::Done(libc::EBUSY);
    }
    if state & DETACHED != 0 {
        return Step::Done(libc::EINVAL);
    }
    if me.is_some_and(|m| ptr::eq(m, rec) || rec.joining.load(SeqCst) == m.addr()) {
        return Step::Done(libc::EDEADLK);
    }
    loop {
        if state & (JOINING | DETACHED) != 0 {
            return Step::Done(libc::EINVAL);
        }
        match rec
            .state
            .compare_exchange_weak(state, state | JOINING, AcqRel, Acquire)
        {
            Ok(_) => break,
            Err(now) => state = now,
        }
    }
    let deadline = match wait {
        Wait::Try => None,
        Wait::Until(d) => d,
    };
    if let Some(m) = me {
        m.joining.store(rec.addr(), SeqCst);
    }
    let waited = wait_finished(rec, deadline);
    if let Some(m) = me {
        m.joining.store(0, SeqCst);
    }
    if let Err(e) = waited {
        rec.state.fetch_and(!JOINING, AcqRel);
        if let (libc::ECANCELED, Some(m)) = (e, me) {
            return Step::Cancelled(m);
        }
        return Step::Done(e);
    }
    if !ret.is_null() {
        // SAFETY: the caller's out-parameter.
        unsafe { *ret = rec.retval.load(Acquire) };
    }
    // SAFETY: joined: we are the only one who can still reach it.
    unsafe { GreenThread::free(rec.addr()) };
    Step::Done(0)
}

/// Waits until `rec` has finished. ETIMEDOUT at `deadline`; ECANCELED when the
/// waiting green thread is cancelled (a join is a cancellation point).
fn wait_finished(rec: &GreenThread, deadline: Option<Instant>) -> Result<(), c_int> {
    let addr = rec.addr();
    let finished = || rec.finished();
    if runtime::in_coroutine() {
        while !finished() {
            if current().is_some_and(|rec| rec.cancel.due()) {
                return Err(libc::ECANCELED);
            }
            runtime::label(&const { runtime::Label::new("join", runtime::Family::Join) });
            if parking::park_on(addr, deadline, || !finished()) == Wake::TimedOut && !finished() {
                return Err(libc::ETIMEDOUT);
            }
        }
        return Ok(());
    }
    if runtime::current_scheduler().is_some() {
        // A plain caller on a thread that runs coroutines (a destructor or
        // atexit handler on main's thread): the green thread may be one of
        // them, so run them meanwhile; its end on another worker comes as mail.
        while !finished() {
            if parking::drive_on(addr, deadline, Breaks::Never, || !finished()) == Wake::TimedOut
                && !finished()
            {
                return Err(libc::ETIMEDOUT);
            }
        }
        return Ok(());
    }
    loop {
        let state = rec.state.load(Acquire);
        if state & FINISHED != 0 {
            return Ok(());
        }
        let left = match deadline {
            None => None,
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Err(libc::ETIMEDOUT),
            },
        };
        let until = left.map_or(Until::Woken, Until::For);
        // SAFETY: the record's live, aligned state word.
        let _ = unsafe { futex::wait(rec.state.as_ptr(), state, until) };
    }
}

/// A coroutine joining a native thread: polls glibc's `pthread_tryjoin_np` so
/// that the other coroutines of this OS thread keep running (the native
/// thread may be waiting for one of them).
fn join_native(
    hook: &str,
    th: pthread_t,
    ret: *mut *mut c_void,
    deadline: Option<Instant>,
) -> c_int {
    let mut pause = Duration::from_micros(200);
    loop {
        // `act_on_cancel` may end the thread: outside `no_panic`.
        match no_panic(hook, || poll_native(th, ret, deadline, &mut pause)) {
            Some(r) => return r,
            // SAFETY: this frame and `join`'s hold only plain values.
            None if !unsafe { act_on_cancel() } => return libc::ECANCELED,
            None => {}
        }
    }
}

/// One round of `join_native`: the result, or None when a cancellation woke
/// the pause. `pause` doubles each round, up to 20 ms.
fn poll_native(
    th: pthread_t,
    ret: *mut *mut c_void,
    deadline: Option<Instant>,
    pause: &mut Duration,
) -> Option<c_int> {
    loop {
        let r = original!("C" fn pthread_tryjoin_np(pthread_t, *mut *mut c_void) -> c_int)
            // SAFETY: glibc's handle and the caller's out-parameter; not a
            // cancellation point (it never waits).
            .map_or(libc::ENOSYS, |real| unsafe { real(th, ret) });
        if r != libc::EBUSY {
            return Some(r);
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Some(libc::ETIMEDOUT);
        }
        let wake_at = deadline.map_or(now + *pause, |d| d.min(now + *pause));
        runtime::label(&const { runtime::Label::new("join", runtime::Family::Join) });
        let woke = runtime::sleep_until(wake_at);
        *pause = (*pause * 2).min(Duration::from_millis(20));
        if woke == Wake::Cancelled {
            return None;
        }
    }
}

/// Every join flavour (`hook` names it): `wait` for a green thread; a
/// coroutine joining a native thread polls; anything else is glibc's. Three
/// are `C-unwind` hooks (glibc's join is a cancellation point, which unwinds):
/// our part runs under `no_panic`, the real call and a green thread's end
/// outside it.
fn join(
    hook: &str,
    th: pthread_t,
    ret: *mut *mut c_void,
    clock: clockid_t,
    abstime: *const timespec,
    block: bool,
    real: impl Fn() -> c_int,
) -> c_int {
    let step = no_panic(hook, || {
        let deadline = || deadline_at(clock, abstime);
        match record(th) {
            Some(rec) if !block => join_green(rec, ret, Wait::Try),
            Some(rec) if rec.finished() => join_green(rec, ret, Wait::Until(None)),
            Some(rec) => match deadline() {
                Ok(d) => join_green(rec, ret, Wait::Until(d)),
                Err(e) => Step::Done(e),
            },
            None if block && green_threads::enabled() && runtime::in_coroutine() => {
                match deadline() {
                    Ok(d) => Step::Native(d),
                    Err(e) => Step::Done(e),
                }
            }
            None => Step::Real,
        }
    });
    match step {
        Step::Done(r) => r,
        // SAFETY: our frames hold only plain values; C's frames are the user's.
        Step::Cancelled(me) => unsafe { exit_thread(me, CANCELED) },
        Step::Native(deadline) => join_native(hook, th, ret, deadline),
        Step::Real => real(),
    }
}

hook! {
    /// `pthread_join(3)`.
    unwind fn pthread_join(th: pthread_t, ret: *mut *mut c_void) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        join("pthread_join", th, ret, libc::CLOCK_REALTIME, ptr::null(), true, || unsafe { real(th, ret) })
    }
}

hook! {
    /// `pthread_tryjoin_np(3)`: EBUSY while the thread runs.
    fn pthread_tryjoin_np(th: pthread_t, ret: *mut *mut c_void) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        join("pthread_tryjoin_np", th, ret, libc::CLOCK_REALTIME, ptr::null(), false, || unsafe { real(th, ret) })
    }
}

hook! {
    /// `pthread_timedjoin_np(3)`: `abstime` on CLOCK_REALTIME.
    unwind fn pthread_timedjoin_np(th: pthread_t, ret: *mut *mut c_void, abstime: *const timespec) -> c_int as real {
        // SAFETY: forwarding the caller's arguments.
        join("pthread_timedjoin_np", th, ret, libc::CLOCK_REALTIME, abstime, true, || unsafe { real(th, ret, abstime) })
    }
}

hook! {
    /// `pthread_clockjoin_np(3)`: `abstime` on CLOCK_REALTIME or CLOCK_MONOTONIC.
    unwind fn pthread_clockjoin_np(th: pthread_t, ret: *mut *mut c_void, clock: clockid_t, abstime: *const timespec) -> c_int as real {
        if record(th).is_some() && clock != libc::CLOCK_REALTIME && clock != libc::CLOCK_MONOTONIC {
            return libc::EINVAL;
        }
        // SAFETY: forwarding the caller's arguments.
        join("pthread_clockjoin_np", th, ret, clock, abstime, true, || unsafe { real(th, ret, clock, abstime) })
    }
}

hook! {
    /// `pthread_detach(3)`.
    fn pthread_detach(th: pthread_t) -> c_int as real {
        let Some(rec) = record(th) else {
            // SAFETY: forwarding the caller's argument.
            return unsafe { real(th) };
        };
        let mut state = rec.state.load(Acquire);
        loop {
            if state & (DETACHED | JOINING) != 0 {
                return libc::EINVAL;
            }
            match rec.state.compare_exchange_weak(state, state | DETACHED, AcqRel, Acquire) {
                Ok(_) => break,
                Err(now) => state = now,
            }
        }
        if state & FINISHED != 0 {
            // SAFETY: finished and now detached: nobody else can reach it.
            unsafe { GreenThread::free(rec.addr()) };
        }
        0
    }
}
