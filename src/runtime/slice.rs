//! Time slices (contract 12 of docs/DESIGN.md): a coroutine whose hooked calls keep
//! completing at once — an event loop whose `epoll_wait` always finds an fd
//! ready, an accept loop on EMFILE — yields at least once per slice
//! (`PATCHALL_TIMESLICE`), as Go asks a goroutine to after 10 ms.
//!
//! No thread watches the schedulers: Go's sysmon would make every process
//! that runs a coroutine multi-threaded, and glibc's system call wrappers cost
//! about a fifth more then (BENCHMARKS.md), a price a process with a single
//! scheduler would pay on every call. Instead each scheduler counts the runs it
//! starts, and every [`CHECK_EVERY`]th hooked call that completes without
//! parking reads the clock: a run that has lasted half a slice since the clock
//! was first read in it yields.
//!
//! A coroutine that makes no hooked call is not interrupted: there is no
//! preemption, only a yield at a call that would not have parked. With the
//! blocking monitor on (`PATCHALL_MONITOR`, opt-in for the reason above), a
//! run it reports yields at the next check, however the slice stands.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::monitor::Hold;
use super::scheduler::{current_scheduler, current_task, yield_now};
use crate::config::config;

/// Completed calls between two reads of the clock (about 25 ns each). Calls that
/// complete at once take a microsecond or more: 32 of them are a small part of
/// a slice, and the clock costs under a nanosecond per call.
const CHECK_EVERY: u32 = 32;

/// One scheduler's time-slice bookkeeping; touched only by its own thread.
/// Runs are told apart by the scheduler's count of them (its `switches`
/// counter): a mark from another run is stale.
pub(crate) struct Slice {
    /// Completed calls left before the clock is read again.
    countdown: Cell<u32>,
    /// (the run, when the clock was first read in it).
    mark: Cell<Option<(u64, Instant)>>,
    /// How long a run may last before it yields; None: time slices are off.
    limit: Option<Duration>,
}

impl Slice {
    pub(crate) fn new() -> Slice {
        Slice {
            countdown: Cell::new(0),
            mark: Cell::new(None),
            // The clock is first read up to CHECK_EVERY calls into a run and
            // then every CHECK_EVERY calls: half a slice keeps runs under one.
            limit: config().timeslice.map(|s| s / 2),
        }
    }

    /// Counts a completed call; true if the running coroutine's slice is over.
    #[inline(always)]
    fn over(&self, hold: &Hold) -> bool {
        let left = self.countdown.get();
        if left != 0 {
            self.countdown.set(left - 1);
            return false;
        }
        self.look(hold)
    }

    /// `hold`'s switch counter names the run (a mark from another run is
    /// stale); the monitor pokes it when it reports the run's hold.
    #[cold]
    #[inline(never)]
    fn look(&self, hold: &Hold) -> bool {
        let Some(limit) = self.limit else {
            self.countdown.set(u32::MAX);
            return false;
        };
        self.countdown.set(CHECK_EVERY - 1);
        if hold.poked() {
            return true;
        }
        let now = Instant::now();
        let run = hold.run();
        match self.mark.get() {
            Some((r, since)) if r == run => now.saturating_duration_since(since) >= limit,
            _ => {
                self.mark.set(Some((run, now)));
                false
            }
        }
    }
}

/// Called as a hooked call completes without parking: true if the coroutine
/// running here has had its slice and should yield (`yield_for_slice`).
#[inline(always)]
pub(crate) fn slice_over() -> bool {
    current_scheduler().is_some_and(|s| s.slice().over(&s.remote.hold)) && current_task().is_some()
}

/// Yields the running coroutine at the end of its slice. The next round polls
/// I/O first, so that what the others wait for is seen (a busy scheduler
/// otherwise polls every few hundred runs). The caller holds no hook guard.
#[cold]
#[inline(never)]
pub(crate) fn yield_for_slice() {
    if let Some(s) = current_scheduler() {
        s.counters().slice_yielded();
        s.poll_soon();
        yield_now();
    }
}
