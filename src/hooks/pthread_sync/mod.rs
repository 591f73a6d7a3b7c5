//! pthread mutexes, condition variables, rwlocks, barriers and unnamed
//! semaphores that park coroutines instead of blocking their OS thread.
//!
//! With green threads several coroutines share one OS thread. glibc records a
//! mutex owner as the OS thread id (a recursive or errorcheck mutex cannot tell
//! two coroutines apart) and a contended lock futex-waits the whole thread (the
//! holder, on the same thread, never runs again). So while `green_threads::enabled()`
//! these functions are ours for every caller — coroutine or native thread — and
//! one implementation owns each object; while it is off every hook forwards.
//!
//! Objects live in the caller's own `pthread_*_t` / `sem_t` storage (glibc 2.36,
//! x86_64 layouts). glibc's own initialisers (`pthread_*_init`, `sem_init`, the
//! static `PTHREAD_*_INITIALIZER`s) are kept: they zero the object and write
//! the kind, clock and process-shared markers in the fields we read, so they are
//! not hooked. Our state lives in fields glibc's initialisers zero:
//!
//! | object  | ours                                                                  | glibc's, read only |
//! |---------|-----------------------------------------------------------------------|--------------------|
//! | mutex   | @0 lock word, @4 recursion count, @24 owner (u64, was `__list`)       | @16 `__kind`       |
//! | cond    | @0 sequence (futex word), @4 waiters                                  | @36 `__wrefs` bits: 1 shared, 2 monotonic |
//! | rwlock  | @0 state, @4 writer-notify, @8/@12 native readers/writers, @16 busy, @40 write owner | @28 `__shared` |
//! | barrier | @0 arrived, @4 round (futex word), @16 still inside                   | @8 count, @12 shared |
//! | sem     | @0 u64: value (futex word, low half), waiters                         | @8 shared          |
//!
//! Objects glibc must keep — process-shared ones (other processes cannot see
//! our parked coroutines), robust and priority-inheritance/-protection mutexes
//! (the kernel co-owns their lock word) — are forwarded to glibc entirely; a
//! coroutine contending on one blocks its thread, as without green threads,
//! except a coroutine waiting on a process-shared semaphore, which glibc waits
//! for on the offload pool (`shared_sem_wait`).
//!
//! Who waits how: a coroutine parks on the object's address (the runtime's
//! parking lot); a plain thread whose scheduler has coroutines runs them while
//! it waits (the holder may be one of them); any other thread blocks in
//! `futex(2)` on the object's word. Each object tells a releaser which kinds may
//! be waiting, so the uncontended paths make no system call and take no lock.
//!
//! Known differences from glibc: a coroutine waiting with a `CLOCK_REALTIME`
//! deadline does not follow later jumps of that clock; rwlocks honour the kind of `pthread_rwlockattr_setkind_np` as glibc does
//! (readers first by default, writers first for
//! `PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP`), but which of several
//! waiting writers or readers goes first may differ.
//! `sem_post` stays async-signal-safe only while no coroutine waits on that
//! semaphore (waking one takes the parking lot's lock). Condvar and semaphore
//! waits are cancellation points for green threads, as glibc's (cleanup
//! handlers of a condvar waiter run with the mutex held again); a native
//! thread's wait on one of our objects is a futex(2) call, not one.
//!
//! One file per object (`mutex`, `cond`, `rwlock`, `barrier`, `sem`, `spin`,
//! and `c11` on top of the first two); `wait` is how any of them waits. This
//! file holds what they share: who owns a lock and how an object is overlaid.

use super::green_threads;
use crate::runtime;
use crate::runtime::tp_local::tp_local;

mod barrier;
mod c11;
mod cond;
mod mutex;
mod rwlock;
mod sem;
mod spin;
mod wait;

pub use barrier::*;
pub use c11::*;
pub use cond::*;
pub use mutex::*;
pub use rwlock::*;
pub use sem::*;
pub use spin::*;

tp_local! {
    /// Its address names this OS thread as a lock owner: unique among live
    /// threads, and, unlike a cached tid, still right in a forked child.
    static THREAD_MARK: u8 = zeroed;
}

const NATIVE_OWNER: u64 = 1 << 63;

/// Who holds a lock: the running coroutine's id, or this thread's mark (with the
/// top bit set: coroutine ids never get there).
#[inline]
fn me() -> u64 {
    match runtime::current_task() {
        Some(t) => t.id,
        None => THREAD_MARK.with(|m| m as *const u8 as u64) | NATIVE_OWNER,
    }
}

/// Overlays our view on the caller's object if green threads are on and `is_ours`
/// accepts it (not one glibc must keep).
#[inline]
fn overlay<'a, C, T>(p: *mut C, is_ours: impl FnOnce(&T) -> bool) -> Option<&'a T> {
    if !green_threads::enabled() {
        return None;
    }
    const { assert!(size_of::<T>() <= size_of::<C>() && align_of::<T>() <= align_of::<C>()) };
    // SAFETY: `p` is the caller's object, of a type at least as large and as
    // aligned as our overlay (checked above); all its fields are plain integers
    // or atomics, valid for any bit pattern.
    let x = unsafe { p.cast::<T>().as_ref() }?;
    is_ours(x).then_some(x)
}
