//! How a caller waits on one of our pthread objects, and how it is woken.
//!
//! Not a wait primitive of its own: `WaitBy` picks, per caller, one of the two
//! that exist. A coroutine parks and a plain thread that has coroutines drives
//! them, both on the runtime's parking lot (`runtime::parking`, keyed by the
//! object's address, as a futex is); any other thread blocks in futex(2) on
//! the object's word (`sys::futex`). The parking lot cannot serve that last
//! kind: it has no scheduler to run while it waits and must be woken by a
//! `FUTEX_WAKE` on the word, as glibc's own waiters would be. So every object
//! records which kinds may be waiting (its NATIVE bits), and a releaser wakes
//! the lot, the kernel, or both.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Instant;

use libc::{ECANCELED, EINTR, EINVAL, ETIMEDOUT, c_int, clockid_t, timespec};

use crate::hooks::Guard;
use crate::runtime::{self, Breaks, Label, Wake, parking};
use crate::sys::deadline_at;
use crate::sys::futex::{self, Until};

/// In a waiters or arrivals word (condvar, barrier): set while a futex waiter
/// may be among them; the rest counts them.
pub(super) const WAITER_NATIVE: u32 = 1 << 31;
pub(super) const WAITER_COUNT: u32 = WAITER_NATIVE - 1;

/// An absolute timeout as the caller gave it, and the same moment as an Instant
/// for the scheduler's timers.
pub(super) struct Deadline {
    clock: clockid_t,
    pub(super) abs: timespec,
    pub(super) at: Instant,
}

impl Deadline {
    /// EINVAL for a clock other than REALTIME/MONOTONIC, a null `abs` or
    /// nanoseconds out of range, as glibc.
    pub(super) fn new(clock: clockid_t, abs: *const timespec) -> Result<Deadline, c_int> {
        if clock != libc::CLOCK_REALTIME && clock != libc::CLOCK_MONOTONIC {
            return Err(EINVAL);
        }
        // SAFETY: a non-null `abs` points at the caller's timespec.
        let given = *unsafe { abs.as_ref() }.ok_or(EINVAL)?;
        let at = deadline_at(clock, abs)?.ok_or(EINVAL)?;
        Ok(Deadline {
            clock,
            abs: given,
            at,
        })
    }
}

/// How the caller waits when it must.
pub(super) enum WaitBy {
    /// A coroutine: parks (named `Label`); the other coroutines of its
    /// thread run.
    Park(Guard, &'static Label),
    /// A plain thread whose scheduler has coroutines: runs them meanwhile.
    Drive(Guard),
    /// Any other thread, or a call re-entered from our own code: futex(2).
    Futex,
}

impl WaitBy {
    pub(super) fn new(label: &'static Label) -> WaitBy {
        let Some(guard) = Guard::enter() else {
            return WaitBy::Futex;
        };
        if runtime::in_coroutine() {
            // Called from the runtime's own bookkeeping inside a park: the
            // kernel waits (redis-benchmark's jemalloc hung so, its lock
            // contended while the lot's shard lock was held).
            if !runtime::futex::may_park() {
                return WaitBy::Futex;
            }
            WaitBy::Park(guard, label)
        } else if runtime::current_scheduler().is_some_and(|s| s.live() > 0) {
            WaitBy::Drive(guard)
        } else {
            WaitBy::Futex
        }
    }

    /// True if this waiter can only be woken by FUTEX_WAKE.
    pub(super) fn native(&self) -> bool {
        matches!(self, WaitBy::Futex)
    }

    /// Waits, keyed on `addr`, while `still_blocked()` — for a futex waiter,
    /// while the 32-bit word at `addr` holds `expected` — until woken, maybe
    /// spuriously. Err(ETIMEDOUT) when `deadline` passed; Err(EINTR) when a
    /// signal handler without SA_RESTART interrupted a futex wait, or, with
    /// `breaks` `Signal`, any wait; Err(ECANCELED) when a cancellation woke a
    /// coroutine (a cancellation point acts on it, other waits wait again).
    pub(super) fn wait(
        &self,
        addr: usize,
        expected: u32,
        still_blocked: impl Fn() -> bool,
        deadline: Option<&Deadline>,
        breaks: Breaks,
    ) -> Result<(), c_int> {
        if deadline.is_some_and(|d| d.abs.tv_sec < 0) {
            return Err(ETIMEDOUT);
        }
        let at = deadline.map(|d| d.at);
        let wake = match self {
            WaitBy::Park(guard, label) => {
                runtime::label(label);
                guard.release_while(|| parking::park_on_as(addr, at, breaks, still_blocked))
            }
            WaitBy::Drive(guard) => {
                guard.release_while(|| parking::drive_on(addr, at, breaks, still_blocked))
            }
            WaitBy::Futex => {
                let until = deadline.map_or(Until::Woken, |d| Until::At(d.clock, &d.abs));
                // SAFETY: every caller passes the live, 4-byte aligned futex
                // word of the object it waits on.
                return unsafe { futex::wait(addr as *const u32, expected, until) };
            }
        };
        match wake {
            Wake::TimedOut => Err(ETIMEDOUT),
            // As a futex wait: restarted after SA_RESTART handlers.
            Wake::Interrupted { restart: false } => Err(EINTR),
            Wake::Cancelled => Err(ECANCELED),
            _ => Ok(()),
        }
    }

    pub(super) fn wait_word(
        &self,
        word: &AtomicU32,
        expected: u32,
        deadline: Option<&Deadline>,
    ) -> Result<(), c_int> {
        self.wait(
            word.as_ptr() as usize,
            expected,
            || word.load(SeqCst) == expected,
            deadline,
            Breaks::Never,
        )
    }
}

/// Lets others run while a destroy waits for woken waiters to leave an object.
pub(super) fn let_others_run() {
    if runtime::in_coroutine() {
        runtime::yield_now();
    } else if let Some(s) = runtime::current_scheduler().filter(|s| s.live() > 0) {
        s.run_until(Some(Instant::now()), &mut || false);
    } else {
        std::thread::yield_now();
    }
}
