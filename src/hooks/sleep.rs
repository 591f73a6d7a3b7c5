//! sleep, usleep, nanosleep (and `__nanosleep`), clock_nanosleep.
//!
//! Inside a coroutine a sleep parks the coroutine on a timer; every sleep, even of
//! zero length, is a scheduling point. Requests the kernel would refuse (a null or
//! out-of-range timespec, a clock we cannot measure) go to the real call, so the
//! error is the kernel's own. A parked coroutine is not interrupted by signals, so
//! `rem` is never written: the kernel writes it only on EINTR.
//!
//! Absolute sleeps on CLOCK_REALTIME/BOOTTIME/TAI are converted to a monotonic
//! deadline and re-checked against their clock on waking; a clock that is set
//! backwards while a coroutine sleeps is noticed only at that deadline.

use std::time::{Duration, Instant};

use libc::{c_int, c_uint, clockid_t, timespec, useconds_t};

use super::real::Guard;
use crate::runtime;

/// The hook guard, when the caller is a coroutine and not our own code: None
/// means "forward to the real call".
pub(super) fn coroutine_guard() -> Option<Guard> {
    if runtime::in_coroutine() {
        Guard::enter()
    } else {
        None
    }
}

/// `d` from now. Beyond `Instant`'s range (`tv_sec` near `time_t::MAX`) the
/// deadline becomes a century away, which a process cannot tell from never.
pub(super) fn deadline_after(d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(d).unwrap_or(now + CENTURY)
}

/// What the kernel accepts as a timespec (`timespec64_valid`): `tv_sec >= 0`,
/// `0 <= tv_nsec < 1e9`. None for anything it rejects with EINVAL.
pub(super) fn timespec_duration(ts: &timespec) -> Option<Duration> {
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec)
        .ok()
        .filter(|&n| n < 1_000_000_000)?;
    Some(Duration::new(secs, nanos))
}

/// Reads a caller's non-null timespec that the kernel would accept.
fn requested(req: *const timespec) -> Option<Duration> {
    // SAFETY: non-null: the caller passes a readable timespec, as the real call
    // requires (a wild pointer faults here instead of giving EFAULT).
    timespec_duration(unsafe { req.as_ref() }?)
}

/// Parks the running coroutine until `deadline`; a deadline already passed only
/// lets the other coroutines run once.
fn park_until(guard: &Guard, deadline: Instant) {
    loop {
        guard.release_while(|| runtime::sleep_until(deadline));
        if Instant::now() >= deadline {
            return;
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
fn clock_now(clock: clockid_t) -> Option<Duration> {
    let mut now = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `now`.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return None;
    }
    timespec_duration(&now)
}

/// Parks until `clock` reads at least `target`, as `TIMER_ABSTIME` does.
fn park_until_clock(guard: &Guard, clock: clockid_t, target: Duration) -> Option<()> {
    loop {
        let left = target.saturating_sub(clock_now(clock)?);
        park_until(guard, deadline_after(left));
        if left.is_zero() || clock_now(clock)? >= target {
            return Some(());
        }
    }
}

hook! {
    /// `sleep(3)`: glibc's calls `nanosleep` internally, past our hook, so the
    /// entry point is hooked itself. A parked coroutine is never interrupted:
    /// it returns 0 seconds left.
    ///
    /// # Safety
    /// None beyond libc's.
    fn sleep(seconds: c_uint) -> c_uint as real {
        let Some(guard) = coroutine_guard() else {
            // SAFETY: forwarding the caller's argument.
            return unsafe { real(seconds) };
        };
        park_until(&guard, deadline_after(Duration::from_secs(seconds.into())));
        0
    }
}

hook! {
    /// `usleep(3)`: glibc accepts a million microseconds or more, so do we.
    ///
    /// # Safety
    /// None beyond libc's.
    fn usleep(usec: useconds_t) -> c_int as real {
        let Some(guard) = coroutine_guard() else {
            // SAFETY: forwarding the caller's argument.
            return unsafe { real(usec) };
        };
        park_until(&guard, deadline_after(Duration::from_micros(usec.into())));
        0
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
        let Some(guard) = coroutine_guard() else { return forward() };
        let Some(d) = requested(req) else { return forward() };
        park_until(&guard, deadline_after(d));
        0
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
        let Some(guard) = coroutine_guard() else { return forward() };
        if !measurable(clock) {
            return forward();
        }
        let Some(d) = requested(req) else { return forward() };
        if flags & libc::TIMER_ABSTIME == 0 {
            park_until(&guard, deadline_after(d));
            return 0;
        }
        match park_until_clock(&guard, clock, d) {
            Some(()) => 0,
            // The clock cannot be read (CLOCK_TAI on an old kernel): the real
            // call knows best.
            None => forward(),
        }
    }
}
