//! Cancellation points (pthreads(7)): where a green thread's pending
//! `pthread_cancel` is acted on. A hooked call that is one asks at its entry
//! (`cancellation_point`) and again when its park wakes as cancelled
//! (`act_on_cancel`). What a cancellation is, and how the thread ends, belong
//! to the thread's record (hooks/thread), which starts with a [`Cancel`]: the
//! data calls know this much of green threads and no more.

use std::cell::Cell;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::SeqCst;

use super::{Guard, green_threads};
use crate::runtime::{self, control};

/// The cancellation state a green thread's record starts with (the running
/// coroutine's per-coroutine word points at it).
pub(crate) struct Cancel {
    /// `pthread_cancel` was called.
    pub(crate) pending: AtomicBool,
    /// `PTHREAD_CANCEL_ENABLE` (else a cancellation waits until enabled).
    pub(crate) enabled: AtomicBool,
    /// The thread is ending: cancellation no longer acts. Touched only by the
    /// thread itself.
    pub(crate) exiting: Cell<bool>,
    /// Ends the calling thread with `PTHREAD_CANCELED`; given the thread's own
    /// `Cancel`. Its frames are abandoned, as `act_on_cancel` says.
    end: unsafe fn(&'static Cancel) -> !,
}

impl Cancel {
    pub(crate) fn new(end: unsafe fn(&'static Cancel) -> !) -> Cancel {
        Cancel {
            pending: AtomicBool::new(false),
            enabled: AtomicBool::new(true),
            exiting: Cell::new(false),
            end,
        }
    }

    /// True if this (the calling) thread must act on a cancellation now.
    pub(crate) fn due(&self) -> bool {
        self.pending.load(SeqCst) && self.enabled.load(SeqCst) && !self.exiting.get()
    }
}

/// The running green thread's cancellation state, if any.
fn current() -> Option<&'static Cancel> {
    if !green_threads::enabled() {
        return None;
    }
    // SAFETY: the word is only ever set (by the thread record's `bind`) to the
    // coroutine's own record, which starts with its `Cancel` and lives until
    // the coroutine ends.
    unsafe { (control::task_local() as *const Cancel).as_ref() }
}

/// Acts on a cancellation that woke a parked call (`Wake::Cancelled`): a green
/// thread with cancellation enabled ends here with `PTHREAD_CANCELED`. Returns
/// true if the caller should wait again (the cancellation is deferred: disabled,
/// or the thread is already ending), false for other coroutines (the caller
/// reports ECANCELED).
///
/// # Safety
/// The caller's frames (up to the coroutine's start) are abandoned: they may
/// own heap memory (it leaks) but no lock, borrow or guard whose drop restores
/// state. Call it with the hook `Guard` released.
pub(crate) unsafe fn act_on_cancel() -> bool {
    let Some(cancel) = current() else {
        return false;
    };
    if cancel.due() {
        // SAFETY: the caller's promise; `cancel` is the calling thread's own.
        unsafe { (cancel.end)(cancel) }
    }
    control::clear_cancel();
    true
}

/// True if the calling green thread has a pending, enabled cancellation: a
/// cancellation point that must act before it waits asks this.
pub(crate) fn cancel_due() -> bool {
    current().is_some_and(Cancel::due)
}

/// The entry of a hooked call that is a cancellation point (pthreads(7)): a
/// green thread with a pending, enabled cancellation ends here, before the
/// call is made, even one that would not wait. glibc acts there too: a
/// cancellable call checks before its system call (so a cancelled `close`
/// leaves the fd open). A cancellation that comes while the call waits wakes
/// the park instead (`blocking::wait`).
#[inline(always)]
pub(crate) fn cancellation_point() {
    if runtime::engaged() && control::running_cancelled() == Some(true) {
        act_at_entry();
    }
}

/// `cancellation_point`'s action, also taken by the data calls' pass-through
/// test (`blocking::passthrough`).
#[cold]
#[inline(never)]
pub(crate) fn act_at_entry() {
    // Not under another hook's guard: a hooked call our own code makes is no
    // cancellation point of the program's.
    if let Some(guard) = Guard::enter() {
        drop(guard);
        // SAFETY: at a hook's entry, with no guard held: the frames below are
        // the program's and the hook's, which hold nothing yet. Returns for
        // a coroutine that is no green thread (`JoinHandle::kill`: its next
        // wait fails) and for a deferred cancellation.
        unsafe { act_on_cancel() };
    }
}
