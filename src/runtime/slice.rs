//! Time slices (contract 12 of DESIGN.md): a coroutine whose hooked calls keep
//! completing at once — an event loop whose `epoll_wait` always finds an fd
//! ready, an accept loop on EMFILE — yields at least once per slice
//! (`PATCHALL_TIMESLICE`), as Go's sysmon asks a goroutine to after 10 ms.
//!
//! Each scheduler counts the starts and ends of coroutine runs (odd while one
//! runs): two stores per switch, on a line only it writes. The monitor thread
//! ([`super::monitor`]) looks every half slice; a scheduler whose count is odd
//! and unchanged since its last look has run one coroutine for at least that
//! long, and is asked to yield. Hooks test [`requested`], one relaxed load of
//! a global that is zero while nobody is asked, whenever a call completes
//! without parking; only then does [`yield_if_requested`] find out whether
//! the request is for this thread's coroutine.
//!
//! A coroutine that makes no hooked call is not interrupted: there is no
//! preemption, only a yield at the next call that would not have parked.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use super::scheduler::{current_scheduler, current_task, yield_now};

/// Alone on its cache line: every completed hooked call reads it.
#[repr(align(64))]
struct Pending(AtomicUsize);

/// How many schedulers have a request outstanding. Changed only by whoever
/// turns a request on or off (by `swap`), so it counts exactly; a decrement may
/// briefly run ahead of its increment (a wrapped value is still "not zero").
static PENDING: Pending = Pending(AtomicUsize::new(0));

/// One scheduler's side of the slice: written by its owner at every switch,
/// read by the monitor. Its own line, apart from the mailbox other threads write.
#[repr(align(64))]
#[derive(Default)]
pub(crate) struct Slice {
    /// Bumped as a coroutine starts running and as it stops: odd while one runs.
    switches: AtomicU64,
    /// The monitor's: `switches` when it last looked.
    seen: AtomicU64,
    /// The odd `switches` value of the run asked to yield; 0 for none.
    asked: AtomicU64,
}

impl Slice {
    /// A coroutine starts or stops running (owner only). Not a read-modify-write
    /// instruction: only the owner writes.
    #[inline(always)]
    pub(crate) fn switched(&self) {
        self.switches
            .store(self.switches.load(Relaxed).wrapping_add(1), Relaxed);
    }

    /// The monitor's look: asks the running coroutine to yield if it has run
    /// since the last look, withdraws a request for a run that has ended.
    pub(super) fn look(&self) {
        let now = self.switches.load(Relaxed);
        let before = self.seen.swap(now, Relaxed);
        if now == before && now & 1 == 1 {
            if self.asked.swap(now, Relaxed) == 0 {
                PENDING.0.fetch_add(1, Relaxed);
            }
        } else if self.asked.load(Relaxed) != 0 {
            self.withdraw();
        }
    }

    /// Clears the request; returns what it was (0: none).
    pub(super) fn withdraw(&self) -> u64 {
        let was = self.asked.swap(0, Relaxed);
        if was != 0 {
            PENDING.0.fetch_sub(1, Relaxed);
        }
        was
    }
}

/// True while some scheduler has been asked to yield: the one test a hook makes
/// when a call completes without parking.
#[inline(always)]
pub(crate) fn requested() -> bool {
    PENDING.0.load(Relaxed) != 0
}

/// Yields if this thread's scheduler was asked to and the running coroutine is
/// the one that has held it since. The next round polls I/O first, so that
/// what the others wait for is seen (a busy scheduler otherwise polls every
/// few hundred runs). The caller holds no hook guard.
#[cold]
#[inline(never)]
pub(crate) fn yield_if_requested() {
    let (Some(sched), Some(_)) = (current_scheduler(), current_task()) else {
        return;
    };
    let slice = sched.slice();
    if slice.asked.load(Relaxed) == 0 {
        return;
    }
    if slice.withdraw() != slice.switches.load(Relaxed) {
        // Meant for an earlier run, which has yielded or parked since.
        return;
    }
    sched.poll_soon();
    yield_now();
}

/// In the child of `fork`: no scheduler of the parent's runs here.
pub(super) fn after_fork_child() {
    PENDING.0.store(0, Relaxed);
}
