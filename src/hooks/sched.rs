//! `sched_yield` (and glibc's `pthread_yield`): in a coroutine, lets the other
//! runnable coroutines of its scheduler run before it goes on. A program that
//! hands a lock back and forth with `sched_yield`, or polls a `trylock` between
//! yields, would otherwise never let a green thread of the same OS thread run:
//! the kernel's yield only picks among OS threads.

use libc::c_int;

use super::coroutine_guard;
use crate::runtime;

hook! {
    /// `sched_yield(2)`: in a coroutine, requeued behind the others; 0, as the
    /// kernel's call always returns. A coroutine alone on its scheduler has
    /// no one to yield to there: it yields its OS thread, as natively (a
    /// spin-wait for another thread then leaves it the CPU).
    fn sched_yield() -> c_int as real {
        let Some(guard) = coroutine_guard() else {
            // SAFETY: no arguments to forward.
            return unsafe { real() };
        };
        if runtime::current_scheduler().is_some_and(|s| s.live() <= 1) {
            // SAFETY: as above.
            return unsafe { real() };
        }
        guard.release_while(runtime::yield_now);
        0
    }
}

alias! {
    /// glibc's exported alias of `sched_yield`.
    fn __sched_yield() -> c_int = sched_yield
}

alias! {
    /// glibc's deprecated `pthread_yield`, which calls its `sched_yield` directly.
    fn pthread_yield() -> c_int = sched_yield
}
