//! The monitor: one OS thread that watches the schedulers from outside, as Go's
//! sysmon does. Today it enforces time slices ([`super::slice`]); it is the
//! place for any other look at running coroutines from outside (a report of a
//! coroutine that held its thread too long).
//!
//! It starts with the first coroutine a process spawns, never in a process
//! that spawns none (a plain preloaded program), and not at all when
//! `PATCHALL_TIMESLICE` is off. A child of `fork` has no monitor thread: it
//! starts its own with its first spawn.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::{native, scheduler, slice};
use crate::config::config;

/// Set once the monitor was started (or could not be) in this process.
static STARTED: AtomicBool = AtomicBool::new(false);
/// OS threads the monitor runs in this process: 0 or 1.
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Starts the monitor if it is not running yet. Called at every spawn: one
/// relaxed load once it runs.
#[inline]
pub(crate) fn ensure_started() {
    if !STARTED.load(Ordering::Relaxed) {
        start();
    }
}

#[cold]
fn start() {
    if STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    let Some(slice) = config().timeslice else {
        return;
    };
    // Looks every half slice: a run is asked to yield once two looks in a row
    // saw it, so after half a slice to a slice.
    let period = (slice / 2).as_nanos() as usize;
    THREADS.fetch_add(1, Ordering::Relaxed);
    if !native::start(monitor_main, period as *mut c_void) {
        THREADS.fetch_sub(1, Ordering::Relaxed);
        crate::sys::diag(&[
            b"patchall: cannot start the monitor thread; coroutines keep their thread until they park\n",
        ]);
    }
}

extern "C" fn monitor_main(period: *mut c_void) -> *mut c_void {
    native::block_async_signals();
    let period = Duration::from_nanos(period as u64);
    loop {
        // A plain thread: the hooked sleep is libc's.
        std::thread::sleep(period);
        scheduler::for_each_slice(slice::Slice::look);
    }
}

/// The runtime's OS threads besides the program's and the workers: for code
/// that waits for "the other threads" to end.
pub(crate) fn threads() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// In the child of `fork`: the parent's monitor thread does not exist here.
pub(super) fn after_fork_child() {
    THREADS.store(0, Ordering::Relaxed);
    STARTED.store(false, Ordering::Relaxed);
    slice::after_fork_child();
}
