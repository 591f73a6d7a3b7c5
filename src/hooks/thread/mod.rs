//! Green threads (`PATCHALL_GREEN_THREADS=1`): `pthread_create` called in a
//! coroutine starts a coroutine on the caller's scheduler, `main` runs as one
//! (see `start`), and every `pthread_*` function that takes a `pthread_t`
//! understands the handles we hand out. With green threads off every hook here
//! forwards untouched.
//!
//! A green thread is a heap record ([`GreenThread`]) whose `pthread_t` is the
//! record's address with the low bit set: glibc's handles are aligned pointers,
//! so an odd value is never one of them, and every hook checks that bit before
//! a handle reaches glibc. The running coroutine's record is its per-coroutine
//! word (`control::task_local`).
//!
//! Cancellation is deferred: `pthread_cancel` marks the thread and wakes it if
//! it is parked; it ends at the entry of the next hooked cancellation point
//! (read, write, close, sleep…: `cancel::cancellation_point`), in its wait,
//! at `pthread_join`, or at `pthread_testcancel`. Ending a
//! green thread (return, `pthread_exit`, cancellation) runs its C
//! `pthread_cleanup_push` handlers, resets a `pthread_once` it was inside, runs
//! its key destructors, then wakes its joiner.
//!
//! With `PATCHALL_WORKERS=N` green threads spread over N OS threads (see
//! `spread`); a record's shared fields are atomic for that reason too.
//!
//! Functions that only make sense for an OS thread (affinity, scheduling, CPU
//! clock, signals) act on the OS thread that runs the green thread, which every
//! coroutine of that thread shares.
//!
//! Files: `record` (the record, exit and cancellation), `create`, `join`,
//! `os_thread` (functions that take a handle), `keys`, `once`, `start`
//! (`main`), `spread` (placement on workers), `native` (routines that stay
//! native threads).

use super::green_threads;
use crate::runtime::control;
use libc::{c_void, pthread_t};
use record::GreenThread;

mod create;
mod join;
mod keys;
mod native;
mod once;
mod os_thread;
mod record;
mod spread;
mod start;

// The hooks keep their public paths (`patchall::hooks::thread::pthread_join`).
pub use create::*;
pub use join::*;
pub use os_thread::*;
pub use record::*;

/// A thread's start routine.
type StartRoutine = unsafe extern "C" fn(*mut c_void) -> *mut c_void;

/// glibc's `PTHREAD_CANCELED`.
const CANCELED: *mut c_void = usize::MAX as *mut c_void;
/// Longest thread name with its NUL (the kernel's TASK_COMM_LEN).
const NAME_LEN: usize = 16;

/// The green thread running here, if any.
fn current() -> Option<&'static GreenThread> {
    if !green_threads::enabled() {
        return None;
    }
    // SAFETY: the word is only ever set (by `bind`) to the coroutine's own
    // record, which lives until the coroutine ends.
    unsafe { (control::task_local() as *const GreenThread).as_ref() }
}

/// The record behind a green handle; None for glibc's handles (always even).
fn record(th: pthread_t) -> Option<&'static GreenThread> {
    if th & 1 == 0 {
        return None;
    }
    // SAFETY: odd handles are only made by `handle` from a live record; using a
    // handle after join (or after a detached thread ended) is undefined, as in glibc.
    unsafe { ((th & !1) as *const GreenThread).as_ref() }
}

/// Runs our own part of a `C-unwind` hook (`pthread_join`, `pthread_once`…):
/// a panic there, a bug of ours, would unwind into the C caller's frames, so
/// it ends the process instead, naming the hook. Never around the real call,
/// the program's code, or a green thread's end: glibc's forced unwinding
/// (cancellation, `pthread_exit`) must pass those frames, and a
/// `catch_unwind` it crossed would abort.
fn no_panic<R>(hook: &str, ours: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(ours)) {
        Ok(r) => r,
        Err(_) => {
            crate::sys::diag(&[
                b"patchall: a panic in our ",
                hook.as_bytes(),
                b" hook; aborting\n",
            ]);
            std::process::abort()
        }
    }
}

/// glibc's handle of the calling OS thread (our `pthread_self` would give a
/// green handle).
fn os_self() -> pthread_t {
    // SAFETY: pthread_self has no preconditions.
    original!("C" fn pthread_self() -> pthread_t).map_or(0, |real| unsafe { real() })
}
