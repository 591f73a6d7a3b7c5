//! `pthread_once` in a coroutine. glibc's waits for another thread's init
//! routine with a futex, which would block the OS thread, and with it the
//! coroutine running that routine: a deadlock as soon as the routine parks. A
//! coroutine parks instead.
//!
//! glibc 2.36's encoding of the control word is kept (nptl/pthread_once.c), so
//! coroutines and native threads can share one `pthread_once_t`: 0 not run,
//! `fork generation | 1` running, 2 done. A coroutine that starts the routine
//! writes 1 (generation 0) and, when done, 2, then wakes both futex waiters and
//! parked coroutines.

use std::ptr;
use std::sync::atomic::AtomicI32;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::time::{Duration, Instant};

use libc::{c_int, pthread_once_t};

use super::{GreenThread, current, green_threads, no_panic};
use crate::runtime::{self, parking};
use crate::sys::futex;

const IN_PROGRESS: c_int = 1;
const DONE: c_int = 2;
/// How often a waiting coroutine rechecks a routine that a native thread runs
/// (it wakes futex waiters, not parked coroutines).
const NATIVE_RECHECK: Duration = Duration::from_millis(5);

/// An init routine a green thread is running; linked from its record so that
/// the control is reset if the thread ends inside the routine.
pub(super) struct Running {
    control: *const AtomicI32,
    prev: *const Running,
}

type Init = unsafe extern "C" fn();

fn wake(control: *const AtomicI32) {
    futex::wake(control as usize, i32::MAX);
    parking::unpark_all(control as usize);
}

hook! {
    /// `pthread_once(3)`. `C-unwind`: the init routine may end its thread
    /// (`pthread_exit`, cancellation) or throw; our own parts run under
    /// `no_panic`, the routine outside it.
    unwind fn pthread_once(control: *mut pthread_once_t, init: Option<Init>) -> c_int as real {
        let ours = no_panic("pthread_once", || {
            green_threads::enabled() && runtime::in_coroutine() && !control.is_null()
        });
        if !ours {
            // SAFETY: forwarding the caller's arguments.
            return unsafe { real(control, init) };
        }
        // SAFETY: a pthread_once_t is an int that every user accesses atomically.
        let word = unsafe { &*control.cast::<AtomicI32>() };
        if no_panic("pthread_once", || claim(word)) {
            run_init(word, init);
            no_panic("pthread_once", || {
                word.store(DONE, Release);
                wake(word);
            });
        }
        0
    }
}

/// True when the caller is to run the routine (the control is now ours);
/// false once another thread has run it. Parks while one runs it.
fn claim(word: &AtomicI32) -> bool {
    let control = word as *const AtomicI32 as usize;
    loop {
        let seen = word.load(Acquire);
        if seen & DONE != 0 {
            return false;
        }
        if seen & IN_PROGRESS != 0 {
            let recheck = Instant::now() + NATIVE_RECHECK;
            runtime::label(&const { runtime::Label::new("once", runtime::Family::Lock) });
            parking::park_on(control, Some(recheck), || word.load(Acquire) == seen);
            continue;
        }
        if word
            .compare_exchange(seen, IN_PROGRESS, Acquire, Acquire)
            .is_ok()
        {
            return true;
        }
    }
}

/// Runs the routine with the control linked from the green thread's record
/// (reset if the thread ends inside it). Nothing here can panic: the routine
/// may unwind through this frame.
fn run_init(word: &AtomicI32, init: Option<Init>) {
    let me = current();
    let running = Running {
        control: word,
        prev: me.map_or(ptr::null(), |rec| rec.onces.get()),
    };
    if let Some(rec) = me {
        rec.onces.set(&running);
    }
    if let Some(init) = init {
        // SAFETY: the user's init routine, called once as glibc would.
        unsafe { init() };
    }
    if let Some(rec) = me {
        rec.onces.set(running.prev);
    }
}

/// Resets every once control the ending green thread was initialising, so the
/// next caller runs the routine again (glibc's cancellation cleanup does so).
pub(super) fn reset(rec: &GreenThread) {
    let mut node = rec.onces.replace(ptr::null());
    while !node.is_null() {
        // SAFETY: nodes live in frames of this thread's stack that have not
        // returned (the thread is ending inside them); the controls are the
        // user's once words.
        let (control, prev) = unsafe { ((*node).control, (*node).prev) };
        // SAFETY: as above.
        unsafe { (*control).store(0, Release) };
        wake(control);
        node = prev;
    }
}
