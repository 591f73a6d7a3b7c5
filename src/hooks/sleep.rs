//! sleep, usleep, nanosleep (and `__nanosleep`), clock_nanosleep.
//!
//! Inside a coroutine a sleep parks the coroutine on a timer; every sleep, even of
//! zero length, is a scheduling point. Requests the kernel would refuse (a null or
//! out-of-range timespec, a clock we cannot measure) go to the real call, so the
//! error is the kernel's own. A signal handler that runs on the thread while the
//! coroutine sleeps ends the sleep with EINTR, SA_RESTART or not (signal(7)), and
//! `rem` gets the time left, as the kernel does; on success `rem` is not written.
//! A killed coroutine's sleep, or one past its `timeout()`, returns at once as if
//! the time had elapsed (`std::thread::sleep` would retry an EINTR forever).
//!
//! Absolute sleeps on CLOCK_REALTIME/BOOTTIME/TAI are converted to a monotonic
//! deadline and re-checked against their clock on waking; a clock that is set
//! backwards while a coroutine sleeps is noticed only at that deadline.

use std::time::{Duration, Instant};

use libc::{c_int, c_uint, clockid_t, timespec, useconds_t};

use super::real::Guard;
// Also still named from here by pthread_sync.
use crate::runtime::{self, Wake};
use crate::sys::set_errno;
use crate::sys::time::clock_now;
pub(super) use crate::sys::{deadline_after, timespec_duration, to_timespec};

/// Reads a caller's non-null timespec that the kernel would accept.
fn requested(req: *const timespec) -> Option<Duration> {
    // SAFETY: non-null: the caller passes a readable timespec, as the real call
    // requires (a wild pointer faults here instead of giving EFAULT).
    timespec_duration(unsafe { req.as_ref() }?)
}

/// Parks the running coroutine until `deadline`; a deadline already passed only
/// lets the other coroutines run once. Err(EINTR) if a signal handler ran on
/// this thread meanwhile. A killed coroutine (`Cancelled`, not a green thread's
/// deferred cancel) or one past its `timeout()` (`Expired`) returns at once as if
/// the time had elapsed: EINTR would make `std::thread::sleep` retry, forever.
fn park_until(guard: &Guard, deadline: Instant) -> Result<(), c_int> {
    loop {
        runtime::label(&const { runtime::Label::new("sleep", runtime::Family::Sleep) });
        match guard.release_while(|| runtime::sleep_until(deadline)) {
            Wake::Interrupted { .. } => return Err(libc::EINTR),
            Wake::Cancelled
                if guard.release_while(|| {
                    // SAFETY: this frame and the hook's own nothing but the
                    // guard, released while `act_on_cancel` runs.
                    unsafe { super::cancel::act_on_cancel() }
                }) => {}
            Wake::Cancelled | Wake::Expired => return Ok(()),
            _ if Instant::now() >= deadline => return Ok(()),
            _ => {}
        }
    }
}

/// A relative sleep until `deadline`; on failure `rem` (if not null) receives
/// the time left.
fn park_relative(guard: &Guard, deadline: Instant, rem: *mut timespec) -> Result<(), c_int> {
    park_until(guard, deadline).inspect_err(|_| {
        // SAFETY: null or the caller's writable timespec, as the real call
        // requires (a wild pointer faults here instead of giving EFAULT).
        if let Some(rem) = unsafe { rem.as_mut() } {
            *rem = to_timespec(deadline.saturating_duration_since(Instant::now()));
        }
    })
}

/// Parks until `deadline`, as a -1/errno call.
fn park_or_errno(guard: &Guard, deadline: Instant, rem: *mut timespec) -> c_int {
    match park_relative(guard, deadline, rem) {
        Ok(()) => 0,
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

/// The clocks whose sleeps we can turn into monotonic deadlines.
fn measurable(clock: clockid_t) -> bool {
    matches!(
        clock,
        libc::CLOCK_REALTIME | libc::CLOCK_MONOTONIC | libc::CLOCK_BOOTTIME | libc::CLOCK_TAI
    )
}

/// `clock`'s reading, None if it fails or lies before its epoch.
fn clock_reading(clock: clockid_t) -> Option<Duration> {
    timespec_duration(&clock_now(clock)?)
}

/// Parks until `clock` reads at least `target`, as `TIMER_ABSTIME` does; `now`
/// is its reading at the call. A clock running slower than the monotonic one
/// (slewed, or set back) means parking again.
fn park_until_clock(
    guard: &Guard,
    clock: clockid_t,
    target: Duration,
    now: Duration,
) -> Result<(), c_int> {
    let mut left = target.saturating_sub(now);
    loop {
        park_until(guard, deadline_after(left))?;
        left = target.saturating_sub(clock_reading(clock).unwrap_or(target));
        if left.is_zero() {
            return Ok(());
        }
    }
}

hook! {
    /// `sleep(3)`: glibc's calls `nanosleep` internally, past our hook, so the
    /// entry point is hooked itself. Interrupted, it returns the whole seconds
    /// left, with errno set, as glibc's does.
    ///
    /// # Safety
    /// None beyond libc's.
    fn sleep(seconds: c_uint) -> c_uint as real {
        let Some(guard) = super::coroutine_guard() else {
            // SAFETY: forwarding the caller's argument.
            return unsafe { real(seconds) };
        };
        let deadline = deadline_after(Duration::from_secs(seconds.into()));
        match park_until(&guard, deadline) {
            Ok(()) => 0,
            Err(e) => {
                set_errno(e);
                let left = deadline.saturating_duration_since(Instant::now()).as_secs();
                c_uint::try_from(left).unwrap_or(c_uint::MAX)
            }
        }
    }
}

hook! {
    /// `usleep(3)`: glibc accepts a million microseconds or more, so do we.
    ///
    /// # Safety
    /// None beyond libc's.
    fn usleep(usec: useconds_t) -> c_int as real {
        let Some(guard) = super::coroutine_guard() else {
            // SAFETY: forwarding the caller's argument.
            return unsafe { real(usec) };
        };
        park_or_errno(&guard, deadline_after(Duration::from_micros(usec.into())), std::ptr::null_mut())
    }
}

hook! {
    /// `nanosleep(2)`.
    ///
    /// # Safety
    /// `req` must be readable and `rem` null or writable, as for libc's.
    fn nanosleep(req: *const timespec, rem: *mut timespec) -> c_int as real {
        let forward = || {
            // SAFETY: forwarding the caller's arguments.
            unsafe { real(req, rem) }
        };
        let Some(guard) = super::coroutine_guard() else { return forward() };
        let Some(d) = requested(req) else { return forward() };
        park_or_errno(&guard, deadline_after(d), rem)
    }
}

alias! {
    /// glibc's exported `__nanosleep`.
    ///
    /// # Safety
    /// As `nanosleep`.
    fn __nanosleep(req: *const timespec, rem: *mut timespec) -> c_int = nanosleep
}

hook! {
    /// `clock_nanosleep(2)`: what `std::thread::sleep` calls. Returns the error
    /// number, not -1. Relative sleeps on any of the measurable clocks elapse on
    /// the monotonic clock (as the kernel's do on CLOCK_REALTIME; on
    /// CLOCK_BOOTTIME time spent suspended is not counted); CPU-time, raw,
    /// coarse and alarm clocks go to the real call.
    ///
    /// # Safety
    /// `req` must be readable and `rem` null or writable, as for libc's.
    fn clock_nanosleep(clock: clockid_t, flags: c_int, req: *const timespec, rem: *mut timespec) -> c_int as real {
        let forward = || {
            // SAFETY: forwarding the caller's arguments.
            unsafe { real(clock, flags, req, rem) }
        };
        let Some(guard) = super::coroutine_guard() else { return forward() };
        if !measurable(clock) {
            return forward();
        }
        let Some(d) = requested(req) else { return forward() };
        let slept = if flags & libc::TIMER_ABSTIME == 0 {
            park_relative(&guard, deadline_after(d), rem)
        } else {
            // The clock cannot be read (CLOCK_TAI on an old kernel): the real
            // call knows best.
            let Some(now) = clock_reading(clock) else { return forward() };
            park_until_clock(&guard, clock, d, now)
        };
        slept.err().unwrap_or(0)
    }
}
