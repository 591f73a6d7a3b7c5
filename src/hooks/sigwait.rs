//! Waits for signals: sigsuspend, pause, sigpause (and glibc's `__sigsuspend`,
//! `__sigpause`, `__xpg_sigpause`), sigwait, sigwaitinfo, sigtimedwait (and
//! `__sigtimedwait`).
//!
//! Inside a coroutine they park and the other coroutines run:
//! - `sigsuspend(mask)` and `pause()` park with that mask (pause: the
//!   caller's, a green thread's own)
//!   until a handler for a signal it lets in runs, then fail with EINTR. A
//!   pending signal the mask lets in is delivered at once, as by the kernel.
//! - the `sigwait` family tries `sigtimedwait` with a zero timeout, which
//!   consumes a pending signal of the set as the kernel does; while none is
//!   pending the coroutine parks until the scheduler's signalfd sees one, its
//!   timeout passes (EAGAIN), or a handler runs (EINTR; `sigwait` itself goes on
//!   waiting, as glibc's does).
//!
//! The waited signals must be blocked in the caller's mask (a green thread's
//! own), as POSIX requires: one that is not is delivered to its handler (or
//! default action) while other coroutines run, as to a thread that is not
//! waiting at that moment. A signal stays pending for the signalfd only while
//! every green thread of the OS thread blocks it (the OS thread's mask is the
//! intersection of theirs); else it may go to its handler, as the kernel may
//! natively pick another thread that lets it in.
//! A killed coroutine's wait fails with ECANCELED, one past its `timeout()`
//! with ETIMEDOUT; a green thread's cancellation ends it here.

use std::ptr;
use std::time::Instant;

use libc::{c_int, siginfo_t, sigset_t, timespec};

use super::coroutine_guard;
use super::real::Guard;
use super::sleep::{deadline_after, timespec_duration};
use crate::runtime::signals::{
    bit, caller_mask, deliver_pending, glibc_internal, kernel_set, unstoppable,
};
use crate::runtime::{self, Breaks, Wake};
use crate::sys::{errno, set_errno};

/// -1 with `e` in errno.
fn fail(e: c_int) -> c_int {
    set_errno(e);
    -1
}

/// What a wait that ended for a reason other than its own returns: None to wait
/// again (a green thread's deferred cancellation), else the error number.
fn stopped(guard: &Guard, wake: Wake) -> Option<c_int> {
    match wake {
        Wake::Expired => Some(libc::ETIMEDOUT),
        // SAFETY: the hook's frames own nothing but the guard, released while
        // `act_on_cancel` runs.
        Wake::Cancelled if guard.release_while(|| unsafe { super::cancel::act_on_cancel() }) => {
            None
        }
        Wake::Cancelled => Some(libc::ECANCELED),
        _ => None,
    }
}

/// Parks with `mask` in force (`Masked`; `Syscall`: the caller's) until a
/// handler it lets in runs: sigsuspend's -1/EINTR.
fn suspend(guard: &Guard, breaks: Breaks) -> c_int {
    if let Breaks::Masked(mask) = breaks {
        if deliver_pending(mask) {
            return fail(libc::EINTR);
        }
    }
    loop {
        runtime::label(&const { runtime::Label::new("sigsuspend", runtime::Family::Signal) });
        let wake = guard.release_while(|| runtime::park_as(None, breaks, |_| true));
        if let Wake::Interrupted { .. } = wake {
            return fail(libc::EINTR);
        }
        if let Some(e) = stopped(guard, wake) {
            return fail(e);
        }
    }
}

/// `sigsuspend` in a coroutine, with the kernel's set `mask`.
fn suspend_with(guard: &Guard, mask: u64) -> c_int {
    suspend(guard, Breaks::Masked(mask & !unstoppable()))
}

hook! {
    /// `sigsuspend(2)`.
    ///
    /// # Safety
    /// `set` readable, as for libc's.
    fn sigsuspend(set: *const sigset_t) -> c_int as real {
        let forward = || {
            // SAFETY: forwarding the caller's argument.
            unsafe { real(set) }
        };
        let Some(guard) = coroutine_guard() else { return forward() };
        if set.is_null() {
            return forward();
        }
        // SAFETY: non-null, readable as the real call requires.
        suspend_with(&guard, unsafe { kernel_set(set) })
    }
}

alias! {
    /// glibc's exported `__sigsuspend`.
    fn __sigsuspend(set: *const sigset_t) -> c_int = sigsuspend
}

hook! {
    /// `pause(2)`: parks until a handler runs.
    ///
    /// # Safety
    /// None beyond libc's.
    fn pause() -> c_int as real {
        let Some(guard) = coroutine_guard() else {
            // SAFETY: no arguments.
            return unsafe { real() };
        };
        suspend(&guard, Breaks::Syscall)
    }
}

hook! {
    /// glibc's `__sigpause`: with `is_sig`, the caller's mask less
    /// `sig_or_mask` (X/Open); else `sig_or_mask` is a BSD mask of the first
    /// 32 signals.
    ///
    /// # Safety
    /// None beyond libc's.
    fn __sigpause(sig_or_mask: c_int, is_sig: c_int) -> c_int as real {
        let forward = || {
            // SAFETY: forwarding the caller's arguments.
            unsafe { real(sig_or_mask, is_sig) }
        };
        let Some(guard) = coroutine_guard() else { return forward() };
        let mask = if is_sig != 0 {
            if bit(sig_or_mask) == 0 || glibc_internal(sig_or_mask) {
                // glibc's EINVAL.
                return forward();
            }
            caller_mask() & !bit(sig_or_mask)
        } else {
            u64::from(sig_or_mask as u32)
        };
        suspend_with(&guard, mask)
    }
}

/// BSD `sigpause(3)`: `mask` is a mask of the first 32 signals.
///
/// # Safety
/// None beyond libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigpause(mask: c_int) -> c_int {
    // SAFETY: glibc's definition is this very call.
    unsafe { __sigpause(mask, 0) }
}

/// X/Open `sigpause(3)` (what `<signal.h>` names `sigpause` under X/Open):
/// the caller's mask less `sig`.
///
/// # Safety
/// None beyond libc's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __xpg_sigpause(sig: c_int) -> c_int {
    // SAFETY: glibc's definition is this very call.
    unsafe { __sigpause(sig, 1) }
}

/// Waits in a coroutine for a signal of `set` until `deadline`, by zero-timeout
/// `sigtimedwait` calls (`real`): the signal number, or -1 with errno (EAGAIN
/// when the deadline passes, EINTR when a handler ran, unless `restart`).
fn wait_for(
    guard: &Guard,
    real: unsafe extern "C" fn(*const sigset_t, *mut siginfo_t, *const timespec) -> c_int,
    set: *const sigset_t,
    info: *mut siginfo_t,
    deadline: Option<Instant>,
    restart: bool,
) -> c_int {
    let zero = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: non-null (checked by the callers), readable as the real call
    // requires.
    let wanted = unsafe { kernel_set(set) } & !unstoppable();
    // The zero-timeout tries' EAGAIN is ours: a success leaves errno alone.
    let saved = errno();
    let success = |r: c_int| {
        set_errno(saved);
        r
    };
    loop {
        // SAFETY: the caller's set and info, our zero timeout.
        let r = unsafe { real(set, info, &zero) };
        if r >= 0 {
            return success(r);
        }
        if errno() != libc::EAGAIN {
            return r;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return fail(libc::EAGAIN);
        }
        runtime::label(&const { runtime::Label::new("sigwait", runtime::Family::Signal) });
        let wake = guard.release_while(|| runtime::wait_signal(wanted, deadline));
        if let Wake::Interrupted { .. } = wake {
            // SAFETY: as above.
            let r = unsafe { real(set, info, &zero) };
            if r >= 0 {
                return success(r);
            }
            if errno() != libc::EAGAIN || !restart {
                return fail(libc::EINTR);
            }
        }
        if let Some(e) = stopped(guard, wake) {
            return fail(e);
        }
    }
}

/// libc's `sigtimedwait`, which every call of the family is made of.
fn real_sigtimedwait()
-> Option<unsafe extern "C" fn(*const sigset_t, *mut siginfo_t, *const timespec) -> c_int> {
    original!("C" fn sigtimedwait(*const sigset_t, *mut siginfo_t, *const timespec) -> c_int)
}

hook! {
    /// `sigtimedwait(2)`.
    ///
    /// # Safety
    /// `set` readable, `info` null or writable, `timeout` null or readable.
    fn sigtimedwait(set: *const sigset_t, info: *mut siginfo_t, timeout: *const timespec) -> c_int as real {
        let forward = || {
            // SAFETY: forwarding the caller's arguments.
            unsafe { real(set, info, timeout) }
        };
        let Some(guard) = coroutine_guard() else { return forward() };
        if set.is_null() {
            return forward();
        }
        // SAFETY: null or the caller's readable timespec.
        let deadline = match unsafe { timeout.as_ref() } {
            None => None,
            Some(ts) => match timespec_duration(ts) {
                Some(d) => Some(deadline_after(d)),
                // The kernel's EINVAL.
                None => return forward(),
            },
        };
        wait_for(&guard, real, set, info, deadline, false)
    }
}

alias! {
    /// glibc's `__sigtimedwait`.
    fn __sigtimedwait(set: *const sigset_t, info: *mut siginfo_t, timeout: *const timespec) -> c_int = sigtimedwait
}

hook! {
    /// `sigwaitinfo(2)`.
    ///
    /// # Safety
    /// `set` readable, `info` null or writable.
    fn sigwaitinfo(set: *const sigset_t, info: *mut siginfo_t) -> c_int as real {
        let forward = || {
            // SAFETY: forwarding the caller's arguments.
            unsafe { real(set, info) }
        };
        let Some(guard) = coroutine_guard() else { return forward() };
        let Some(timed) = real_sigtimedwait().filter(|_| !set.is_null()) else { return forward() };
        wait_for(&guard, timed, set, info, None, false)
    }
}

hook! {
    /// `sigwait(3)`: the signal in `*sig` and 0, or an error number (not
    /// errno); a handler that runs meanwhile does not end it, as in glibc.
    ///
    /// # Safety
    /// `set` readable, `sig` writable.
    fn sigwait(set: *const sigset_t, sig: *mut c_int) -> c_int as real {
        let forward = || {
            // SAFETY: forwarding the caller's arguments.
            unsafe { real(set, sig) }
        };
        let Some(guard) = coroutine_guard() else { return forward() };
        let Some(timed) = real_sigtimedwait().filter(|_| !set.is_null()) else { return forward() };
        let r = wait_for(&guard, timed, set, ptr::null_mut(), None, true);
        if r < 0 {
            // glibc's leaves it in errno too.
            return errno();
        }
        // SAFETY: the caller's writable int, as for libc's.
        unsafe { *sig = r };
        0
    }
}
