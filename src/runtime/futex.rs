//! futex(2) for coroutines: a wait parks the coroutine, not its thread, on the
//! parking lot keyed by the word's address (the kernel keys its queues the same
//! way), and a wake finds parked coroutines before it asks the kernel for the
//! rest. This is what glibc's internal locks (a `FILE` lock, malloc's arena
//! locks, the dynamic loader's) and Rust's `std::sync` wait with; the system
//! call reaches us trapped by Syscall User Dispatch or through `syscall()`.
//!
//! | op | in a coroutine | elsewhere |
//! |----|----------------|-----------|
//! | `FUTEX_WAIT`, `FUTEX_WAIT_BITSET` | parks (`wait`) | the kernel's |
//! | `FUTEX_WAKE`, `FUTEX_WAKE_BITSET` | parked coroutines first, the rest of the count to the kernel (`wake`) | same |
//! | `FUTEX_REQUEUE`, `FUTEX_CMP_REQUEUE` | the kernel's, then every coroutine parked on `uaddr` wakes | same |
//! | `FUTEX_WAKE_OP` | the kernel's, then up to `val` coroutines on `uaddr` and `val2` on `uaddr2` wake | same |
//! | PI ops, `FUTEX_WAIT_REQUEUE_PI`, anything else | the kernel's: blocks the thread | the kernel's |
//!
//! Requeueing a parked coroutine would move it to another key behind its
//! back (its timeout would then dequeue from the wrong queue), so the requeue
//! ops wake instead: futex callers must accept spurious wake-ups, and glibc's
//! condition variables stopped requeueing in 2.25. WAKE_OP (glibc's old
//! condvar) cannot tell us whether its condition held, so it wakes as if it
//! had. PI locks are co-owned by the kernel (it boosts the owner's thread);
//! green threads' PI mutexes are glibc's already.
//!
//! `FUTEX_PRIVATE_FLAG` does not matter in the lot (one process). The kernel
//! keys a private and a shared futex differently, so `call` passes the op's
//! flag on to the kernel, and `wake` told neither wakes kernel waiters of both.
//!
//! **Wakes the lot never sees.** A waker that is not trapped — a native thread,
//! an offload thread, a coroutine of a thread without dispatch — makes a kernel
//! FUTEX_WAKE that finds nobody: the coroutine is in the lot, not in the
//! kernel. Every futex protocol changes the word before it wakes, so a parked
//! coroutine re-reads its word on a backoff (`FIRST_RECHECK` doubling up to
//! `MAX_RECHECK`, longer when many wait, see `slowest_recheck`) and returns 0 —
//! a legal spurious wake-up — once it differs. A
//! word that changed and changed back (A-B-A) before a re-check loses that
//! wake, exactly as when a native waiter is preempted between reading the word
//! and entering FUTEX_WAIT: every correct protocol survives it (a lock word back
//! at "contended" promises another wake; condvar and semaphore words count).
//! Chosen over a relay thread in the kernel (one `futex_waitv` of up to 128
//! words, re-armed at every park): that makes each park a kick of another
//! thread (two system calls and a context switch) to speed up only the rare
//! untrapped wake, which the re-check delivers within `MAX_RECHECK` (measured:
//! a native store seen after a median 0.7 ms by a waiter parked for 0–1 ms, 2.5
//! ms parked for 100 ms). A re-check is a timer and a load; measured, 1000
//! coroutines parked with a 5 ms cap cost 17% of a core, hence the cap grows
//! with the number of waiters (1000 waiters: 100 ms, 1.6% of a core, as for
//! one waiter).
//!
//! A signal handler that runs on the thread ends a wait with EINTR as the
//! kernel's does: always for a timed wait, for an untimed one only if the
//! handler lacks SA_RESTART (else the wait goes on, and a word that changed
//! meanwhile gives EAGAIN, as the restarted call would). Cancellation and an
//! enclosing `timeout()` do not end a futex wait (the lock code above us could
//! not unwind). A coroutine waiting until a `CLOCK_REALTIME` deadline does not
//! follow later jumps of that clock.

use std::cell::Cell;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicUsize};
use std::time::{Duration, Instant};

use libc::{EAGAIN, EINTR, EINVAL, ETIMEDOUT, c_int, c_long, timespec};

use super::scheduler::{Breaks, current_task, in_coroutine, without_parking};
use super::{Wake, parking};
use crate::sys::futex::call as kernel;
use crate::sys::time::timespec_after;
use crate::sys::{deadline_after, deadline_at, timespec_duration};

/// First re-check of a parked waiter's word, for a wake the lot did not see.
const FIRST_RECHECK: Duration = Duration::from_micros(100);
/// Slowest re-check: the longest an untrapped wake waits to be noticed.
const MAX_RECHECK: Duration = Duration::from_millis(5);
/// Coroutines parked in `wait`, which share `RECHECKS_PER_SECOND`.
static WAITING: AtomicUsize = AtomicUsize::new(0);
/// Roughly the most re-checks a second all waiters together make once parked
/// for long (a rate at which they cost ≈ 2% of a core).
const RECHECKS_PER_SECOND: u32 = 10_000;

/// The slowest re-check: `MAX_RECHECK`, or longer so that the waiters together
/// stay near `RECHECKS_PER_SECOND`.
fn slowest_recheck() -> Duration {
    let waiting = u32::try_from(WAITING.load(Relaxed)).unwrap_or(u32::MAX);
    MAX_RECHECK.max(Duration::from_secs(1) / RECHECKS_PER_SECOND * waiting)
}

const CMD_MASK: c_int = !(libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME);

/// Waits while the word at `uaddr` holds `expected`, until `deadline`, for a
/// wake whose bitset shares a bit with `bitset`. Ok on a wake (maybe spurious);
/// Err(EAGAIN) if the word did not hold `expected`, ETIMEDOUT, EINTR, EINVAL
/// (misaligned word, empty bitset), EFAULT (unreadable word). Outside a
/// coroutine this is the kernel's private FUTEX_WAIT_BITSET (`call` keeps a
/// shared op shared).
pub(crate) fn wait(
    uaddr: *const u32,
    expected: u32,
    deadline: Option<Instant>,
    bitset: u32,
) -> Result<(), i32> {
    if bitset == 0 || !uaddr.is_aligned() {
        return Err(EINVAL);
    }
    if !may_park() {
        return kernel_wait(uaddr, expected, deadline, bitset, libc::FUTEX_PRIVATE_FLAG);
    }
    // The kernel reads the word once for us: an address it cannot read fails
    // with EFAULT as natively instead of faulting in our load. A deadline at
    // the clock's epoch makes it return at once.
    let epoch = timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let op = libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG;
    // SAFETY: `epoch` is a live absolute timespec; the kernel checks `uaddr`.
    match unsafe { kernel(uaddr, op, expected, &epoch, std::ptr::null(), bitset) } {
        Err(ETIMEDOUT) => {}
        // For that instant this thread was a kernel waiter: a wake that found
        // it there counted it as woken, so the wake is ours to return.
        Ok(_) => return Ok(()),
        Err(e) => return Err(e),
    }
    // SAFETY: the kernel just read this aligned word; futex words are accessed
    // atomically by every party.
    let word = unsafe { &*uaddr.cast::<AtomicU32>() };
    let mut pause = FIRST_RECHECK;
    WAITING.fetch_add(1, Relaxed);
    let _waiting = Counted;
    // Until the first park, a changed word is EAGAIN; after, a wake.
    let mut parked_once = false;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(ETIMEDOUT);
        }
        let recheck = Some(Instant::now() + pause).filter(|_| !tests::no_recheck(uaddr));
        let until = match (deadline, recheck) {
            (Some(d), Some(r)) => Some(d.min(r)),
            (d, r) => d.or(r),
        };
        let changed = Cell::new(false);
        super::scheduler::label(&const { super::Label::new("futex", super::Family::Futex) });
        let wake = parking::park_on_masked(uaddr as usize, until, Breaks::Signal, bitset, || {
            changed.set(word.load(SeqCst) != expected);
            !changed.get()
        });
        if changed.get() {
            return if parked_once { Ok(()) } else { Err(EAGAIN) };
        }
        parked_once = true;
        match wake {
            Wake::TimedOut => {
                if word.load(SeqCst) != expected {
                    tests::rescued(uaddr);
                    return Ok(());
                }
                pause = (pause * 2).min(slowest_recheck());
            }
            Wake::Interrupted { restart } => {
                if !restart || deadline.is_some() {
                    return Err(EINTR);
                }
                parked_once = false;
            }
            _ => return Ok(()),
        }
    }
}

/// In a coroutine, and not inside `park_as`: there a wait is for one of our
/// own locks (a contended shard of the lot, reaching us through `syscall`),
/// or for the allocator's (the lot's own bookkeeping allocates, and a
/// jemalloc lock is a hooked `pthread_mutex`), whose holder never parks; a
/// second park would corrupt the first, or wait for the lot's shard the
/// first one holds.
pub(crate) fn may_park() -> bool {
    in_coroutine() && current_task().is_some_and(|t| !t.in_park.get())
}

/// Takes a waiter off `WAITING` however `wait` returns.
struct Counted;

impl Drop for Counted {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Relaxed);
    }
}

/// Wakes up to `n` waiters on `uaddr` whose bitset shares a bit with `bitset`:
/// one thread in the kernel first (the kernel always gets a wake), then
/// parked coroutines, longest-waiting first, then threads in the kernel again
/// (`kernel_wake`). Returns how many woke, at most `n`. Like the kernel, `n`
/// below 1 still wakes one.
pub(crate) fn wake(uaddr: *const u32, n: i32, bitset: u32, private: Option<bool>) -> i32 {
    without_parking(|| wake_now(uaddr, n, bitset, private))
}

fn wake_now(uaddr: *const u32, n: i32, bitset: u32, private: Option<bool>) -> i32 {
    let n = n.max(1);
    // One thread may wait twice on one word: a coroutine parked in the lot,
    // and the thread's own code blocked in the kernel under it (the park's
    // bookkeeping calling malloc, whose arena lock is the word). Waking only
    // the coroutine would leave both asleep, so the kernel always gets at
    // least one wake (a spurious one at worst, which its waiters accept), and
    // gets it first: a thread blocked in the kernel may hold a lock the lot's
    // wake path needs (measured: the stdio chat on two workers hung so, each
    // thread waiting for the other, when the lot still allocated under its
    // queue lock).
    let first = kernel_wake(uaddr, 1, bitset, private);
    let woken =
        first + parking::unpark_matching(uaddr as usize, (n - first) as usize, bitset) as i32;
    if woken >= n {
        return n;
    }
    woken + kernel_wake(uaddr, n - woken, bitset, private)
}

/// Wakes up to `n` threads waiting in the kernel on `uaddr`: private or shared
/// as `private` says or, if not known (None), first private then, for what
/// is left, shared. Returns how many woke.
fn kernel_wake(uaddr: *const u32, n: i32, bitset: u32, private: Option<bool>) -> i32 {
    let mut left = n;
    for flag in [libc::FUTEX_PRIVATE_FLAG, 0] {
        if left == 0 || private.is_some_and(|p| p != (flag != 0)) {
            continue;
        }
        let op = libc::FUTEX_WAKE_BITSET | flag;
        // SAFETY: FUTEX_WAKE_BITSET only uses the address as a key.
        let r = unsafe {
            kernel(
                uaddr,
                op,
                left as u32,
                std::ptr::null(),
                std::ptr::null(),
                bitset,
            )
        };
        left -= r.map_or(0, |r| r as i32);
    }
    n - left
}

/// Converts a futex op's timeout to a deadline: FUTEX_WAIT's is relative,
/// FUTEX_WAIT_BITSET's absolute on CLOCK_MONOTONIC, or CLOCK_REALTIME with
/// `FUTEX_CLOCK_REALTIME`. Null is never; a timespec the kernel refuses is
/// EINVAL.
pub(crate) fn deadline_from(op: c_int, timeout: *const timespec) -> Result<Option<Instant>, i32> {
    // SAFETY: null or the caller's readable timespec, as the kernel requires.
    let Some(ts) = (unsafe { timeout.as_ref() }) else {
        return Ok(None);
    };
    let valid = timespec_duration(ts).ok_or(EINVAL)?;
    if op & CMD_MASK == libc::FUTEX_WAIT {
        return Ok(Some(deadline_after(valid)));
    }
    let clock = if op & libc::FUTEX_CLOCK_REALTIME != 0 {
        libc::CLOCK_REALTIME
    } else {
        libc::CLOCK_MONOTONIC
    };
    deadline_at(clock, ts)
}

/// The whole futex(2) call, as the table at the top says: the result the
/// kernel would return (woken count, 0) or its errno.
///
/// # Safety
/// The arguments are the caller's futex(2) arguments: whatever the kernel would
/// read for `op` must be readable (the words themselves are checked).
pub(crate) unsafe fn call(
    uaddr: *mut u32,
    op: c_int,
    val: u32,
    timeout: *const timespec,
    uaddr2: *mut u32,
    val3: u32,
) -> Result<c_long, i32> {
    let cmd = op & CMD_MASK;
    let private = Some(op & libc::FUTEX_PRIVATE_FLAG != 0);
    let realtime = op & libc::FUTEX_CLOCK_REALTIME != 0;
    // SAFETY: forwarding the caller's own arguments.
    let forward = || unsafe { kernel(uaddr, op, val, timeout, uaddr2, val3) };
    match cmd {
        libc::FUTEX_WAIT | libc::FUTEX_WAIT_BITSET if may_park() => {
            let bitset = if cmd == libc::FUTEX_WAIT {
                libc::FUTEX_BITSET_MATCH_ANY as u32
            } else {
                val3
            };
            wait(uaddr, val, deadline_from(op, timeout)?, bitset).map(|()| 0)
        }
        libc::FUTEX_WAKE | libc::FUTEX_WAKE_BITSET if !realtime => {
            let bitset = if cmd == libc::FUTEX_WAKE {
                libc::FUTEX_BITSET_MATCH_ANY as u32
            } else {
                val3
            };
            if bitset == 0 {
                return Err(EINVAL);
            }
            Ok(wake(uaddr, val as i32, bitset, private).into())
        }
        libc::FUTEX_REQUEUE | libc::FUTEX_CMP_REQUEUE if !realtime => {
            let r = forward()?;
            Ok(r + without_parking(|| parking::unpark_all(uaddr as usize)) as c_long)
        }
        libc::FUTEX_WAKE_OP if !realtime => {
            let r = forward()?;
            let n2 = timeout as usize;
            let woken = without_parking(|| {
                parking::unpark_matching(uaddr as usize, val as usize, u32::MAX)
                    + parking::unpark_matching(uaddr2 as usize, n2, u32::MAX)
            });
            Ok(r + woken as c_long)
        }
        _ => forward(),
    }
}

/// A kernel wait with an absolute monotonic deadline (the `Instant` clock).
fn kernel_wait(
    uaddr: *const u32,
    expected: u32,
    deadline: Option<Instant>,
    bitset: u32,
    flag: c_int,
) -> Result<(), i32> {
    let ts = deadline.map(|d| {
        timespec_after(
            libc::CLOCK_MONOTONIC,
            d.saturating_duration_since(Instant::now()),
        )
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const timespec);
    // SAFETY: `ts_ptr` is null or a live absolute timespec; the kernel checks
    // the word's address.
    unsafe {
        kernel(
            uaddr,
            libc::FUTEX_WAIT_BITSET | flag,
            expected,
            ts_ptr,
            std::ptr::null(),
            bitset,
        )
    }
    .map(|_| ())
}

#[cfg(not(test))]
mod tests {
    #[inline(always)]
    pub(super) fn no_recheck(_: *const u32) -> bool {
        false
    }
    #[inline(always)]
    pub(super) fn rescued(_: *const u32) {}
}

#[cfg(test)]
mod tests;
